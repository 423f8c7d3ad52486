"""The paper's comparison, measured fairly: NetAdapt at several latency budgets
against width multipliers, over seeds, on Fashion-MNIST, every network measured whole on
the device as the exported .tflite file that holds its trained weights.

Per seed:
- the initial network (MobileNetV1 x``--width``) is trained with the recipe (``--epochs``
  epochs, cosine schedule, crop + flip augmentation), its test accuracy recorded per epoch;
- NetAdapt adapts it to each budget (a ratio of its latency measured on the host, the
  initial network measured alongside at every check; ``--estimated-budget``: of its
  calibrated estimate), all budgets from the same converged initial network; the short-
  and long-term fine-tunes are NetAdapt's extra training, reported beside the recipe;
- the width multipliers (``--multipliers``, relative to the initial network: 0.5 of an
  x0.5 initial network is MobileNetV1 x0.25; 1.0 is the initial network itself) are
  trained from scratch with the same recipe.
Then every exported file of every seed is timed on the device in interleaved rounds
(``bench.timing``), so drift hits all alike. Accuracy (mean +- std over seeds) against
measured latency is plotted with its Pareto front, and the speed-up at equal accuracy and
the accuracy at equal latency are computed from the mean multiplier curve.

Runs live in runs/compare-<tag>-s<seed>-b<budget> and are resumed, so a second call only
re-measures. Run: python -m benchmarks.compare_bench [--seeds 0 1 2] [--width 0.5] ...
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MULTIPLIERS = (0.25, 0.5, 0.75)
BUDGETS = (0.75, 0.5, 0.25)


def settings(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    """The AdaptConfig fields every run of this comparison shares. Budgets are on measured
    latency (the initial network measured alongside), unless ``--estimated-budget``: the
    comparison is at measured latency, so a budget the estimate meets but the file does
    not would be no budget at all."""
    measured = {} if args.estimated_budget else {"measured_on": "host",
                                                  "measured_backend": backend}
    return {**measured, "model": "mobilenet_v1", "width": args.width,
            "resolution": args.resolution,
            "data": args.data, "max_per_class": args.per_class,
            "pretrain_epochs": args.epochs, "short_steps": args.short_steps,
            "long_epochs": args.long_epochs, "reduction": args.reduction, "decay": args.decay,
            "short_floor": args.short_floor, "batch_size": 64, "dtype": args.dtype}


class Lines:
    """The library's progress (``lut_db.progress.Steps``) as plain lines on stderr: one per
    finished step, with its time and, for a step with a total, the ETA of what is left. (The
    rich bars belong to the CLI package, which benchmarks do not import; a run of an hour
    goes to a log file anyway.)"""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.started: dict[str, float] = {}
        self.done: dict[str, tuple[float, float | None]] = {}

    def __call__(self, name: str, done: float, total: float | None = None,
                 detail: str = "") -> None:
        start = self.started.setdefault(name, time.monotonic())
        self.done[name] = (done, total)
        if self.quiet or total is None or done < total:
            return
        del self.started[name], self.done[name]
        of = f" {done:g}/{total:g}" if total else ""  # a step without a total: its time
        print(f"{name}{of}{f': {detail}' if detail else ''} in "
              f"{time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)

    def counter(self, name: str, total: float) -> Callable[..., None]:
        self(name, 0, total)

        def advance(n: float, *_what: object) -> None:
            self(name, self.done[name][0] + n, total)

        return advance

    def advance(self, name: str) -> None:
        """One more of a counted step, with the ETA of the rest."""
        done, total = self.done[name]
        self(name, done + 1, total)
        if name in self.started and total and not self.quiet:
            spent = time.monotonic() - self.started[name]
            print(f"{name}: {done + 1:g}/{total:g} after {spent / 60:.1f} min, about "
                  f"{spent / (done + 1) * (total - done - 1) / 60:.0f} min left",
                  file=sys.stderr, flush=True)

    def end(self, name: str) -> None:
        if name in self.done:
            done, _ = self.done[name]
            self(name, done, done)


def space_for(lut: Path, resolution: int, log: Any, bars: Lines, dtype: str = "float32"
              ) -> tuple[Any, str, str]:
    """The MobileNetV1 search space on the host's LUT, swept at ``resolution`` (a derived
    version when the LUT lacks it; nothing to do when it is there) and calibrated, so the
    search ranks with the calibrated estimate."""
    from adapter.pipeline import search_space
    from analysis.calibrate import NETWORKS, PASSES, ensure_calibrated
    from bench.devices import open_runners
    from bench.sweep import build_lut
    from bench.sweep_space import SweepSpace
    from lut_db.fingerprint import same_setup
    from lut_db.store import LutStore

    sweep = SweepSpace(("mobilenet_v1",), (resolution,), 32, 10, dtype)
    with open_runners("host") as runners:
        step = f"sweeping {sweep.describe()}"
        swept = bars.counter(step, len(sweep.specs()))
        res = build_lut(lut, "host", runners, sweep,
                        on_plan=lambda p: swept(p.done), progress=swept)
        bars.end(step)
        step = f"calibrating {lut}@{res.version.id}"
        ensure_calibrated(lut, res.version.id, runners[0], progress=bars.counter(
            step, NETWORKS * PASSES))
        bars.end(step)
    store = LutStore.open(lut)
    # the earliest version of the lineage with the sweep's keys: later ones (keys the
    # calibration measured on demand) must not change the label resumed runs check
    need, v = {s.key for s in sweep.specs()}, res.version
    while v.parent is not None:
        parent = store.version(v.parent)
        if not same_setup(parent.fingerprint, v.fingerprint) or not need <= store.keys(parent):
            break
        v = parent
    space, label = search_space(store, v, "mobilenet_v1", resolution, 10, log=log,
                                dtype=dtype)
    return space, label, v.backend


def run_folder(args: argparse.Namespace, seed: int, budget: float) -> Path:
    return args.runs / f"compare-{args.tag}-s{seed}-b{budget:g}"


def run_seed(args: argparse.Namespace, space: Any, label: str, backend: str, dataset: Any,
             seed: int, bars: Lines) -> list[dict]:
    """One seed: the budgets' runs (the first also trains the multipliers)."""
    from adapter.config import AdaptConfig
    from adapter.pipeline import adapt

    out, initial = [], None
    for k, budget in enumerate(args.budgets):
        run_dir = run_folder(args, seed, budget)
        cfg = AdaptConfig(**settings(args, backend), budgets={"latency_ms": str(budget)},
                          lut=label, grid=space.grid, seed=seed,
                          weights=str(initial) if initial else None)
        t0 = time.perf_counter()
        r = adapt(cfg, space, dataset, run_dir, workers=args.workers, resume=True,
                  multipliers=[m * args.width for m in args.multipliers] if k == 0 else None,
                  measure=False, progress=bars,
                  log=lambda m, s=seed, b=budget: print(f"  [s{s} b{b:g}] {m}", flush=True))
        r["budget"], r["run_dir"], r["wall_s_now"] = budget, str(run_dir), time.perf_counter() - t0
        out.append(r)
        bars.advance("comparison runs")
        initial = initial or Path(r["exports"]["initial"]["torch"])
    return out


