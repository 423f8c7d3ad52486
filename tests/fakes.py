"""Fakes and LUT builders the test modules share (fixtures that use them: conftest.py)."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import sweep_plan, sweep_run, zoo
from bench.machine_state import MachineState, StateProbe
from bench.runners.base import BaseRunner, BatchItem, Failure, Result, RunnerError, Timing
from bench.sweep_space import SweepSpace
from bench.tflite_build import build_layer
from lut_db.spec import LayerSpec
from lut_db.store import LutStore
from lut_db.versions import Version

# A host device that measures each key in about a millisecond: for sweeps in tests.
FAST_TOML = """\
name = "fast"
kind = "host"
description = "host, few runs: for tests"

[backends.tflite-cpu]
runner = "host"
threads = 1
warmup = 1
runs = 2
min_time_ms = 0
"""

# The adapter tests' LUT: MobileNetV1 at 32 px, grid 64, 10 classes, measured for real.
RES, GRID, CLASSES = 32, 64, 10
ADAPT_SPACE = {"sweeps": [{"families": ["mobilenet_v1"], "resolutions": [RES], "grid": GRID,
                           "classes": CLASSES}]}
# The settings of conftest's "fast" device, so the LUT's fingerprint is that device's.
FAST = {"threads": 1, "warmup": 1, "runs": 2, "min_time_ms": 0}

# The validation tests' LUT: both MobileNets at two resolutions, measured by a FakeRunner.
SPACE = {"sweeps": [{"families": ["mobilenet_v1", "mobilenet_v2"], "resolutions": [32, 48],
                     "grid": 64, "classes": 10}]}


def size_us(item: BatchItem) -> float:
    """Latency from the model's size: bigger layers take longer, as on a device."""
    return len(item.model) / 1000 + 5


def macs_us(item: BatchItem) -> float:
    """Latency from the key's MACs (for models that are only their key's bytes)."""
    return float(LayerSpec.parse(item.key).macs) / 100 + 1


def is_network(key: str) -> bool:
    return "~" in key or key.count("-") >= 3  # a network (or a prefix of one), not a layer key


# A machine other processes kept busy, and a quiet one, as probes report them.
BUSY = MachineState("host", 60.0, 2, 2.4, 55.0, other_cpu_cores=1.2, steal_share=0.001)
QUIET = MachineState("host", 60.0, 2, 1.0, 58.0, other_cpu_cores=0.05, steal_share=0.0)


class FixedProbe:
    """A state probe that reports ``state`` whatever the machine does."""

    def __init__(self, state: MachineState | None) -> None:
        self.state = state

    def start(self) -> None:
        pass

    def stop(self) -> MachineState | None:
        return self.state


class FakeRunner(BaseRunner):
    """Measures instantly: latency from ``us(item)``, whole networks x ``in_network``;
    a Failure for ``bad`` keys; RunnerError (an unplugged phone) on the ``die_at``-th call;
    its machine's state is ``state`` (None: unknown)."""

    backend = "tflite-cpu"

    def __init__(self, serial: str = "fake", bad: Sequence[str] = (), die_at: int | None = None,
                 fp: dict[str, Any] | None = None, *, us: Callable[[BatchItem], float] = size_us,
                 in_network: float = 1.1, device: str = "fake",
                 state: MachineState | None = None):
        self.serial, self.bad, self.die_at = serial, tuple(bad), die_at
        self.state = state
        self.fp = fp or {"device": device, "runs": 3}
        self.us, self.in_network = us, in_network
        self.calls = self.models = 0
        self.keys: list[str] = []
        self.handed: list[list[str]] = []  # each call's keys

    def fingerprint(self) -> dict[str, Any]:
        return dict(self.fp)

    def state_probe(self) -> StateProbe:
        return FixedProbe(self.state)

    def measure(self, batch: Sequence[BatchItem]) -> list[Result]:
        self.calls += 1
        if self.die_at is not None and self.calls >= self.die_at:
            raise RunnerError(f"{self.serial} was unplugged")
        self.keys += [i.key for i in batch]
        self.handed.append([i.key for i in batch])
        self.models += len(batch)
        return [Failure("cannot run", "log") if i.key in self.bad else self._timing(i)
                for i in batch]

    def _timing(self, item: BatchItem) -> Timing:
        us = self.us(item) * (self.in_network if is_network(item.key) else 1.0)
        return Timing.from_samples([us, us * 1.01, us * 0.99])


def make_lut(path: Path, runner: FakeRunner | None = None,
             space: dict[str, Any] = SPACE) -> tuple[LutStore, Version]:
    """A sealed LUT of the space, 'measured' by a FakeRunner. The default FakeRunner
    measures the same LUT every time: swept once per process and space, then copied
    (onto a new file; an existing one is swept into as before)."""
    if runner is not None or path.exists():
        return _sweep_fake(path, runner or FakeRunner(), space)
    template = _TEMPLATES.get(key := json.dumps(space, sort_keys=True))
    if template is None:
        template = Path(tempfile.mkdtemp(prefix="netadapt-fake-lut-")) / "fake.db"
        atexit.register(shutil.rmtree, template.parent, True)
        _sweep_fake(template, FakeRunner(), space)[0].close()  # WAL folded in: the file whole
        _TEMPLATES[key] = template
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, path)
    store = LutStore.open(path)
    return store, store.version()


_TEMPLATES: dict[str, Path] = {}  # make_lut's LUTs of the default FakeRunner, by space


def _sweep_fake(path: Path, runner: FakeRunner, space: dict[str, Any]
                ) -> tuple[LutStore, Version]:
    store = LutStore.open(path, create=True)
    specs: set = set()
    for sw in space["sweeps"]:
        specs |= SweepSpace(tuple(sw["families"]), tuple(sw["resolutions"]), sw["grid"],
                            sw["classes"], sw.get("dtype", "float32")).specs()
    p = sweep_plan.plan(store, "fake", runner.backend, runner.fingerprint(), specs)
    version = sweep_plan.start_version(store, p, "fake", runner.backend, runner.fingerprint(),
                                       space)
    res = sweep_run.run(store, version, p.missing, [runner], build_layer, batch_size=64)
    return store, res.version


def measure_real_lut(path: Path) -> tuple[dict[str, float], Path, int]:
    """(table, LUT file, resolution): MobileNetV1's space measured for real on this host
    (~2 s), as the "fast" device."""
    from bench.runners.host import HostRunner

    with HostRunner(**FAST) as runner:
        store = LutStore.open(path, create=True)
        version = store.create_version("fast", "tflite-cpu", runner.fingerprint(),
                                       space=ADAPT_SPACE)
        keys = sorted(s.key for s in zoo.shape_space(zoo.MOBILENET_V1, RES, GRID, CLASSES))
        sweep_run.run(store, version, keys, [runner], build_layer)
        table = store.table(version)
        store.close()
    assert len(table) == len(keys)
    return table, path, RES


def file_vs_torch(tflite_path: Path, model: object, x_nhwc: object) -> float:
    """Max abs difference between a .tflite file's outputs and the torch model's on the same
    NHWC batch-1 input (the exported file must compute what was trained)."""
    import numpy as np
    import torch
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite_path))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x_nhwc)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    with torch.no_grad():
        want = model(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)).numpy()
    return float(np.abs(got - want).max())
