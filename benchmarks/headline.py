"""The README's headline numbers, rendered from benchmarks/results.json (the one source of truth).

Two tables: the headline numbers (``ROWS``) and the estimate's agreement with measured
latency per test set (``AGREEMENT``). Each row is declared once below: a label, the paths
of its values in results.json and a format. ``python -m benchmarks.headline`` prints the
tables; ``--write`` rewrites each between its two markers in README.md; ``--check`` exits 1
when the README's differ. tests/test_readme.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results.json"
README = REPO / "README.md"
BEGIN = "<!-- headline:begin (python -m benchmarks.headline --write) -->"
END = "<!-- headline:end -->"
AGREEMENT_BEGIN = "<!-- agreement:begin (python -m benchmarks.headline --write) -->"
AGREEMENT_END = "<!-- agreement:end -->"


@dataclass(frozen=True)
class Row:
    """One line of a table: ``fmt.format(*values)`` (or ``fmt(*values)``), each value read
    at one path; a text holding ``" | "`` fills several columns.

    A path is the keys (and list indices) from the top of results.json, joined by ``/``
    (keys may hold dots). ``section`` names the benchmark section the row comes from, so
    the table can say when it ran (``when``: the path of a date of its own instead). A row
    whose section has not run, or whose ``entry`` (a part of the section) was skipped,
    reads ``absent``; any other missing path is an error.
    """

    label: str
    section: str
    paths: tuple[str, ...]
    fmt: str | Callable[..., str]
    scale: float = 1.0  # numbers are multiplied by it (fractions -> percent)
    entry: str | None = None
    when: str | None = None
    absent: str = "not run yet (`make bench`)"


def _p(section: str, *rest: str) -> str:
    return "/".join(("sections", section, *rest))


_STORED = "as stored with the LUT"
_ANCHORED = "as stored, re-levelled by its own networks measured now"
_AGAIN = "the same networks measured again (noise floor)"
_INT8 = "int8_validation"


def _budgets(entry: dict[str, Any]) -> str:
    """A comparison's budgets: speed-up at equal accuracy, accuracy gain at equal latency;
    re-measured, the stored run it replaced beside it."""
    def one(p: dict) -> str:
        sp, gain = p.get("speedup_at_equal_accuracy"), p.get("acc_gain_at_equal_latency")
        above = p.get("speedup_over_most_accurate")  # more accurate than every multiplier
        speed = (f"{sp:.2f}x" if sp is not None else f"> {above:.2f}x (above all)" if above
                 else "n/a")
        budget = f"{p['budget']:g}" if "budget" in p else p["name"]
        return f"{budget}: {speed}, {f'{100 * gain:+.1f} pt' if gain is not None else 'n/a'}"

    def seeds(n: int) -> str:
        return f"{n} seed{'s' if n > 1 else ''}"

    text = "; ".join(map(one, entry["netadapt"])) + f" ({seeds(len(entry['seeds']))}"
    text += ")" if entry["remeasured"] else ", stored)"
    old = entry.get("previous")
    if entry["remeasured"] and old and old.get("netadapt"):
        text += (f"; before, {str(old['when'])[:10]}: " + "; ".join(map(one, old["netadapt"]))
                 + f" ({seeds(len(old.get('seeds') or [0]))})")
    return text


def _demo(ratio: float, budget: float, adapted: float, initial: float, drop: float,
          curve: float | None, speedup: float | None) -> str:
    return (f"{ratio:.2f} ({budget:g}); {100 * adapted:.1f} %, {100 * initial:.1f} %, "
            f"{drop:+.2f} pt; " + (f"{100 * curve:.1f} %" if curve is not None else "n/a")
            + "; " + (f"{speedup:.2f}x" if speedup is not None else "n/a"))


def _compare(dtype: str, label: str) -> Row:
    return Row(label, "compare", (_p("compare", dtype),), _budgets,
               entry=_p("compare", dtype), when=_p("compare", dtype, "when"))


ROWS: tuple[Row, ...] = (
    Row("`make lut`: 2,626 keys (MobileNetV1+V2, 224 px, grid 32), sweep + calibration",
        "files", (_p("files", "builds", "0", "total_s"), _p("files", "builds", "0", "sweep_s"),
                  _p("files", "builds", "0", "calibration_s")),
        "{0:.0f} s ({1:.0f} s + {2:.0f} s)"),
    Row("Repeatability: spread of 50 keys over 3 fresh processes (median, keys > 100 us)",
        "foundation",
        tuple(_p("foundation", "repeatability", "side_by_side", str(i),
                 "median_spread_over_100us") for i in range(3)),
        "{0:.1f} %, {1:.1f} %, {2:.1f} %", scale=100),
    Row("Calibrated estimate (as stored), unseen networks within ±5 % / ±10 %; re-levelled "
        "by its own networks measured now; the same networks measured twice (the noise floor)",
        "calibration", (_p("calibration", "models", _STORED, "unseen", "within_5"),
                        _p("calibration", "models", _STORED, "unseen", "within_10"),
                        _p("calibration", "models", _AGAIN, "unseen", "within_5"),
                        _p("calibration", "models", _AGAIN, "unseen", "within_10"),
                        _p("calibration", "models", _STORED, "unseen", "n"),
                        _p("calibration", "models", _ANCHORED, "unseen", "within_5"),
                        _p("calibration", "models", _ANCHORED, "unseen", "within_10")),
        "{0} / {1} of {4}; re-levelled: {5} / {6}; twice: {2} / {3}"),
    Row("`make adapt DTYPE=int8` (int8 files): adapted / initial latency measured (budget); "
        "test accuracy adapted, initial, int8 drop; width multipliers at the adapted latency; "
        "speed-up at equal accuracy", "demo",
        (_p("demo", "int8", "measured_ratio"), _p("demo", "int8", "budget"),
         _p("demo", "int8", "adapted_acc"), _p("demo", "int8", "initial_acc"),
         _p("demo", "int8", "int8_drop_points", "0"),
         _p("demo", "int8", "multiplier_acc_at_adapted_latency"),
         _p("demo", "int8", "speedup_at_equal_accuracy")), _demo, entry=_p("demo", "int8"),
        absent="not run yet (`make adapt DTYPE=int8`, then `make bench`)"),
    _compare("float32", "`make compare`: NetAdapt vs width multipliers, float, per budget: "
             "speed-up at equal accuracy, accuracy gain at equal latency"),
    _compare("int8", "`make compare DTYPE=int8`: the same, int8 files"),
    Row("Sweeps SIGKILLed at random, this machine / two phones", "faults",
        (_p("faults", "host", "kills"), _p("faults", "phones", "kills"),
         _p("faults", "host", "lost"), _p("faults", "phones", "lost"),
         _p("faults", "host", "measured_twice"), _p("faults", "phones", "measured_twice")),
        "{0} / {1} kills: {2} / {3} keys lost, {4} / {5} measured twice"),
)

AGREEMENT_HEADER = ("test set", "n", "within ±5 %", "re-levelled now", "bias",
                    "limits of agreement", "repeatability limits", "width ratio", "run")
_AGREE_NOW = ("{0} | {1} | {8} | {2:+.1f} % | {3:+.1f} to {4:+.1f} % | {5:+.1f} to {6:+.1f} % "
              "| {7:.2f}")


def _calibration(group: str, label: str) -> Row:
    lim = ("calibration", "limits", group)
    return Row(label, "calibration", (
        _p(*lim, "models", _STORED, "n"), _p("calibration", "models", _STORED, group, "within_5"),
        *(_p(*lim, "models", _STORED, k) for k in ("bias_pct", "lower_pct", "upper_pct")),
        *(_p(*lim, "repeatability", k) for k in ("lower_pct", "upper_pct")),
        _p(*lim, "models", _STORED, "width_ratio"),
        _p("calibration", "models", _ANCHORED, group, "within_5")), _AGREE_NOW)


def _files(limits: tuple[str, ...], within: tuple[str, ...], now: tuple[str, ...],
           label: str) -> Row:
    """A files-section row; ``now``: the count within ±5 % re-levelled by the calibration
    networks timed beside the files."""
    return Row(label, "files", (
        _p("files", *limits, "estimate", "n"), _p("files", *within),
        *(_p("files", *limits, "estimate", k) for k in ("bias_pct", "lower_pct", "upper_pct")),
        *(_p("files", *limits, "repeatability", k) for k in ("lower_pct", "upper_pct")),
        _p("files", *limits, "width_ratio"), _p("files", *now)), _AGREE_NOW)


AGREEMENT: tuple[Row, ...] = (
    _calibration("unseen", "unseen networks (MobileNetV1/V2, 224 px, widths off the grid)"),
    _calibration("held_out", "held out: ResNet/VGG-style families no sweep holds"),
    _calibration("res32", "MobileNetV1 at 32 px"),
    _calibration("adapted32", "adapted, NetAdapt-like, at 32 px"),
    _files(("estimates", "limits", "float32"), ("estimates", "error_pct.float32", "within_5"),
           ("estimates", "anchored_error_pct.float32", "within_5"),
           "the converter's Keras MobileNets, float"),
    _files(("estimates", "limits", "int8"), ("estimates", "error_pct.int8", "within_5"),
           ("estimates", "anchored_error_pct.int8", "within_5"),
           "the converter's Keras MobileNets, int8"),
    _files(("estimates", "held_out_files", "limits", "float32"),
           ("estimates", "held_out_files", "error_pct.float32", "within_5"),
           ("estimates", "held_out_files", "anchored_error_pct.float32", "within_5"),
           "the converter's ResNet/VGG-style files (held back), float"),
    _files(("estimates", "held_out_files", "limits", "int8"),
           ("estimates", "held_out_files", "error_pct.int8", "within_5"),
           ("estimates", "held_out_files", "anchored_error_pct.int8", "within_5"),
           "the converter's ResNet/VGG-style files (held back), int8"),
    _files((_INT8, "limits", "groups", "unseen"),
           (_INT8, "calibrated.unseen", "count_within_5pct"),
           (_INT8, "calibrated_anchored.unseen", "count_within_5pct"),
           "int8 LUT: unseen networks"),
)


def value(results: dict[str, Any], path: str) -> Any:
    """The value at ``path`` (keys and list indices joined by ``/``); KeyError names the path."""
    node: Any = results
    for part in path.split("/"):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError) as e:
            raise KeyError(f"results.json has no {path!r} (stopped at {part!r})") from e
    return node


def _date(results: dict[str, Any], row: Row) -> str:
    if row.when is not None:
        return str(value(results, row.when))[:10]
    return str(results["sections"][row.section].get("when", results["when"]))[:10]


def _absent(results: dict[str, Any], row: Row) -> bool:
    """The row's section has not run, or the part the row reads was skipped."""
    if row.section not in results.get("sections", {}):
        return True
    try:
        return row.entry is not None and "skipped" in value(results, row.entry)
    except KeyError:
        return False  # a wrong entry path is the row's error, raised when its values are read


