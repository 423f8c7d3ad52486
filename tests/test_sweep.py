"""bench.sweep: plan -> batches -> runners -> one LUT version, resumable at any moment.

The logic is tested with fake runners (no LiteRT); the resumability with a real
`netadapt lut` process killed with SIGKILL mid-sweep, several times."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench import sweep, sweep_plan, sweep_run, sweep_seal
from bench.runners.base import BatchItem, Failure, RunnerError, Timing
from bench.zoo import MOBILENET_V1, shape_space
from lut_db.errors import SetupMismatch
from lut_db.spec import LayerSpec
from lut_db.store import LutStore
from netadapt_cli.main import app
from tests import fakes
from tests.fakes import macs_us

FP = {"device": "fake", "runs": 3}
SPECS = [LayerSpec("conv2d", 8, 8, c, o) for c in (8, 16, 24) for o in (8, 16, 32)]
MORE = [LayerSpec("conv2d", 8, 8, 40, o) for o in (8, 16)]


def fake_us(key: str) -> float:
    return macs_us(BatchItem(key, b""))


def fake_build(spec: LayerSpec) -> bytes:
    return spec.key.encode()


class FakeRunner(fakes.FakeRunner):
    """The shared fake, timing by MACs (the models here are only their keys)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, us=macs_us, **kwargs)


def keys_of(specs) -> set[str]:
    return {s.key for s in specs}


def sweep_once(store: LutStore, specs, runners, batch_size: int = 4, seal: bool = True,
               space: dict | None = None) -> sweep_run.SweepResult:
    p = sweep_plan.plan(store, "fake", "tflite-cpu", runners[0].fingerprint(), specs)
    v = sweep_plan.start_version(store, p, "fake", "tflite-cpu", runners[0].fingerprint(),
                                 space or {"sweeps": [{"n": len(specs)}]})
    return sweep_run.run(store, v, p.missing, runners, fake_build, batch_size, seal=seal)


# -- plan and resume ------------------------------------------------------------------------


def test_plan_of_a_new_lut() -> None:
    store = LutStore.memory()
    p = sweep_plan.plan(store, "fake", "tflite-cpu", FP, SPECS + SPECS[:3])
    assert (p.action, p.version, p.parent, p.total, p.done) == ("new", None, None, 9, 0)
    assert set(p.missing) == keys_of(SPECS) and len(p.missing) == 9
    assert p.missing != sorted(p.missing)  # shuffled, so drift spreads over the table ...
    again = sweep_plan.plan(store, "fake", "tflite-cpu", FP, SPECS)
    assert again.missing == p.missing  # repeatably


MV = ["fully_connected:in=1x1x448,out=1000,act=none,dt=float32",
      "conv2d:in=1x1x448,out=1000,k=1x1,s=1x1,pad=same,act=none,dt=float32"]
OTHER = ["conv2d:in=8x8x24,out=40,k=1x1,s=1x1,pad=same,act=relu6,dt=float32",
         "depthwise_conv2d:in=1x1x128,k=3x3,s=1x1,pad=same,act=relu6,dt=float32",
         "fully_connected-but-not-a-key"]


def test_batches_keep_matrix_vector_layers_apart() -> None:
    keys = [OTHER[0], MV[0], OTHER[1], MV[1], OTHER[2], MV[0] + "x"]
    got = sweep_plan.batches(keys, 2)
    assert [k for b in got for k in b if k in MV] == MV  # each kind in its order
    assert sorted(k for b in got for k in b) == sorted(keys)  # every key once
    assert all(len(b) <= 2 and len({sweep_plan.matrix_vector(k) for k in b}) == 1 for b in got)
    assert got[0] == [OTHER[0], OTHER[1]] and got[1] == MV  # in the order of their first key
    assert [sweep_plan.matrix_vector(k) for k in [*MV, *OTHER]] == [True] * 2 + [False] * 3


def test_a_sweep_hands_matrix_vector_layers_over_apart() -> None:
    specs = [LayerSpec.parse(k) for k in [*MV, *OTHER[:2]]]
    runner = FakeRunner()
    sweep_once(LutStore.memory(), specs, [runner], batch_size=4)
    assert all(len({sweep_plan.matrix_vector(k) for k in b}) == 1 for b in runner.handed)


