"""Sealing a version and checking its seal: the store's side of ``lut_db.digest``.

Sealing stores the version's digest in the same transaction that marks it sealed. Every
sealed version a store hands out has passed a cheap check first (once per store): the
fingerprint, the row count, what estimation reads and a sample of whole entries;
``verify`` recomputes everything and says what changed.
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from lut_db import digest as dg
from lut_db.errors import DigestTooNew, VersionTampered
from lut_db.versions import Version, now

SAMPLE_ON_OPEN = 16  # whole entries checked against their field hashes on every open


def entry_rows(db: sqlite_utils.Database, version: Version) -> list[dict[str, Any]]:
    """A version's entries as the digest covers them, in key order."""
    cols = ", ".join(f'"{c}"' for c in dg.ENTRY_FIELDS)
    cur = db.execute(f"SELECT {cols} FROM measurements WHERE version = ? ORDER BY key",
                     [version.id])
    return [dict(zip(dg.ENTRY_FIELDS, r)) for r in cur.fetchall()]


def quick(db: sqlite_utils.Database, version: Version) -> str:
    return dg.quick_digest(db.execute(
        "SELECT key, status, latency_us FROM measurements WHERE version = ? ORDER BY key",
        [version.id]).fetchall())


def write_seal(db: sqlite_utils.Database, v: Version, origin: str) -> dg.Seal:
    """Compute and store a version's digest (inside the caller's write transaction)."""
    rows = entry_rows(db, v)
    seal = dg.Seal(v.id, dg.DIGEST_FORMAT, dg.content_digest(v.fingerprint, rows),
                   quick(db, v), len(rows), dg.canonical(v.fingerprint), origin, now())
    db["sealed_entries"].insert_all(
        ({"version": v.id, "key": r["key"], "fields": dg.field_hashes(r)} for r in rows),
        batch_size=500)
    db["seals"].insert(vars(seal))
    return seal


class SealsMixin:
    """LutStore's sealing and digest checks (uses its ``db``, ``_write``, ``version``)."""

    def seal(self, version: Version, origin: str = "sealed") -> Version:
        """Seal a version: its digest is stored in the same transaction."""
        with self._write():
            v = self._writable(version)
            write_seal(self.db, v, origin)
            self.db["versions"].update(v.id, {"status": "sealed", "sealed": now()})
        return self.version(v.id)

    def seal_info(self, version: Version) -> dg.Seal | None:
        """The digest stored when the version was sealed (None: not sealed)."""
        rows = list(self.db["seals"].rows_where("version = ?", [version.id]))
        if not rows:
            return None
        seal = dg.Seal(**rows[0])
        if seal.format > dg.DIGEST_FORMAT:
            raise DigestTooNew(
                f"{self.path}@{version.id}'s digest has format {seal.format}, written by a "
                f"newer netadapt-farm (this one checks format {dg.DIGEST_FORMAT}); upgrade: "
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
              and quick(self.db, v) == seal.quick
              and not any(dg.changed_fields(f, r) for f, r in self._sample(v)))
        if not ok:
            self.verify(v)  # raises, saying what changed
        self._checked.add(seal)

    def _sample(self, v: Version) -> list[tuple[str, dict[str, Any]]]:
        cols = ", ".join(f'm."{c}"' for c in dg.ENTRY_FIELDS)
        cur = self.db.execute(
            f"SELECT s.fields, {cols} FROM measurements m JOIN sealed_entries s "
            "ON s.version = m.version AND s.key = m.key WHERE m.version = ? "
            f"ORDER BY random() LIMIT {SAMPLE_ON_OPEN}", [v.id])
        return [(r[0], dict(zip(dg.ENTRY_FIELDS, r[1:]))) for r in cur.fetchall()]

    def verify(self, version: Version) -> dg.Seal | None:
        """Recompute a sealed version's digest from all its entries: the seal, or
        VersionTampered saying what changed. None for a version not sealed yet."""
        v = self._find(version.id)  # as the file has it now, not checked yet
        seal = self.seal_info(v)
        if v.status != "sealed":
            self.version(v.id)  # raises if it was sealed once
            return None
        if seal is None:
            self._check(v, seal)  # raises
        rows = entry_rows(self.db, v)
        current = {r["key"]: r for r in rows}
        stored = dict(self.db.execute("SELECT key, fields FROM sealed_entries WHERE version = ?",
                                      [v.id]).fetchall())
        content_ok = dg.content_digest(v.fingerprint, rows) == seal.digest
        hashes_ok = (stored.keys() == current.keys() and quick(self.db, v) == seal.quick
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
