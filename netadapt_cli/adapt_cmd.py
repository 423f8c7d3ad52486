"""`netadapt adapt`: NetAdapt against a device's LUT, width-multiplier baselines, verification."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from netadapt_cli.common import (
    console,
    err_console,
    fail,
    measure_missing_now,
    open_lut,
    user_errors,
)

MISSING_POLICIES = ("error", "interpolate", "measure")


@contextlib.contextmanager
def _adapt_errors() -> Iterator[None]:
    """AdaptError is a user error too (caught here: common.py must not import torch)."""
    from adapter.models import AdaptError

    try:
        yield
    except AdaptError as e:
        fail(str(e).replace("[", r"\["))


def adapt_cmd(
    lut: str = typer.Option(..., help="LUT[@VERSION] of the target device, e.g. "
                            "luts/galaxy_s8.db (no phone needed: the table is the device)."),
    model: str = typer.Option("mobilenet_v1", help="mobilenet_v1 or mobilenet_v2"),
    width: float = typer.Option(1.0, help="Width multiplier of the initial network (the "
                                "paper's small MobileNetV1 is 0.5)."),
    budget: str = typer.Option("0.5", help="Latency budget: a ratio of the initial estimate "
                               "(0.5) or absolute (3.2ms)."),
    measured_budget: bool = typer.Option(
        False, "--measured-budget", help="The latency budget holds for the network measured "
        "whole on the device (--device, default the LUT's), not for the LUT's estimate: when "
        "the estimate meets it the network is measured, and if it runs slower the estimate's "
        "budget is tightened by estimated/measured and adaptation goes on."),
    max_macs: str | None = typer.Option(None, help="Also bound MACs: ratio (0.5) or 5M."),
    max_params: str | None = typer.Option(None, help="Also bound parameters: ratio or 1.2M."),
    data: str = typer.Option("digits", help="digits (bundled, offline), or a folder: one "
                             "subfolder per class, ImageNet-style train/ + val/, or the CIFAR-10 "
                             "python batches."),
    resolution: int = typer.Option(32, help="Input resolution (the LUT must be swept at it)."),
    max_per_class: int | None = typer.Option(None, help="Read at most this many images "
                                                "per class (folders, CIFAR-10)."),
    reduction: float = typer.Option(0.05, help="First iteration's latency reduction, as a "
                                    "fraction of the initial latency."),
    decay: float = typer.Option(0.98, help="Reduction decay per iteration (the paper: a "
                                "smaller reduction, decaying slowly, adapts better)."),
    pretrain_epochs: int = typer.Option(15, help="Epochs to train the initial network."),
    short_steps: int = typer.Option(20, help="Short-term fine-tune steps per proposal."),
    long_epochs: int = typer.Option(10, help="Long-term fine-tune epochs at the end."),
    batch_size: int = typer.Option(64, help="Images per training step."),
    lr_pretrain: float = typer.Option(0.1, help="Learning rate of pretraining and baselines."),
    lr_short: float = typer.Option(0.01, help="Learning rate of short-term fine-tunes."),
    lr_long: float = typer.Option(0.02, help="Learning rate of the long-term fine-tune."),
    seed: int = typer.Option(0, help="Seed of everything (results repeat exactly)."),
    weights: Path | None = typer.Option(None, help="Initial weights (state dict) instead "
                                           "of pretraining."),
    grid: int | None = typer.Option(None, help="Channel grid (default: the LUT sweep's)."),
    missing: str = typer.Option("error", help="LUT keys the search needs but the LUT lacks: "
                                "error, interpolate or measure (device attached)."),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), help="Local processes that "
                                "evaluate proposals in parallel (1 = in this process)."),
    ray: str | None = typer.Option(None, help="Run proposals on Ray: 'local' (a private "
                                      "local instance), 'auto' or ray://HOST:PORT."),
    name: str | None = typer.Option(None, help="Run folder name (default: derived from "
                                       "model, LUT, budget and seed)."),
    runs_dir: Path = typer.Option(Path("runs"), help="Where run folders live."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the run folder "
                                "(refused if the options differ)."),
    max_iterations: int = typer.Option(200, help="Stop (resumably) after this many iterations."),
    compare_multipliers: bool = typer.Option(False, "--compare-multipliers", help="Train "
                                             "width-multiplier networks with the same training "
                                             "budget and compare at equal latency."),
    multipliers: str = typer.Option("0.25,0.5,0.75,1.0", help="Width multipliers to compare."),
    device: str | None = typer.Option(None, help="Device to verify on (default: the "
                                         "LUT's device, if attached)."),
    measure_rounds: int = typer.Option(3, help="Interleaved measuring rounds per network."),
    no_measure: bool = typer.Option(False, "--no-measure", help="Skip on-device verification."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Shrink a network to a latency budget on a device's LUT (NetAdapt), then verify it."""
    with user_errors(), _adapt_errors():
        from adapter import data as data_mod
        from adapter.models import torch_family
        from adapter.netadapt import AdaptConfig, Budget
        from bench.devices import load_config

        if missing not in MISSING_POLICIES:
            raise typer.BadParameter(f"--missing must be one of {', '.join(MISSING_POLICIES)}")
        budgets = {"latency": budget}
        if max_macs:
            budgets["macs"] = max_macs
        if max_params:
            budgets["params"] = max_params
        for r, v in budgets.items():
            Budget.parse(r, v)  # refuse a bad budget before any work
        mults = _floats(multipliers, "--multipliers")
        torch_family(model)  # a model without a torch one is refused before any work
        run_dir = runs_dir / (name or _run_name(model, lut, budget, seed))
        store, version = _lut_for(lut, run_dir, resume)
        target = device or version.device  # measured on: the LUT's device unless told
        if measured_budget:
            load_config(target)  # an unknown device is refused before any work
        say = (err_console if as_json else console).print  # --json: stdout is the JSON only
        dataset = data_mod.load(data, resolution, max_per_class)
        say(f"data: {dataset.describe()}", highlight=False)
        space, label, used = _space(store, version, model, resolution, len(dataset.classes),
                                    grid, missing)
        cfg = AdaptConfig(
            model=model, width=width, resolution=resolution, data=data, max_per_class=max_per_class,
            lut=label, grid=space.grid, missing=missing, budgets=budgets, reduction=reduction,
            decay=decay, pretrain_epochs=pretrain_epochs, short_steps=short_steps,
            long_epochs=long_epochs, batch_size=batch_size, lr_pretrain=lr_pretrain,
            lr_short=lr_short, lr_long=lr_long, seed=seed,
            weights=str(weights) if weights else None, max_iterations=max_iterations,
            measured_on=target if measured_budget else None,
            measured_backend=version.backend if measured_budget else None)
        cfg.validate()
        result = run(cfg, space, dataset, run_dir, workers=workers, ray=ray, resume=resume,
                     compare=mults if compare_multipliers else None,
                     device=None if no_measure else target,
                     rounds=measure_rounds, lut_used=used,
                     log=lambda m: say(m, highlight=False))
        if as_json:
            print(json.dumps(result, indent=1))
        else:
            print_result(result)


