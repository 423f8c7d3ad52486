"""Parser of Qualcomm ``snpe-diagview`` text output (SNPE 1.x/2.x), for the SNPE runner.
Pure functions, no I/O; formats: /work/shared/formats/README.md. Raises
:class:`bench.runners.parse.ParseError` naming what it did not find."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bench.runners.parse import ParseError, tool_said


class LayerTime(NamedTuple):
    """One layer of diagview's layer table. DSP/HTP layers are in cycles, not us."""

    index: int
    value: float
    unit: str  # "us" or "cycles"
    runtime: str | None  # "CPU", "GPU", "DSP", ... (absent in some outputs)


@dataclass(frozen=True)
class SnpeProfile:
    """What snpe-diagview reports for one SNPEDiag log (averaged over its inputs)."""

    total_inference_us: float
    forward_us: float | None
    init_us: float | None
    layer_times: list[LayerTime] = field(default_factory=list)
    layer_names: dict[int, str] = field(default_factory=dict)  # SNPE >= 2.3x prints names
    extra: dict[str, Any] = field(default_factory=dict)  # other "<Name>: N us" stats


_DIAG_STAT = re.compile(r"^([A-Za-z][A-Za-z0-9 ()/_.'-]*?)\s*:\s*(\d[\d,]*(?:\.\d+)?)\s*"
                        r"(us|ms|cycles|NONE)?$")
_DIAG_LAYER = re.compile(r"^(\d+)\s*:\s*(?:(.*?)\s*:\s*)?(\d[\d,]*(?:\.\d+)?)\s*(us|cycles)"
                         r"(?:\s*:\s*([A-Za-z0-9_]+))?$")
_DIAG_SUBNET = re.compile(r"^Subnet (\d+) \(([^)]+)\)\s*:\s*(\d[\d,]*(?:\.\d+)?)\s*(us|cycles)$")
_DIAG_HEADER = re.compile(r"^([A-Za-z][^:]*):\s*$")


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@dataclass
class _Block:
    """One statistics section of diagview's output and the layer table under it."""

    title: str
    stats: dict[str, tuple[float, str]] = field(default_factory=dict)  # key -> (value, unit)
    layers: list[LayerTime] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    subnets: list[tuple[int, str, float, str]] = field(default_factory=list)


def _diag_blocks(text: str) -> tuple[list[_Block], str | None]:
    blocks = [_Block("preamble")]
    version = None
    in_layers = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or set(line) <= {"-", "="}:
            continue
        if line.startswith("Software library version:"):
            version = line.partition(":")[2].strip()
            continue
        header = _DIAG_HEADER.match(line)
        if header:
            title = header.group(1)
            in_layers = "layer" in title.lower()
            if "statistics" in title.lower():
                blocks.append(_Block(title))
            continue
        block = blocks[-1]
        layer = _DIAG_LAYER.match(line) if in_layers else None
        if layer:
            idx = int(layer.group(1))
            block.layers.append(LayerTime(idx, _number(layer.group(3)), layer.group(4),
                                          layer.group(5)))
            if layer.group(2):
                block.names[idx] = layer.group(2)
            continue
        subnet = _DIAG_SUBNET.match(line)
        if subnet:
            block.subnets.append((int(subnet.group(1)), subnet.group(2),
                                  _number(subnet.group(3)), subnet.group(4)))
            continue
        stat = _DIAG_STAT.match(line)
        if stat:
            unit = stat.group(3) or ""
            value = _number(stat.group(2))
            if unit == "ms":
                value, unit = value * 1000.0, "us"
            block.stats.setdefault(_key(stat.group(1)), (value, unit))
    return blocks, version


_MAIN_STATS = ("total_inference_time", "forward_propagate_time", "init")


def _stat_name(key: str, unit: str) -> str:
    """``RPC Execute Time: 10877 us`` -> rpc_execute_time_us; counts keep their bare name.

    SNPE 2.x prints not-applicable times as ``0 NONE`` or a bare ``0``: still times.
    """
    if unit in ("us", "cycles"):
        return f"{key}_{unit}"
    return f"{key}_us" if key.endswith("_time") else key


def parse_snpe_diagview(text: str) -> SnpeProfile:
    """Totals and per-layer times from ``snpe-diagview --input_log SNPEDiag_0.log``.

    Accepts the SNPE 1.x/2.x form ("Average SNPE Statistics:" ... "Layer Times:"
    with ``0: 144 us : GPU``) and the newer 2.3x form ("SNPE Execute Statistics
    (Averaged):" ... "Per-Layer Execution Times:" with ``0: <layer name> : 23 us : CPU``).
    When several statistics sections report a Total Inference Time, the averaged
    one is used. DSP/HTP layer times are cycles and are kept as such.
    """
    blocks, version = _diag_blocks(text)
    timed = [b for b in blocks if "total_inference_time" in b.stats]
    if not timed:
        raise ParseError("snpe-diagview output has no 'Total Inference Time' line "
                         f"(truncated output or profiling_level off?){tool_said(text)}")
    chosen = next((b for b in timed if "averag" in b.title.lower()), timed[0])
    init = next((b.stats["init"][0] for b in blocks if "init" in b.stats), None)
    extra: dict[str, Any] = {}
    for block in (chosen, *blocks):  # the chosen section's numbers win
        for key, (value, unit) in block.stats.items():
            if key not in _MAIN_STATS:
                extra.setdefault(_stat_name(key, unit), value)
    if version:
        extra["sdk_version"] = version
    if chosen.subnets:
        extra["subnets"] = chosen.subnets
    forward = chosen.stats.get("forward_propagate_time")
    return SnpeProfile(
        total_inference_us=chosen.stats["total_inference_time"][0],
        forward_us=forward[0] if forward else None,
        init_us=init,
        layer_times=chosen.layers,
        layer_names=chosen.names,
        extra=extra,
    )
