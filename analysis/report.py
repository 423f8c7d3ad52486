"""`netadapt report`: validate a LUT version and write its report to
``reports/<device>/<version>/``: ``index.html``, ``report.md``, ``metrics.json`` and the
PNGs the Markdown file references.

``report_lut`` measures what is not stored yet (``analysis.validate``), builds the report
from every stored validation (``analysis.report_build``) and writes it here; the page
comes from ``analysis.report_html``, the Markdown from ``analysis.report_markdown``.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.report_build import Report, ReportError, build
from analysis.report_html import to_html
from analysis.report_markdown import to_markdown
from analysis.report_metrics import Compare
from analysis.validate import Validation, validate
from lut_db.progress import Steps, silent
from lut_db.store import LutStore, open_lut
from lut_db.versions import Version

if TYPE_CHECKING:
    from bench.runners.base import Runner


def report_lut(store: LutStore, version: Version, runner: Runner | None, out: Path, *,
               compare: str | None = None, networks: int = 60, seed: int = 0,
               passes: int = 4, progress: Steps = silent, repeats: int = 3,
               log: Callable[[str], None] | None = None,
               sweep: bool = True) -> tuple[Report, Path, Validation]:
    """Validate ``version`` (measuring on ``runner`` what is not stored; None: report only
    what is), then write the report under ``out``; returns it, its folder and the run.
    ``progress`` hears each long step, ``log`` what is measured into a derived version
    (``sweep`` False: keys the LUT lacks stop it instead, ``validate.KeysNotSwept``)."""
    writable(report_dir(out, version))
    other = compare_with(compare, store, version) if compare else None
    if runner is not None:
        store.lock()  # on-demand keys go into a derived version of this file
    result = validate(store, version, runner, networks, seed, passes, progress=progress,
                      repeats=repeats, log=log, sweep=sweep)
    progress("writing the report", 0, None)
    report = build(store, version, other)
    folder = write(report, out)
    progress("writing the report", 1, 1)
    return report, folder, result


def writable(folder: Path) -> None:
    """Fail before any measuring if the report cannot be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ReportError(f"cannot write the report to {folder}: {e.strerror or e}") from None


def compare_with(ref: str, store: LutStore, version: Version) -> Compare:
    """Another LUT version (``file[@V]``) to put beside this one, key by key."""
    other_store, other = open_lut(ref)
    table = other_store.table(other)
    if not table.keys() & store.table(version).keys():
        raise ReportError(f"{version.label} and {other.label} ({ref}) have no layer keys in "
                          "common: compare versions swept over overlapping spaces")
    return Compare(f"{other.label} ({other.backend})", table)


def report_dir(root: Path, version: Version) -> Path:
    return Path(root) / _safe(version.device) / str(version.id)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "device"


def write(report: Report, root: Path) -> Path:
    """Write index.html, report.md, metrics.json and the PNGs; return the folder."""
    folder = report_dir(root, report.version)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for p in report.plots:
            if p.png:
                (folder / f"{p.name}.png").write_bytes(p.png)
        (folder / "metrics.json").write_text(json.dumps(_jsonable(report.metrics), indent=1))
        (folder / "report.md").write_text(to_markdown(report))
        (folder / "index.html").write_text(to_html(report))
    except OSError as e:
        raise ReportError(f"cannot write the report to {folder}: {e.strerror or e}") from None
    return folder


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