def run(cfg: Any, space: Any, dataset: Any, run_dir: Path, workers: int = 1,
        ray: str | None = None, resume: bool = False, compare: list[float] | None = None,
        device: str | None = "host", rounds: int = 3, lut_used: str = "",
        log: Any = None) -> dict:
    """Adapt, compare, export and verify; writes result.json and the plots into run_dir."""
    from adapter import netadapt
    from adapter.executors import make_executor

    log = log or (lambda m: console.print(m, highlight=False))
    t0 = time.perf_counter()
    context = netadapt.make_context(cfg, dataset)
    executor = make_executor(context, workers, ray)
    log(f"run folder {run_dir}; proposals on {executor.name}")
    try:
        na = netadapt.NetAdapt(cfg, space, dataset, run_dir, executor, context, log=log)
        result = na.run(resume=resume)
        adapted_ms = result["adapted"]["latency"]
        m_eq, w_eq = netadapt.equal_latency_multiplier(space, adapted_ms)
        result["equal_latency_multiplier"] = {"multiplier": m_eq, "widths": w_eq,
                                              **space.resources(w_eq)}
        result["multipliers"] = (na.compare_multipliers(compare, equal_to=adapted_ms)
                                 if compare else [])
    finally:
        executor.close()
    result["lut_used"] = lut_used or cfg.lut
    _export(na, space, run_dir, result)
    if device:
        _verify(space, result, device, rounds, log)
    result["plots"] = _plots(na, space, run_dir, result)
    result["wall_s"] = time.perf_counter() - t0
    (run_dir / "result.json").write_text(json.dumps(result, indent=1))
    return result


