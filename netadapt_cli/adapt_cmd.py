"""`netadapt adapt`: NetAdapt against a device's LUT, width-multiplier baselines, verification."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.table import Table

import netadapt as api
from adapter.pick import PickRule
from lut_db.estimate import MissingPolicy
from netadapt.adaptation import MULTIPLIERS
from netadapt_cli.common import (
    commentary,
    console,
    deprecated,
    in_panels,
    lut_option,
    missing_option,
    sweep_option,
    user_errors,
)
from netadapt_cli.progress import Bars

# adapt --help in panels; every option is in exactly one (checked when the module loads).
PANELS = {
    "Model": ("model", "tie_bottlenecks", "width", "resolution", "dtype", "weights"),
    "Budget": ("lut", "budget", "measured_budget", "max_macs", "max_params"),
    "Search": ("reduction", "decay", "short_floor", "pick", "fine_step", "fine_widths", "grid",
               "missing", "sweep", "max_iterations", "workers", "ray"),
    "Training": ("data", "max_per_class", "loader_workers", "pretrain_epochs", "short_steps",
                 "long_epochs", "batch_size", "lr_pretrain", "lr_short", "lr_long", "seed",
                 "calibration_batches", "max_int8_drop"),
    "Verification": ("device", "measure_rounds", "no_measure", "compare_multipliers",
                     "multipliers"),
    "Output": ("name", "runs_dir", "resume", "as_json", "quiet"),
}


@in_panels(PANELS)
def adapt_cmd(
    lut: str = lut_option(what="The target device's table: no phone needed."),
    model: str = typer.Option("mobilenet_v1", metavar="<mobilenet_v1|mobilenet_v2|"
                              "pkg.module:factory|FILE>", help="mobilenet_v1, mobilenet_v2, your own "
                              "pkg.module:factory (a function returning the torch model; "
                              "trained weights with --weights), or a saved model file "
                              "(torch.save(model)). Its slots come from Torch-Pruning."),
    tie_bottlenecks: bool | None = typer.Option(
        None, "--tie-bottlenecks/--untie-bottlenecks", help="Also move the linear-bottleneck "
        "layers of one resolution together, as the paper adapts MobileNetV2 (default: on for "
        "mobilenet_v2, off otherwise). Layers tied by residual adds always move together."),
    width: float = typer.Option(1.0, help="Width multiplier of the initial network (the "
                                "paper's small MobileNetV1 is 0.5)."),
    budget: str = typer.Option("0.5", help="Latency budget: a ratio of the initial estimate "
                               "(0.5) or absolute (3.2ms)."),
    measured_budget: bool = typer.Option(
        False, "--measured-budget", help="The latency budget holds for the network measured "
        "whole on the device (--device, default the LUT's), not for the LUT's estimate: when "
        "the estimate meets it the network is measured, and if it runs slower the estimate's "
        "budget is tightened by estimated/measured and adaptation goes on."),
    dtype: str | None = typer.Option(
        None, metavar="<float32|int8>", help="Key dtype the search prices and the networks ship at: float32 or int8 "
        "(full-integer: the LUT's int8 sweep, and every network also exported as "
        "NAME_int8.tflite, its accuracy measured on that file). Default: the LUT's dtype "
        "when its sweeps have only one, else float32."),
    calibration_batches: int = typer.Option(
        8, help="int8: training batches (--batch-size images each) whose activation ranges "
        "set the file's scales."),
    max_int8_drop: float = typer.Option(
        1.0, help="int8: accuracy points the adapted int8 file may lose against the float "
        "model; above it, the long-term fine-tune runs again quantization-aware."),
    max_macs: str | None = typer.Option(None, help="Also bound MACs: ratio (0.5) or 5M."),
    max_params: str | None = typer.Option(None, help="Also bound parameters: ratio or 1.2M."),
    data: str = typer.Option("fashion-mnist", metavar="<fashion-mnist|digits|FOLDER>", help="fashion-mnist (Debian's "
                             "dataset-fashion-mnist; make fashion-mnist installs it), digits "
                             "(scikit-learn's, tiny: fast checks), or a folder: Fashion-MNIST-style "
                             "IDX files, one subfolder per class, ImageNet-style train/ + val/, or "
                             "the CIFAR-10 python batches. Images are decoded as they are drawn."),
    resolution: int = typer.Option(32, help="Input resolution (the LUT must be swept at it)."),
    max_per_class: int | None = typer.Option(None, help="Use at most this many training "
                                                "images per class (folders: test images too)."),
    loader_workers: int = typer.Option(1, help="Processes decoding images while the main "
                                       "process trains (results do not depend on it)."),
    reduction: float = typer.Option(0.05, help="First iteration's latency reduction, as a "
                                    "fraction of the initial latency."),
    decay: float = typer.Option(0.98, help="Reduction decay per iteration (the paper: a "
                                "smaller reduction, decaying slowly, adapts better)."),
    pretrain_epochs: int = typer.Option(15, help="Epochs to train the initial network."),
    short_steps: int = typer.Option(20, help="Short-term fine-tune steps per proposal."),
    short_floor: float = typer.Option(0.2, help="When even the best proposal's holdout "
                                      "accuracy is below this after the short-term fine-tune, "
                                      "all are fine-tuned again with twice the steps (up to 8x), "
                                      "so proposals are compared, not noise (the paper keeps it "
                                      "above 20 %). 0: never."),
    pick: PickRule = typer.Option(PickRule.ACCURACY, help="Which proposal to keep: accuracy "
                                  "(highest "
                             "holdout accuracy, the paper) or drop-per-latency (smallest "
                             "accuracy drop per ms saved, the official code)."),
    fine_step: int | None = typer.Option(None, help="Also try widths this much finer than "
                                         "the LUT's grid for the layer being cut (e.g. 8), "
                                         "their keys measured on the device when needed."),
    fine_widths: int | None = typer.Option(None, "--fine-widths", hidden=True,
                                           help="Old spelling of --fine-step."),
    long_epochs: int = typer.Option(10, help="Long-term fine-tune epochs at the end."),
    batch_size: int = typer.Option(64, help="Images per training step."),
    lr_pretrain: float = typer.Option(0.1, help="Learning rate of pretraining and baselines."),
    lr_short: float = typer.Option(0.01, help="Learning rate of short-term fine-tunes."),
    lr_long: float = typer.Option(0.02, help="Learning rate of the long-term fine-tune."),
    seed: int = typer.Option(0, help="Seed of everything (results repeat exactly)."),
    weights: Path | None = typer.Option(None, help="Initial weights (state dict) instead "
                                           "of pretraining."),
    grid: int | None = typer.Option(None, help="Channel grid (default: the LUT sweep's)."),
    missing: MissingPolicy = missing_option(),
    sweep: bool = sweep_option("the model needs at its resolution (its whole shape space, "
                               "as netadapt lut sweeps it)"),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), help="Local processes that "
                                "evaluate proposals in parallel (1 = in this process)."),
    ray: str | None = typer.Option(None, help="Run proposals on Ray (pip install "
                                      "'netadapt-farm[cluster]'): 'local' (a private "
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
    multipliers: str = typer.Option(MULTIPLIERS, help="Width multipliers to compare."),
    device: str | None = typer.Option(None, help="Device to verify on (default: the "
                                         "LUT's device, if attached)."),
    measure_rounds: int = typer.Option(3, help="Interleaved measuring rounds per network."),
    no_measure: bool = typer.Option(False, "--no-measure", help="Skip on-device verification."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars and no "
                               "running commentary: the result, warnings and errors only."),
) -> None:
    """Shrink a network to a latency budget on a device's LUT (NetAdapt), then verify it."""
    with user_errors(as_json), Bars(quiet) as bars:
        if fine_widths is not None:
            if fine_step is not None:
                raise typer.BadParameter("give --fine-step once (not also as --fine-widths)")
            deprecated("netadapt adapt --fine-widths", "netadapt adapt --fine-step")
            fine_step = fine_widths
        result = api.adapt(
            model, lut, budget, data, tie_bottlenecks=tie_bottlenecks, width=width,
            resolution=resolution, dtype=dtype, weights=weights,
            measured_budget=measured_budget, max_macs=max_macs, max_params=max_params,
            reduction=reduction, decay=decay, short_floor=short_floor, pick=pick,
            fine_step=fine_step, grid=grid, missing=missing, sweep=sweep,
            max_iterations=max_iterations, workers=workers, ray=ray,
            max_per_class=max_per_class, loader_workers=loader_workers,
            pretrain_epochs=pretrain_epochs, short_steps=short_steps, long_epochs=long_epochs,
            batch_size=batch_size, lr_pretrain=lr_pretrain, lr_short=lr_short, lr_long=lr_long,
            seed=seed, calibration_batches=calibration_batches, max_int8_drop=max_int8_drop,
            device=device, measure_rounds=measure_rounds, no_measure=no_measure,
            compare_multipliers=compare_multipliers, multipliers=multipliers, name=name,
            runs_dir=runs_dir, resume=resume, log=commentary(as_json, quiet), progress=bars)
        bars.close()
        if as_json:
            print(json.dumps(result, indent=1))
        else:
            print_result(result)


