"""`netadapt estimate` (sum of LUT entries) and `netadapt measure` (the whole network, timed)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from lut_db.estimate import MissingKeys, estimate
from lut_db.spec import Network
from netadapt_cli.common import console, load_network, measure_missing_now, open_lut, user_errors

MISSING_POLICIES = ("error", "interpolate", "measure")


def estimate_cmd(
    lut: str = typer.Option(..., help="LUT[@VERSION], e.g. luts/host.db or luts/host.db@2"),
    network: Path | None = typer.Option(None, help="Network JSON file (see README)."),
    model: str | None = typer.Option(None, help="mobilenet_v1, mobilenet_v2 or "
                                     "mobilenet_v3_small"),
    model_file: Path | None = typer.Option(None, help="A .tflite model file (any converter's)."),
    width: float | None = typer.Option(None, help="Width multiplier (with --model)."),
    widths: str | None = typer.Option(None, help="Comma-separated width per slot."),
    resolution: int = typer.Option(224, help="Input resolution (with --model)."),
    classes: int = typer.Option(1000, help="Classes (with --model)."),
    missing: str = typer.Option("error", help="Missing keys: error, interpolate or measure."),
    device: str | None = typer.Option(None, help="Device for --missing measure "
                                         "(default: the LUT's device)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Estimate a network's latency as the sum of its layers' LUT entries."""
    with user_errors():
        if missing not in MISSING_POLICIES:
            raise typer.BadParameter(f"--missing must be one of {', '.join(MISSING_POLICIES)}")
        net = load_network(network, model, width, widths, resolution, classes, model_file)
        store, version = open_lut(lut)
        label = f"{store.path}@{version.id}"
        table = store.table(version.id)
        try:
            est = estimate(net, table, "interpolate" if missing == "interpolate" else "error",
                           lut=label)
        except MissingKeys as e:
            if missing != "measure" and model_file is not None:
                raise MissingKeys(e.keys, label, hint=_measure_hint(label, model_file)) from None
            if missing != "measure":
                raise
            version = measure_missing_now(store, version, e.keys, device)
            label = f"{store.path}@{version.id}"
            est = estimate(net, store.table(version.id), lut=label)
        if as_json:
            free = {"free_ops": net.meta["free_ops"]} if "free_ops" in net.meta else {}
            print(json.dumps({"lut": label, "macs": net.macs, "params": net.params,
                              **est.to_dict(), **free}, indent=1))
            return
        _print(net, est, label)


def _measure_hint(label: str, model_file: Path) -> str:
    return ("measure each as a single-op model on the LUT's device with:\n  netadapt estimate "
            f"--lut {label} --model-file {model_file} --missing measure")


def _print(net: Network, est, label: str) -> None:
    t = Table("node", "layer key", "ms", "source", title=f"{net.name} on {label}")
    for layer in est.layers:
        t.add_row(layer.node, layer.key, f"{layer.latency_us / 1000:.3f}", layer.source)
    console.print(t)
    extra = f" ({len(est.interpolated)} interpolated)" if est.interpolated else ""
    free = net.meta.get("free_ops", [])
    if free:
        console.print(f"{len(free)} op(s) of the file have no key of their own: "
                      + ", ".join(free), highlight=False)
    console.print(f"[bold]estimated latency: {est.total_ms:.3f} ms[/]{extra}; "
                  f"{net.macs / 1e6:.1f} M MACs, {net.params / 1e6:.2f} M params")


def measure_cmd(
    device: str = typer.Option("host", help="Device config name."),
    backend: str | None = typer.Option(None, help="Backend of the config."),
    serial: str | None = typer.Option(None, help="Phone serial, when several match."),
    network: Path | None = typer.Option(None, help="Network JSON file."),
    model: str | None = typer.Option(None, help="mobilenet_v1, mobilenet_v2 or "
                                     "mobilenet_v3_small"),
    model_file: Path | None = typer.Option(None, help="A .tflite file, measured as it is (its "
                                           "own bytes)."),
    lut: str | None = typer.Option(None, help="LUT[@VERSION]: show its estimate beside the "
                                   "measured latency."),
    width: float | None = typer.Option(None, help="Width multiplier."),
    widths: str | None = typer.Option(None, help="Comma-separated width per slot."),
    resolution: int = typer.Option(224, help="Input resolution (with --model)."),
    classes: int = typer.Option(1000, help="Classes (with --model)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Measure a whole network end to end on a device."""
    from bench.devices import load_config, make_runners
    from bench.runners.base import BatchItem, Failure, RunnerError
    from bench.tflite_build import build_network

    with user_errors():
        net = load_network(network, model, width, widths, resolution, classes, model_file)
        est = None
        if lut is not None:  # before measuring: a missing key fails fast
            store, version = open_lut(lut)
            est = estimate(net, store.table(version.id), lut=f"{store.path}@{version.id}")
        model_bytes = model_file.read_bytes() if model_file is not None else build_network(net)
        runners = make_runners(load_config(device), backend, serial=serial)
        try:
            (res,) = runners[0].measure([BatchItem(net.name, model_bytes)])
        finally:
            for r in runners:
                r.close()
        if isinstance(res, Failure):
            raise RunnerError(f"{net.name} could not be measured: {res.error}")
        out = {"network": net.name, "device": device, "latency_ms": res.latency_us / 1000,
               "mean_ms": res.mean_us / 1000, "std_ms": res.std_us / 1000,
               "min_ms": res.min_us / 1000, "max_ms": res.max_us / 1000, "runs": res.runs,
               "macs": net.macs, "params": net.params}
        if est is not None:
            out |= {"estimated_ms": est.total_ms,
                    "estimated_over_measured": est.total_ms / out["latency_ms"]}
        if as_json:
            print(json.dumps(out, indent=1))
            return
        console.print(f"[bold]{net.name}[/] on {device}: {out['latency_ms']:.3f} ms median "
                      f"(mean {out['mean_ms']:.3f}, std {out['std_ms']:.3f}, "
                      f"min {out['min_ms']:.3f}, {res.runs} runs)")
        if est is not None:
            console.print(f"estimated {est.total_ms:.3f} ms from {lut} "
                          f"({out['estimated_over_measured']:.3f} x measured)")