def test_stop_and_resume_measures_only_what_is_missing() -> None:
    store = LutStore.memory()
    with pytest.raises(RunnerError) as e:
        sweep_once(store, SPECS, [FakeRunner(die_at=3)], batch_size=2)
    assert "5 keys left" in str(e.value) and "run the same command again" in str(e.value)
    assert "unplugged" in str(e.value)
    (v,) = store.versions()
    assert v.status == "building" and len(store.keys(v)) == 4  # two batches were stored
    stored = store.entries(v)

    p = sweep_plan.plan(store, "fake", "tflite-cpu", FP, SPECS)
    assert (p.action, p.version.id, p.done) == ("resume", v.id, 4)
    assert set(p.missing) == keys_of(SPECS) - store.keys(v)
    runner = FakeRunner()
    res = sweep_once(store, SPECS, [runner])
    assert sorted(runner.keys) == sorted(p.missing + [sweep_seal.OVERHEAD_SPEC.key])
    assert res.version.id == v.id and res.version.status == "sealed"
    assert res.measured == 5 and res.failed == 0
    assert store.keys(v) == keys_of(SPECS)
    assert [r for r in store.entries(v) if r["key"] in {s["key"] for s in stored}] == stored
    assert store.stats(v)["invoke_overhead_us"] == fake_us(sweep_seal.OVERHEAD_SPEC.key)


class _TimingRunner(FakeRunner):
    """Counts 1 ms of timed invokes per model, as the host runner counts its invokes."""

    timed_ns = 0

    def measure(self, batch):
        self.timed_ns += 1_000_000 * len(batch)
        return super().measure(batch)


def test_sweep_efficiency_counts_only_its_own_invokes() -> None:
    runner = _TimingRunner()  # one runner for two sweeps, as a benchmark building two LUTs
    first = sweep_once(LutStore.memory(), SPECS, [runner])
    second = sweep_once(LutStore.memory(), SPECS, [runner])
    assert first.timed_s == second.timed_s == pytest.approx(1e-3 * len(SPECS))


def test_the_machine_state_is_sealed_with_the_version(tmp_path: Path) -> None:
    store = LutStore.open(tmp_path / "busy.db", create=True)
    res = sweep_once(store, SPECS, [FakeRunner(state=fakes.BUSY)])
    assert res.states == [fakes.BUSY]
    assert store.stats(res.version)["machine_busy"] == 1.0
    (state,) = store.stat_detail(res.version, "machine_busy")
    assert state["busy"] and state["reasons"] == fakes.BUSY.reasons()
    store.close()
    shown = CliRunner().invoke(app, ["db", "show", str(tmp_path / "busy.db")])
    assert shown.exit_code == 0 and "machine while swept: host over 60 s" in shown.output
    assert "(busy: other processes used 1.20 of 2 cores" in shown.output
    # a resumed sweep keeps every session's state
    again = LutStore.memory()
    first = sweep_once(again, SPECS, [FakeRunner(state=fakes.QUIET)], seal=False)
    rest = sweep_plan.plan(again, "fake", "tflite-cpu", FP, SPECS).missing
    assert rest == []  # all measured, only not sealed: a resume seals it
    sweep_run.run(again, first.version, [], [FakeRunner(state=fakes.BUSY)], fake_build)
    states = again.stat_detail(first.version, "machine_busy")
    assert [s["busy"] for s in states] == [False, True]
    assert again.stats(first.version)["machine_busy"] == 1.0
    quiet = LutStore.memory()
    v = sweep_once(quiet, SPECS, [FakeRunner()]).version  # a runner that knows no machine
    assert "machine_busy" not in quiet.stats(v)


def test_sealed_and_complete_is_up_to_date() -> None:
    store = LutStore.memory()
    sweep_once(store, SPECS, [FakeRunner()])
    p = sweep_plan.plan(store, "fake", "tflite-cpu", FP, SPECS[:4])
    assert (p.action, p.version.id, p.missing, p.done) == ("up-to-date", 1, [], 4)


