"""What every command shares: the console, user-error handling, LUT and network options."""

from __future__ import annotations

import contextlib
import inspect
import json
import sqlite3
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from lut_db.errors import UserError
from lut_db.estimate import MissingPolicy
from netadapt.errors import OptionError

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)

# Exit codes (docs/cli.md): 0 ok, 1 an error the user can fix, 2 a usage error (click's),
# 3 a check that ran and found a problem (a stale LUT, a sealed version that changed).
CHECK_FAILED = 3

# typer vendors click in newer releases: its usage errors' base, found without naming it.
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__
                                   if c.__name__ == "UsageError")

# Errors a user can cause: shown as one message, never a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, sqlite3.DatabaseError, OSError)


BACKEND_HELP = ("A backend of the device's config (default: its own); `netadapt devices` "
                "shows a device's config.")


# Options several verbs share, each made by one function (a fresh object per verb: in_panels
# sets a panel on the one it gets).
def lut_option(default: Any = ..., what: str = "") -> Any:
    """--lut: a LUT file, optionally @VERSION."""
    return typer.Option(default, "--lut", show_default=False, help="LUT file, optionally "
                        "@VERSION (without: its newest sealed version), e.g. luts/host.db or "
                        "luts/host.db@2." + (f" {what}" if what else ""))


def backend_choice(help_text: str = BACKEND_HELP) -> Any:
    """--backend: a ``bench.devices.BackendName`` (--help lists them); one the device's config
    lacks is that config's error, naming those it has."""
    return typer.Option(None, "--backend", help=help_text, show_default=False)


def missing_option() -> Any:
    """--missing: where keys the LUT lacks go when they are not swept."""
    return typer.Option(MissingPolicy.ERROR, help="LUT keys needed but not in the LUT, with "
                        "--no-sweep: name them (error), interpolate over channel counts, or "
                        "measure them on the device (attached).")


def sweep_option(needs: str, then: str = "they go to --missing") -> Any:
    """--sweep/--no-sweep: measure the keys ``needs`` names that the LUT lacks, or ``then``."""
    return typer.Option(True, "--sweep/--no-sweep", help=f"Measure the keys {needs} and the "
                        "LUT lacks on the LUT's own device, into a derived version (resumed "
                        f"if interrupted). --no-sweep: {then}.")


def in_panels(panels: dict[str, tuple[str, ...]]) -> Callable[[F], F]:
    """Group a command's options in --help: ``{panel title: parameter names}``, in that
    order; every parameter must be in one panel, so a new option cannot land outside them."""
    def decorate(f: F) -> F:
        params = inspect.signature(f).parameters
        placed = [n for names in panels.values() for n in names]
        if sorted(placed) != sorted(params):
            raise TypeError(f"{f.__name__}: options outside the panels or in two: "
                            f"{sorted(set(params) ^ set(placed))}")
        for panel, names in panels.items():
            for name in names:
                params[name].default.rich_help_panel = panel
        # typer shows panels in the order their first option comes: the panels' order.
        f.__signature__ = inspect.signature(f).replace(  # type: ignore[attr-defined]
            parameters=[params[n] for n in placed])
        return f
    return decorate


def commentary(as_json: bool = False, quiet: bool = False) -> Callable[[str], None]:
    """Where a verb's running commentary goes: stdout, stderr with --json (stdout is the
    JSON only), and with --quiet nowhere but its warnings (on stderr)."""
    out = err_console if as_json or quiet else console

    def say(message: str) -> None:
        if not quiet or message.startswith("warning"):
            out.print(message, highlight=False, markup=False, soft_wrap=True)

    return say


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
    except OptionError as e:  # an argument out of range: a usage error of its option
        raise typer.BadParameter(str(e)) from None
    except USER_ERRORS as e:
        if as_json:
            print(json.dumps({"error": str(e)}))
        fail(_escape(str(e)))
    except KeyboardInterrupt:
        err_console.print("interrupted: every batch already measured is stored; "
                          "run the same command again to resume")
        sys.exit(130)


@contextlib.contextmanager
def human_output_to_stderr(as_json: bool) -> Iterator[None]:
    """With --json, every line and bar the shared console prints goes to stderr, so stdout
    holds the JSON alone."""
    if not as_json:
        yield
        return
    console.file = sys.stderr
    try:
        yield
    finally:
        console.file = None  # back to the stdout of the moment (tests swap it)


def deprecated(old: str, new: str) -> None:
    """One line on stderr: the old spelling still works, for one more release."""
    err_console.print(f"warning: {old} is deprecated, use {new} (the old spelling goes in "
                      "the next release)", highlight=False, markup=False, soft_wrap=True)


def lut_arg(lut: str | None, old: str | None, old_form: str, new_form: str) -> str:
    """The LUT file given as ``--lut``, or by its old spelling (``old_form``, with a warning
    naming ``new_form``); exactly one of them."""
    if lut is not None and old is not None:
        raise typer.BadParameter(f"give the LUT once, as --lut (not also as in {old_form})")
    if old is not None:
        deprecated(old_form, new_form)
        return old
    if lut is None:
        raise typer.BadParameter("missing option --lut: the LUT file, e.g. --lut luts/host.db")
    return lut


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


# Help text as Markdown: a docstring's wrapped lines join into one paragraph in the
# commands list (rich markup kept the line breaks there), and "[...]" stays text
# ("LUT[@VERSION]", "netadapt-farm[cluster]": rich markup took them for tags).
HELP_MARKUP = "markdown"


class RootGroup(TyperGroup):
    """The `netadapt` group: with --json on the line, a usage error (exit 2) also prints
    ``{"error": ...}`` on stdout, so stdout is JSON in every path."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        ctx.meta["json"] = "--json" in args
        return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except UsageError as e:
            if ctx.meta.get("json"):
                print(json.dumps({"error": e.format_message()}))
            raise


class Command(TyperCommand):
    """A command whose hidden (deprecated) arguments stay out of its usage line too."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if not getattr(param, "hidden", False):
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces
