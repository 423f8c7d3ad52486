"""LutStore: one SQLite file per device holding versioned latency look-up tables.

A version is `building` while a sweep fills it and `sealed` afterwards; SQLite
triggers refuse any change to a sealed version's rows, so a number quoted as
``galaxy_s8.db@3`` stays true. The schema version lives in ``PRAGMA user_version``;
``MIGRATIONS[i]`` upgrades a file from version i to i+1. Each sealed version also keeps
a content digest (``lut_db.digest``): opening it checks it cheaply, ``verify`` fully.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import sqlite3
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import sqlite_utils
from filelock import FileLock, Timeout

from lut_db import digest as dg
from lut_db.calibration import Calibration, CalibrationError
from lut_db.errors import SetupMismatch, UserError
from lut_db.linux import require_linux
from lut_db.spec import LayerSpec, SpecError

SCHEMA_VERSION = 5
SAMPLE_ON_OPEN = 16  # whole entries checked against their field hashes on every open


class ExportFormat(StrEnum):
    """What `export` writes and `import_` reads: JSON (with the version's metadata and
    digest) or CSV (the entries alone)."""

    JSON = "json"
    CSV = "csv"


class LutError(UserError):
    """Base of the store's errors; each message is meant for the user as it is."""


class NotALut(LutError):
    pass


class SchemaTooNew(LutError):
    pass


class NoSuchVersion(LutError):
    pass


class SealedVersion(LutError):
    pass


class StoreLocked(LutError):
    pass


class VersionTampered(LutError):
    """A sealed version no longer matches the digest taken when it was sealed."""


class DigestTooNew(LutError):
    pass


# -- schema ---------------------------------------------------------------------------------

SPEC_COLUMNS = {
    "op": str, "h": int, "w": int, "cin": int, "cout": int, "kh": int, "kw": int,
    "sh": int, "sw": int, "padding": str, "dh": int, "dw": int, "act": str,
    "bias": int, "dtype": str,
}
TIMING_COLUMNS = {
    "latency_us": float, "median_us": float, "mean_us": float, "std_us": float,
    "min_us": float, "max_us": float, "runs": int, "warmup_runs": int,
    "samples_us": str, "extra": str,
}
MEASUREMENT_COLUMNS = {
    "version": int, "key": str, **SPEC_COLUMNS, **TIMING_COLUMNS,
    "status": str, "error": str, "output": str, "serial": str, "measured_at": str,
}

SEALED_GUARDS = """
CREATE TRIGGER IF NOT EXISTS {table}_sealed_insert BEFORE INSERT ON {table}
WHEN (SELECT status FROM versions WHERE id = NEW.version) = 'sealed'
BEGIN SELECT RAISE(ABORT, 'version is sealed'); END;
CREATE TRIGGER IF NOT EXISTS {table}_sealed_update BEFORE UPDATE ON {table}
WHEN (SELECT status FROM versions WHERE id = OLD.version) = 'sealed'
BEGIN SELECT RAISE(ABORT, 'version is sealed'); END;
CREATE TRIGGER IF NOT EXISTS {table}_sealed_delete BEFORE DELETE ON {table}
WHEN (SELECT status FROM versions WHERE id = OLD.version) = 'sealed'
BEGIN SELECT RAISE(ABORT, 'version is sealed'); END;
"""

VERSION_GUARDS = """
CREATE TRIGGER IF NOT EXISTS versions_sealed_update BEFORE UPDATE ON versions
WHEN OLD.status = 'sealed'
BEGIN SELECT RAISE(ABORT, 'version is sealed'); END;
CREATE TRIGGER IF NOT EXISTS versions_sealed_delete BEFORE DELETE ON versions
WHEN OLD.status = 'sealed'
BEGIN SELECT RAISE(ABORT, 'version is sealed'); END;
"""


def _create_v1(db: sqlite_utils.Database) -> None:
    db["versions"].create({
        "id": int, "device": str, "backend": str, "status": str, "created": str,
        "sealed": str, "fingerprint": str, "fingerprint_hash": str, "parent": int,
        "note": str, "space": str,
    }, pk="id", not_null={"device", "backend", "status", "created"})
    db["measurements"].create(MEASUREMENT_COLUMNS, pk=("version", "key"),
                              foreign_keys=[("version", "versions", "id")])
    # Keys measured again on other phones of the farm, to show whether phones agree.
    db["replicas"].create({"version": int, "key": str, "serial": str, **TIMING_COLUMNS,
                           "measured_at": str}, pk=("version", "key", "serial"),
                          foreign_keys=[("version", "versions", "id")])
    # Validations may be added to a sealed version (they do not change its entries).
    db["validations"].create({
        "version": int, "name": str, "family": str, "held_out": int, "network": str,
        "estimated_us": float, "measured_us": float, "timing": str, "macs": int,
        "params": int, "measured_at": str,
    }, pk=("version", "name"), foreign_keys=[("version", "versions", "id")])
    # Version-level numbers measured with the version (e.g. per-invoke overhead).
    db["version_stats"].create({"version": int, "name": str, "value": float, "detail": str},
                               pk=("version", "name"),
                               foreign_keys=[("version", "versions", "id")])
    db.executescript(VERSION_GUARDS + SEALED_GUARDS.format(table="measurements")
                     + SEALED_GUARDS.format(table="replicas"))


