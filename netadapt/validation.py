"""`netadapt report` as a call: validate a LUT version against whole networks measured on
its device, and write the report (HTML, Markdown, JSON)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.devices import ConfigError, open_runners
from bench.runners.base import RunnerError
from lut_db.progress import Steps, silent
from lut_db.store import open_lut
from netadapt.errors import OptionError
from netadapt.lut import default_lut

if TYPE_CHECKING:  # the report modules load matplotlib: imported when a report is made
    from analysis.report_build import Report
    from analysis.validate import Validation

Log = Callable[[str], None]


@dataclass
class Reported:
    """A written report: its content, its folder, and the validation run behind it."""

    lut: str  # file@version
    report: Report
    folder: Path
    validation: Validation

    def verdict(self) -> list[str]:
        """The report's findings in sentences."""
        from analysis.report_words import verdict_sentences

        return verdict_sentences(self.report)

    def to_dict(self) -> dict[str, Any]:
        """What `netadapt report --json` prints."""
        f = self.folder
        return {"lut": self.lut, "measured": self.validation.measured,
                "reused": self.validation.reused, "html": str(f / "index.html"),
                "markdown": str(f / "report.md"), "metrics_file": str(f / "metrics.json"),
                "metrics": json.loads((f / "metrics.json").read_text())}


def report(lut: str | Path | None = None, *, device: str | None = None,
           backend: str | None = None, serial: str | None = None, compare: str | None = None,
           networks: int = 60, seed: int = 0, passes: int = 4, repeats: int = 3,
           out: str | Path = "reports", measure: bool = True, sweep: bool = True,
           log: Log | None = None, progress: Steps = silent) -> Reported:
    """Estimate vs measure whole networks on a LUT version's device (``lut``: ``file[@V]``,
    default ``luts/DEVICE.db``), measuring what is not stored yet (``measure``), and write
    the report under ``out/DEVICE/VERSION/``; ``compare``: another LUT, key by key. Keys the
    validation networks need and the LUT lacks are measured into a derived version
    (``sweep``), or stop it before anything is measured."""
    from analysis.report import report_lut

    if networks < 3 or passes < 1 or repeats < 1:
        raise OptionError("--networks must be at least 3, --passes and --repeats at least 1")
    say = log or (lambda _m: None)
    store, version = open_lut(str(lut or default_lut(device or "host")))
    with store, contextlib.ExitStack() as stack:  # closing the store frees its writer lock
        runner = None
        if measure:
            try:
                runners = stack.enter_context(open_runners(
                    device or version.device, backend or version.backend, serial=serial))
                runner = runners[0] if runners else None
            except (RunnerError, ConfigError) as e:
                say(f"warning: no device to measure on: {e}")
        made, folder, result = report_lut(
            store, version, runner, Path(out), compare=compare, networks=networks, seed=seed,
            passes=passes, repeats=repeats, progress=progress, log=log, sweep=sweep)
        return Reported(f"{store.path}@{version.id}", made, folder, result)
