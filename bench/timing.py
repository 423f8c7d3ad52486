"""Whole networks timed in interleaved passes: one place for every caller.

Calibration, validation, adapt's verification and `netadapt measure` all time whole
networks here, and a sample of their layers again beside them (``remeasure``,
``sum_ratio``): the device's drift since its LUT was measured. Each network is timed
once per pass; passes are rounds over the whole set, each in its own shuffled order, so
slow drift of the device spreads over the set as noise instead of biasing whichever
networks ran during a slow spell. The runner times one pass per call
(``Runner.for_networks``), and every pass is kept with the moment it was measured, so
the spread and the run count travel with the number: ``time_networks`` returns one
``Measurement`` per network (passes, repeats at separate moments, fingerprint, and the
machine's state over the run, ``bench.machine_state``).

A shared or throttling machine changes speed by 5-15 % within a minute, and every network
timed at that moment moves with it. With enough networks in a session (``MIN_FOR_PACE``)
each pass's common factor is taken out, as a randomized block design takes out its blocks:
the pass's pace is the median over the networks of their time in it against their own
median, and each network's passes are divided by it. What is left is each network's own
noise, at the session's median speed; the raw times are kept beside it. How much that
noise is (``pass_scatter``) goes into the session's machine state: a noisy neighbour slows
passes at random without raising the load or the steal time, and the warning says so.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bench.machine_state import MachineState, worst
from bench.runners.base import BatchItem, Failure, Runner, RunnerError, Timing
from bench.sweep_plan import batches
from lut_db.network import Network
from lut_db.spec import LayerSpec

Progress = Callable[[int, str], None]  # (networks just timed, what is being timed)
Model = Network | bytes  # a network to build, or a .tflite file's own bytes


class NetworkFailed(RunnerError):
    """A whole network the device could not run."""


@dataclass(frozen=True)
class Measurement:
    """One network timed whole: every pass kept (with its moment), grouped into
    ``repeats`` blocks of passes measured at separate moments, the setup's fingerprint
    and the machine's state over the run. The latency is the median of the repeats'
    medians; their spread is the measurement's repeatability."""

    passes: tuple[Timing, ...]
    repeats: int = 1
    fingerprint: dict[str, Any] = field(default_factory=dict)
    state: MachineState | None = None  # over the whole run
    at: str = ""  # when the run ended (UTC, ISO 8601)
    repeat_states: tuple[MachineState | None, ...] = ()  # over each repeat (repeats > 1)
    pace: tuple[float, ...] = ()  # each pass's common factor (``pass_paces``); (): none

    @property
    def raw_us(self) -> list[float]:
        """Each pass's time as the device gave it."""
        return [t.latency_us for t in self.passes]

    @property
    def passes_us(self) -> list[float]:
        """Each pass's time at the session's median speed (as given, without ``pace``)."""
        if len(self.pace) != len(self.passes):
            return self.raw_us
        return [t / x for t, x in zip(self.raw_us, self.pace)]

    @property
    def repeats_us(self) -> list[float]:
        """Each repeat's median over its passes, in the order they were measured."""
        lat, k = self.passes_us, max(1, len(self.passes) // max(self.repeats, 1))
        return [statistics.median(lat[i:i + k]) for i in range(0, k * self.repeats, k)
                if lat[i:i + k]]

    @property
    def latency_us(self) -> float:
        return statistics.median(self.repeats_us)

    @property
    def latency_ms(self) -> float:
        return self.latency_us / 1000

    @property
    def pass_spread(self) -> float:
        """(max - min) / median over every pass."""
        lat = self.passes_us
        return (max(lat) - min(lat)) / statistics.median(lat)

    @property
    def repeat_spread(self) -> float | None:
        """(max - min) / median over the repeats (None with one repeat)."""
        r = self.repeats_us
        return (max(r) - min(r)) / statistics.median(r) if len(r) > 1 else None

    @property
    def runs(self) -> int:
        return sum(t.runs for t in self.passes)

    def to_dict(self) -> dict[str, Any]:
        """The numbers as stored with a validation row (fingerprint: the version's)."""
        return {"latency_us": self.latency_us, "passes_us": self.passes_us,
                "raw_passes_us": self.raw_us, "pass_pace": list(self.pace) or None,
                "passes_at_s": [t.extra.get("at_s") for t in self.passes],
                "pass_spread": self.pass_spread, "repeats": self.repeats,
                "repeats_us": self.repeats_us, "repeat_spread": self.repeat_spread,
                "runs": self.runs,
                "min_us": min(t.min_us for t in self.passes),
                "max_us": max(t.max_us for t in self.passes),
                "preempted": sum(int(t.extra.get("preempted", 0)) for t in self.passes),
                "machine_state": self.state.to_dict() if self.state else None,
                "repeats_busy": [st.busy if st else None for st in self.repeat_states] or None,
                "measured_at": self.at}


def time_networks(runner: Runner, models: Mapping[str, Model], passes: int = 3, *,
                  repeats: int = 1, seed: int = 0, chunk: int = 4,
                  progress: Progress | None = None,
                  between: Callable[[int], None] | None = None) -> dict[str, Measurement]:
    """Each model timed ``passes`` x ``repeats`` times, each round over the whole set in its
    own order (see the module); repeat r is rounds r x passes .. (r + 1) x passes - 1.
    ``between(p)`` runs after round p (e.g. a drift sample, measured interleaved too)."""
    from bench.tflite_build import build_network

    one = runner.for_networks()
    out: dict[str, list[Timing]] = {name: [] for name in models}
    rng = random.Random(seed)
    rounds = passes * repeats
    probe = runner.state_probe()
    probe.start()
    each = runner.state_probe() if repeats > 1 else None  # the machine over each repeat
    if each is not None:
        each.start()
    repeat_states: list[MachineState | None] = []
    start = time.monotonic()
    for p in range(rounds):
        order = list(models)
        rng.shuffle(order)
        for names in _chunks(order, chunk):
            items = [BatchItem(n, m if isinstance(m, bytes) else build_network(m))
                     for n in names for m in (models[n],)]
            results = one.measure(items)
            at = time.monotonic() - start  # when (s into the session): for drift analysis
            for name, res in zip(names, results):
                if isinstance(res, Failure):
                    raise NetworkFailed(f"{name} failed on the device: {res.error}")
                out[name].append(replace(res, extra={**res.extra, "at_s": round(at, 2)}))
            if progress:
                progress(len(names), f"pass {p + 1}/{rounds}")
        if between:
            between(p)
        if each is not None and (p + 1) % passes == 0:
            repeat_states.append(each.stop())
            if p + 1 < rounds:
                each = runner.state_probe()
                each.start()
    state = probe.stop()
    fp, when = runner.fingerprint(), datetime.now(UTC).isoformat(timespec="seconds")
    pace = pass_paces({n: [t.latency_us for t in ts] for n, ts in out.items()})
    timed = {n: Measurement(tuple(t), repeats, fp, state, when, tuple(repeat_states), pace)
             for n, t in out.items()}
    scatter = pass_scatter({n: m.passes_us for n, m in timed.items()})
    if state is None or scatter is None:
        return timed
    state = replace(state, scatter=scatter)  # the session's own noise, with its state
    return {n: replace(m, state=state) for n, m in timed.items()}


MIN_FOR_PACE = 8  # networks a session needs before its passes' common factor is taken out


def pass_paces(passes_us: Mapping[str, Sequence[float]]) -> tuple[float, ...]:
    """Each pass's pace (>1: slower), its common factor over the networks timed in it: the
    median of each network's time in the pass against its own median, scaled so that the
    passes' median is 1. Empty with fewer than ``MIN_FOR_PACE`` networks (too few to tell
    the machine from them)."""
    rows = [list(v) for v in passes_us.values() if v]
    if len(rows) < MIN_FOR_PACE or len({len(r) for r in rows}) != 1 or len(rows[0]) < 2:
        return ()
    own = [statistics.median(r) for r in rows]  # each network's median, once
    rel = [[t / m for t in r] for r, m in zip(rows, own)]
    pace = [statistics.median(col) for col in zip(*rel)]
    whole = statistics.median(pace)
    return tuple(x / whole for x in pace)


def pass_scatter(passes_us: Mapping[str, Sequence[float]]) -> float | None:
    """The session's own noise: a robust sd of a pass's log time about its network's level,
    from every pair of passes of the same network (the median of |log a/b| is 0.954 sd for
    normal noise, at any number of passes; one preempted pass does not decide it). None
    without two passes of some network."""
    diffs = [abs(math.log(a / b)) for v in passes_us.values()
             for a, b in itertools.combinations(v, 2) if a > 0 and b > 0]
    return statistics.median(diffs) / PAIR_MEDIAN_SD if diffs else None


PAIR_MEDIAN_SD = 0.6745 * math.sqrt(2)  # median |a - b| of two normal draws, in their sd


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def session_state(measured: Mapping[str, Measurement]) -> MachineState | None:
    """The machine's state over one ``time_networks`` run (its measurements share it)."""
    return next((m.state for m in measured.values()), None)


def median_ms(runner: Runner, models: Mapping[str, Model], passes: int = 3,
              seed: int = 0, between: Callable[[int], None] | None = None,
              progress: Progress | None = None) -> dict[str, float]:
    """Each model's latency in ms: the median over interleaved passes (``between`` and
    ``progress``: as in ``time_networks``)."""
    timed = time_networks(runner, models, passes, seed=seed, between=between,
                          progress=progress)
    return {n: m.latency_ms for n, m in timed.items()}


# -- `netadapt measure`: repeated while its passes disagree ------------------------------------

SPREAD_LIMIT = 0.10  # passes (or repeats) further apart than this disagree
MAX_REPEATS = 3


@dataclass(frozen=True)
class Checked:
    """A measurement, and whether it can be trusted: ``reliable`` when its passes agree
    within ``spread_limit`` (one repeat) or its repeats do (after measuring again)."""

    measurement: Measurement
    reliable: bool
    spread_limit: float

    def note(self) -> str | None:
        """One line for the user when the number should not be trusted as it is."""
        m = self.measurement
        if self.reliable:
            return None
        over = f"(over {100 * self.spread_limit:.0f} %), so the median may be far off"
        if m.repeat_spread is None:
            return (f"UNRELIABLE: its {len(m.passes)} passes disagree by "
                    f"{100 * m.pass_spread:.0f} % {over}; measure again on a quiet machine, "
                    "with --max-repeats 3")
        return (f"UNRELIABLE: measured {m.repeats} times, the results still disagree by "
                f"{100 * m.repeat_spread:.0f} % {over}; measure again on a quiet machine")


def time_until_agreed(runner: Runner, model: Model, passes: int = 5, *, name: str = "model",
                      spread_limit: float = SPREAD_LIMIT, max_repeats: int = MAX_REPEATS,
                      seed: int = 0) -> Checked:
    """Time ``model`` in ``passes`` passes; while they disagree (spread over
    ``spread_limit``),
    measure another repeat of ``passes`` at a later moment, up to ``max_repeats``: a
    number is kept when its repeats agree, and flagged unreliable when they never do."""
    runs: list[Measurement] = []
    for r in range(max_repeats):
        runs.append(time_networks(runner, {name: model}, passes, seed=seed + r)[name])
        m = _joined(runs)
        spread = m.repeat_spread if m.repeat_spread is not None else m.pass_spread
        if spread <= spread_limit:
            return Checked(m, True, spread_limit)
    return Checked(_joined(runs), False, spread_limit)


def _joined(runs: Sequence[Measurement]) -> Measurement:
    """Repeats measured one after another as one measurement (the busiest state kept)."""
    states = [m.state for m in runs if m.state is not None]
    return Measurement(tuple(t for m in runs for t in m.passes), len(runs),
                       runs[-1].fingerprint, worst(states), runs[-1].at,
                       tuple(m.state for m in runs) if len(runs) > 1 else ())


# -- layers timed again beside networks: the device's drift since its LUT --------------------


def remeasure(runner: Runner, keys: Sequence[str],
              progress: Callable[[int], None] | None = None) -> tuple[dict[str, float], list[str]]:
    """Latency of each key measured alone now (us), and the keys that failed."""
    from bench.tflite_build import build_layer

    now: dict[str, float] = {}
    failed: list[str] = []
    for batch in batches(keys, runner.batch_size):  # as the sweep measured them
        results = runner.measure([BatchItem(k, build_layer(LayerSpec.parse(k))) for k in batch])
        for k, res in zip(batch, results):
            if isinstance(res, Failure):
                failed.append(k)
            else:
                now[k] = res.latency_us
        if progress:
            progress(len(batch))
    return now, failed


class DriftSample:
    """Layer keys timed alone again, one slice after each pass of whole networks, so the
    sample spans the session as the networks do; ``sum_ratio(table, sample.now)`` is how
    much slower the device runs now than when ``table`` was measured."""

    def __init__(self, runner: Runner, plan: Sequence[str]) -> None:
        self.runner, self.plan = runner, list(plan)
        self.now: dict[str, float] = {}

    def measure_slice(self, p: int, passes: int) -> None:
        """After pass ``p`` of ``passes``: time the plan's p-th slice."""
        size = -(-len(self.plan) // max(passes, 1))
        self.now.update(remeasure(self.runner, self.plan[p * size:(p + 1) * size])[0])


def sum_ratio(table: Mapping[str, float], now: Mapping[str, float]) -> float:
    """How much slower the device runs these keys now than in ``table`` (sum / sum)."""
    keys = [k for k in now if k in table]
    return sum(now[k] for k in keys) / sum(table[k] for k in keys) if keys else 1.0