def _v2_guard_moves(db: sqlite_utils.Database) -> None:
    """Schema 1's update guards looked at the row's old version only, so an UPDATE could
    move rows of a building version into a sealed one; they now check both sides."""
    for table in ("measurements", "replicas"):
        db.execute(f"DROP TRIGGER IF EXISTS {table}_sealed_update")
        db.execute(f"""
CREATE TRIGGER {table}_sealed_update BEFORE UPDATE ON {table}
WHEN (SELECT status FROM versions WHERE id = OLD.version) = 'sealed'
  OR (SELECT status FROM versions WHERE id = NEW.version) = 'sealed'
BEGIN SELECT RAISE(ABORT, 'version is sealed'); END""")


def _v3_guard_replace(db: sqlite_utils.Database) -> None:
    """INSERT OR REPLACE on versions deletes the old row without firing delete triggers, so
    it could turn a sealed version back into a building one: refuse any insert over it."""
    db.execute("""
CREATE TRIGGER IF NOT EXISTS versions_sealed_replace BEFORE INSERT ON versions
WHEN (SELECT status FROM versions WHERE id = NEW.id) = 'sealed'
BEGIN SELECT RAISE(ABORT, 'version is sealed'); END""")


def _v4_digests(db: sqlite_utils.Database) -> None:
    """Content digests of sealed versions. Versions sealed before schema 4 get theirs now
    (origin "migrated": they prove the numbers unchanged from now on, not before)."""
    db["seals"].create({"version": int, "format": int, "digest": str, "quick": str,
                        "rows": int, "fingerprint": str, "origin": str, "at": str},
                       pk="version", foreign_keys=[("version", "versions", "id")])
    db["sealed_entries"].create({"version": int, "key": str, "fields": str},
                                pk=("version", "key"), foreign_keys=[("version", "versions", "id")])
    for r in db["versions"].rows_where("status = 'sealed'", order_by="id"):
        _write_seal(db, _version(r), "migrated")
    # Created after the rows above: they refuse any insert for a sealed version.
    db.executescript(SEALED_GUARDS.format(table="seals")
                     + SEALED_GUARDS.format(table="sealed_entries"))


# MIGRATIONS[i] takes a file at schema i to schema i + 1. Schema 0 is an empty file.
def _v5_calibrations(db: sqlite_utils.Database) -> None:
    """A version's calibration (``lut_db.calibration``): written once, after the sweep
    seals, and never changed or removed after (a calibrated estimate quoted from
    ``host.db@3`` stays true, as its entries do)."""
    db["calibrations"].create({"version": int, "model": str, "calibration": str, "at": str},
                              pk="version", foreign_keys=[("version", "versions", "id")])
    db.executescript("""
CREATE TRIGGER calibrations_update BEFORE UPDATE ON calibrations
BEGIN SELECT RAISE(ABORT, 'a calibration never changes'); END;
CREATE TRIGGER calibrations_delete BEFORE DELETE ON calibrations
BEGIN SELECT RAISE(ABORT, 'a calibration never changes'); END;""")


MIGRATIONS = [_create_v1, _v2_guard_moves, _v3_guard_replace, _v4_digests, _v5_calibrations]


def _entry_rows(db: sqlite_utils.Database, version: int) -> list[dict[str, Any]]:
    cols = ", ".join(f'"{c}"' for c in dg.ENTRY_FIELDS)
    cur = db.execute(f"SELECT {cols} FROM measurements WHERE version = ? ORDER BY key",
                     [version])
    return [dict(zip(dg.ENTRY_FIELDS, r)) for r in cur.fetchall()]


def _quick(db: sqlite_utils.Database, version: int) -> str:
    return dg.quick_digest(db.execute(
        "SELECT key, status, latency_us FROM measurements WHERE version = ? ORDER BY key",
        [version]).fetchall())