# -- pieces -------------------------------------------------------------------------------------


def _lut_for(ref: str, run_dir: Path, resume: bool) -> tuple[Any, Any]:
    """The LUT version; a resumed run keeps the version it started with (a LUT ref without
    @VERSION could otherwise point at a newer version by now)."""
    from lut_db.store import parse_lut_ref

    path, vid = parse_lut_ref(ref)
    ckpt = run_dir / "checkpoint.pt"
    if resume and vid is None and ckpt.exists():
        from adapter.netadapt import load_checkpoint

        started = load_checkpoint(ckpt)["config"]["lut"]
        spath, svid = parse_lut_ref(started)
        if spath == path and svid is not None:
            return open_lut(f"{path}@{svid}")
    return open_lut(ref)


def _space(store: Any, version: Any, model: str, resolution: int, classes: int,
           grid: int | None, missing: str) -> tuple[Any, str, str]:
    """The search space on the LUT, its missing keys handled by the policy.
    Returns (space, the version label asked for, the version label used)."""
    from adapter.netadapt import SearchSpace, lut_grid, missing_keys
    from lut_db.estimate import MissingKeys, interpolate

    label = f"{store.path}@{version.id}"
    grid = grid or lut_grid(version.space, model, resolution, classes, label)
    table = store.table(version.id)
    space = SearchSpace(model, resolution, classes, table, grid, "error", label)
    absent = missing_keys(space, table)
    used = label
    if absent and missing == "error":
        raise MissingKeys(absent, label)
    if absent and missing == "interpolate":
        console.print(f"{label} lacks {len(absent)} key(s) the search may need: interpolating")
        table = {**table, **interpolate(absent, table)}
    elif absent:
        version = measure_missing_now(store, version, absent)
        used = f"{store.path}@{version.id}"
        table = store.table(version.id)
    if absent:
        space = SearchSpace(model, resolution, classes, table, grid, "error", used)
    return space, label, used


def _export(na: Any, space: Any, run_dir: Path, result: dict) -> None:
    """The adapted network: torch weights, and a TFLite model through the builder."""
    import torch

    from bench.tflite_build import build_network

    widths = result["adapted"]["widths"]
    torch.save({"config": na.model.config(), "state_dict": na.model.state_dict()},
               run_dir / "adapted.pt")
    net = space.network(widths, name="adapted")
    (run_dir / "adapted.tflite").write_bytes(build_network(net))
    (run_dir / "adapted.json").write_text(net.to_json(indent=1))
    result["exports"] = {"torch": str(run_dir / "adapted.pt"),
                         "tflite": str(run_dir / "adapted.tflite"),
                         "network": str(run_dir / "adapted.json")}


