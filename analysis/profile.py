"""The runtime's view of one network's layers: each layer's cost inside the network,
next to its LUT entry, from the runtime's op profiler or by prefix differencing."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from analysis.sampling import ValidationError
from bench.runners.base import BatchItem, Failure, Runner
from bench.tflite_build import build_network
from lut_db.spec import Network

Progress = Callable[[int, str], None]


PREFIX_METHOD = ("prefix differencing: the first k layers built and timed as one model, for "
                 "every k in order (preempted invokes dropped); layer k's cost is time(k) - "
                 "time(k - 1), taken within one pass (prefixes timed back to back share the "
                 "device's momentary speed) and the median over passes. LiteRT's Python "
                 "interpreter exposes no op profiler.")


def prefix(net: Network, k: int) -> Network:
    """The sub-network of the first ``k`` nodes; every node nothing else reads is an output."""
    nodes = net.nodes[:k]
    read = {src for n in nodes for src in n.inputs}
    outs = tuple(n.name for n in nodes if n.name not in read) or (nodes[-1].name,)
    return Network(f"{net.name}~{k}", net.input_shape, nodes, outs)


def profile_layers(runner: Runner, net: Network, lookup: Mapping[str, float],
                   passes: int = 3, progress: Progress | None = None) -> dict[str, Any]:
    """Per-layer in-network cost of ``net`` next to its LUT entries.

    A runner with its own op profiler (``op_profile``, e.g. benchmark_model
    --enable_op_profiling on a phone) is asked first; where the runtime has none, or its
    ops do not map one to one onto the network's nodes, the cost is measured by prefix
    differencing.
    """
    profiled = runner.op_profile(build_network(net))
    if profiled is not None and len(profiled) == len(net.nodes):
        per_op = list(profiled)
        method = "the runtime's op profiler (benchmark_model --enable_op_profiling)"
    else:
        per_op = prefix_costs(runner, net, passes, progress)
        method = PREFIX_METHOD
    layers = [{"node": n.name, "op": n.spec.op, "key": n.spec.key, "lut_us": lookup[n.spec.key],
               "profile_us": float(v)} for n, v in zip(net.nodes, per_op)]
    return {"network": net.name, "method": method, "layers": layers}


def prefix_costs(runner: Runner, net: Network, passes: int = 3,
                 progress: Progress | None = None) -> list[float]:
    """Per-layer cost inside ``net`` (us) by differencing prefixes timed back to back."""
    subs = [build_network(prefix(net, k)) for k in range(1, len(net.nodes) + 1)]
    diffs: list[list[float]] = []
    for p in range(passes):
        order = list(range(len(subs)))[:: 1 if p % 2 == 0 else -1]  # cancel slow trends
        totals = [0.0] * len(subs)
        for i in order:
            (res,) = runner.measure([BatchItem(f"{net.name}~{i + 1}", subs[i])])
            if isinstance(res, Failure):
                raise ValidationError(f"prefix {i + 1} of {net.name} failed: {res.error}")
            totals[i] = res.latency_us
        diffs.append([totals[0]] + [b - a for a, b in itertools.pairwise(totals)])
        if progress:
            progress(len(subs), f"per-layer profile, pass {p + 1}/{passes}")
    return [statistics.median(col) for col in zip(*diffs)]


def profile_choice(nets: Sequence[Network]) -> Network | None:
    """The network whose layers are profiled: the first family's full-width network."""
    full = [n for n in nets if n.meta.get("kind") == "multiplier" and not n.meta.get("held_out")]
    return max(full[:4], key=lambda n: n.macs) if full else None