def _write_seal(db: sqlite_utils.Database, v: Version, origin: str) -> dg.Seal:
    """Compute and store a version's digest (inside the caller's write transaction)."""
    rows = _entry_rows(db, v.id)
    seal = dg.Seal(v.id, dg.DIGEST_FORMAT, dg.content_digest(v.fingerprint, rows),
                   _quick(db, v.id), len(rows), dg.canonical(v.fingerprint), origin, now())
    db["sealed_entries"].insert_all(
        ({"version": v.id, "key": r["key"], "fields": dg.field_hashes(r)} for r in rows),
        batch_size=500)
    db["seals"].insert(vars(seal))
    return seal


# -- data classes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    id: int
    device: str
    backend: str
    status: str
    created: str
    sealed: str | None
    fingerprint: dict[str, Any]
    parent: int | None
    note: str
    space: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.device}@{self.id}"

    def setup_changes(self, fingerprint: dict[str, Any]) -> list[str]:
        """Fingerprint fields in which a setup differs from this version's (none: same)."""
        fp = self.fingerprint
        return sorted(k for k in fp.keys() | fingerprint.keys()
                      if fp.get(k) != fingerprint.get(k))

    def require_same_setup(self, fingerprint: dict[str, Any], purpose: str) -> None:
        """Refuse to mix this version's numbers with another setup's; ``purpose`` ends the
        message: why that matters here and what to do instead."""
        changed = self.setup_changes(fingerprint)
        if changed:
            raise SetupMismatch(f"{self.label} was measured with another setup (differs in: "
                                f"{', '.join(changed)}); {purpose}")


@dataclass
class Diff:
    a: int
    b: int
    common: int
    only_a: list[str]
    only_b: list[str]
    ratios: dict[str, float]  # key -> b / a

    def summary(self) -> dict[str, Any]:
        r = sorted(self.ratios.values())
        out: dict[str, Any] = {"a": self.a, "b": self.b, "common": self.common,
                               "only_a": len(self.only_a), "only_b": len(self.only_b)}
        if r:
            q = statistics.quantiles(r, n=20) if len(r) > 1 else [r[0]] * 19
            out.update(median_ratio=statistics.median(r), p5=q[0], p95=q[-1],
                       min=r[0], max=r[-1],
                       within_5pct=sum(abs(x - 1) <= 0.05 for x in r) / len(r))
        return out


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def parse_lut_ref(ref: str) -> tuple[Path, int | None]:
    """``luts/host.db@3`` -> (path, 3); ``luts/host.db`` -> (path, None = newest sealed)."""
    path, sep, version = str(ref).rpartition("@")
    if sep and version.isdigit():
        return Path(path), int(version)
    if sep and not Path(ref).exists():
        raise LutError(f"{ref!r}: the version after '@' must be a number, e.g. luts/host.db@3")
    return Path(ref), None


# -- the store ------------------------------------------------------------------------------


