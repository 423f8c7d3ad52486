"""The end of a sweep session: what it keeps with the version beside the entries (the
devices' state over the session, the runtime's per-invoke overhead), then the seal."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bench.machine_state import MachineState
from bench.runners.base import BatchItem, Failure, Runner, RunnerError
from lut_db.spec import LayerSpec
from lut_db.store import LutStore
from lut_db.versions import Version

Builder = Callable[[LayerSpec], bytes]  # a key's model (bench.tflite_build.build_layer)
OVERHEAD_SPEC = LayerSpec("add", 1, 1, 1)  # the smallest model: what one invoke costs by itself


def measure_overhead(store: LutStore, version: Version, runner: Runner, build: Builder) -> None:
    """Store the runtime's fixed per-invoke cost with the version (every layer alone pays it
    once; a whole network pays it once in all), unless the version already has it."""
    if "invoke_overhead_us" in store.stats(version):
        return
    (res,) = runner.measure([BatchItem(OVERHEAD_SPEC.key, build(OVERHEAD_SPEC))])
    if isinstance(res, Failure):
        raise RunnerError(f"could not measure the per-invoke overhead: {res.error}")
    store.set_stat(version, "invoke_overhead_us", res.latency_us,
                   {"model": OVERHEAD_SPEC.key, "std_us": res.std_us, "runs": res.runs})


def record_states(store: LutStore, version: Version, states: Sequence[MachineState]) -> None:
    """The devices' state over one sweep session, kept with the version beside the earlier
    sessions' (``machine_busy``: how many of them were busy; the states in its detail)."""
    if not states:
        return
    every = (store.stat_detail(version, "machine_busy") or []) + [s.to_dict() for s in states]
    store.set_stat(version, "machine_busy", float(sum(bool(s["busy"]) for s in every)),
                   every)


def seal_sweep(store: LutStore, version: Version, runner: Runner, build: Builder) -> Version:
    """Seal a swept version, with the per-invoke overhead measured on ``runner`` first."""
    measure_overhead(store, version, runner, build)
    return store.seal(version)
