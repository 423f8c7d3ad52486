"""The README's headline numbers, rendered from benchmarks/results.json (the one source of truth).

Each row is declared once below: a label, the paths of its values in results.json and a
format. ``python -m benchmarks.headline`` prints the table; ``--write`` rewrites the block
between the two markers in README.md; ``--check`` exits 1 when the README's block differs.
tests/test_readme.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results.json"
README = REPO / "README.md"
BEGIN = "<!-- headline:begin (python -m benchmarks.headline --write) -->"
END = "<!-- headline:end -->"


@dataclass(frozen=True)
class Row:
    """One line of the table: ``fmt.format(*values)``, each value read at one path.

    A path is the keys (and list indices) from the top of results.json, joined by ``/``
    (keys may hold dots). ``section`` names the benchmark section the row comes from, so
    the table can say when it ran.
    """

    label: str
    section: str
    paths: tuple[str, ...]
    fmt: str
    scale: float = 1.0  # numbers are multiplied by it (fractions -> percent)


def _p(section: str, *rest: str) -> str:
    return "/".join(("sections", section, *rest))


_STORED = "as stored with the LUT"
_AGAIN = "the same networks measured again (noise floor)"
_INT8 = "int8_validation"

ROWS: tuple[Row, ...] = (
    Row("`make lut`: 2,626 keys (MobileNetV1+V2, 224 px, grid 32), sweep + calibration",
        "files", (_p("files", "builds", "0", "total_s"), _p("files", "builds", "0", "sweep_s"),
                  _p("files", "builds", "0", "calibration_s")),
        "{0:.0f} s ({1:.0f} s + {2:.0f} s)"),
    Row("Estimates per second, MobileNetV1 width configs, LUT loaded", "foundation",
        (_p("foundation", "estimate", "slot_estimator_per_s"),), "{0:,.0f}"),
    Row("Repeatability: spread of 50 keys over 3 fresh processes (median, keys > 100 us)",
        "foundation",
        tuple(_p("foundation", "repeatability", "side_by_side", str(i),
                 "median_spread_over_100us") for i in range(3)),
        "{0:.1f} %, {1:.1f} %, {2:.1f} %", scale=100),
    Row("Calibrated estimate (as stored), unseen networks within ±5 % / ±10 %",
        "calibration", (_p("calibration", "models", _STORED, "unseen", "within_5"),
                        _p("calibration", "models", _STORED, "unseen", "within_10"),
                        _p("calibration", "models", _STORED, "unseen", "n"),
                        _p("calibration", "models", _STORED, "unseen", "pearson_r")),
        "{0} / {1} of {2}, r {3:.3f}"),
    Row("The same networks measured twice, within ±5 % / ±10 % (the noise floor)",
        "calibration", (_p("calibration", "models", _AGAIN, "unseen", "within_5"),
                        _p("calibration", "models", _AGAIN, "unseen", "within_10"),
                        _p("calibration", "models", _AGAIN, "unseen", "n")),
        "{0} / {1} of {2}"),
    Row("Limits of agreement (log, 95 %), calibrated estimate vs measured, unseen networks; "
        "width against the repeatability limits", "calibration",
        (_p("calibration", "limits", "unseen", "models", _STORED, "bias_pct"),
         _p("calibration", "limits", "unseen", "models", _STORED, "lower_pct"),
         _p("calibration", "limits", "unseen", "models", _STORED, "upper_pct"),
         _p("calibration", "limits", "unseen", "models", _STORED, "width_ratio")),
        "bias {0:+.1f} %, {1:+.1f} to {2:+.1f} %; {3:.2f}x as wide"),
    Row("Calibrated estimate (as stored), families never swept (ResNet/VGG-style) within "
        "±5 % / ±10 %",
        "calibration", (_p("calibration", "models", _STORED, "held_out", "within_5"),
                        _p("calibration", "models", _STORED, "held_out", "within_10"),
                        _p("calibration", "models", _STORED, "held_out", "n")),
        "{0} / {1} of {2}"),
    Row("int8 LUT: calibrated estimate, unseen networks within ±5 % / ±10 %", "files",
        (_p("files", _INT8, "calibrated.unseen", "count_within_5pct"),
         _p("files", _INT8, "calibrated.unseen", "count_within_10pct"),
         _p("files", _INT8, "calibrated.unseen", "n"),
         _p("files", _INT8, "calibrated.unseen", "pearson_r")),
        "{0} / {1} of {2}, r {3:.3f}"),
    Row("int8 LUT build time / float LUT build time", "files",
        (_p("files", "build_ratios", "int8_over_float_total_s"),), "{0:.2f}"),
    Row("The converter's Keras MobileNets, calibrated estimate within ±5 % of the file timed "
        "whole: float / int8", "files",
        (_p("files", "estimates", "error_pct.float32", "within_5"),
         _p("files", "estimates", "error_pct.float32", "of"),
         _p("files", "estimates", "error_pct.int8", "within_5"),
         _p("files", "estimates", "error_pct.int8", "of")),
        "{0} of {1} / {2} of {3}"),
    Row("ADB / host latency, same 50 keys (median ratio)", "adb",
        (_p("adb", "agreement", "median_ratio"),), "{0:.3f}"),
    Row("Sweeps SIGKILLed at random, this machine / two phones", "faults",
        (_p("faults", "host", "kills"), _p("faults", "phones", "kills"),
         _p("faults", "host", "lost"), _p("faults", "phones", "lost"),
         _p("faults", "host", "measured_twice"), _p("faults", "phones", "measured_twice")),
        "{0} / {1} kills: {2} / {3} keys lost, {4} / {5} measured twice"),
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


def _date(results: dict[str, Any], section: str) -> str:
    return str(results["sections"][section].get("when", results["when"]))[:10]


def table(results: dict[str, Any], rows: tuple[Row, ...] = ROWS) -> str:
    """The Markdown table, one line per row, with the date of the run each row comes from."""
    lines = ["| number | measured | run |", "|---|---|---|"]
    for row in rows:
        values = [value(results, p) for p in row.paths]
        values = [v * row.scale if isinstance(v, float) else v for v in values]
        text = row.fmt.format(*values)
        lines.append(f"| {row.label} | {text} | {row.section}, {_date(results, row.section)} |")
    return "\n".join(lines)


def block(results: dict[str, Any]) -> str:
    return f"{BEGIN}\n{table(results)}\n{END}"


def readme_block(text: str) -> str:
    """The README's block, markers included; ValueError when a marker is missing."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"README.md lacks the markers {BEGIN!r} ... {END!r}")
    start = text.index(BEGIN)
    return text[start:text.index(END, start) + len(END)]


def load(path: Path = RESULTS) -> dict[str, Any]:
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the block in README.md")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when README.md's block differs from results.json")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--readme", type=Path, default=README)
    args = ap.parse_args(argv)
    new = block(load(args.results))
    if not (args.write or args.check):
        print(table(load(args.results)))
        return 0
    text = args.readme.read_text()
    old = readme_block(text)
    if args.check:
        if old != new:
            print(f"{args.readme}: the headline table differs from {args.results}; "
                  "run: python -m benchmarks.headline --write", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(text.replace(old, new))
    print(f"wrote the headline table into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
