"""`netadapt estimate` (sum of LUT entries) and `netadapt measure` (the whole network, timed)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from bench.missing import POLICIES, resolve
from lut_db.estimate import estimate
from lut_db.spec import Network
from lut_db.store import open_lut
from netadapt_cli.common import console, err_console, load_network, user_errors


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
        if missing not in POLICIES:
            raise typer.BadParameter(f"--missing must be one of {', '.join(POLICIES)}")
        net = load_network(network, model, width, widths, resolution, classes)
        store, version = open_lut(lut)
        say = (err_console if as_json else console).print  # --json: stdout is the JSON only
        got = resolve(store, version, net.keys, missing, device=device,
                      log=lambda m: say(m, highlight=False))
        est = estimate(net, got.table, lut=got.label, interpolated=got.interpolated)
        if as_json:
            print(json.dumps({"lut": got.label, "macs": net.macs, "params": net.params,
                              **est.to_dict()}, indent=1))
            return
        _print(net, est, got.label)


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
    passes: int = typer.Option(5, help="Passes over the network, each timed apart."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Measure a whole network end to end on a device (interleaved passes, bench.timing)."""
    from bench.devices import open_runners
    from bench.timing import summary, time_networks

    with user_errors():
        if passes < 1:
            raise typer.BadParameter("--passes must be at least 1")
        net = load_network(network, model, width, widths, resolution, classes)
        with open_runners(device, backend, serial=serial) as runners:
            timed = time_networks(runners[0], {net.name: net}, passes)[net.name]
        s = summary(timed)
        out = {"network": net.name, "device": device, "latency_ms": s["latency_us"] / 1000,
               "min_ms": s["min_us"] / 1000, "max_ms": s["max_us"] / 1000, "pass_spread": s["pass_spread"],
               "passes": passes, "runs": s["runs"], "preempted": s["preempted"],
               "macs": net.macs, "params": net.params}
        if as_json:
            print(json.dumps(out, indent=1))
            return
        console.print(f"[bold]{net.name}[/] on {device}: {out['latency_ms']:.3f} ms (median of "
                      f"{passes} passes, spread {100 * s['pass_spread']:.1f} %, min "
                      f"{out['min_ms']:.3f}, {s['runs']} runs)")