class LutStore:
    """A device's LUT file. ``LutStore.open(path)`` checks it; ``create=True`` makes it."""

    def __init__(self, db: sqlite_utils.Database, path: Path | None):
        self.db = db
        self.path = path
        self._lock: FileLock | None = None
        self._checked: set[dg.Seal] = set()  # seals whose versions passed the open check

    @classmethod
    def open(cls, path: str | Path, create: bool = False) -> LutStore:
        path = Path(path)
        if not path.exists() and not create:
            raise NotALut(f"{path}: no such LUT file (build one with: netadapt lut --lut {path})")
        if path.exists() and path.is_dir():
            raise NotALut(f"{path} is a directory, not a LUT file")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            store = cls(sqlite_utils.Database(path), path)
            store._prepare(create)
        except sqlite3.DatabaseError as e:
            raise NotALut(f"{path} is not a netadapt LUT (SQLite says: {e})") from None
        return store

    @classmethod
    def memory(cls) -> LutStore:
        store = cls(sqlite_utils.Database(memory=True), None)
        store._prepare(True)
        return store

    def _prepare(self, create: bool) -> None:
        # First: another process may be creating or writing the file right now.
        self.db.execute("PRAGMA busy_timeout = 5000")
        current = self.db.execute("PRAGMA user_version").fetchone()[0]
        tables = set(self.db.table_names())
        if tables and "versions" not in tables:  # whatever its user_version says
            raise NotALut(f"{self.path} is an SQLite file but not a netadapt LUT "
                          f"(tables: {', '.join(sorted(tables))})")
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.path} was written by a newer netadapt-farm (schema {current}, this one "
                f"reads up to {SCHEMA_VERSION}); upgrade: pip install -U netadapt-farm"
            )
        if current == 0 and not tables and not create:
            raise NotALut(f"{self.path} is empty, not a netadapt LUT")
        if current < SCHEMA_VERSION:
            if self.path is not None:
                self.db.enable_wal()
            self._migrate()
        self.db.execute("PRAGMA foreign_keys = ON")

    def _migrate(self) -> None:
        """Bring the schema up to date under SQLite's write lock: of two processes opening
        a new file at once, the second waits and then finds the work done (and writes
        nothing, so it cannot disturb the first one's transactions)."""
        with self._write():
            current = self.db.execute("PRAGMA user_version").fetchone()[0]
            for step in range(current, SCHEMA_VERSION):
                MIGRATIONS[step](self.db)
            if current < SCHEMA_VERSION:
                self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction that takes SQLite's write lock up front (BEGIN IMMEDIATE).
        sqlite-utils' atomic() begins deferred: a read inside it followed by a write fails
        at once with 'database is locked' if another process committed in between,
        without waiting for busy_timeout."""
        if self.db.conn.in_transaction:
            with self.db.atomic():  # nested: a savepoint
                yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            self.db.conn.rollback()
            raise

    def close(self) -> None:
        self.unlock()
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writer lock: one sweep per file at a time ------------------------------------------
    def lock(self) -> None:
        """Take the writer lock, or raise StoreLocked. The OS drops it if the process dies."""
        if self.path is None or self._lock is not None:
            return
        require_linux()
        lock_path = self.path.with_name(self.path.name + ".lock")
        # thread_local=False: a sweep may close the store from another thread than it locked in
        lock = FileLock(lock_path, thread_local=False)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            holder = lock_path.read_text(errors="replace").strip() or "?"
            raise StoreLocked(
                f"{self.path} is being written by another sweep (pid {holder}); wait for it to "
                "finish, or stop it (its measurements are kept and the next run resumes)"
            ) from None
        lock_path.write_text(str(os.getpid()))  # for the message above; the lock stays held
        self._lock = lock

    @property
    def locked(self) -> bool:
        """Whether this process holds the writer lock."""
        return self._lock is not None

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- versions ---------------------------------------------------------------------------
    def versions(self) -> list[Version]:
        return [_version(r) for r in self.db["versions"].rows_where(order_by="id")]

    def version(self, ref: int | None = None) -> Version:
        """A version by id; None = the newest sealed one. A sealed version is checked
        against its digest (cheaply: see ``_check``) before it is returned."""
        v = self._find(ref)
        seal = self.seal_info(v.id)
        if v.status == "sealed" and seal not in self._checked:
            self._check(v, seal)
        elif v.status != "sealed" and seal is not None:
            raise VersionTampered(
                f"{self._ref(v)} was sealed on {seal.at} and has been marked building again "
                "by hand; a sealed version must never change: restore the file from a backup")
        return v

    def _find(self, ref: int | None) -> Version:
        if ref is None:
            sealed = [v for v in self.versions() if v.status == "sealed"]
            if not sealed:
                raise NoSuchVersion(f"{self.path} has no sealed version yet "
                                    f"(versions: {self._version_list()})")
            return sealed[-1]
        rows = list(self.db["versions"].rows_where("id = ?", [ref]))
        if not rows:
            raise NoSuchVersion(f"{self.path} has no version {ref} "
                                f"(versions: {self._version_list()})")
        return _version(rows[0])

    def _version_list(self) -> str:
        vs = self.versions()
        return ", ".join(f"{v.id} {v.status}" for v in vs) if vs else "none"

    def create_version(self, device: str, backend: str, fingerprint: dict[str, Any],
                       parent: int | None = None, note: str = "",
                       space: dict[str, Any] | None = None) -> Version:
        """A new building version; with a parent, it starts with the parent's measured entries
        (not its failures: those keys get another try in the new version)."""
        if parent is not None:
            self.version(parent)  # a sealed parent must still match its digest
        with self._write():
            vid = self.db["versions"].insert({
                "device": device, "backend": backend, "status": "building", "created": now(),
                "sealed": None, "fingerprint": json.dumps(fingerprint, sort_keys=True),
                "fingerprint_hash": fingerprint_hash(fingerprint), "parent": parent,
                "note": note, "space": json.dumps(space or {}, sort_keys=True),
            }).last_pk
            if parent is not None:
                cols = ", ".join(c for c in MEASUREMENT_COLUMNS if c != "version")
                self.db.execute(
                    f"INSERT INTO measurements (version, {cols}) "
                    f"SELECT ?, {cols} FROM measurements WHERE version = ? AND status = 'ok'",
                    [vid, parent])
        return self.version(vid)

    def find_building(self, device: str, backend: str,
                      fingerprint: dict[str, Any]) -> Version | None:
        """The building version a sweep with this fingerprint should resume, if any."""
        rows = list(self.db["versions"].rows_where(
            "device = ? AND backend = ? AND fingerprint_hash = ? AND status = 'building'",
            [device, backend, fingerprint_hash(fingerprint)], order_by="id desc", limit=1))
        return _version(rows[0]) if rows else None

    def find_sealed(self, device: str, backend: str,
                    fingerprint: dict[str, Any]) -> Version | None:
        rows = list(self.db["versions"].rows_where(
            "device = ? AND backend = ? AND fingerprint_hash = ? AND status = 'sealed'",
            [device, backend, fingerprint_hash(fingerprint)], order_by="id desc", limit=1))
        return _version(rows[0]) if rows else None

    def update_space(self, version: int, space: dict[str, Any]) -> None:
        self._writable(version)
        self.db["versions"].update(version, {"space": json.dumps(space, sort_keys=True)})

    def seal(self, version: int, origin: str = "sealed") -> Version:
        """Seal a version: its digest is stored in the same transaction."""
        with self._write():
            v = self._writable(version)
            _write_seal(self.db, v, origin)
            self.db["versions"].update(version, {"status": "sealed", "sealed": now()})
        return self.version(version)

    # -- digests ----------------------------------------------------------------------------
    def seal_info(self, version: int) -> dg.Seal | None:
        """The digest stored when the version was sealed (None: not sealed)."""
        rows = list(self.db["seals"].rows_where("version = ?", [version]))
        if not rows:
            return None
        seal = dg.Seal(**rows[0])
        if seal.format > dg.DIGEST_FORMAT:
            raise DigestTooNew(
                f"{self.path}@{version}'s digest has format {seal.format}, written by a newer "
                f"netadapt-farm (this one checks format {dg.DIGEST_FORMAT}); upgrade: "
                "pip install -U netadapt-farm")
        return seal

    def _check(self, v: Version, seal: dg.Seal | None) -> None:
        """The check on every open: the fingerprint, the row count, what estimation reads
        (key, status, latency of every entry) and a sample of whole entries."""
        if seal is None:
            raise VersionTampered(f"{self._ref(v)} is sealed but its digest is gone (deleted "
                                  "by hand); restore the file from a backup")
        count = self.db.execute("SELECT count(*) FROM measurements WHERE version = ?",
                                [v.id]).fetchone()[0]
        ok = (seal.fingerprint == dg.canonical(v.fingerprint) and count == seal.rows
              and _quick(self.db, v.id) == seal.quick
              and not any(dg.changed_fields(f, r) for f, r in self._sample(v.id)))
        if not ok:
            self.verify(v.id)  # raises, saying what changed
        self._checked.add(seal)

    def _sample(self, version: int) -> list[tuple[str, dict[str, Any]]]:
        cols = ", ".join(f'm."{c}"' for c in dg.ENTRY_FIELDS)
        cur = self.db.execute(
            f"SELECT s.fields, {cols} FROM measurements m JOIN sealed_entries s "
            "ON s.version = m.version AND s.key = m.key WHERE m.version = ? "
            f"ORDER BY random() LIMIT {SAMPLE_ON_OPEN}", [version])
        return [(r[0], dict(zip(dg.ENTRY_FIELDS, r[1:]))) for r in cur.fetchall()]

    def verify(self, version: int) -> dg.Seal | None:
        """Recompute a sealed version's digest from all its entries: the seal, or
        VersionTampered saying what changed. None for a version not sealed yet."""
        v = self._find(version)
        seal = self.seal_info(v.id)
        if v.status != "sealed":
            self.version(v.id)  # raises if it was sealed once
            return None
        if seal is None:
            self._check(v, seal)  # raises
        rows = _entry_rows(self.db, v.id)
        current = {r["key"]: r for r in rows}
        stored = dict(self.db.execute("SELECT key, fields FROM sealed_entries WHERE version = ?",
                                      [v.id]).fetchall())
        content_ok = dg.content_digest(v.fingerprint, rows) == seal.digest
        hashes_ok = (stored.keys() == current.keys() and _quick(self.db, v.id) == seal.quick
                     and seal.fingerprint == dg.canonical(v.fingerprint)
                     and not any(dg.changed_fields(stored[k], r) for k, r in current.items()))
        if content_ok and hashes_ok:
            self._checked.add(seal)
            return seal
        changes = dg.describe_changes(seal, v.fingerprint, stored, current)
        if not changes:
            changes = ["the stored digest itself was edited" if content_ok else
                       "its entries differ from the digest (the per-entry hashes were "
                       "edited too, so which entries cannot be told)"]
        raise VersionTampered(
            f"{self._ref(v)} changed after it was sealed ({seal.origin} {seal.at}): "
            f"{'; '.join(changes)}. A sealed version never changes: restore the file from a "
            "backup, or measure a new version (netadapt lut)")

    def _ref(self, v: Version) -> str:
        return f"{self.path}@{v.id}" if self.path else v.label

    def _writable(self, version: int) -> Version:
        v = self.version(version)
        if v.status == "sealed":
            raise SealedVersion(
                f"{v.label} is sealed and never changes; measure into a new version "
                "(netadapt lut creates one derived from it)")
        return v

    # -- measurements -----------------------------------------------------------------------
    def add_results(self, version: int, results: Iterable[tuple[str, Any]],
                    serial: str = "") -> int:
        """Store one batch of (key, Timing | Failure) in one transaction; returns rows added."""
        self._writable(version)
        rows = [_measurement_row(version, key, res, serial) for key, res in results]
        try:
            with self._write():
                # A key that failed before is being retried: its new result replaces it.
                self.db.conn.executemany(
                    "DELETE FROM measurements WHERE version = ? AND key = ? AND status = 'failed'",
                    [(version, r["key"]) for r in rows])
                self.db["measurements"].insert_all(rows, batch_size=len(rows) + 1)
        except sqlite3.IntegrityError as e:
            raise LutError(f"version {version}: {e} (a key is measured once per version)") from None
        return len(rows)

    def add_replicas(self, version: int, results: Iterable[tuple[str, Any]],
                     serial: str) -> None:
        """Keys measured again on another phone of the farm (cross-device agreement)."""
        self._writable(version)
        rows = [{"version": version, "key": k, "serial": serial, "measured_at": now(),
                 **_timing_columns(t)} for k, t in results]
        with self._write():
            self.db["replicas"].insert_all(rows, batch_size=len(rows) + 1, replace=True)

    def keys(self, version: int, status: str | None = None) -> set[str]:
        """Keys stored in a version (ok and failed alike unless status is given)."""
        where, args = "version = ?", [version]
        if status:
            where, args = where + " AND status = ?", args + [status]
        return {r["key"] for r in self.db["measurements"].rows_where(where, args, select="key")}

    def root(self, version: Version) -> Version:
        """The sweep a version descends from through versions of the same setup."""
        while version.parent is not None:
            parent = self.version(version.parent)
            if parent.fingerprint != version.fingerprint:
                break
            version = parent
        return version

    def lineage(self, version: Version) -> tuple[dict[str, float], dict[str, float], list[str]]:
        """The entries of the sweep ``version`` descends from; apart from them, the keys
        that sealed versions of the same setup derived from it added (measured on demand,
        later sweeps: at other times, so kept apart for drift factors); and those versions'
        labels. The same for a version and its derived ones."""
        base = self.root(version)
        table = self.table(base.id)
        extra: dict[str, float] = {}
        labels = []
        family = {base.id}
        for v in self.versions():  # ids grow: a parent comes before its children
            if v.parent in family and v.fingerprint == base.fingerprint and v.status == "sealed":
                family.add(v.id)
                extra.update({k: x for k, x in self.table(v.id).items() if k not in table})
                labels.append(v.label)
        return table, extra, labels

    def table(self, version: int) -> dict[str, float]:
        """key -> latency (us) of every measured entry: what estimation sums (a sealed
        version is checked against its digest first, once per store)."""
        self.version(version)
        return {k: v for k, v in self.db.execute(
            "SELECT key, latency_us FROM measurements WHERE version = ? AND status = 'ok'",
            [version]).fetchall()}

    def entries(self, version: int) -> list[dict[str, Any]]:
        return list(self.db["measurements"].rows_where("version = ?", [version], order_by="key"))

    def failures(self, version: int) -> list[dict[str, Any]]:
        return list(self.db["measurements"].rows_where(
            "version = ? AND status = 'failed'", [version], select="key, error, output, serial"))

    def counts(self, version: int) -> dict[str, int]:
        rows = self.db.execute("SELECT status, count(*) FROM measurements WHERE version = ? "
                               "GROUP BY status", [version]).fetchall()
        return {s: n for s, n in rows}

    def replicas(self, version: int) -> list[dict[str, Any]]:
        return list(self.db["replicas"].rows_where("version = ?", [version]))

    # -- version-level stats and validations ------------------------------------------------
    def set_stat(self, version: int, name: str, value: float, detail: Any = None) -> None:
        self._writable(version)
        self.db["version_stats"].insert({"version": version, "name": name, "value": value,
                                         "detail": json.dumps(detail)}, replace=True)

    def stats(self, version: int) -> dict[str, float]:
        return {r["name"]: r["value"]
                for r in self.db["version_stats"].rows_where("version = ?", [version])}

    def stat_detail(self, version: int, name: str) -> Any:
        """The detail stored with one of a version's stats (None when there is none)."""
        rows = list(self.db["version_stats"].rows_where("version = ? AND name = ?",
                                                        [version, name]))
        return json.loads(rows[0]["detail"]) if rows and rows[0]["detail"] else None

    # -- calibration ------------------------------------------------------------------------
    def set_calibration(self, version: int, calibration: Calibration) -> None:
        """Store a sealed version's calibration, once (it never changes afterwards)."""
        v = self.version(version)
        if v.status != "sealed":
            raise CalibrationError(f"{v.label} is still building: calibrate it once it is "
                                   "sealed (netadapt lut finishes the sweep)")
        v.require_same_setup(calibration.fingerprint, "its calibration must come from the "
                             "same device and settings")
        with self._write():
            if self.db["calibrations"].count_where("version = ?", [version]):
                raise CalibrationError(f"{v.label} is calibrated already, and a calibration "
                                       "never changes")
            self.db["calibrations"].insert({"version": version, "model": calibration.model,
                                            "calibration": calibration.to_json(), "at": now()})

    def calibration(self, version: Version) -> Calibration | None:
        """The calibration that holds for ``version``: its own, else that of the version
        it was derived from with the same setup (keys measured on demand add entries, not
        a new device state). None: never calibrated."""
        v: Version | None = version
        while v is not None:
            rows = list(self.db["calibrations"].rows_where("version = ?", [v.id]))
            if rows:
                cal = Calibration.from_json(rows[0]["calibration"])
                version.require_same_setup(cal.fingerprint, "its calibration was made for "
                                           "another setup and cannot be used; recalibrate "
                                           "with: netadapt calibrate")
                return cal
            parent = self.version(v.parent) if v.parent is not None else None
            v = parent if parent and parent.fingerprint == v.fingerprint else None
        return None

    def add_validation(self, version: int, row: dict[str, Any]) -> None:
        self.version(version)
        self.db["validations"].insert({"version": version, "measured_at": now(), **row},
                                      replace=True)

    def validations(self, version: int) -> list[dict[str, Any]]:
        return list(self.db["validations"].rows_where("version = ?", [version], order_by="name"))

    # -- diff, export, import ---------------------------------------------------------------
    def diff(self, a: int, b: int) -> Diff:
        ta, tb = self.table(self.version(a).id), self.table(self.version(b).id)
        common = ta.keys() & tb.keys()
        return Diff(a, b, len(common), sorted(ta.keys() - tb.keys()),
                    sorted(tb.keys() - ta.keys()),
                    {k: tb[k] / ta[k] for k in sorted(common) if ta[k] > 0})

    def export(self, version: int, fmt: str = "json") -> str:
        """A version with its metadata (JSON) or its entries (CSV)."""
        v = self.version(version)
        rows = self.entries(version)
        if fmt == "csv":
            buf = io.StringIO()
            cols = [c for c in MEASUREMENT_COLUMNS if c != "version"]
            writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            return buf.getvalue()
        if fmt != "json":
            raise LutError(f"unknown export format {fmt!r}; use json or csv")
        meta = {k: getattr(v, k) for k in ("id", "device", "backend", "status", "created",
                                           "sealed", "fingerprint", "parent", "note", "space")}
        for r in rows:
            r.pop("version", None)
        out = {"format": "netadapt-lut", "schema": SCHEMA_VERSION, "version": meta}
        seal = self.seal_info(v.id)
        if seal is not None:  # the import checks its entries against it
            out["digest"] = {"format": seal.format, "sha256": seal.digest, "rows": seal.rows}
        return json.dumps({**out, "measurements": rows}, indent=1)

    def import_(self, text: str, fmt: str = "json", device: str | None = None,
                backend: str | None = None, seal: bool = True) -> Version:
        """Import an export as a new version (sealed unless seal=False)."""
        if fmt == "json":
            try:
                data = json.loads(text)
                meta, rows = data["version"], data["measurements"]
                if not isinstance(meta, dict) or not isinstance(rows, list):
                    raise TypeError
            except (json.JSONDecodeError, KeyError, TypeError):
                raise LutError("not a netadapt LUT export (expected JSON from 'db export')") from None
        elif fmt == "csv":
            meta, rows = {}, list(csv.DictReader(io.StringIO(text)))
        else:
            raise LutError(f"unknown import format {fmt!r}; use json or csv")
        device = device or meta.get("device")
        backend = backend or meta.get("backend")
        if not device or not backend:
            raise LutError("the import has no device/backend: pass --device and --backend")
        note = f"imported from {meta.get('device')}@{meta.get('id')}" if meta else "imported"
        expected = _export_digest(data) if fmt == "json" else None
        # check every row before writing anything
        clean = [_import_row(0, r, blank_is_none=fmt == "csv") for r in rows]
        with self._write():  # a failed import leaves no version behind
            v = self.create_version(device, backend, meta.get("fingerprint") or {},
                                    note=note, space=meta.get("space") or {})
            for row in clean:
                row["version"] = v.id
            try:
                self.db["measurements"].insert_all(clean, batch_size=len(clean) + 1)
            except sqlite3.IntegrityError as e:
                raise LutError(f"import: {e} (a key appears twice in the import)") from None
            if expected and dg.content_digest(v.fingerprint,
                                              _entry_rows(self.db, v.id)) != expected:
                raise VersionTampered(
                    f"the export of {meta.get('device')}@{meta.get('id')} does not match its "
                    "digest: it was edited after export; export it again from the LUT file, or "
                    "delete its \"digest\" to import the edited numbers as a version of their own")
            if not seal:
                return v
            return self.seal(v.id, "imported, digest checked" if expected else "imported")


