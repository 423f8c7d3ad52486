"""`netadapt devices`: every device on every configured adb server, and its config."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from bench.devices import load_config
from netadapt_cli.common import console, err_console, fail, user_errors


def devices_cmd(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    config: str | None = typer.Option(None, "--config",
                                      help="Only this config's adb servers and matches."),
) -> None:
    """List attached devices: serial, model, SoC, Android, state and the config each matches."""
    from bench.discovery import all_configs, scan, servers_of
    from bench.runners.adb_transport import local_server

    with user_errors(as_json):
        configs = [load_config(config)] if config else all_configs(skip=_warn)
        servers = [s for c in configs for s in servers_of(c)] if config else [
            local_server(), *(s for c in configs for s in servers_of(c))]
        servers = list(dict.fromkeys(servers))
        devices, unreachable = scan(
            servers, configs, say=lambda m: err_console.print(m, highlight=False))
    if as_json:
        print(json.dumps({"servers": {str(s): unreachable.get(str(s), "ok") for s in servers},
                          "devices": [d.as_dict() for d in devices]}, indent=1))
    else:
        _table(devices)
        for message in unreachable.values():
            err_console.print(f"[yellow]warning:[/] {message}", highlight=False)
    if len(unreachable) == len(servers):
        fail("no adb server reachable: " + "; ".join(str(s) for s in servers))


def _warn(error: Exception) -> None:
    """A broken config is left out of the list, said on stderr."""
    err_console.print(f"[yellow]warning:[/] left out: {escape(str(error))}", highlight=False)


def _table(devices: list) -> None:
    if not devices:
        console.print("no devices attached (check the cable, that USB debugging is on, "
                      "and `adb devices`)")
        return
    t = Table("server", "serial", "state", "model", "SoC", "Android", "config")
    for column in t.columns[:2]:
        column.no_wrap = True  # serials are what users copy into --serial
    for d in devices:
        match = d.configs[0] if d.configs else "-"
        if len(d.configs) > 1:
            match += f" (also {', '.join(d.configs[1:])})"
        state = d.state if not d.error else f"{d.state} ({d.error})"
        t.add_row(str(d.server), d.serial, state, d.model, d.soc, d.android, match)
    console.print(t)