def measure_all(runs: dict[int, list[dict]], rounds: int, bars: Lines) -> dict[str, float]:
    """Every exported file of every seed, timed whole in interleaved rounds on the host."""
    from adapter.pipeline import measured_file as file  # int8 runs: the int8 file
    from bench.devices import open_runners
    from bench.timing import median_ms

    files = {}
    for seed, rs in runs.items():
        files[f"s{seed}/initial"] = file(rs[0]["initial"], rs[0]["exports"]["initial"]["tflite"])
        for r in rs:
            files[f"s{seed}/b{r['budget']:g}"] = file(r["adapted"], r["exports"]["tflite"])
        for m in rs[0]["multipliers"]:
            files[f"s{seed}/{m['name']}"] = file(m, m["exports"]["tflite"])
    with open_runners("host") as runners:
        return median_ms(runners[0], files, rounds, progress=bars.counter(
            f"measuring {len(files)} files", len(files) * rounds))


def _point(name: str, accs: list[float], ms: list[float]) -> dict[str, Any]:
    return {"name": name, "acc": statistics.fmean(accs), "ms": statistics.fmean(ms),
            "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "ms_std": statistics.stdev(ms) if len(ms) > 1 else 0.0, "n": len(accs)}


def summarise(runs: dict[int, list[dict]], ms: dict[str, float], width: float
              ) -> dict[str, Any]:
    from adapter.curves import interpolate_curve, speedup_at_equal_accuracy

    seeds = sorted(runs)
    first = runs[seeds[0]][0]
    # every multiplier network is a point of the curve, the one of equal estimated latency
    # too (its width follows each seed's adapted network: matched by position, not name)
    def nets(s: int) -> list[dict]:
        return runs[s][0]["multipliers"]

    mult = [_point(m["name"], [nets(s)[k]["test_acc"] for s in seeds],
                   [ms[f"s{s}/{nets(s)[k]['name']}"] for s in seeds])
            for k, m in enumerate(first["multipliers"])]
    mult.append(_point(f"x{width:g} (initial)", [runs[s][0]["initial"]["test_acc"] for s in seeds],
                       [ms[f"s{s}/initial"] for s in seeds]))
    mult.sort(key=lambda p: p["ms"])
    xs, ys = [p["ms"] for p in mult], [p["acc"] for p in mult]
    best = max(mult, key=lambda q: q["acc"])  # NetAdapt above it: a lower bound on speed-up
    adapted = []
    for k, r in enumerate(runs[seeds[0]]):
        b = r["budget"]
        p = _point(f"{b:g}", [runs[s][k]["adapted"]["test_acc"] for s in seeds],
                   [ms[f"s{s}/b{b:g}"] for s in seeds])
        curve = interpolate_curve(xs, ys, p["ms"])
        p.update(budget=b, speedup_at_equal_accuracy=speedup_at_equal_accuracy(
            xs, ys, p["ms"], p["acc"]),
            speedup_over_most_accurate=best["ms"] / p["ms"] if p["acc"] > best["acc"] else None,
            acc_gain_at_equal_latency=None if curve is None else p["acc"] - curve,
            extra_steps=statistics.fmean(runs[s][k]["netadapt_extra_steps"] for s in seeds),
            iterations=statistics.fmean(runs[s][k]["iterations"] for s in seeds))
        adapted.append(p)
    return {"seeds": seeds, "multipliers": mult, "netadapt": adapted,
            "recipe": first["recipe"], "rising": all(a <= b for a, b in itertools.pairwise(ys))}


def plots(summary: dict, runs: dict[int, list[dict]], out: Path, title: str) -> list[str]:
    from adapter import plots

    out.mkdir(parents=True, exist_ok=True)
    a = plots.pareto({"NetAdapt (budgets)": summary["netadapt"],
                      "width multipliers": summary["multipliers"]}, out / "pareto.png", title)
    seed = summary["seeds"][0]
    b = plots.training_curves(runs[seed][0]["curves"], out / "training.png",
                              f"the shared recipe, seed {seed}: test accuracy per epoch")
    return [str(a), str(b)]


def table(summary: dict) -> str:
    rows = [("| network | measured ms (mean +- std) | test acc % (mean +- std) | speed-up at "
            "equal acc | acc gain at equal latency |"), "|---|---|---|---|---|"]
    for p in summary["multipliers"]:
        rows.append(f"| multiplier {p['name']} | {p['ms']:.3f} +- {p['ms_std']:.3f} | "
                    f"{100 * p['acc']:.2f} +- {100 * p['acc_std']:.2f} | | |")
    for p in summary["netadapt"]:
        sp, gain = p["speedup_at_equal_accuracy"], p["acc_gain_at_equal_latency"]
        above = p.get("speedup_over_most_accurate")  # more accurate than every multiplier
        speed = f"{sp:.2f}x" if sp else f"> {above:.2f}x (above all)" if above else "n/a"
        rows.append(f"| NetAdapt budget {p['name']} | {p['ms']:.3f} +- {p['ms_std']:.3f} | "
                    f"{100 * p['acc']:.2f} +- {100 * p['acc_std']:.2f} | {speed} | "
                    f"{f'{100 * gain:+.2f} pt' if gain is not None else 'n/a'} |")
    return "\n".join(rows)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    ap.add_argument("--multipliers", type=float, nargs="+", default=list(MULTIPLIERS))
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--per-class", type=int, default=3000, help="training images per class")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=6, help="the recipe's epochs")
    ap.add_argument("--short-steps", type=int, default=40)
    ap.add_argument("--short-floor", type=float, default=0.2)
    ap.add_argument("--long-epochs", type=int, default=2)
    ap.add_argument("--reduction", type=float, default=0.15)
    ap.add_argument("--decay", type=float, default=0.95)
    ap.add_argument("--estimated-budget", action="store_true",
                    help="budgets on the calibrated estimate, not on measured latency")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--lut", type=Path, default=Path("luts/host.db"))
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--tag", default="fmnist")
    ap.add_argument("--dtype", choices=("float32", "int8"), default="float32",
                    help="int8: the int8 sweep prices the search, every network is compared "
                         "as its full-integer file (accuracy and latency)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/compare"))
    ap.add_argument("--train-only", action="store_true", help="train and adapt, measure later")
    ap.add_argument("--quiet", action="store_true", help="no progress lines (stderr)")
    return ap