def test_a_bigger_space_derives_a_new_version() -> None:
    store = LutStore.memory()
    first = sweep_once(store, SPECS, [FakeRunner()], space={"sweeps": ["a"]}).version
    p = sweep_plan.plan(store, "fake", "tflite-cpu", FP, SPECS + MORE)
    assert (p.action, p.version, p.parent.id) == ("derive", None, first.id)
    assert set(p.missing) == keys_of(MORE) and p.total == len(SPECS) + len(MORE)
    runner = FakeRunner()
    res = sweep_once(store, SPECS + MORE, [runner], space={"sweeps": ["b"]})
    v = res.version
    assert v.id == 2 and v.parent == first.id and v.status == "sealed"
    assert v.note == f"derived from fake@{first.id}: +2 keys"
    assert v.space == {"sweeps": ["a", "b"]}
    assert store.keys(v) == keys_of(SPECS + MORE)
    assert store.keys(first) == keys_of(SPECS)  # the sealed parent did not change
    assert set(runner.keys) == keys_of(MORE) | {sweep_seal.OVERHEAD_SPEC.key}
    assert store.stats(v) and store.stats(first)


def test_another_setup_starts_a_new_version() -> None:
    store = LutStore.memory()
    sweep_once(store, SPECS, [FakeRunner()])
    p = sweep_plan.plan(store, "fake", "tflite-cpu", {**FP, "threads": 4}, SPECS)
    assert p.action == "new" and len(p.missing) == len(SPECS)
    p = sweep_plan.plan(store, "fake", "tflite-gpu", FP, SPECS)
    assert p.action == "new"


def test_resume_merges_the_space() -> None:
    store = LutStore.memory()
    with pytest.raises(RunnerError):
        sweep_once(store, SPECS, [FakeRunner(die_at=2)], space={"sweeps": ["a"]})
    sweep_once(store, SPECS, [FakeRunner()], space={"sweeps": ["b"]})
    assert store.version(1).space == {"sweeps": ["a", "b"]}
    merged = sweep_plan.merge_space({"sweeps": ["a"]}, {"sweeps": ["a", "c"]})
    assert merged == {"sweeps": ["a", "c"]}


def test_failures_are_stored_and_counted() -> None:
    store = LutStore.memory()
    bad = tuple(sorted(keys_of(SPECS))[:2])
    seen: list[int] = []
    p = sweep_plan.plan(store, "fake", "tflite-cpu", FP, SPECS)
    v = sweep_plan.start_version(store, p, "fake", "tflite-cpu", FP, {})
    res = sweep_run.run(store, v, p.missing, [FakeRunner(bad=bad)], fake_build, 4,
                        progress=lambda n, serial: seen.append(n))
    assert (res.measured, res.failed) == (7, 2)
    assert sum(seen) == 9 and res.per_serial == {"fake": 9}
    assert {f["key"] for f in store.failures(v)} == set(bad)
    assert sweep_plan.plan(store, "fake", "tflite-cpu", FP, SPECS).action == "up-to-date"


class BrokenToolRunner(FakeRunner):
    """The tool is missing from the ``broken_from``-th key on; with ``errors``, each key
    fails with the next of them in turn (None: that one is measured)."""

    def __init__(self, broken_from: int = 0,
                 errors: tuple[str | None, ...] = ("exit code 127",)):
        super().__init__()
        self.broken_from, self.errors = broken_from, errors

    def measure(self, batch: list[BatchItem]) -> list:
        out = []
        for item in batch:
            n = len(self.keys)
            self.keys.append(item.key)
            error = self.errors[n % len(self.errors)] if n >= self.broken_from else None
            out.append(Failure(error, "sh: benchmark_model: not found") if error
                       else Timing.from_samples([fake_us(item.key)] * 3))
        return out


def _run(store: LutStore, runner: FakeRunner, stop_after: int) -> sweep_run.SweepResult:
    p = sweep_plan.plan(store, "fake", "tflite-cpu", FP, SPECS)
    v = sweep_plan.start_version(store, p, "fake", "tflite-cpu", FP, {})
    return sweep_run.run(store, v, p.missing, [runner], fake_build, 2, stop_after=stop_after)


def test_a_broken_tool_stops_early_and_resume_retries_its_keys() -> None:
    store = LutStore.memory()
    with pytest.raises(sweep_run.BrokenTool) as e:
        _run(store, BrokenToolRunner(), stop_after=3)
    msg = str(e.value)
    assert "stopped early: the first 3 models on fake failed with the same error" in msg
    assert "exit code 127" in msg and msg.count("sh: benchmark_model: not found") == 1
    # the worker may finish batches it took before the stop: they are stored too
    v = store.version(1)
    failed = store.counts(v)["failed"]
    assert f"0 keys measured so far are stored, and the {failed} failed ones are retried" in msg
    assert v.status == "building" and store.counts(v) == {"failed": failed}
    fixed = FakeRunner()
    res = _run(store, fixed, stop_after=3)
    assert sorted(fixed.keys) == sorted([*keys_of(SPECS), sweep_seal.OVERHEAD_SPEC.key])
    assert res.version.status == "sealed"
    assert store.counts(v) == {"ok": 9} and store.failures(v) == []


