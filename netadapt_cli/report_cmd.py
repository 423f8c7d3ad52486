"""`netadapt report`: validate a LUT version against whole networks and write the report."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.runners.base import Runner, RunnerError
from lut_db.store import LutStore, Version
from netadapt_cli.common import console, default_db, open_lut, user_errors

if TYPE_CHECKING:  # matplotlib and scipy load only when a report is made, not for every command
    from analysis import report as rep
    from analysis import validate as val


def report_cmd(
    lut: str | None = typer.Option(None, help="LUT file, optionally @VERSION, e.g. luts/host.db@1 "
                                   "(default: luts/DEVICE.db, its newest sealed version)."),
    device: str | None = typer.Option(None, help="Device config to measure on (default: the "
                                      "LUT's device)."),
    backend: str | None = typer.Option(None, help="Backend of the config (default: the LUT's)."),
    serial: str | None = typer.Option(None, help="Phone serial, when several match."),
    compare: str | None = typer.Option(None, help="Another LUT file (optionally @VERSION): other device or "
                                       "backend, to compare with key by key."),
    networks: int = typer.Option(60, "--networks", "-n", help="Validation networks to sample."),
    seed: int = typer.Option(0, help="Seed of the validation set."),
    passes: int = typer.Option(10, help="Interleaved passes: each network is timed this often."),
    out: Path = typer.Option(Path("reports"), help="Reports folder: writes "
                             "OUT/DEVICE/VERSION/{index.html,report.md,metrics.json}."),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure validations "
                                 "that are not stored yet (--no-measure: report what is)."),
) -> None:
    """Estimate vs measure whole networks on a LUT's device; write an HTML/Markdown/JSON report."""
    with user_errors():
        if networks < 3 or passes < 1:
            raise typer.BadParameter("--networks must be at least 3 and --passes at least 1")
        store, version = open_lut(lut or str(default_db(device or "host")))
        try:
            _report(store, version, device, backend, serial, compare, networks, seed, passes,
                    out, measure)
        finally:
            store.close()  # and the writer lock, for whoever runs next in this process


def _report(store: LutStore, version: Version, device: str | None, backend: str | None,
            serial: str | None, compare: str | None, networks: int, seed: int, passes: int,
            out: Path, measure: bool) -> None:
    from analysis import report as rep

    writable(rep.report_dir(out, version))
    other = _compare(compare, store, version) if compare else None
    runner = _runner(device or version.device, backend, serial, version) if measure else None
    try:
        result = _validate(store, version, runner, networks, seed, passes)
    finally:
        if runner is not None:
            runner.close()
    report = rep.build(store, version, other)
    folder = rep.write(report, out)
    for line in rep.verdict_sentences(report):
        console.print(line, highlight=False)
    console.print(f"{result.measured} network(s) measured now, {result.reused} reused; "
                  f"report: {folder / 'index.html'}", highlight=False)


def writable(folder: Path) -> None:
    """Fail before any measuring if the report cannot be written there."""
    from analysis import report as rep

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise rep.ReportError(f"cannot write the report to {folder}: "
                              f"{e.strerror or e}") from None


def _compare(ref: str, store: LutStore, version: Version) -> rep.Compare:
    from analysis import report as rep

    other_store, other = open_lut(ref)
    table = other_store.table(other.id)
    if not table.keys() & store.table(version.id).keys():
        raise rep.ReportError(f"{version.label} and {other.label} ({ref}) have no layer keys in "
                              "common: compare versions swept over overlapping spaces")
    return rep.Compare(f"{other.label} ({other.backend})", table)


def _runner(device: str, backend: str | None, serial: str | None,
            version: Version) -> Runner | None:
    """The device's runner, or None (with the reason kept for the message) if none is there."""
    from bench.devices import ConfigError, load_config, make_runners

    try:
        runners = make_runners(load_config(device), backend or version.backend, serial=serial)
    except (RunnerError, ConfigError) as e:
        console.print(f"[yellow]no device to measure on: {e}[/]", highlight=False)
        return None
    for r in runners[1:]:
        r.close()
    return runners[0] if runners else None


def _validate(store: LutStore, version: Version, runner: Runner | None, networks: int,
              seed: int, passes: int) -> val.Validation:
    from analysis import validate as val

    if runner is not None:
        store.lock()  # on-demand keys go into a derived version of this file
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("validating", total=None)

        def progress(n: int, what: str) -> None:
            bar.update(task, advance=n, description=what)

        return val.validate(store, version, runner, networks, seed, passes, progress=progress)