def main() -> None:
    args = parser().parse_args()
    compare(args, Lines(args.quiet))


def compare(args: argparse.Namespace, bars: Lines) -> None:
    from adapter import data

    t0 = time.perf_counter()
    space, label, backend = space_for(args.lut, args.resolution, print, bars, args.dtype)
    dataset = data.load(args.data, args.resolution, args.per_class)
    print(f"data: {dataset.describe()}; LUT {label}", flush=True)
    bars.counter("comparison runs", len(args.seeds) * len(args.budgets))
    runs = {s: run_seed(args, space, label, backend, dataset, s, bars) for s in args.seeds}
    if args.train_only:  # e.g. seeds trained in parallel processes, measured together later
        return
    ms = measure_all(runs, args.rounds, bars)
    summary = summarise(runs, ms, args.width)
    summary.update(lut=label, data=dataset.describe(), args={k: str(v) for k, v in
                                                              vars(args).items()},
                   wall_s=time.perf_counter() - t0, dtype=args.dtype,
                   when=datetime.now(UTC).isoformat(timespec="seconds"))
    what = ", int8 files" if args.dtype == "int8" else ""
    summary["plots"] = plots(summary, runs, args.out, f"MobileNetV1 on {args.data} at "
                             f"{args.resolution} px, {len(args.seeds)} seeds, host{what}")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "summary.md").write_text(table(summary) + "\n")
    print(table(summary))
    print(f"multiplier curve rising with width: {summary['rising']}; "
          f"{summary['wall_s'] / 60:.1f} min; plots: {', '.join(summary['plots'])}")


