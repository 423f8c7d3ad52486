"""The `make bench` sections of the NetAdapt numbers (demo, compare) on tiny fake run folders,
and the README rows rendered from them."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from adapter.curves import interpolate_curve, speedup_at_equal_accuracy
from benchmarks import compare_bench, demo_bench, headline
from benchmarks import run as bench_run
from tests.fakes import FakeRunner

REPO = Path(__file__).resolve().parent.parent
# network name -> (test accuracy, file size: a FakeRunner's latency follows it)
NETS = {"initial": (0.79, 9000), "adapted": (0.78, 6000), "x0.125": (0.70, 3000),
        "x0.25": (0.76, 5000), "x0.28 (equal latency)": (0.775, 6500), "x0.375": (0.80, 8000)}


def _entry(folder: Path, name: str, int8: bool, files: dict[str, bytes] | None = None) -> dict:
    """One network of a run, its float file (and int8 file, half the size) written."""
    acc, size = NETS[name]
    stem = name.replace(" ", "_").replace("(", "").replace(")", "")
    (folder / f"{stem}.tflite").write_bytes((files or {}).get(name, b"f" * size))
    entry = {"name": name, "test_acc": acc, "latency_ms": size / 1e5,
             "exports": {"tflite": str(folder / f"{stem}.tflite")}}
    if int8:
        (folder / f"{stem}_int8.tflite").write_bytes((files or {}).get(name, b"i" * (size // 2)))
        entry["int8"] = {"tflite": str(folder / f"{stem}_int8.tflite"), "test_acc": acc,
                         "drop_points": 0.25}
    return entry


def make_demo_run(folder: Path, int8: bool, finished: bool = True,
                  files: dict[str, bytes] | None = None) -> Path:
    """A demo run folder shaped as `make adapt` leaves it (``files``: the networks' bytes)."""
    folder.mkdir(parents=True)
    initial, adapted = (_entry(folder, n, int8, files) for n in ("initial", "adapted"))
    result = {
        "config": {"dtype": "int8" if int8 else "float32"},
        "initial": initial, "adapted": adapted,
        "exports": {"tflite": adapted["exports"]["tflite"],
                    "initial": {"tflite": initial["exports"]["tflite"]}},
        "multipliers": [_entry(folder, n, int8, files) for n in NETS
                        if n not in ("initial", "adapted")],
        "measured_budget": {"relative": 0.75},
        "quality": {"measured_ratio": 0.7, "speedup_at_equal_accuracy": 1.1}}
    if finished:
        result["wall_s"] = 1.0
    (folder / "result.json").write_text(json.dumps(result))
    return folder


def test_demo_without_runs_is_skipped_with_its_command(tmp_path: Path) -> None:
    make_demo_run(tmp_path / demo_bench.DEMOS["float32"][0], int8=False, finished=False)
    out: dict = {}
    demo_bench.run(out, tmp_path, rounds=1, runner=FakeRunner())
    assert "no finished run" in out["float32"]["skipped"]
    assert out["float32"]["skipped"].endswith("run make adapt, then python -m benchmarks.run "
                                              "--only demo")
    assert "no run in" in out["int8"]["skipped"] and "make adapt DTYPE=int8" in out["int8"][
        "skipped"]


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_demo_times_the_runs_files_and_reads_the_curve_from_those_timings(
        tmp_path: Path, dtype: str) -> None:
    make_demo_run(tmp_path / demo_bench.DEMOS[dtype][0], int8=dtype == "int8")
    out: dict = {}
    demo_bench.run(out, tmp_path, rounds=2, runner=FakeRunner())
    got = out[dtype]
    ms = got["measured_ms"]
    assert set(ms) == set(NETS) and got["rounds"] == 2 and got["files"] == dtype
    size = {n: s // 2 if dtype == "int8" else s for n, (_, s) in NETS.items()}
    # a FakeRunner's latency is the file's size (kB) + 5 us: the int8 run timed its int8 files
    assert ms["initial"] / ms["adapted"] == pytest.approx(
        (size["initial"] / 1000 + 5) / (size["adapted"] / 1000 + 5))
    assert got["measured_ratio"] == pytest.approx(ms["adapted"] / ms["initial"])
    assert got["budget"] == 0.75 and got["within_budget"] is (got["measured_ratio"] <= 0.75)
    mult = [n for n in NETS if n not in ("initial", "adapted")]
    xs, ys = [ms[n] for n in mult], [NETS[n][0] for n in mult]
    assert got["multiplier_acc_at_adapted_latency"] == interpolate_curve(xs, ys, ms["adapted"])
    assert got["speedup_at_equal_accuracy"] == speedup_at_equal_accuracy(
        xs, ys, ms["adapted"], 0.78)
    assert got["acc_gain_at_equal_latency"] == pytest.approx(
        0.78 - got["multiplier_acc_at_adapted_latency"])
    assert (got["adapted_acc"], got["initial_acc"]) == (0.78, 0.79)
    assert got["int8_drop_points"] == ([0.25, 0.25] if dtype == "int8" else None)
    assert got["at_run"]["measured_ratio"] == 0.7  # the run's own, kept beside


def test_compare_without_runs_records_the_stored_summary(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    stored = tmp_path / "float"
    stored.mkdir()
    summary = {"seeds": [0, 1, 2], "netadapt": [{"budget": 0.5}], "when": "2026-12-01T10:00:00"}
    (stored / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setattr(compare_bench, "SETUPS", {
        "float32": ("--out", str(stored)),
        "int8": (*compare_bench.SETUPS["int8"], "--out", str(tmp_path / "nothing"))})
    monkeypatch.setattr(compare_bench, "compare", _refuse)
    out: dict = {}
    compare_bench.run(out, tmp_path / "runs")
    f = out["float32"]
    assert f["remeasured"] is False and f["when"] == "2026-12-01T10:00:00"
    assert f["netadapt"] == [{"budget": 0.5}] and len(f["missing_runs"]) == 9
    assert "make compare (trains the runs)" in f["to_remeasure"]
    assert out["int8"]["skipped"].endswith("run make compare DTYPE=int8")


def _refuse(*_a: object) -> None:
    raise AssertionError("no comparison may run without its run folders")


def test_stored_summary_without_a_date_gets_its_files(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"  # not in git: its file time
    path.write_text("{}")
    assert compare_bench.file_date(path)[:4].isdigit()
    tracked = REPO / "benchmarks" / "compare" / "summary.json"
    assert re.match(r"\d{4}-\d\d-\d\dT", compare_bench.file_date(tracked))


def test_compare_with_its_runs_measures_them_again(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    runs, calls = tmp_path / "runs", []
    for tag, seeds, budgets in (("t", (0, 1, 2), (0.75, 0.5, 0.25)), ("q", (0,), (0.5, 0.25))):
        for s in seeds:
            for b in budgets:
                folder = runs / f"compare-{tag}-s{s}-b{b:g}"
                folder.mkdir(parents=True)
                (folder / "result.json").write_text(json.dumps({"wall_s": 1}))

    def compare(args, bars) -> None:  # the measure-only call, recorded
        calls.append(args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps({"seeds": args.seeds}))

    monkeypatch.setattr(compare_bench, "compare", compare)
    monkeypatch.setattr(compare_bench, "SETUPS", {
        "float32": ("--out", str(tmp_path / "f")),
        "int8": (*compare_bench.SETUPS["int8"], "--out", str(tmp_path / "i"))})
    out: dict = {}
    compare_bench.run(out, runs, Path("my.db"), ("t", "q"), rounds=3)
    assert out == {"float32": {"seeds": [0, 1, 2], "remeasured": True, "previous": None},
                   "int8": {"seeds": [0], "remeasured": True, "previous": None}}
    f, i = calls
    assert (f.tag, f.runs, f.lut, f.rounds, f.dtype, f.train_only) == (
        "t", runs, Path("my.db"), 3, "float32", False)
    assert (i.tag, i.dtype, i.width, i.budgets, i.per_class) == ("q", "int8", 1.0, [0.5, 0.25],
                                                                 1000)


def test_compare_measures_the_finished_seeds_beside_the_summary_it_replaces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs, out_dir = tmp_path / "runs", tmp_path / "f"
    for b in (0.75, 0.5, 0.25):  # seed 0 finished, seed 1 still training its last budget
        for s in (0, 1):
            folder = runs / f"compare-t-s{s}-b{b:g}"
            folder.mkdir(parents=True)
            if s == 0 or b != 0.25:
                (folder / "result.json").write_text(json.dumps({"wall_s": 1}))
    out_dir.mkdir()
    old = {"when": "2026-12-02T10:00:00", "seeds": [0, 1, 2], "lut": "old.db@1",
           "multipliers": [{"name": "x0.25", "ms": 0.03, "acc": 0.8, "n": 3}],
           "netadapt": [{"name": "0.5", "ms": 0.05, "acc": 0.84, "n": 3,
                         "speedup_at_equal_accuracy": 1.68, "acc_gain_at_equal_latency": 0.01}]}
    (out_dir / "summary.json").write_text(json.dumps(old))

    def compare(args, bars) -> None:
        (args.out / "summary.json").write_text(json.dumps({"seeds": args.seeds}))

    monkeypatch.setattr(compare_bench, "compare", compare)
    args = compare_bench.parser().parse_args(["--seeds", "0", "1", "--tag", "t", "--runs",
                                              str(runs), "--out", str(out_dir)])
    got = compare_bench.comparison(args)
    assert got["seeds"] == [0] and got["seeds_not_finished"] == [1] and got["remeasured"]
    assert got["previous"]["seeds"] == [0, 1, 2]
    assert got["previous"]["netadapt"] == [{k: v for k, v in old["netadapt"][0].items()
                                            if k != "n"}]


def _make_var(name: str) -> list[str]:
    text = (REPO / "Makefile").read_text()
    return shlex.split(re.search(rf"^{name} :?\??= (.*)$", text, re.MULTILINE).group(1))


def test_the_sections_setups_are_the_makefiles() -> None:
    p = compare_bench.parser()
    assert vars(p.parse_args(_make_var("COMPARE_ARGS"))) == vars(p.parse_args([]))
    assert _make_var("COMPARE_INT8") == list(compare_bench.SETUPS["int8"])
    adapt = (REPO / "Makefile").read_text()
    assert "--name demo-$(DEVICE)-$(ADAPT_RES)-fashion-x0.5$(if $(DTYPE),-$(DTYPE))" in adapt
    assert "ADAPT_RES ?= 32" in adapt
    assert demo_bench.DEMOS["int8"][0] == demo_bench.DEMOS["float32"][0] + "-int8"


def test_make_bench_runs_the_sections_with_their_options(tmp_path: Path) -> None:
    bench_run.main(["--only", "demo", "--runs", str(tmp_path / "none"), "--probe-seconds",
                    "0.5", "--out", str(tmp_path / "results.md")])
    got = json.loads((tmp_path / "results.json").read_text())["sections"]["demo"]
    assert str(tmp_path / "none") in got["float32"]["skipped"]
    assert "machine_state" in got and "compare" in bench_run.SECTIONS
    # the machine's own noise, probed just before, with the section (and in its Markdown)
    assert got["quiet_probe"]["invokes"] > 0 and got["quiet_probe"]["waited_s"] == 0
    assert got["quiet_probe_after"]["invokes"] > 0  # and again after it
    summary = (tmp_path / "results.md").read_text()
    assert "Before it: load" in summary and "After it: load" in summary


# -- the README's rows ---------------------------------------------------------------------------


def _with_sections(tmp_path: Path) -> dict:
    results = headline.load()
    for dtype in ("float32", "int8"):
        make_demo_run(tmp_path / demo_bench.DEMOS[dtype][0], int8=dtype == "int8")
    demo: dict = {"when": "2026-12-07T10:00:00"}
    demo_bench.run(demo, tmp_path, rounds=1, runner=FakeRunner())
    point = {"budget": 0.5, "speedup_at_equal_accuracy": 1.68, "acc_gain_at_equal_latency": 0.0088}
    compare = {"when": "2026-12-07T11:00:00",
               "float32": {"netadapt": [point, {**point, "budget": 0.25,
                                                "speedup_at_equal_accuracy": None}],
                           "seeds": [0, 1, 2], "remeasured": False, "when": "2026-12-02T06:05"},
               "int8": {"netadapt": [point], "seeds": [0], "remeasured": True,
                        "when": "2026-12-07T11:00:00",
                        "previous": {"when": "2026-12-06T19:00:00", "seeds": [0, 1],
                                     "netadapt": [{**point, "name": "0.5",
                                                   "speedup_at_equal_accuracy": 0.36}]}}}
    results["sections"].update(demo=demo, compare=compare)
    return results


def test_rows_render_before_the_sections_have_run() -> None:
    results = headline.load()
    for name in ("demo", "compare"):
        results["sections"].pop(name, None)
    lines = headline.table(results).splitlines()
    absent = [line for line in lines if "not run yet" in line]
    assert len(absent) == 3
    assert "(`make adapt DTYPE=int8`, then `make bench`) | demo |" in absent[0]
    assert all(line.count("|") == 4 for line in lines)


def test_rows_render_the_sections(tmp_path: Path) -> None:
    results = _with_sections(tmp_path)
    table = headline.table(results)
    d = results["sections"]["demo"]["int8"]
    assert (f"| {d['measured_ratio']:.2f} (0.75); 78.0 %, 79.0 %, +0.25 pt; "
            f"{100 * d['multiplier_acc_at_adapted_latency']:.1f} %; ") in table
    assert "| 0.5: 1.68x, +0.9 pt; 0.25: n/a, +0.9 pt (3 seeds, stored) | compare, 2026-12-02 |" \
        in table
    assert ("| 0.5: 1.68x, +0.9 pt (1 seed); before, 2026-12-06: 0.5: 0.36x, +0.9 pt (2 seeds) "
            "| compare, 2026-12-07 |") in table
    assert "not run yet" not in table


def test_a_skipped_part_renders_absent_and_a_wrong_path_fails(tmp_path: Path) -> None:
    results = _with_sections(tmp_path)
    results["sections"]["demo"]["int8"] = {"skipped": "no run"}
    assert "not run yet (`make adapt DTYPE=int8`" in headline.table(results)
    results["sections"]["compare"]["int8"] = {"seeds": [0]}  # ran, but without its numbers
    with pytest.raises(KeyError, match="netadapt"):
        headline.table(results)


def test_agreement_table_has_a_row_per_test_set() -> None:
    lines = headline.table(headline.load(), headline.AGREEMENT,
                           headline.AGREEMENT_HEADER).splitlines()
    assert len(lines) == 2 + 9 and len({line.count("|") for line in lines}) == 1
    assert lines[0].startswith("| test set | n | within ±5 % | re-levelled now | bias | limits")
    # within ±5 % as stored, then re-levelled by calibration networks measured beside
    assert all(re.search(r"\| \d+ \| \d+ \| \d+ \| [+-]\d+\.\d % \| [+-][\d.]+ to [+-][\d.]+ % "
                         r"\|", line) for line in lines[2:])
    results = headline.load()
    del results["sections"]["files"]
    absent = headline.table(results, headline.AGREEMENT, headline.AGREEMENT_HEADER)
    assert absent.count("| not run yet (`make bench`) |  |  |  |  |  |  | files |") == 5


@pytest.mark.sweep
def test_demo_times_real_files_on_this_host(tmp_path: Path) -> None:
    """The section's own timing path (this host's runner), on tiny real networks."""
    from bench import zoo
    from bench.tflite_build import build_network

    widths = {"initial": 0.5, "adapted": 0.3, "x0.125": 0.125, "x0.25": 0.25,
              "x0.28 (equal latency)": 0.28, "x0.375": 0.375}
    files = {n: build_network(zoo.MOBILENET_V1.network(width_mult=m, resolution=16, classes=10))
             for n, m in widths.items()}
    make_demo_run(tmp_path / demo_bench.DEMOS["float32"][0], int8=False, files=files)
    out: dict = {}
    demo_bench.run(out, tmp_path, rounds=1)
    got = out["float32"]
    assert set(got["measured_ms"]) == set(widths) and all(
        ms > 0 for ms in got["measured_ms"].values())
    assert got["measured_ratio"] == pytest.approx(
        got["measured_ms"]["adapted"] / got["measured_ms"]["initial"])
