"""`netadapt doctor`: can each device sweep, and what to fix where it cannot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from bench.devices import BackendName
from netadapt_cli.common import CHECK_FAILED, backend_choice, console, err_console, user_errors

if TYPE_CHECKING:
    from bench.doctor import Report
    from bench.runners.checks import Check

MARK = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]FAIL[/]"}


def doctor_cmd(
    device: str | None = typer.Option(None, help="Only this device config (e.g. host, pixel1); "
                                      "default: this machine and every attached phone."),
    serial: str | None = typer.Option(None, help="Only this phone (ADB serial)."),
    backend: BackendName | None = backend_choice("The backend that has to work (default: "
                                                 "the config's own); the others' problems are "
                                                 "warnings."),
    run: bool = typer.Option(True, "--run/--no-run", help="Run a one-layer model with each "
                             "backend's tool (on this machine, also probe whether it is "
                             "quiet enough to measure)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (stdout is "
                                 "JSON only)."),
) -> None:
    """Check that DEVICE can sweep: adb and the phone's state, ABI and Android, the matched
    config and its backends, the benchmark tool running one layer, governor, temperature,
    battery, the SNPE SDK; on this machine Linux, CPU affinity, LiteRT, and whether it is
    quiet enough to measure (load, other processes, steal, its share of the L3). Each
    problem comes with its fix. Exit code 0: ready; 3: a check failed; 1: an unknown device or
    backend."""
    from bench.doctor import doctor

    with user_errors(as_json):
        if backend is not None and device is None:
            raise typer.BadParameter("--backend goes with --device (a backend is a config's)")
        report = doctor(device, serial, backend, run,
                        say=lambda m: err_console.print(m, highlight=False))
    if as_json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        _print(report)
    if not report.ready:
        raise typer.Exit(CHECK_FAILED)


def _print(report: Report) -> None:
    if report.servers:
        console.print(_table("adb servers", report.servers))
    for d in report.devices:
        title = f"{d.name}: {d.description}" + (f", config {d.config}" if d.config else "")
        console.print(_table(title, d.checks))
        verdict = "[green]ready to sweep[/]" if d.ready else "[bold red]cannot sweep[/]"
        warns = sum(c.status == "warn" for c in d.checks)
        console.print(f"{d.name}: {verdict}" + (f" ({warns} warning(s))" if warns else ""),
                      highlight=False)
    if report.asked is None and all(d.name == "host" for d in report.devices):
        console.print("no phones attached (check the cable, that USB debugging is on, and "
                      "`adb devices`)")
    if not report.ready:
        what = report.asked or "every device"
        console.print(f"[bold red]not ready[/]: {what} cannot sweep until the FAIL items are "
                      "fixed", highlight=False)


def _table(title: str, checks: Sequence[Check]) -> Table:
    """One row per check; a problem's fix on its own line under what was found."""
    t = Table("", "check", "found", title=title, title_justify="left")
    t.columns[1].no_wrap = True
    t.columns[2].overflow = "fold"  # paths and commands are copied: never cut them short
    for c in checks:
        found = _escape(c.detail) + ("" if c.ok else f"\n[cyan]fix:[/] {_escape(c.fix)}")
        t.add_row(MARK[c.status], c.name, found)
    return t


def _escape(text: str) -> str:
    return text.replace("[", r"\[")