def _version(r: dict[str, Any]) -> Version:
    return Version(r["id"], r["device"], r["backend"], r["status"], r["created"], r["sealed"],
                   json.loads(r["fingerprint"] or "{}"), r["parent"], r["note"] or "",
                   json.loads(r["space"] or "{}"))


def spec_columns(spec: LayerSpec) -> dict[str, Any]:
    return {"op": spec.op, "h": spec.h, "w": spec.w, "cin": spec.cin, "cout": spec.cout,
            "kh": spec.kernel[0], "kw": spec.kernel[1], "sh": spec.stride[0],
            "sw": spec.stride[1], "padding": spec.padding, "dh": spec.dilation[0],
            "dw": spec.dilation[1], "act": spec.act, "bias": int(spec.bias),
            "dtype": spec.dtype}


def _timing_columns(t: Any) -> dict[str, Any]:
    return {"latency_us": t.latency_us, "median_us": t.median_us, "mean_us": t.mean_us,
            "std_us": t.std_us, "min_us": t.min_us, "max_us": t.max_us, "runs": t.runs,
            "warmup_runs": t.warmup_runs, "samples_us": json.dumps(list(t.samples_us)),
            "extra": json.dumps(t.extra)}


def _measurement_row(version: int, key: str, res: Any, serial: str) -> dict[str, Any]:
    row: dict[str, Any] = {"version": version, "key": key, **spec_columns(LayerSpec.parse(key)),
                           "serial": serial, "measured_at": now()}
    if hasattr(res, "latency_us"):
        row.update(_timing_columns(res), status="ok", error=None, output=None)
    else:
        row.update(status="failed", error=res.error, output=res.output[-20000:])
    return row


