"""Sealed-version digests: taken at seal time, checked on open and by `db verify`, kept by
export/import, computed for files sealed before they existed; a tampered version or a
digest from a newer netadapt-farm ends in one clear message."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils
from typer.testing import CliRunner

from bench.runners.base import Failure, Timing
from lut_db import digest as dg
from lut_db.errors import DigestTooNew, LutError, VersionTampered
from lut_db.schema import MEASUREMENT_COLUMNS, MIGRATIONS
from lut_db.spec import LayerSpec
from lut_db.store import LutStore
from lut_db.versions import Version
from netadapt_cli.main import app

FP = {"device": "host", "runtime": "ai-edge-litert 2.3.0", "threads": 1}
KEYS = [LayerSpec("conv2d", 8, 8, c, 16).key for c in range(8, 8 + 40)]


def sealed(store: LutStore, n: int = 4) -> Version:
    v = store.create_version("host", "tflite-cpu", FP)
    store.add_results(v, [(k, Timing.from_samples([100.0 + i, 101.0 + i]))
                          for i, k in enumerate(KEYS[:n - 1])] + [(KEYS[n - 1], Failure("x", "out"))])
    return store.seal(v)


def tamper(path: Path, *sql: str) -> None:
    """What anyone with an SQLite tool can do: drop the guards, then edit."""
    raw = sqlite3.connect(path)
    for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        raw.execute(f"DROP TRIGGER {name}")
    for s in sql:
        raw.execute(s)
    raw.commit()
    raw.close()


def reopen_error(path: Path, ref: int | None = None) -> str:
    with LutStore.open(path) as store, pytest.raises(LutError) as e:
        store.version(ref)
    return str(e.value)


@pytest.fixture
def lut(lut_path: Path) -> Path:
    with LutStore.open(lut_path, create=True) as store:
        sealed(store)
    return lut_path


def test_the_fields_hashed_are_the_stored_columns() -> None:
    assert list(dg.ENTRY_FIELDS) == [c for c in MEASUREMENT_COLUMNS if c != "version"]


def test_seal_stores_a_digest_of_entries_and_fingerprint(lut: Path) -> None:
    with LutStore.open(lut) as store:
        v = store.version(1)
        seal = store.seal_info(v)
        assert (seal.rows, seal.origin, seal.format) == (4, "sealed", dg.DIGEST_FORMAT)
        rows = [{f: r[f] for f in dg.ENTRY_FIELDS} for r in store.entries(v)]
        assert seal.digest == dg.content_digest(FP, rows)
        assert seal.digest != dg.content_digest({**FP, "threads": 2}, rows)
        assert store.verify(v) == seal


def test_edited_latency_is_refused_on_open(lut: Path) -> None:
    """Hand-edited after sealing (triggers dropped, latency_us changed): no estimate uses it."""
    tamper(lut, f"UPDATE measurements SET latency_us = 1 WHERE key = '{KEYS[1]}'")
    msg = reopen_error(lut)
    assert f"{lut}@1 changed after it was sealed" in msg
    assert f"latency_us changed in 1 entry ({KEYS[1]})" in msg
    assert "restore the file from a backup" in msg


def test_estimation_never_reads_an_edited_version(lut: Path) -> None:
    """Whatever way a caller found the version, the table it sums is checked."""
    tamper(lut, f"UPDATE measurements SET latency_us = 1 WHERE key = '{KEYS[0]}'")
    with LutStore.open(lut) as store:
        (v,) = store.versions()  # listing reads no entries: no check yet
        with pytest.raises(VersionTampered, match="latency_us changed in 1 entry"):
            store.table(v)


def test_any_edited_field_is_found_by_verify(lut_path: Path) -> None:
    """The open check samples whole entries; verify reads every one of them."""
    with LutStore.open(lut_path, create=True) as store:
        v = sealed(store, n=40)
    tamper(lut_path, f"UPDATE measurements SET serial = 'x', samples_us = '[]' "
                     f"WHERE key = '{KEYS[7]}'")
    with LutStore.open(lut_path) as store, pytest.raises(VersionTampered) as e:
        store.verify(v)  # whether or not the open check's sample held the edited entry
    assert f"samples_us, serial changed in 1 entry ({KEYS[7]})" in str(e.value)


@pytest.mark.parametrize("sql, says", [
    (f"DELETE FROM measurements WHERE key = '{KEYS[0]}'", f"1 entry deleted ({KEYS[0]})"),
    (f"INSERT INTO measurements (version, key, status) VALUES (1, '{KEYS[9]}', 'ok')",
     f"1 entry added ({KEYS[9]})"),
    ("UPDATE versions SET fingerprint = '{\"device\": \"host\", \"threads\": 4}'",
     "fingerprint changed (runtime, threads)"),
    ("UPDATE measurements SET status = 'ok', error = NULL WHERE status = 'failed'",
     "status, error changed in 1 entry"),
    ("UPDATE versions SET status = 'building'", "has been marked building again"),
    ("DELETE FROM seals", "its digest is gone"),
    ("UPDATE seals SET quick = 'x'", "the stored digest itself was edited"),
    ("UPDATE measurements SET latency_us = 1; UPDATE sealed_entries SET fields = 'x'",
     "which entries cannot be told"),
])
def test_each_kind_of_change_is_named(lut: Path, sql: str, says: str) -> None:
    tamper(lut, *sql.split("; "))
    assert says in reopen_error(lut, 1)


def test_a_digest_from_a_newer_netadapt_is_refused(lut: Path) -> None:
    tamper(lut, "UPDATE seals SET format = 2")
    msg = reopen_error(lut)
    assert "digest has format 2, written by a newer netadapt-farm" in msg
    assert "pip install -U netadapt-farm" in msg


def test_versions_sealed_before_digests_get_one_at_migration(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    for step in MIGRATIONS[:3]:
        step(db)
    db.execute("PRAGMA user_version = 3")
    db.execute("INSERT INTO versions (id, device, backend, status, created, fingerprint) "
               "VALUES (1, 'host', 'tflite-cpu', 'building', 'then', '{}')")
    db.execute("INSERT INTO measurements (version, key, latency_us, status) "
               f"VALUES (1, '{KEYS[0]}', 5.0, 'ok')")
    db.execute("UPDATE versions SET status = 'sealed'")
    db.conn.commit()
    db.close()
    with LutStore.open(path) as store:
        v = store.version(1)
        assert store.seal_info(v).origin == "migrated" and store.verify(v).rows == 1
    tamper(path, "UPDATE measurements SET latency_us = 6")
    assert "latency_us changed in 1 entry" in reopen_error(path)


def test_export_and_import_keep_the_digest(lut: Path, tmp_path: Path) -> None:
    with LutStore.open(lut) as store, LutStore.open(tmp_path / "b.db", create=True) as other:
        v = store.version(1)
        text = store.export(v)
        assert json.loads(text)["digest"]["sha256"] == store.seal_info(v).digest
        w = other.import_(text)
        assert other.seal_info(w).digest == store.seal_info(v).digest
        assert other.seal_info(w).origin == "imported, digest checked"
        assert other.verify(w).rows == 4


def test_an_edited_export_is_refused_and_leaves_nothing(lut: Path, tmp_path: Path) -> None:
    with LutStore.open(lut) as store:
        data = json.loads(store.export(store.version(1)))
    with LutStore.open(tmp_path / "b.db", create=True) as other:
        data["measurements"][0]["latency_us"] = 1.0
        with pytest.raises(VersionTampered, match="edited after export"):
            other.import_(json.dumps(data))
        data["digest"]["format"] = 9
        with pytest.raises(DigestTooNew, match="format 9, written by a newer"):
            other.import_(json.dumps(data))
        assert other.versions() == []


def test_a_failed_key_is_retried_in_a_building_version(mem_store: LutStore) -> None:
    v = mem_store.create_version("host", "tflite-cpu", FP)
    mem_store.add_results(v, [(KEYS[0], Failure("tool broken", "log"))])
    mem_store.add_results(v, [(KEYS[0], Timing.from_samples([3.0, 4.0]))])
    assert mem_store.table(v) == {KEYS[0]: 3.5} and mem_store.failures(v) == []
    with pytest.raises(LutError, match="measured once per version"):
        mem_store.add_results(v, [(KEYS[0], Timing.from_samples([3.0]))])


@pytest.fixture
def mem_store() -> LutStore:
    return LutStore.memory()


def test_db_verify_command(lut: Path) -> None:
    run = CliRunner().invoke
    res = run(app, ["db", "verify", "--lut", str(lut)])
    assert res.exit_code == 0, res.output
    assert f"{lut}@1: ok, 4 entries match sha256" in " ".join(res.output.split())
    assert "digest: sha256" in run(app, ["db", "show", "--lut", str(lut)]).output
    tamper(lut, "UPDATE measurements SET latency_us = 2 WHERE rowid = 1")
    res = run(app, ["db", "verify", "--lut", f"{lut}@1"])
    assert res.exit_code == 3 and "Traceback" not in res.output  # 3: the check found a change
    assert "latency_us changed in 1 entry" in " ".join(res.output.split())


def test_no_version_is_derived_from_an_edited_one(lut: Path) -> None:
    with LutStore.open(lut) as store:
        parent = store.version(1)  # as it was handed out before the edit
    tamper(lut, f"UPDATE measurements SET latency_us = 1 WHERE key = '{KEYS[0]}'")
    with LutStore.open(lut) as store:
        with pytest.raises(VersionTampered):
            store.create_version("host", "tflite-cpu", FP, parent=parent)
        assert len(store.versions()) == 1
