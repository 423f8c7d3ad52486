"""The LUT file's schema and its migrations.

The schema version lives in ``PRAGMA user_version``; ``MIGRATIONS[i]`` upgrades a file from
version i to i + 1 (schema 0 is an empty file). SQLite triggers refuse any change to a
sealed version's rows, so a number quoted as ``galaxy_s8.db@3`` stays true.
"""

from __future__ import annotations

import sqlite_utils

from lut_db.seals import write_seal
from lut_db.versions import Version

SCHEMA_VERSION = 5

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
        write_seal(db, Version.from_row(r), "migrated")
    # Created after the rows above: they refuse any insert for a sealed version.
    db.executescript(SEALED_GUARDS.format(table="seals")
                     + SEALED_GUARDS.format(table="sealed_entries"))


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


# MIGRATIONS[i] takes a file at schema i to schema i + 1.
MIGRATIONS = [_create_v1, _v2_guard_moves, _v3_guard_replace, _v4_digests, _v5_calibrations]
