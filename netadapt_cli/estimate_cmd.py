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
    model: str | None = typer.Option(None, help="mobilenet_v1 or mobilenet_v2"),
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
        net = load_network(network, model, width, widths, resolution, classes)
        store, version = open_lut(lut)
        label = f"{store.path}@{version.id}"
        table = store.table(version.id)
        try:
            est = estimate(net, table, "interpolate" if missing == "interpolate" else "error",
                           lut=label)
        except MissingKeys as e:
            if missing != "measure":
                raise
            version = measure_missing_now(store, version, e.keys, device)
            label = f"{store.path}@{version.id}"
            est = estimate(net, store.table(version.id), lut=label)
        if as_json:
            print(json.dumps({"lut": label, "macs": net.macs, "params": net.params,
                              **est.to_dict()}, indent=1))
            return
        _print(net, est, label)


def _print(net: Network, est, label: str) -> None:
    t = Table("node", "layer key", "ms", "source", title=f"{net.name} on {label}")
    for layer in est.layers:
        t.add_row(layer.node, layer.key, f"{layer.latency_us / 1000:.3f}", layer.source)
    console.print(t)
    extra = f" ({len(est.interpolated)} interpolated)" if est.interpolated else ""
    console.print(f"[bold]estimated latency: {est.total_ms:.3f} ms[/]{extra}; "
                  f"{net.macs / 1e6:.1f} M MACs, {net.params / 1e6:.2f} M params")


def measure_cmd(
    device: str = typer.Option("host", help="Device config name."),
    backend: str | None = typer.Option(None, help="Backend of the config."),
    serial: str | None = typer.Option(None, help="Phone serial, when several match."),
    network: Path | None = typer.Option(None, help="Network JSON file."),
    model: str | None = typer.Option(None, help="mobilenet_v1 or mobilenet_v2"),
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
        net = load_network(network, model, width, widths, resolution, classes)
        runners = make_runners(load_config(device), backend, serial=serial)
        try:
            (res,) = runners[0].measure([BatchItem(net.name, build_network(net))])
        finally:
            for r in runners:
                r.close()
        if isinstance(res, Failure):
            raise RunnerError(f"{net.name} could not be measured: {res.error}")
        out = {"network": net.name, "device": device, "latency_ms": res.latency_us / 1000,
               "mean_ms": res.mean_us / 1000, "std_ms": res.std_us / 1000,
               "min_ms": res.min_us / 1000, "max_ms": res.max_us / 1000, "runs": res.runs,
               "macs": net.macs, "params": net.params}
        if as_json:
            print(json.dumps(out, indent=1))
            return
        console.print(f"[bold]{net.name}[/] on {device}: {out['latency_ms']:.3f} ms median "
                      f"(mean {out['mean_ms']:.3f}, std {out['std_ms']:.3f}, "
                      f"min {out['min_ms']:.3f}, {res.runs} runs)")
