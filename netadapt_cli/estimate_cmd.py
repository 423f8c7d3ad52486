"""`netadapt estimate` (calibrated, or the plain sum of LUT entries) and `netadapt measure`
(the whole network, timed)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

import netadapt as api
from bench.devices import BackendName
from bench.zoo import FamilyName
from lut_db.estimate import Estimate, MissingPolicy
from lut_db.network import Network
from lut_db.spec import Dtype
from netadapt_cli.common import (
    backend_choice,
    commentary,
    console,
    err_console,
    lut_option,
    missing_option,
    sweep_option,
    user_errors,
)
from netadapt_cli.progress import Bars


def estimate_cmd(
    lut: str = lut_option(),
    network: Path | None = typer.Option(None, help="Network JSON file (see README)."),
    model: FamilyName | None = typer.Option(None, help="A zoo family."),
    model_file: Path | None = typer.Option(None, help="A .tflite model file (any converter's)."),
    width: float | None = typer.Option(None, help="Width multiplier (with --model)."),
    widths: str | None = typer.Option(None, help="Comma-separated width per slot."),
    resolution: int = typer.Option(224, help="Input resolution (with --model)."),
    classes: int = typer.Option(1000, help="Classes (with --model)."),
    dtype: Dtype | None = typer.Option(None, help="Layer dtype with --model (default "
                                       "float32)."),
    missing: MissingPolicy = missing_option(),
    sweep: bool = sweep_option("the network needs"),
    device: str | None = typer.Option(None, help="Device for --missing measure "
                                         "(default: the LUT's device)."),
    raw: bool = typer.Option(False, "--raw", help="The paper's plain sum of LUT entries, "
                             "without the version's in-network calibration."),
    anchor: bool = typer.Option(False, "--anchor", help="Also re-level the estimate by 8 "
                                "calibration networks timed whole on the LUT's device now."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no commentary."),
) -> None:
    """Estimate a network's latency on a LUT: each layer's cost inside the network from the
    version's calibration (--raw: the plain sum of the layers' entries)."""
    with user_errors(as_json), Bars(quiet) as bars:
        done = api.estimate(lut, network=network, model=model, model_file=model_file,
                            width=width, widths=widths, resolution=resolution, classes=classes,
                            dtype=dtype, missing=missing, sweep=sweep, device=device, raw=raw,
                            log=commentary(as_json, quiet), progress=bars, anchor=anchor)
        bars.close()
        if as_json:
            print(json.dumps(done.to_dict(), indent=1))
            return
        _print(done.network, done.estimate)
        if done.anchored_ms is not None:
            console.print(f"[bold]re-levelled now: {done.anchored_ms:.3f} ms[/] ({done.anchors} "
                          f"calibration networks timed whole ran "
                          f"{100 * ((done.anchor_level or 1) - 1):+.1f} % against their "
                          "calibrated estimates)", highlight=False)


def _print(net: Network, est: Estimate) -> None:
    cal = est.calibration
    t = Table("node", "layer key", "entry ms", *(["in network ms"] if cal else []), "source",
              title=f"{net.name} on {est.lut}")
    for x in est.layers:
        inside = [f"{x.in_network_us / 1000:.3f}"] if cal else []
        t.add_row(x.node, x.key, f"{x.latency_us / 1000:.3f}", *inside, x.source)
    console.print(t)
    free = net.meta.get("free_ops", [])
    if free:
        console.print(f"{len(free)} op(s) of the file have no key of their own: "
                      + ", ".join(free), highlight=False)
    extra = f" ({len(est.interpolated)} interpolated)" if est.interpolated else ""
    how = (f"calibrated ({cal.describe()}; plain sum {est.raw_total_ms:.3f} ms)" if cal
           else "plain sum of LUT entries")
    console.print(f"[bold]estimated latency: {est.total_ms:.3f} ms[/]{extra}, {how}; "
                  f"{net.macs / 1e6:.1f} M MACs, {net.params / 1e6:.2f} M params",
                  highlight=False)


def measure_cmd(
    device: str = typer.Option("host", help="Device config name."),
    backend: BackendName | None = backend_choice(),
    serial: str | None = typer.Option(None, help="Phone serial, when several match."),
    network: Path | None = typer.Option(None, help="Network JSON file."),
    model: FamilyName | None = typer.Option(None, help="A zoo family."),
    model_file: Path | None = typer.Option(None, help="A .tflite file, measured as it is (its "
                                           "own bytes)."),
    lut: str | None = lut_option(None, "Its estimate is shown beside the measured latency."),
    width: float | None = typer.Option(None, help="Width multiplier."),
    widths: str | None = typer.Option(None, help="Comma-separated width per slot."),
    resolution: int = typer.Option(224, help="Input resolution (with --model)."),
    classes: int = typer.Option(1000, help="Classes (with --model)."),
    dtype: Dtype | None = typer.Option(None, help="Layer dtype with --model (default "
                                       "float32)."),
    passes: int = typer.Option(5, help="Passes over the network, each timed apart."),
    max_repeats: int = typer.Option(3, help="Measure again (another --passes passes) while "
                                    "the passes disagree by more than 10 %, up to this many "
                                    "times in all; a result that never agrees is flagged "
                                    "unreliable."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Measure a whole network end to end on a device (interleaved passes, bench.timing);
    measured again while its passes disagree (else flagged unreliable), with the machine's
    state; with --lut, its estimate beside it."""
    with user_errors(as_json):
        say = (err_console if as_json else console).print  # --json: stdout is the JSON only
        done = api.measure(device, backend=backend, serial=serial, network=network, model=model,
                           model_file=model_file, lut=lut, width=width, widths=widths,
                           resolution=resolution, classes=classes, dtype=dtype, passes=passes,
                           max_repeats=max_repeats, log=lambda m: say(m, highlight=False))
        net, est, m = done.network, done.estimate, done.checked.measurement
        out, warnings = done.to_dict(), done.warnings()
        if as_json:
            print(json.dumps(out, indent=1))
            for w in warnings:
                say(w, highlight=False, markup=False)
            return
        console.print(f"[bold]{net.name}[/] on {device}: {out['latency_ms']:.3f} ms (median of "
                      f"{passes} passes, spread {100 * m.pass_spread:.1f} %, min "
                      f"{out['min_ms']:.3f}, {m.runs} runs)")
        if m.repeats > 1:
            console.print(f"measured {m.repeats} times, as the passes disagreed: "
                          + ", ".join(f"{x:.3f}" for x in out["repeats_ms"])
                          + f" ms ({100 * (m.repeat_spread or 0):.1f} % apart); the median is "
                          "kept", highlight=False)
        if m.state is not None:
            console.print(f"machine: {m.state.describe()}", highlight=False, markup=False)
        for w in warnings:
            console.print(w, style="yellow", highlight=False, markup=False)
        if est is not None:
            console.print(f"estimated {est.total_ms:.3f} ms from {est.lut} "
                          f"({'calibrated' if est.calibration else 'plain sum'}; "
                          f"{out['estimated_over_measured']:.3f} x measured)", highlight=False)