# -- the `compare` section of make bench -------------------------------------------------------

# The Makefile's `make compare` (COMPARE_ARGS are the defaults) and `make compare DTYPE=int8`
# (COMPARE_INT8): tests/test_compare_section.py keeps them in step.
SETUPS: dict[str, tuple[str, ...]] = {
    "float32": (),
    "int8": ("--dtype", "int8", "--seeds", "0", "--budgets", "0.5", "0.25", "--width", "1.0",
             "--per-class", "1000", "--tag", "fmnist-int8-x1", "--out", "benchmarks/compare-int8")}
SECTION_ROUNDS = 15  # more than a `make compare` call's: here the measuring is the point


def run(out: dict[str, Any], runs: Path = Path("runs"), lut: Path = Path("luts/host.db"),
        tags: tuple[str, str] = ("fmnist", "fmnist-int8-x1"),
        rounds: int = SECTION_ROUNDS) -> None:
    """Each comparison (float, int8) whose runs are all finished in ``runs`` is measured
    again (``compare`` resumes every run, so it only re-measures, and rewrites the summary,
    plots and table); without them, the stored summary is recorded as it is."""
    for (dtype, setup), tag in zip(SETUPS.items(), tags, strict=True):
        args = parser().parse_args([*setup, "--tag", tag, "--runs", str(runs),
                                    "--lut", str(lut), "--rounds", str(rounds)])
        out[dtype] = comparison(args)


def comparison(args: argparse.Namespace) -> dict[str, Any]:
    """The comparison measured again on the seeds whose runs are all finished (the others
    named), with the stored summary it replaces beside it; else the stored one as it is."""
    from adapter.pipeline import finished_result

    def missing(seed: int) -> list[str]:
        return [str(f) for b in args.budgets
                if finished_result(f := run_folder(args, seed, b)) is None]

    lost = {s: missing(s) for s in args.seeds}
    stored = args.out / "summary.json"
    summary = json.loads(stored.read_text()) if stored.exists() else None
    previous = _previous(summary, stored) if summary else None
    make = "make compare" + (" DTYPE=int8" if args.dtype == "int8" else "")
    finished = [s for s in args.seeds if not lost[s]]
    if finished:
        compare(argparse.Namespace(**{**vars(args), "seeds": finished}), Lines())
        out = {**json.loads(stored.read_text()), "remeasured": True, "previous": previous}
        if len(finished) < len(args.seeds):
            out["seeds_not_finished"] = [s for s in args.seeds if lost[s]]
        return out
    if previous is None:
        return {"skipped": f"no finished runs in {args.runs} and no {stored}: run {make}"}
    return {**summary, "remeasured": False, "when": previous["when"],
            "missing_runs": [f for s in args.seeds for f in lost[s]],
            "to_remeasure": f"{make} (trains the runs), then "
                            "python -m benchmarks.run --only compare"}


def _previous(summary: dict[str, Any], stored: Path) -> dict[str, Any]:
    """What the stored summary (read from ``stored``) said, to stand beside the run that
    replaces it."""
    keep = ("name", "ms", "acc", "speedup_at_equal_accuracy", "acc_gain_at_equal_latency")
    return {"when": summary.get("when") or file_date(stored), "seeds": summary.get("seeds"),
            "lut": summary.get("lut"),
            **{part: [{k: p[k] for k in keep if k in p} for p in summary.get(part, [])]
               for part in ("multipliers", "netadapt")}}


def file_date(path: Path) -> str:
    """When a stored file was written: its last commit's date while it is unchanged since
    (a checkout resets file times), else its file time."""
    import subprocess

    try:
        log = subprocess.run(["git", "log", "-1", "--format=%cI", "--", path.name],
                             cwd=path.parent, capture_output=True, text=True, check=True)
        same = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", path.name],
                              cwd=path.parent, capture_output=True, check=False).returncode == 0
    except (OSError, subprocess.CalledProcessError):
        log, same = None, False
    if log is not None and log.stdout.strip() and same:
        return log.stdout.strip()
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")


if __name__ == "__main__":
    main()