def cells(results: dict[str, Any], row: Row, columns: int = 1) -> str:
    """The row's value cells (``columns`` of them) and its run's cell."""
    if _absent(results, row):
        return " | ".join([row.absent, *[""] * (columns - 1), row.section])
    values = [value(results, p) for p in row.paths]
    values = [v * row.scale if isinstance(v, float) else v for v in values]
    text = row.fmt(*values) if callable(row.fmt) else row.fmt.format(*values)
    return f"{text} | {row.section}, {_date(results, row)}"


def table(results: dict[str, Any], rows: tuple[Row, ...] = ROWS,
          header: tuple[str, ...] = ("number", "measured", "run")) -> str:
    """The Markdown table, one line per row, with the date of the run each row comes from."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [f"| {row.label} | {cells(results, row, len(header) - 2)} |" for row in rows]
    return "\n".join(lines)


def block(results: dict[str, Any]) -> str:
    return f"{BEGIN}\n{table(results)}\n{END}"


def agreement_block(results: dict[str, Any]) -> str:
    return f"{AGREEMENT_BEGIN}\n{table(results, AGREEMENT, AGREEMENT_HEADER)}\n{AGREEMENT_END}"


def blocks(results: dict[str, Any]) -> dict[tuple[str, str], str]:
    """Each README block, markers included, by its (begin, end) markers."""
    return {(BEGIN, END): block(results),
            (AGREEMENT_BEGIN, AGREEMENT_END): agreement_block(results)}


def readme_block(text: str, begin: str = BEGIN, end: str = END) -> str:
    """The README's block, markers included; ValueError when a marker is missing."""
    if begin not in text or end not in text:
        raise ValueError(f"README.md lacks the markers {begin!r} ... {end!r}")
    start = text.index(begin)
    return text[start:text.index(end, start) + len(end)]


def load(path: Path = RESULTS) -> dict[str, Any]:
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the blocks in README.md")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when README.md's blocks differ from results.json")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--readme", type=Path, default=README)
    args = ap.parse_args(argv)
    results = load(args.results)
    if not (args.write or args.check):
        print(table(results), table(results, AGREEMENT, AGREEMENT_HEADER), sep="\n\n")
        return 0
    text = args.readme.read_text()
    stale = {readme_block(text, *markers): new for markers, new in blocks(results).items()}
    stale = {old: new for old, new in stale.items() if old != new}
    if args.check:
        if stale:
            print(f"{args.readme}: the headline tables differ from {args.results}; "
                  "run: python -m benchmarks.headline --write", file=sys.stderr)
            return 1
        return 0
    for old, new in stale.items():
        text = text.replace(old, new)
    args.readme.write_text(text)
    print(f"wrote the headline tables into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
