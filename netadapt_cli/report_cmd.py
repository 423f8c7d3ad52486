"""`netadapt report`: validate a LUT version against whole networks and write the report."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import typer

from bench.devices import BackendName, ConfigError, open_runners
from bench.runners.base import RunnerError
from lut_db.store import LutStore, open_lut
from lut_db.versions import Version
from netadapt_cli.common import (
    backend_choice,
    commentary,
    console,
    default_db,
    human_output_to_stderr,
    lut_option,
    sweep_option,
    user_errors,
)
from netadapt_cli.progress import Bars


def report_cmd(
    lut: str | None = lut_option(None, "Default: luts/DEVICE.db."),
    device: str | None = typer.Option(None, help="Device config to measure on (default: the "
                                      "LUT's device)."),
    backend: BackendName | None = backend_choice("Backend of the device's config (default: "
                                                 "the LUT's)."),
    serial: str | None = typer.Option(None, help="Phone serial, when several match."),
    compare: str | None = typer.Option(None, help="Another LUT file (optionally @VERSION): other device or "
                                       "backend, to compare with key by key."),
    networks: int = typer.Option(60, "--networks", "-n", help="Validation networks to sample."),
    seed: int = typer.Option(0, help="Seed of the validation set."),
    passes: int = typer.Option(4, help="Interleaved passes per repeat."),
    repeats: int = typer.Option(3, help="Each network is measured this often at separate "
                                "moments (--passes passes each): the median is its latency, "
                                "their spread its repeatability."),
    out: Path = typer.Option(Path("reports"), help="Reports folder: writes "
                             "OUT/DEVICE/VERSION/{index.html,report.md,metrics.json}."),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure validations "
                                 "that are not stored yet (--no-measure: report what is)."),
    sweep: bool = sweep_option("the validation networks need", "stop before measuring "
                               "anything, naming how many and the command that measures them"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output: the report's "
                                 "metrics and files (messages go to stderr)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no commentary."),
) -> None:
    """Estimate vs measure whole networks on a LUT's device; write an HTML/Markdown/JSON report."""
    with user_errors(as_json), human_output_to_stderr(as_json):
        if networks < 3 or passes < 1 or repeats < 1:
            raise typer.BadParameter("--networks must be at least 3, --passes and --repeats "
                                     "at least 1")
        store, version = open_lut(lut or str(default_db(device or "host")))
        try:
            summary = _report(store, version, device, backend, serial, compare, networks, seed,
                              passes, out, measure, repeats, quiet, sweep)
        finally:
            store.close()  # and the writer lock, for whoever runs next in this process
    if as_json:
        print(json.dumps(summary, indent=1, default=str))


def _report(store: LutStore, version: Version, device: str | None, backend: str | None,
            serial: str | None, compare: str | None, networks: int, seed: int, passes: int,
            out: Path, measure: bool, repeats: int, quiet: bool,
            sweep: bool) -> dict[str, Any]:
    from analysis.report import report_lut
    from analysis.report_words import verdict_sentences

    say = commentary(quiet=quiet)
    with contextlib.ExitStack() as stack, Bars(quiet) as bars:
        runner = None
        if measure:
            try:
                runners = stack.enter_context(open_runners(
                    device or version.device, backend or version.backend, serial=serial))
                runner = runners[0] if runners else None
            except (RunnerError, ConfigError) as e:
                say(f"warning: no device to measure on: {e}")
        report, folder, result = report_lut(
            store, version, runner, out, compare=compare, networks=networks, seed=seed,
            passes=passes, repeats=repeats, progress=bars, log=say, sweep=sweep)
    for line in verdict_sentences(report):
        console.print(line, highlight=False)
    console.print(f"{result.measured} network(s) measured now, {result.reused} reused; "
                  f"report: {folder / 'index.html'}", highlight=False)
    return {"lut": f"{store.path}@{version.id}", "measured": result.measured,
            "reused": result.reused, "html": str(folder / "index.html"),
            "markdown": str(folder / "report.md"), "metrics_file": str(folder / "metrics.json"),
            "metrics": json.loads((folder / "metrics.json").read_text())}