def print_result(result: dict) -> None:
    int8 = "int8" in result["adapted"]  # then ms and accuracy are the int8 files'
    t = Table("network", "est. ms", "measured ms", "MACs (M)", "params (M)",
              "int8 test acc" if int8 else "test acc",
              title="NetAdapt result (int8 files)" if int8 else "NetAdapt result")

    def row(name: str, r: dict) -> None:
        meas = r.get("measured_ms")
        acc = r.get("test_acc")
        t.add_row(name, f"{r['latency_ms']:.3f}", f"{meas:.3f}" if meas is not None else "-",
                  f"{r['macs'] / 1e6:.2f}", f"{r['params'] / 1e6:.3f}",
                  f"{100 * acc:.1f}%" if acc is not None else "-")

    row("initial", result["initial"])
    row("adapted", result["adapted"])
    for m in result["multipliers"]:
        row(f"mult. {m['name']}", m)
    console.print(t)
    if int8:
        console.print("int8: test accuracy is each int8 file's, run in LiteRT; ms are the "
                      "int8 files'", highlight=False)
        for name, r in [("initial", result["initial"]), ("adapted", result["adapted"]),
                        *((f"mult. {m['name']}", m) for m in result["multipliers"])]:
            q = r["int8"]
            drop = (f", float {100 * r['test_acc_float']:.1f}% (drop {q['drop_points']:+.2f} "
                    "points)" if q.get("drop_points") is not None else "")
            qat = (" after a quantization-aware fine-tune" if q.get("qat", {}).get("kept") ==
                   "quantization-aware" else " (quantization-aware fine-tune tried, scored lower)"
                   if "qat" in q else "")
            console.print(f"  {name}: {q['tflite']} {100 * q['test_acc']:.1f}%{drop}{qat}; "
                          f"top-1 agrees with its integer reference on "
                          f"{100 * q['parity']['top1_agreement']:.2f}%", highlight=False)
    a, budget = result["adapted"], result["budgets"].get("latency_ms")
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
                      f"{a['latency_ms']:.3f} ms" + (f", measured {a['measured_ms']:.3f} ms"
                                                  if "measured_ms" in a else ""),
                      highlight=False)
    if "test_acc_before_long" in a:
        after = a.get("test_acc_float", a["test_acc"])  # int8: the float model's here
        console.print(f"adapted test accuracy: {100 * a['test_acc_before_long']:.1f}% before, "
                      f"{100 * after:.1f}% after long-term fine-tuning "
                      f"({result['iterations']} iterations)", highlight=False)
    q = result.get("quality", {})
    if q:
        console.print(f"estimated vs measured: adapted {q['adapted_est_vs_measured_pct']:+.1f}%, "
                      f"initial {q['initial_est_vs_measured_pct']:+.1f}%; speed-up initial -> "
                      f"adapted: measured {1 / q['measured_ratio']:.2f}x, estimated "
                      f"{1 / q['estimated_ratio']:.2f}x", highlight=False)
        if "drift_factor" in q:
            console.print(f"the device ran its layers {q['drift_factor']:.2f}x as long as in "
                          f"the LUT; with that taken out: adapted "
                          f"{q['adapted_est_vs_measured_drift_out_pct']:+.1f}%, initial "
                          f"{q['initial_est_vs_measured_drift_out_pct']:+.1f}%", highlight=False)
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
