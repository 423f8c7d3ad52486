"""What every command shares: the console, user-error handling, LUT and network options."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from lut_db.errors import UserError
from lut_db.spec import Network, SpecError

console = Console()
err_console = Console(stderr=True)

# Errors a user can cause: shown as one message, never a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, sqlite3.DatabaseError, OSError)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False, markup=True,
                      soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors(as_json: bool = False) -> Iterator[None]:
    """Turn the library's own exceptions into one clear message and exit code 1; with
    ``as_json`` stdout gets ``{"error": message}`` too, so it is JSON in every path."""
    try:
        yield
    except USER_ERRORS as e:
        if as_json:
            print(json.dumps({"error": str(e)}))
        fail(_escape(str(e)))
    except typer.BadParameter as e:
        if as_json:
            print(json.dumps({"error": e.format_message()}))
        raise
    except KeyboardInterrupt:
        err_console.print("interrupted: every batch already measured is stored; "
                          "run the same command again to resume")
        sys.exit(130)


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def default_db(device: str) -> Path:
    return Path("luts") / f"{device}.db"


def load_network(network: Path | None, model: str | None, width: float | None,
                 widths: str | None, resolution: int, classes: int,
                 model_file: Path | None = None, dtype: str | None = None) -> Network:
    """A network from --network net.json, --model-file model.tflite or from --model FAMILY
    [--width M | --widths a,b,..] [--dtype D]."""
    if sum(v is not None for v in (network, model, model_file)) != 1:
        raise SpecError("give exactly one of --network FILE.json, --model NAME or "
                        "--model-file FILE.tflite")
    if dtype is not None and model is None:
        raise SpecError("--dtype goes with --model: a network JSON's keys and a .tflite "
                        "file carry their own dtype")
    net = _load(network, model, width, widths, resolution, classes, model_file)
    return net.with_dtype(dtype) if dtype not in (None, "float32") else net


def _load(network: Path | None, model: str | None, width: float | None,
          widths: str | None, resolution: int, classes: int,
          model_file: Path | None) -> Network:
    from bench.zoo import family

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
