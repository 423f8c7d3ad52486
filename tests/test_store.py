"""lut_db.store: versions, sealing enforced by SQLite, schema checks, samples, failures,
diff, export/import, derived versions, the writer lock."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlite_utils

from bench.runners.base import Failure, Timing
from lut_db.errors import LutError, NoSuchVersion, NotALut, SchemaTooNew, SealedVersion, StoreLocked
from lut_db.schema import MIGRATIONS, SCHEMA_VERSION
from lut_db.spec import LayerSpec, SpecError
from lut_db.store import LutStore
from lut_db.versions import fingerprint_hash, parse_lut_ref

FP = {"device": "host", "runtime": "ai-edge-litert 2.3.0", "threads": 1, "runs": 3}
KEYS = [LayerSpec("conv2d", 8, 8, c, 16).key for c in (8, 16, 24, 32)]


def timing(us: float, n: int = 5) -> Timing:
    return Timing.from_samples([us + i for i in range(n)], warmup_runs=2)


@pytest.fixture
def mem() -> LutStore:
    return LutStore.memory()


@pytest.fixture
def store(lut_path: Path) -> LutStore:
    s = LutStore.open(lut_path, create=True)
    yield s
    s.close()


def filled(store: LutStore, values: dict[str, float], seal: bool = True, **kw):
    v = store.create_version("host", "tflite-cpu", FP, **kw)
    store.add_results(v, [(k, timing(us)) for k, us in values.items()])
    return store.seal(v) if seal else store.version(v.id)


# -- versions -------------------------------------------------------------------------------


def test_version_goes_from_building_to_sealed(mem: LutStore) -> None:
    v = mem.create_version("host", "tflite-cpu", FP, note="first", space={"sweeps": [1]})
    assert (v.id, v.status, v.sealed, v.label) == (1, "building", None, "host@1")
    assert v.fingerprint == FP and v.space == {"sweeps": [1]} and v.note == "first"
    assert mem.find_building("host", "tflite-cpu", FP) == v
    assert mem.find_building("host", "tflite-cpu", {**FP, "threads": 2}) is None
    mem.add_results(v, [(KEYS[0], timing(100))])
    s = mem.seal(v)
    assert s.status == "sealed" and s.sealed and s.created <= s.sealed
    assert mem.find_building("host", "tflite-cpu", FP) is None
    assert mem.find_sealed("host", "tflite-cpu", FP) == s
    assert mem.version() == s  # newest sealed
    assert [x.id for x in mem.versions()] == [1]


def test_newest_sealed_and_missing_versions(mem: LutStore) -> None:
    with pytest.raises(NoSuchVersion, match="no sealed version yet"):
        mem.version()
    a = filled(mem, {KEYS[0]: 1.0})
    b = filled(mem, {KEYS[0]: 2.0})
    mem.create_version("host", "tflite-cpu", FP)  # building: not the default
    assert mem.version().id == b.id != a.id
    with pytest.raises(NoSuchVersion) as e:
        mem.version(9)
    assert "no version 9" in str(e.value) and "1 sealed, 2 sealed, 3 building" in str(e.value)


def test_sealed_version_refuses_writes_through_the_api(mem: LutStore) -> None:
    v = filled(mem, {KEYS[0]: 1.0})
    for call in (lambda: mem.add_results(v, [(KEYS[1], timing(1))]),
                 lambda: mem.add_replicas(v, [(KEYS[0], timing(1))], "other"),
                 lambda: mem.set_stat(v, "x", 1.0),
                 lambda: mem.update_space(v, {}),
                 lambda: mem.seal(v)):
        with pytest.raises(SealedVersion, match="host@1 is sealed"):
            call()
    mem.add_validation(v, {"name": "net", "estimated_us": 1.0})  # allowed: not an entry
    assert [r["name"] for r in mem.validations(v)] == ["net"]


SEALED_SQL = [
    "INSERT INTO measurements (version, key, status) VALUES (1, 'x', 'ok')",
    "UPDATE measurements SET latency_us = 0 WHERE version = 1",
    "DELETE FROM measurements WHERE version = 1",
    "UPDATE measurements SET version = 1 WHERE version = 2",  # move rows into it
    "UPDATE measurements SET version = 2 WHERE version = 1",  # move rows out of it
    "INSERT INTO replicas (version, key, serial) VALUES (1, 'x', 's')",
    "UPDATE versions SET status = 'building' WHERE id = 1",
    "UPDATE versions SET fingerprint = '{}' WHERE id = 1",
    ("INSERT OR REPLACE INTO versions (id, device, backend, status, created) "
     "VALUES (1, 'host', 'tflite-cpu', 'building', 'now')"),  # unseal by replacing the row
    "DELETE FROM versions WHERE id = 1",
]


@pytest.mark.parametrize("sql", SEALED_SQL)
def test_sealed_version_is_immutable_in_sqlite(store: LutStore, sql: str) -> None:
    """Triggers, not only the Python API: raw SQL from any client cannot change it."""
    sealed = filled(store, {KEYS[0]: 1.0, KEYS[1]: 2.0})
    filled(store, {KEYS[2]: 3.0}, seal=False)
    before = store.export(sealed)
    raw = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="version is sealed"):
        raw.execute(sql)
    raw.rollback()
    raw.close()
    assert store.export(sealed) == before


def test_building_version_rows_can_change(store: LutStore) -> None:
    v = filled(store, {KEYS[0]: 1.0}, seal=False)
    raw = sqlite3.connect(store.path)
    raw.execute("UPDATE measurements SET latency_us = 5 WHERE version = 1")
    raw.commit()
    raw.close()
    assert store.table(v) == {KEYS[0]: 5.0}


def test_a_key_is_measured_once_per_version(mem: LutStore) -> None:
    v = filled(mem, {KEYS[0]: 1.0}, seal=False)
    with pytest.raises(LutError, match="measured once per version"):
        mem.add_results(v, [(KEYS[1], timing(1)), (KEYS[0], timing(1))])
    assert mem.keys(v) == {KEYS[0]}  # the batch is one transaction: nothing of it stored


# -- the file: schema, WAL, what is not a LUT -----------------------------------------------


def test_schema_version_and_wal(store: LutStore, lut_path: Path) -> None:
    store.close()
    raw = sqlite3.connect(lut_path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"versions", "measurements", "replicas", "validations", "version_stats"} <= {
        r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    raw.close()
    with LutStore.open(lut_path) as again:  # reopening an up-to-date file changes nothing
        assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_late_opener_of_a_new_file_writes_nothing(store: LutStore, lut_path: Path) -> None:
    """Of two processes creating a file at once, the one that waited for the schema finds it
    done and commits nothing: a commit would fail the first one's open transaction at once
    with 'database is locked' (SQLite's stale-snapshot rule ignores busy_timeout)."""
    store.db.execute("BEGIN")
    store.db.execute("SELECT count(*) FROM versions").fetchone()
    late = LutStore(sqlite_utils.Database(lut_path), lut_path)
    late._migrate()  # as if it had read user_version 0 before the first one committed
    store.db.execute("INSERT INTO versions (device, backend, status, created) "
                     "VALUES ('host', 'tflite-cpu', 'building', 'now')")
    store.db.execute("COMMIT")
    late.close()


def test_writes_wait_for_another_writer(store: LutStore, lut_path: Path) -> None:
    """A write transaction takes the write lock first, so it waits (busy_timeout) for a
    writer in another process instead of failing."""
    other = sqlite3.connect(lut_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    timer.start()
    v = store.create_version("host", "tflite-cpu", FP)
    timer.join()
    other.close()
    assert store.add_results(v, [(KEYS[0], timing(5.0))]) == 1


def test_older_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db.close()
    with LutStore.open(path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        filled(store, {KEYS[0]: 1.0})
        filled(store, {KEYS[1]: 1.0}, seal=False)
    raw = sqlite3.connect(path)
    for sql in ("UPDATE measurements SET version = 1 WHERE version = 2",
                ("REPLACE INTO versions (id, device, backend, status, created) "
                 "VALUES (1, 'host', 'tflite-cpu', 'building', 'now')")):
        with pytest.raises(sqlite3.DatabaseError, match="version is sealed"):
            raw.execute(sql)
    raw.close()


def test_newer_schema_is_refused(store: LutStore, lut_path: Path) -> None:
    filled(store, {KEYS[0]: 1.0})
    store.close()
    raw = sqlite3.connect(lut_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(SchemaTooNew) as e:
        LutStore.open(lut_path)
    msg = str(e.value)
    assert str(lut_path) in msg and "newer netadapt-farm" in msg
    assert f"schema {SCHEMA_VERSION + 1}" in msg and f"up to {SCHEMA_VERSION}" in msg
    assert "pip install -U netadapt-farm" in msg


@pytest.mark.parametrize("content", [b"hello, not a database\n" * 10, b"\x00" * 4096,
                                     b"SQLite format 3\x00" + b"\xff" * 4000])
def test_a_file_that_is_not_sqlite_is_not_a_lut(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(content)
    with pytest.raises(NotALut, match="is not a netadapt LUT"):
        LutStore.open(path)
    assert path.read_bytes() == content  # and it is left alone


@pytest.mark.parametrize("user_version", [0, 3, 99])
def test_another_apps_sqlite_file_is_not_a_lut(tmp_path: Path, user_version: int) -> None:
    path = tmp_path / "other.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE songs (title TEXT)")
    raw.execute(f"PRAGMA user_version = {user_version}")
    raw.commit()
    raw.close()
    for create in (False, True):
        with pytest.raises(NotALut) as e:
            LutStore.open(path, create=create)
        assert "not a netadapt LUT" in str(e.value) and "songs" in str(e.value)


def test_corrupt_lut_is_reported(store: LutStore, lut_path: Path) -> None:
    filled(store, {k: 1.0 for k in KEYS})
    store.close()
    data = bytearray(lut_path.read_bytes())
    data[4096:] = b"\xab" * (len(data) - 4096)  # every page after the first
    lut_path.write_bytes(bytes(data))
    with pytest.raises(NotALut, match="malformed"):
        LutStore.open(lut_path)


def test_missing_empty_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(NotALut, match="no such LUT file.*netadapt lut --lut"):
        LutStore.open(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(NotALut, match="empty"):
        LutStore.open(tmp_path / "empty.db")
    with pytest.raises(NotALut, match="directory"):
        LutStore.open(tmp_path)
    created = LutStore.open(tmp_path / "sub" / "new.db", create=True)
    assert created.versions() == []


def test_parse_lut_ref(tmp_path: Path) -> None:
    assert parse_lut_ref("luts/host.db@3") == (Path("luts/host.db"), 3)
    assert parse_lut_ref("luts/host.db") == (Path("luts/host.db"), None)
    with pytest.raises(LutError, match="must be a number"):
        parse_lut_ref("luts/host.db@three")
    odd = tmp_path / "a@b.db"
    odd.write_bytes(b"")
    assert parse_lut_ref(str(odd)) == (odd, None)


# -- measurements ---------------------------------------------------------------------------


def test_raw_samples_and_spec_columns_are_stored(mem: LutStore) -> None:
    v = mem.create_version("host", "tflite-cpu", FP)
    t = Timing.from_samples([10.0, 12.0, 11.0, 30.0], warmup_runs=3, rounds=1)
    mem.add_results(v, [(KEYS[0], t)], serial="abc")
    (row,) = mem.entries(v)
    assert json.loads(row["samples_us"]) == [10.0, 12.0, 11.0, 30.0]
    assert (row["latency_us"], row["median_us"], row["min_us"], row["max_us"]) == (
        11.5, 11.5, 10.0, 30.0)
    assert row["mean_us"] == pytest.approx(15.75)
    assert (row["runs"], row["warmup_runs"], row["serial"], row["status"]) == (4, 3, "abc", "ok")
    assert json.loads(row["extra"]) == {"rounds": 1}
    assert row["measured_at"]
    spec = LayerSpec.parse(KEYS[0])
    assert (row["op"], row["h"], row["cin"], row["cout"], row["kh"], row["padding"]) == (
        "conv2d", 8, spec.cin, 16, 1, "same")


def test_failures_are_stored_and_listed(mem: LutStore) -> None:
    v = mem.create_version("host", "tflite-cpu", FP)
    n = mem.add_results(v, [(KEYS[0], timing(5)),
                            (KEYS[1], Failure("crashed", "x" * 30000 + "tail"))])
    assert n == 2
    assert mem.counts(v) == {"ok": 1, "failed": 1}
    assert mem.table(v) == {KEYS[0]: timing(5).latency_us}  # failures are not entries
    assert mem.keys(v) == set(KEYS[:2])  # ... but count as measured (not retried)
    assert mem.keys(v, status="failed") == {KEYS[1]}
    (f,) = mem.failures(v)
    assert f["key"] == KEYS[1] and f["error"] == "crashed"
    assert len(f["output"]) == 20000 and f["output"].endswith("tail")


def test_bad_key_is_refused(mem: LutStore) -> None:
    v = mem.create_version("host", "tflite-cpu", FP)
    with pytest.raises(SpecError):
        mem.add_results(v, [("conv2d:in=1x1x0,out=1", timing(1))])


def test_stats_and_replicas(mem: LutStore) -> None:
    v = mem.create_version("host", "tflite-cpu", FP)
    mem.set_stat(v, "invoke_overhead_us", 12.5, {"runs": 3})
    mem.add_replicas(v, [(KEYS[0], timing(7))], "phone2")
    assert mem.stats(v) == {"invoke_overhead_us": 12.5}
    (r,) = mem.replicas(v)
    assert (r["key"], r["serial"], r["latency_us"]) == (KEYS[0], "phone2", timing(7).latency_us)


# -- diff, derive, export/import ------------------------------------------------------------


def test_diff_ratios(mem: LutStore) -> None:
    a = filled(mem, {KEYS[0]: 100.0, KEYS[1]: 200.0, KEYS[2]: 50.0})
    b = filled(mem, {KEYS[0]: 110.0, KEYS[1]: 100.0, KEYS[3]: 1.0})
    d = mem.diff(a, b)
    la, lb = mem.table(a), mem.table(b)
    assert d.common == 2 and d.only_a == [KEYS[2]] and d.only_b == [KEYS[3]]
    assert d.ratios == {KEYS[0]: lb[KEYS[0]] / la[KEYS[0]], KEYS[1]: lb[KEYS[1]] / la[KEYS[1]]}
    s = d.summary()
    assert s["common"] == 2 and s["only_a"] == 1 and s["only_b"] == 1
    assert s["min"] == pytest.approx(102 / 202) and s["max"] == pytest.approx(112 / 102)
    assert s["within_5pct"] == 0.0
    assert mem.diff(a, a).summary()["median_ratio"] == 1.0
    with pytest.raises(NoSuchVersion):
        mem.diff(a, mem.version(7))


def test_derived_version_copies_the_parent(mem: LutStore) -> None:
    parent = filled(mem, {KEYS[0]: 1.0, KEYS[1]: 2.0})
    child = mem.create_version("host", "tflite-cpu", FP, parent=parent, note="more")
    assert child.parent == parent.id and child.status == "building"
    assert mem.entries(child) == [{**r, "version": child.id} for r in mem.entries(parent)]
    mem.add_results(child, [(KEYS[2], timing(3))])
    assert mem.keys(child) == set(KEYS[:3]) and mem.keys(parent) == set(KEYS[:2])


def _comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "version"} for r in rows]


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_import_round_trip(mem: LutStore, tmp_path: Path, fmt: str) -> None:
    v = mem.create_version("host", "tflite-cpu", FP, space={"sweeps": ["a"]})
    mem.add_results(v, [(KEYS[0], timing(100.25)), (KEYS[1], Failure("boom", "log")),
                        (KEYS[2], Timing.from_samples([1 / 3, 2 / 3]))], serial="s1")
    v = mem.seal(v)
    text = mem.export(v, fmt)
    other = LutStore.open(tmp_path / "other.db", create=True)
    extra = {} if fmt == "json" else {"device": "host", "backend": "tflite-cpu"}
    w = other.import_(text, fmt, **extra)
    assert w.status == "sealed" and (w.device, w.backend) == ("host", "tflite-cpu")
    assert _comparable(other.entries(w)) == _comparable(mem.entries(v))
    assert other.table(w) == mem.table(v)
    if fmt == "json":
        assert w.fingerprint == FP and w.space == {"sweeps": ["a"]}
        assert w.note == "imported from host@1"
        assert json.loads(other.export(w))["measurements"] == json.loads(text)["measurements"]
    else:
        assert other.export(w, "csv") == text


def test_import_needs_device_and_backend_from_csv(mem: LutStore) -> None:
    v = filled(mem, {KEYS[0]: 1.0})
    with pytest.raises(LutError, match="--device and --backend"):
        mem.import_(mem.export(v, "csv"), "csv")


@pytest.mark.parametrize("text, fmt, words", [
    ("not json", "json", "not a netadapt LUT export"),
    ("[1, 2]", "json", "not a netadapt LUT export"),
    (json.dumps({"version": {"device": "d", "backend": "b"}, "measurements": [1]}), "json",
     "bad row"),
    (json.dumps({"version": {"device": "d", "backend": "b"},
                 "measurements": [{"key": "conv2d:in=1x1x1,out=0"}]}), "json", "bad key"),
    ("key,latency_us\nnot-a-key,1\n", "csv", "bad key"),
    ("latency_us\n1\n", "csv", "bad key"),
    ("key,latency_us\nadd:in=1x1x1,1\nadd:in=1x1x1,2\n", "csv", "twice"),
    ("", "xml", "unknown import format"),
])
def test_bad_imports_leave_no_version_behind(mem: LutStore, text: str, fmt: str,
                                             words: str) -> None:
    with pytest.raises(LutError, match=words):
        mem.import_(text, fmt, device="d", backend="b")
    assert mem.versions() == []


def test_export_unknown_format(mem: LutStore) -> None:
    v = filled(mem, {KEYS[0]: 1.0})
    with pytest.raises(LutError, match="unknown export format"):
        mem.export(v, "xml")


def test_fingerprint_hash_ignores_key_order() -> None:
    assert fingerprint_hash({"a": 1, "b": 2}) == fingerprint_hash({"b": 2, "a": 1})
    assert fingerprint_hash({"a": 1}) != fingerprint_hash({"a": 2})


# -- the writer lock ------------------------------------------------------------------------


def test_second_writer_is_refused_while_another_process_holds_the_lock(
        store: LutStore, lut_path: Path, lock_holder) -> None:
    holder = lock_holder(lut_path)
    with pytest.raises(StoreLocked) as e:
        store.lock()
    assert f"pid {holder.pid}" in str(e.value) and "resumes" in str(e.value)
    holder.stdin.close()
    holder.wait(timeout=10)
    store.lock()  # the OS dropped the dead holder's lock
    store.lock()  # taking it twice in one store is harmless
    with pytest.raises(StoreLocked):
        LutStore.open(lut_path).lock()  # another open file description, same process
    store.unlock()
    other = LutStore.open(lut_path)
    other.lock()
    other.close()


def test_readers_need_no_lock(store: LutStore, lut_path: Path, lock_holder) -> None:
    v = filled(store, {KEYS[0]: 1.0})
    lock_holder(lut_path)
    with LutStore.open(lut_path) as reader:
        assert reader.table(reader.version(1)) == store.table(v)


def test_import_stores_canonical_keys(mem: LutStore) -> None:
    """A hand-written key is stored as its canonical form, or no lookup would find it."""
    v = mem.import_('key,latency_us,status\n" conv2d:out=16,in=8x8x8 ",42.5,ok\n', "csv",
                    device="host", backend="tflite-cpu")
    assert mem.table(v) == {KEYS[0]: 42.5}


def test_opening_waits_for_another_process_creating_the_file(tmp_path: Path) -> None:
    """Two sweeps started at once on a new file: the second waits for the first to create
    the schema, instead of calling the file 'not a netadapt LUT (database is locked)'."""
    import threading
    import time

    path = tmp_path / "new.db"
    first = sqlite_utils.Database(path)  # the first process, half way through creating it
    first.execute("PRAGMA journal_mode = wal")
    first.execute("BEGIN IMMEDIATE")
    for migrate in MIGRATIONS:
        migrate(first)
    out: dict = {}

    def second() -> None:
        try:
            with LutStore.open(path, create=True) as store:
                out["versions"] = store.versions()
        except Exception as e:  # noqa: BLE001 - reported below
            out["error"] = e

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.3)
    first.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    first.execute("COMMIT")
    t.join(10)
    first.close()
    assert out == {"versions": []}
