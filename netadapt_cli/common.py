"""What every command shares: the console, user-error handling, LUT and network options."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from bench.devices import ConfigError
from bench.runners.base import RunnerError
from lut_db.spec import Network, SpecError
from lut_db.store import LutError, LutStore, Version, parse_lut_ref

console = Console()
err_console = Console(stderr=True)

# Errors a user can cause: shown as one message, never a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (LutError, SpecError, ConfigError, RunnerError,
                                                 sqlite3.DatabaseError, OSError)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False, markup=True,
                      soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's own exceptions into one clear message and exit code 1."""
    try:
        yield
    except USER_ERRORS as e:
        fail(_escape(str(e)))
    except KeyboardInterrupt:
        err_console.print("interrupted: every batch already measured is stored; "
                          "run the same command again to resume")
        sys.exit(130)


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def open_lut(ref: str, create: bool = False) -> tuple[LutStore, Version]:
    """``luts/host.db@3`` -> (store, version 3); without @ the newest sealed version."""
    path, vid = parse_lut_ref(ref)
    store = LutStore.open(path, create=create)
    return store, store.version(vid)


def measure_missing_now(store: LutStore, version: Version, keys: list[str],
                        device: str | None = None) -> Version:
    """A sealed version derived from ``version`` that holds ``keys``: an earlier one if it
    exists, else measured now on the device (default: the version's own)."""
    from bench.devices import load_config, make_runners
    from bench.sweep import measure_missing
    from bench.tflite_build import build_layer

    for v in reversed(store.versions()):
        if v.parent == version.id and v.status == "sealed" and set(keys) <= store.keys(v.id):
            console.print(f"using {v.label}: derived from {version.label} with the missing keys")
            return v
    cfg = load_config(device or version.device)
    affinity = os.sched_getaffinity(0)  # a host runner pins this process: undo it after
    runners = make_runners(cfg, version.backend)
    store.lock()
    console.print(f"measuring {len(keys)} missing key(s) on {cfg.name} into a new version "
                  f"derived from {version.label}")
    try:
        return measure_missing(store, version, keys, runners, build_layer)
    finally:
        for r in runners:
            r.close()
        store.unlock()
        os.sched_setaffinity(0, affinity)


def default_db(device: str) -> Path:
    return Path("luts") / f"{device}.db"


def load_network(network: Path | None, model: str | None, width: float | None,
                 widths: str | None, resolution: int, classes: int,
                 model_file: Path | None = None) -> Network:
    """A network from --network net.json, --model-file model.tflite or from --model FAMILY
    [--width M | --widths a,b,..]."""
    from bench.zoo import family

    if sum(v is not None for v in (network, model, model_file)) != 1:
        raise SpecError("give exactly one of --network FILE.json, --model NAME or "
                        "--model-file FILE.tflite")
    if network is not None:
        return Network.load(network)
    if model_file is not None:
        from bench.tflite_read import read_file

        return read_file(model_file).network
    if width is not None and widths is not None:
        raise SpecError("give --width (a multiplier) or --widths (one per slot), not both")
    fam = family(model)
    if widths is not None:
        try:
            values = [int(v) for v in widths.split(",")]
        except ValueError:
            raise SpecError(f"--widths must be integers separated by commas, got {widths!r}")
        return fam.network(values, resolution=resolution, classes=classes)
    return fam.network(width_mult=width if width is not None else 1.0, resolution=resolution,
                       classes=classes)
