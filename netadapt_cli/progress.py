"""Progress of long work on stderr, drawn with rich for every verb: a bar with its total and
ETA, or a spinner with the elapsed time where no total is known.

The library reports through callbacks (``lut_db.progress.Steps``, or the older ``(n, what)``
counters of the sweep and the timing loop) and never prints; ``Bars`` draws them. stdout
stays free for results (``--json`` prints JSON there and nothing else); ``--quiet`` draws
nothing. Where stderr is not a terminal (a log file, a test), each step leaves one plain
line when it ends instead of a live bar.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from netadapt_cli.common import err_console

Counter = Callable[..., None]  # advance(n, *anything): what bench.sweep and bench.timing call


def _is_tty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@dataclass
class _Step:
    """A step as last reported (what a log line shows when it ends)."""

    done: float = 0
    total: float | None = None
    detail: str = ""
    started: float = field(default_factory=time.monotonic)
    task: TaskID | None = None  # its bar, on a terminal


class Bars:
    """One line per running step; ``bars(name, done, total, detail)`` is a ``Steps``."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._progress: Progress | None = None
        self._steps: dict[str, _Step] = {}
        self._lock = threading.Lock()  # proposals and sweeps report from worker threads

    def __enter__(self) -> Self:
        if not self.quiet and err_console.is_terminal:
            self._progress = Progress(
                SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), TextColumn("{task.fields[detail]}"),
                # stdout into the live display only when it is the same terminal: a file
                # or pipe (--json) must get every byte printed to it
                console=err_console, transient=True, redirect_stdout=_is_tty(sys.stdout))
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Take the bars off the screen (before a verb prints its result)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self._steps.clear()

    def __call__(self, name: str, done: float, total: float | None = None,
                 detail: str = "") -> None:
        if self.quiet:
            return
        with self._lock:
            step = self._steps.get(name)
            if step is None:
                step = self._steps[name] = _Step()
                if self._progress is not None:
                    step.task = self._progress.add_task(name, total=total, detail=detail)
            step.done, step.total, step.detail = done, total, detail
            if self._progress is not None and step.task is not None:
                self._progress.update(step.task, completed=done, total=total, detail=detail)
            if total is not None and done >= total:
                self._end(name)

    def counter(self, name: str, total: float | None = None, done: float = 0) -> Counter:
        """An ``advance(n, what)`` callback for the library's counting callbacks."""
        count = [done]
        self(name, done, total)

        def advance(n: float, *what: object) -> None:
            count[0] += n
            detail = str(what[0]) if what and isinstance(what[0], str) else ""
            self(name, count[0], total, detail)

        return advance

    def advance(self, name: str, n: float = 1) -> None:
        """One more done of a running step."""
        step = self._steps.get(name)
        if step is not None:
            self(name, step.done + n, step.total, step.detail)

    def end(self, name: str) -> None:
        """End a step whose total was never known (or that stopped short)."""
        with self._lock:
            if name in self._steps:
                self._end(name)

    def _end(self, name: str) -> None:
        step = self._steps.pop(name)
        if self._progress is not None:
            if step.task is not None:
                self._progress.remove_task(step.task)
        elif step.done:  # a log keeps each step's last numbers, one line
            of = f"/{step.total:g}" if step.total is not None else ""
            detail = f": {step.detail}" if step.detail else ""
            err_console.print(f"{name} {step.done:g}{of}{detail} in "
                              f"{time.monotonic() - step.started:.1f} s", highlight=False,
                              markup=False, soft_wrap=True)
