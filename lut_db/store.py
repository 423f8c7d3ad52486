"""LutStore: one SQLite file per device holding versioned latency look-up tables.

A version is `building` while a sweep fills it and `sealed` afterwards; SQLite triggers
refuse any change to a sealed version's rows (``lut_db.schema``), and each sealed version
keeps a content digest that is checked before it is handed out (``lut_db.seals``). This
module holds the file itself (open, migrate, write transactions, the writer lock) and its
versions; the rest of the store's methods come from the modules named for what they hold:
entries, attachments (stats, calibration, validations), diff, transfer (export/import).
Every method that works on a version takes the ``Version`` that ``version()`` handed out.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import sqlite_utils
from filelock import FileLock, Timeout

from lut_db import digest as dg
from lut_db.attachments import AttachmentsMixin
from lut_db.diff import DiffMixin
from lut_db.entries import EntriesMixin
from lut_db.errors import (
    NoSuchVersion,
    NotALut,
    SchemaTooNew,
    SealedVersion,
    StoreLocked,
    VersionTampered,
)
from lut_db.fingerprint import same_setup
from lut_db.linux import require_linux
from lut_db.schema import MEASUREMENT_COLUMNS, MIGRATIONS, SCHEMA_VERSION
from lut_db.seals import SealsMixin
from lut_db.transfer import TransferMixin
from lut_db.versions import Version, fingerprint_hash, now, parse_lut_ref


class LutStore(SealsMixin, EntriesMixin, AttachmentsMixin, DiffMixin, TransferMixin):
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
        return [Version.from_row(r) for r in self.db["versions"].rows_where(order_by="id")]

    def version(self, ref: int | None = None) -> Version:
        """A version by id; None = the newest sealed one. A sealed version is checked
        against its digest (cheaply: see ``_check``) before it is returned."""
        v = self._find(ref)
        seal = self.seal_info(v)
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
        return Version.from_row(rows[0])

    def _version_list(self) -> str:
        vs = self.versions()
        return ", ".join(f"{v.id} {v.status}" for v in vs) if vs else "none"

    def _ref(self, v: Version) -> str:
        return f"{self.path}@{v.id}" if self.path else v.label

    def _writable(self, version: Version) -> Version:
        """The version as the file has it now, or SealedVersion if it is sealed."""
        v = self.version(version.id)
        if v.status == "sealed":
            raise SealedVersion(
                f"{v.label} is sealed and never changes; measure into a new version "
                "(netadapt lut creates one derived from it)")
        return v

    def create_version(self, device: str, backend: str, fingerprint: dict[str, Any],
                       parent: Version | None = None, note: str = "",
                       space: dict[str, Any] | None = None) -> Version:
        """A new building version; with a parent, it starts with the parent's measured entries
        (not its failures: those keys get another try in the new version)."""
        if parent is not None:
            self.version(parent.id)  # a sealed parent must still match its digest
        with self._write():
            vid = self.db["versions"].insert({
                "device": device, "backend": backend, "status": "building", "created": now(),
                "sealed": None, "fingerprint": json.dumps(fingerprint, sort_keys=True),
                "fingerprint_hash": fingerprint_hash(fingerprint),
                "parent": parent.id if parent else None,
                "note": note, "space": json.dumps(space or {}, sort_keys=True),
            }).last_pk
            if parent is not None:
                cols = ", ".join(c for c in MEASUREMENT_COLUMNS if c != "version")
                self.db.execute(
                    f"INSERT INTO measurements (version, {cols}) "
                    f"SELECT ?, {cols} FROM measurements WHERE version = ? AND status = 'ok'",
                    [vid, parent.id])
        return self.version(vid)

    def find_building(self, device: str, backend: str,
                      fingerprint: dict[str, Any]) -> Version | None:
        """The building version a sweep with this fingerprint should resume, if any."""
        return self._newest(device, backend, fingerprint, "building")

    def find_sealed(self, device: str, backend: str,
                    fingerprint: dict[str, Any]) -> Version | None:
        return self._newest(device, backend, fingerprint, "sealed")

    def _newest(self, device: str, backend: str, fingerprint: dict[str, Any],
                status: str) -> Version | None:
        """The newest version of this setup and status (the hash leaves descriptive fields
        out, so the ones both sides report are compared here)."""
        rows = self.db["versions"].rows_where(
            "device = ? AND backend = ? AND fingerprint_hash = ? AND status = ?",
            [device, backend, fingerprint_hash(fingerprint), status], order_by="id desc")
        found = (v for v in map(Version.from_row, rows) if same_setup(v.fingerprint, fingerprint))
        return next(found, None)

    def update_space(self, version: Version, space: dict[str, Any]) -> None:
        self._writable(version)
        self.db["versions"].update(version.id, {"space": json.dumps(space, sort_keys=True)})


def open_lut(ref: str, create: bool = False) -> tuple[LutStore, Version]:
    """``luts/host.db@3`` -> (store, version 3); without @ the newest sealed version."""
    path, vid = parse_lut_ref(ref)
    store = LutStore.open(path, create=create)
    return store, store.version(vid)