def test_keys_measured_before_the_tool_broke_are_kept() -> None:
    store = LutStore.memory()
    with pytest.raises(sweep_run.BrokenTool, match="3 models in a row on fake") as e:
        _run(store, BrokenToolRunner(broken_from=3), stop_after=3)
    assert "3 keys measured so far are stored" in str(e.value)
    v = store.version(1)
    kept = store.keys(v, status="ok")
    assert len(kept) == 3 and store.counts(v)["failed"] >= 3
    fixed = FakeRunner()
    _run(store, fixed, stop_after=3)
    assert sorted(fixed.keys) == sorted([*(keys_of(SPECS) - kept), sweep_seal.OVERHEAD_SPEC.key])
    assert store.counts(v) == {"ok": 9}


def test_models_failing_with_different_errors_are_not_a_broken_tool() -> None:
    store = LutStore.memory()
    with pytest.raises(RunnerError, match="per-invoke overhead") as e:  # as before this stop
        _run(store, BrokenToolRunner(errors=("exit code 1", "exit code 2")), stop_after=2)
    assert not isinstance(e.value, sweep_run.BrokenTool)
    assert store.counts(store.version(1)) == {"failed": 9}


def test_a_tool_failing_on_some_models_keeps_todays_behaviour() -> None:
    store = LutStore.memory()
    runner = BrokenToolRunner(errors=("exit code 1", None))  # every other model fails
    res = _run(store, runner, stop_after=2)
    assert res.version.status == "sealed" and res.failed == 5
    assert {(f["key"], f["output"]) for f in store.failures(res.version)} == {
        (k, "sh: benchmark_model: not found") for k in runner.keys[:9:2]}


def test_several_runners_share_the_work() -> None:
    store = LutStore.memory()
    a, b = FakeRunner("a"), FakeRunner("b")
    res = sweep_once(store, SPECS + MORE, [a, b], batch_size=1)
    assert sum(res.per_serial.values()) == len(SPECS) + len(MORE)
    assert sorted(a.keys + b.keys) == sorted(keys_of(SPECS + MORE) | {sweep_seal.OVERHEAD_SPEC.key})
    assert len(set(a.keys) & set(b.keys)) == 0


class Gate(FakeRunner):
    """Runner 'b' takes one batch, waits until 'a' has measured all the others, then dies."""

    def __init__(self, serial: str, events: dict[str, threading.Event], batches: int):
        super().__init__(serial)
        self.events, self.batches = events, batches

    def measure(self, batch: list[BatchItem]) -> list:
        if self.serial == "b":
            self.events["b_started"].set()
            self.events["a_did_the_rest"].wait(10)
            time.sleep(0.3)  # let 'a' find the queue empty
            raise RunnerError("b was unplugged")
        self.events["b_started"].wait(10)
        out = super().measure(batch)
        if self.calls == self.batches - 1:
            self.events["a_did_the_rest"].set()
        return out