def _verify(space: Any, result: dict, device: str, rounds: int, log: Any) -> None:
    """Measure initial, adapted and multiplier networks whole on the device, interleaved."""
    from adapter.netadapt import measure

    nets = {"initial": space.network(result["initial"]["widths"], name="initial"),
            "adapted": space.network(result["adapted"]["widths"], name="adapted")}
    for m in result["multipliers"]:
        nets[m["name"]] = space.network(m["widths"], name=m["name"])
    log(f"measuring {len(nets)} networks on {device} ({rounds} interleaved rounds)")
    got = measure(nets, device, rounds=rounds, log=log)
    result["measured_on"] = device if got else None
    if not got:
        return
    result["initial"]["measured_ms"] = got["initial"]
    result["adapted"]["measured_ms"] = got["adapted"]
    for m in result["multipliers"]:
        m["measured_ms"] = got[m["name"]]
    _quality(result)


def _quality(result: dict) -> None:
    """Estimated vs measured, and adapted vs multipliers at equal latency / accuracy."""
    from adapter.netadapt import interpolate_curve, speedup_at_equal_accuracy

    a, i = result["adapted"], result["initial"]
    q: dict[str, Any] = {
        "adapted_est_vs_measured_pct": 100 * (a["latency"] - a["measured_ms"]) / a["measured_ms"],
        "initial_est_vs_measured_pct": 100 * (i["latency"] - i["measured_ms"]) / i["measured_ms"],
        "measured_ratio": a["measured_ms"] / i["measured_ms"],
        "estimated_ratio": a["latency"] / i["latency"],
    }
    eq = [m for m in result["multipliers"] if "equal latency" in m["name"]]
    if eq and "measured_ms" in eq[0]:
        q["equal_latency_multiplier"] = {"name": eq[0]["name"], "latency": eq[0]["latency"],
                                         "measured_ms": eq[0]["measured_ms"],
                                         "test_acc": eq[0]["test_acc"]}
    base = [m for m in result["multipliers"] if "measured_ms" in m]
    if base and "test_acc" in a:
        xs, ys = [m["measured_ms"] for m in base], [m["test_acc"] for m in base]
        q["multiplier_acc_at_adapted_latency"] = interpolate_curve(xs, ys, a["measured_ms"])
        q["speedup_at_equal_accuracy"] = speedup_at_equal_accuracy(xs, ys, a["measured_ms"],
                                                                   a["test_acc"])
    result["quality"] = q


def _plots(na: Any, space: Any, run_dir: Path, result: dict) -> list[str]:
    from adapter import plots

    cfg = na.cfg
    out = []
    budget = result["budgets"].get("latency")
    out.append(plots.progress(na.state["history"], budget, run_dir / "progress.png",
                              f"NetAdapt: {cfg.model} @ {cfg.resolution} px on {cfg.lut}",
                              measured=result.get("measured_budget")))
    eq = result["equal_latency_multiplier"]
    series = {"initial": result["initial"]["widths"],
              f"NetAdapt ({result['adapted']['latency']:.3f} ms est.)": result["adapted"]["widths"],
              f"multiplier x{eq['multiplier']:.2f} ({eq['latency']:.3f} ms est.)": eq["widths"]}
    out.append(plots.filters(list(space.fam.slots), series, run_dir / "filters.png",
                             "Filters per layer: NetAdapt vs width multiplier of equal "
                             "estimated latency"))
    if result["multipliers"]:
        points = {"initial": result["initial"], "adapted": result["adapted"]}
        key = "measured_ms" if "measured_ms" in result["adapted"] else "latency"
        where = f" on {result.get('measured_on')}" if key == "measured_ms" else ""
        out.append(plots.tradeoff(result["multipliers"], points, run_dir / "tradeoff.png",
                                  f"{cfg.model} on {result['data'].split(':')[0]}: test "
                                  f"accuracy vs latency{where}", key=key))
    return [str(p) for p in out]