def _export_digest(data: dict[str, Any]) -> str | None:
    """The sha256 an export was sealed with (None: it has none, e.g. a building version)."""
    d = data.get("digest")
    if d is None:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("format"), int):
        raise LutError("not a netadapt LUT export: its 'digest' is malformed")
    if d["format"] > dg.DIGEST_FORMAT:
        raise DigestTooNew(f"the export's digest has format {d['format']}, written by a newer "
                           f"netadapt-farm (this one checks format {dg.DIGEST_FORMAT}); "
                           "upgrade: pip install -U netadapt-farm")
    return str(d.get("sha256"))


def _import_row(version: int, r: dict[str, Any], blank_is_none: bool) -> dict[str, Any]:
    if not isinstance(r, dict):
        raise LutError(f"import: bad row {r!r:.80}: expected an object with a 'key'")
    try:
        spec = LayerSpec.parse(r["key"])
    except (KeyError, SpecError) as e:
        raise LutError(f"import: bad key in row {r!r:.80}: {e}") from None
    row = {c: r.get(c) for c in MEASUREMENT_COLUMNS}
    row.update(spec_columns(spec), version=version, key=spec.key)  # the canonical key
    if blank_is_none:  # CSV cannot tell an empty string from a missing value
        row = {k: (None if v == "" else v) for k, v in row.items()}
    if row.get("status") is None:
        row["status"] = "ok"
    return row


def open_lut(ref: str, create: bool = False) -> tuple[LutStore, Version]:
    """``luts/host.db@3`` -> (store, version 3); without @ the newest sealed version."""
    path, vid = parse_lut_ref(ref)
    store = LutStore.open(path, create=create)
    return store, store.version(vid)
