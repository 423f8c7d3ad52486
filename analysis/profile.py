"""The runtime's view of one network's layers: each layer's cost inside the network,
next to its LUT entry, from the runtime's op profiler or by prefix differencing."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from analysis.sampling import ValidationError
from bench.runners.base import BatchItem, Failure, Runner, RunnerError
from bench.tflite_build import build_network
from lut_db.network import Network

Progress = Callable[[int, str], None]


PREFIX_METHOD = ("prefix differencing: the first k layers built and timed as one model, for "
                 "every k in order (preempted invokes dropped); layer k's cost is time(k) - "
                 "time(k - 1), taken within one pass (prefixes timed back to back share the "
                 "device's momentary speed) and the median over passes")
# Ops that do no work (a reshape is a new view of the same buffer), by XNNPACK's name or
# the kernel's; benchmark_model prefixes delegate ops with "Delegate/".
FREE_OPS = ("Static Reshape", "RESHAPE", "SQUEEZE", "EXPAND_DIMS")
# An activation XNNPACK runs as an op of its own after the op whose fused activation it is
# (an ADD with a fused ReLU becomes "Add (ND)" then "Clamp (NC)"): it counts with that op.
SPLIT_ACTIVATIONS = ("Clamp",)


def prefix(net: Network, k: int) -> Network:
    """The sub-network of the first ``k`` nodes; every node nothing else reads is an output."""
    nodes = net.nodes[:k]
    read = {src for n in nodes for src in n.inputs}
    outs = tuple(n.name for n in nodes if n.name not in read) or (nodes[-1].name,)
    return Network(f"{net.name}~{k}", net.input_shape, nodes, outs)


def profile_layers(runner: Runner, net: Network, lookup: Mapping[str, float],
                   passes: int = 3, progress: Progress | None = None) -> dict[str, Any]:
    """Per-layer in-network cost of ``net`` next to its LUT entries.

    A runner with its own op profiler (``op_profile``: LiteRT's on this machine,
    benchmark_model --enable_op_profiling on a phone) is asked first; where the runtime
    has none, or its ops (free ones folded into the op they feed) do not map one to one
    onto the network's nodes, the cost is measured by prefix differencing.
    """
    try:
        profiled = runner.op_profile(build_network(net))
        failed = None
    except RunnerError as e:
        profiled, failed = None, f"the op profiler failed: {e}"
    per_op = fold_free_ops(profiled) if profiled is not None else None
    if per_op is not None and len(per_op) == len(net.nodes):
        method = (f"the runtime's op profiler: {runner.op_profiler}; reshapes (no work) "
                  "count with the op they feed")
    else:
        why = failed or ("the runtime has no op profiler" if per_op is None else
                         f"the profiler's {len(per_op)} ops are not the network's "
                         f"{len(net.nodes)} layers one to one")
        per_op = prefix_costs(runner, net, passes, progress)
        method = f"{PREFIX_METHOD} ({why})"
    layers = [{"node": n.name, "op": n.spec.op, "key": n.spec.key, "lut_us": lookup[n.spec.key],
               "profile_us": float(v)} for n, v in zip(net.nodes, per_op)]
    return {"network": net.name, "method": method, "layers": layers}


def fold_free_ops(ops: Sequence[tuple[str, float]]) -> list[float]:
    """Op times (us) with each free op's time added to the next op, the layer it feeds
    (the last free op's to the op before it), and each split-off activation's to the op
    before it."""
    times: list[float] = []
    carry = 0.0
    for name, us in ops:
        op = name.rpartition("/")[2]
        if op.startswith(FREE_OPS):
            carry += us
        elif op.startswith(SPLIT_ACTIVATIONS) and times:
            times[-1] += us + carry
            carry = 0.0
        else:
            times.append(us + carry)
            carry = 0.0
    if times:
        times[-1] += carry
    return times


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