def print_result(result: dict) -> None:
    t = Table("network", "est. ms", "measured ms", "MACs (M)", "params (M)", "test acc",
              title="NetAdapt result")

    def row(name: str, r: dict) -> None:
        meas = r.get("measured_ms")
        acc = r.get("test_acc")
        t.add_row(name, f"{r['latency']:.3f}", f"{meas:.3f}" if meas is not None else "-",
                  f"{r['macs'] / 1e6:.2f}", f"{r['params'] / 1e6:.3f}",
                  f"{100 * acc:.1f}%" if acc is not None else "-")

    row("initial", result["initial"])
    row("adapted", result["adapted"])
    for m in result["multipliers"]:
        row(f"mult. {m['name']}", m)
    console.print(t)
    a, budget = result["adapted"], result["budgets"].get("latency")
    mb = result.get("measured_budget")
    if mb:
        checks = ", ".join(f"{c['measured_ms']:.3f} ms (budget {c['target_ms']:.3f})"
                           for c in mb["checks"])
        what = (f"{mb['relative']:g} x the initial network, measured alongside"
                if mb.get("relative") else f"{mb['target_ms']:.3f} ms")
        console.print(f"measured budget on {mb['device']}: {what}; measured when the "
                      f"estimate met its budget: {checks}", highlight=False)
        if mb.get("relative") and "measured_ms" in a and "measured_ms" in result["initial"]:
            console.print(f"final verification: adapted / initial measured = "
                          f"{a['measured_ms'] / result['initial']['measured_ms']:.3f} (budget "
                          f"{mb['relative']:g})", highlight=False)
    if budget is not None:
        console.print(f"latency budget {budget:.3f} ms (estimated); adapted: estimated "
                      f"{a['latency']:.3f} ms" + (f", measured {a['measured_ms']:.3f} ms"
                                                  if "measured_ms" in a else ""),
                      highlight=False)
    if "test_acc_before_long" in a:
        console.print(f"adapted test accuracy: {100 * a['test_acc_before_long']:.1f}% before, "
                      f"{100 * a['test_acc']:.1f}% after long-term fine-tuning "
                      f"({result['iterations']} iterations)", highlight=False)
    q = result.get("quality", {})
    if q:
        console.print(f"estimated vs measured: adapted {q['adapted_est_vs_measured_pct']:+.1f}%, "
                      f"initial {q['initial_est_vs_measured_pct']:+.1f}%; speed-up initial -> "
                      f"adapted: measured {1 / q['measured_ratio']:.2f}x, estimated "
                      f"{1 / q['estimated_ratio']:.2f}x", highlight=False)
        eq = q.get("equal_latency_multiplier")
        if eq:
            console.print(f"at equal estimated latency: multiplier {eq['name']} measures "
                          f"{eq['measured_ms']:.3f} ms with {100 * eq['test_acc']:.1f}% test "
                          f"accuracy; adapted {a['measured_ms']:.3f} ms, "
                          f"{100 * a['test_acc']:.1f}%", highlight=False)
        if "multiplier_acc_at_adapted_latency" in q:
            acc = q["multiplier_acc_at_adapted_latency"]
            console.print("at the adapted network's measured latency the multiplier curve "
                          + (f"reaches {100 * acc:.1f}% (adapted {100 * a['test_acc']:.1f}%)"
                             if acc is not None else "has no point (outside the measured "
                             "multipliers)"), highlight=False)
        sp = q.get("speedup_at_equal_accuracy")
        if "speedup_at_equal_accuracy" in q:
            console.print("measured speed-up over the fastest multiplier network of equal "
                          "accuracy: " + (f"{sp:.2f}x" if sp else "n/a (adapted accuracy "
                                          "outside the multiplier curve)"), highlight=False)
    console.print("plots: " + ", ".join(result["plots"]), highlight=False)


def _floats(text: str, option: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} must be numbers separated by commas") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise typer.BadParameter(f"{option}: each multiplier must be in (0, 1]")
    return values


def _run_name(model: str, lut: str, budget: str, seed: int) -> str:
    device = Path(lut.split("@")[0]).stem
    return f"{model}-{device}-{budget.replace('.', 'p')}-s{seed}"
