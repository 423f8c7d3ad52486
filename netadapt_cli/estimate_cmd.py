"""`netadapt estimate` (calibrated, or the plain sum of LUT entries) and `netadapt measure`
(the whole network, timed)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from bench.devices import BackendName
from bench.missing import DeviceAbsent, backend_option, covering_sweep, estimate_network
from bench.zoo import FamilyName
from lut_db.estimate import Estimate, MissingKeys, MissingPolicy
from lut_db.spec import Dtype, Network
from lut_db.store import open_lut
from netadapt_cli.common import (
    backend_choice,
    commentary,
    console,
    err_console,
    load_network,
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
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no commentary."),
) -> None:
    """Estimate a network's latency on a LUT: each layer's cost inside the network from the
    version's calibration (--raw: the plain sum of the layers' entries)."""
    with user_errors(as_json), Bars(quiet) as bars:
        net = load_network(network, model, width, widths, resolution, classes, model_file,
                           dtype)
        store, version = open_lut(lut)
        policy = "measure" if sweep and missing == "error" else missing
        try:
            est = estimate_network(store, version, net, policy, raw=raw, device=device,
                                   log=commentary(as_json, quiet), progress=bars)
        except DeviceAbsent as e:  # the command that measures them where the device is
            space = covering_sweep(version, net.keys, model, resolution, classes,
                                   dtype or "float32") if model else None
            if space is not None:
                raise e.instead("sweep them with: " + space.command(
                    version.device, store.path, backend_option(version))) from None
            if model_file is not None:
                raise e.instead(f"run where it is attached: netadapt estimate --lut "
                                f"{store.path}@{version.id} --model-file {model_file}") from None
            raise
        except MissingKeys as e:
            if model_file is None:
                raise
            label = f"{store.path}@{version.id}"
            raise MissingKeys(e.keys, label, hint=_measure_hint(label, model_file)) from None
        bars.close()
        if as_json:
            free = {"free_ops": net.meta["free_ops"]} if "free_ops" in net.meta else {}
            print(json.dumps({"macs": net.macs, "params": net.params, **est.to_dict(), **free},
                             indent=1))
            return
        _print(net, est)


def _measure_hint(label: str, model_file: Path) -> str:
    return ("measure each as a single-op model on the LUT's device (attached) with:\n  "
            f"netadapt estimate --lut {label} --model-file {model_file}")


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
    from bench.devices import open_runners
    from bench.timing import time_until_agreed

    with user_errors(as_json):
        if passes < 1 or max_repeats < 1:
            raise typer.BadParameter("--passes and --max-repeats must be at least 1")
        net = load_network(network, model, width, widths, resolution, classes, model_file,
                           dtype)
        est = None
        say = (err_console if as_json else console).print  # --json: stdout is the JSON only
        if lut is not None:  # before measuring: a missing key fails fast
            store, version = open_lut(lut)
            est = estimate_network(store, version, net, log=lambda m: say(m, highlight=False))
        model_bytes = model_file.read_bytes() if model_file is not None else net
        with open_runners(device, backend, serial=serial) as runners:
            checked = time_until_agreed(runners[0], model_bytes, passes, name=net.name,
                                        max_repeats=max_repeats)
        m = checked.measurement
        d = m.to_dict()
        warnings = [w for w in (m.state.warning("the passes") if m.state else None,
                                checked.note()) if w]
        out = {"network": net.name, "device": device, "latency_ms": m.latency_ms,
               "min_ms": d["min_us"] / 1000, "max_ms": d["max_us"] / 1000,
               "pass_spread": m.pass_spread, "passes": passes, "repeats": m.repeats,
               "repeats_ms": [x / 1000 for x in m.repeats_us],
               "repeat_spread": m.repeat_spread, "reliable": checked.reliable,
               "runs": m.runs, "preempted": d["preempted"], "macs": net.macs,
               "params": net.params, "machine_state": d["machine_state"],
               "measured_at": m.at, "fingerprint": m.fingerprint, "warnings": warnings}
        if est is not None:
            out |= {"estimated_ms": est.total_ms, "calibrated": est.calibration is not None,
                    "estimated_over_measured": est.total_ms / out["latency_ms"]}
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