def test_a_runner_that_drops_out_loses_nothing(lut_path: Path) -> None:
    """The dead phone's batch goes back to the queue and the other phone measures it,
    even when that phone had found the queue empty in the meantime."""
    events = {"b_started": threading.Event(), "a_did_the_rest": threading.Event()}
    n = len(SPECS) + len(MORE)
    a, b = Gate("a", events, n), Gate("b", events, n)
    out: dict[str, Any] = {}

    def go() -> None:  # the store's connection belongs to the thread that opens it
        try:
            with LutStore.open(lut_path, create=True) as store:
                out["res"] = sweep_once(store, SPECS + MORE, [a, b], batch_size=1)
        except Exception as e:  # noqa: BLE001 - reported below
            out["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "the sweep hung after a runner dropped out"
    assert "error" not in out, out.get("error")
    res = out["res"]
    assert res.per_serial == {"a": n} and res.version.status == "sealed"
    with LutStore.open(lut_path) as store:
        assert store.keys(res.version) == keys_of(SPECS + MORE)


def test_all_runners_gone_is_an_error_not_a_hang() -> None:
    store = LutStore.memory()
    with pytest.raises(RunnerError, match="keys left"):
        sweep_once(store, SPECS, [FakeRunner("a", die_at=2), FakeRunner("b", die_at=1)],
                   batch_size=1)
    assert store.versions()[0].status == "building"


def test_overhead_failure_is_an_error_and_keeps_the_version_building() -> None:
    store = LutStore.memory()
    runner = FakeRunner(bad=(sweep_seal.OVERHEAD_SPEC.key,))
    with pytest.raises(RunnerError, match="per-invoke overhead"):
        sweep_once(store, SPECS, [runner])
    v = store.version(1)
    assert v.status == "building" and store.keys(v) == keys_of(SPECS)


def test_measure_missing_derives_a_sealed_version() -> None:
    store = LutStore.memory()
    v = sweep_once(store, SPECS, [FakeRunner()]).version
    new = sweep.measure_missing(store, v, sorted(keys_of(MORE)), [FakeRunner()], fake_build)
    assert new.parent == v.id and new.status == "sealed"
    assert store.keys(new) == keys_of(SPECS + MORE)
    assert "measured on demand" in new.note
    with pytest.raises(SetupMismatch) as e:
        sweep.measure_missing(store, v, sorted(keys_of(MORE)),
                              [FakeRunner(fp={**FP, "runs": 9, "threads": 2})], fake_build)
    assert "differs in: runs, threads" in str(e.value) and "netadapt lut" in str(e.value)
    assert len(store.versions()) == 2


# -- a real sweep, killed with SIGKILL and resumed ------------------------------------------

NETADAPT = str(Path(sys.executable).parent / "netadapt")
SWEEP = ["lut", "--no-calibrate", "--device", "fast", "--space", "mobilenet_v1", "--grid", "64",
         "--classes", "10",
         "--batch-size", "4"]


def planned(resolution: int) -> set[str]:
    return {s.key for s in shape_space(MOBILENET_V1, resolution, 64, 10)}


def stored_rows(db: Path) -> dict[str, tuple]:
    """key -> (version, measured_at, latency, samples), read through a read-only connection."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT key, version, measured_at, latency_us, samples_us "
                           "FROM measurements").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    finally:
        con.close()
    return {k: tuple(rest) for k, *rest in rows}


def start(db: Path, configs: Path) -> subprocess.Popen:
    env = {**os.environ, "NETADAPT_CONFIGS": str(configs)}
    return subprocess.Popen([NETADAPT, *SWEEP, "--resolution", "32", "--lut", str(db)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> dict[str, Any]:
    """Kill a real sweep three times at growing progress, then let it finish."""
    from tests.fakes import FAST_TOML

    tmp = tmp_path_factory.mktemp("sweep")
    configs = tmp / "configs"
    configs.mkdir()
    (configs / "fast.toml").write_text(FAST_TOML)
    db = tmp / "host.db"
    before_kill: dict[str, tuple] = {}
    kills = []
    total = len(planned(32))
    for fraction in (0.1, 0.35, 0.65):
        proc = start(db, configs)
        deadline = time.monotonic() + 60
        while len(stored_rows(db)) < fraction * total and proc.poll() is None:
            assert time.monotonic() < deadline, "the sweep made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate(timeout=30)[0]
        rows = stored_rows(db)
        con = sqlite3.connect(db)
        kills.append({"returncode": proc.returncode, "output": out, "rows": rows,
                      "integrity": con.execute("PRAGMA integrity_check").fetchone()[0],
                      "status": con.execute("SELECT status FROM versions").fetchall(),
                      "lost": {k: v for k, v in before_kill.items() if rows.get(k) != v}})
        con.close()
        before_kill = rows
    final = subprocess.run([NETADAPT, *SWEEP, "--resolution", "32", "--lut", str(db)], check=False,
                           env={**os.environ, "NETADAPT_CONFIGS": str(configs)},
                           capture_output=True, text=True, timeout=120)
    return {"db": db, "configs": configs, "kills": kills, "final": final, "total": total}


@pytest.mark.sweep
def test_kill_and_resume(killed_and_resumed: dict[str, Any]) -> None:
    r = killed_and_resumed
    for i, kill in enumerate(r["kills"]):
        assert kill["returncode"] == -signal.SIGKILL, kill["output"]  # killed mid-sweep
        assert kill["integrity"] == "ok"
        assert kill["status"] == [("building",)]  # one version, still building
        assert not kill["lost"]  # every row stored before the kill is there, unchanged
        assert 0 < len(kill["rows"]) < r["total"]
        if i:
            assert "resuming" in kill["output"] and "@1" in kill["output"]
            assert len(kill["rows"]) > len(r["kills"][i - 1]["rows"])
    final = r["final"]
    assert final.returncode == 0, final.stdout + final.stderr
    assert "resuming" in final.stdout and "sealed" in final.stdout
    assert "Traceback" not in final.stdout + final.stderr
    rows = stored_rows(r["db"])
    assert set(rows) == planned(32)  # the planned key set, no more, no less
    assert {v[0] for v in rows.values()} == {1}  # the same version id, resumed every time
    before = r["kills"][-1]["rows"]
    assert {k: rows[k] for k in before} == before  # not re-measured, not rewritten
    con = sqlite3.connect(r["db"])
    assert con.execute("SELECT count(*), count(DISTINCT key) FROM measurements").fetchone() == (
        r["total"], r["total"])
    assert con.execute("SELECT id, status, parent FROM versions").fetchall() == [
        (1, "sealed", None)]
    assert con.execute("SELECT count(*) FROM version_stats WHERE version = 1 AND "
                       "name = 'invoke_overhead_us'").fetchone() == (1,)
    con.close()


def _dump(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT * FROM versions UNION ALL SELECT version, key, measured_at, "
                       "latency_us, samples_us, status, NULL, NULL, NULL, NULL, NULL "
                       "FROM measurements ORDER BY 1, 2").fetchall()
    con.close()
    return rows


def _copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


@pytest.mark.sweep
def test_up_to_date_second_run_does_nothing(killed_and_resumed, tmp_path: Path,
                                            monkeypatch) -> None:
    monkeypatch.setenv("NETADAPT_CONFIGS", str(killed_and_resumed["configs"]))
    db = _copy(killed_and_resumed["db"], tmp_path / "host.db")
    before = _dump(db)
    for _ in range(2):  # twice in one process: the first run let go of the writer lock
        res = CliRunner().invoke(app, [*SWEEP, "--resolution", "32", "--lut", str(db)])
        assert res.exit_code == 0, res.output
        assert "nothing to do" in " ".join(res.output.split())
    assert _dump(db) == before


@pytest.mark.sweep
def test_another_resolution_derives_a_version(killed_and_resumed, tmp_path: Path,
                                              monkeypatch) -> None:
    monkeypatch.setenv("NETADAPT_CONFIGS", str(killed_and_resumed["configs"]))
    db = _copy(killed_and_resumed["db"], tmp_path / "host.db")
    with LutStore.open(db) as store:
        v1 = store.export(store.version(1))
    res = CliRunner().invoke(app, [*SWEEP, "--resolution", "64", "--lut", str(db)])
    assert res.exit_code == 0, res.output
    assert "derived from" in res.output
    with LutStore.open(db) as store:
        v2 = store.version(2)
        assert (v2.parent, v2.status) == (1, "sealed")
        assert store.keys(v2) == planned(32) | planned(64)
        assert store.export(store.version(1)) == v1  # the parent is untouched
        assert [s["resolutions"] for s in v2.space["sweeps"]] == [[32], [64]]
        assert store.version().id == 2  # the newest sealed is what estimates use by default


@pytest.mark.sweep
def test_two_sweeps_started_at_once_on_a_new_file(tmp_path: Path) -> None:
    """One measures, the other says the file is being written, and nothing is mixed up."""
    from tests.fakes import FAST_TOML

    (tmp_path / "fast.toml").write_text(FAST_TOML)
    db = tmp_path / "new.db"
    procs = [start(db, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 1], outs
    loser = outs[[p.returncode for p in procs].index(1)]
    assert "is being written by another sweep" in loser and "Traceback" not in loser
    assert loser.count("Error") == 1
    with LutStore.open(db) as store:
        assert [(v.id, v.status) for v in store.versions()] == [(1, "sealed")]
        assert store.keys(store.version(1)) == planned(32)
