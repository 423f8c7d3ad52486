"""NetAdapt (Yang et al., ECCV 2018) against a device's latency look-up table.

Each iteration i, with the resource-reduction schedule
``target_i = current - reduction * initial * decay**(i - 1)`` (never below the budget):

1. one proposal per slot (a CONV/FC layer's filter count, or a lockstep group of slots
   such as a MobileNetV2 stage tied by residual adds): the largest width on the LUT's
   channel grid whose *estimated* latency (and MACs/params when those are budgets
   too) meets the targets, counting the change in the next layers' input channels;
2. each proposal keeps the filters of largest L2 norm (Torch-Pruning removes them
   consistently), is fine-tuned for ``short_steps`` on the training set minus the
   holdout, and scored on the holdout (10 images per class of the training set);
3. the proposal of highest holdout accuracy is kept (the paper's rule; ties go to the
   lower holdout loss, then to the earlier slot).

When every budget is met: long-term fine-tune on the whole training set. A
checkpoint is written after every stage and iteration; ``resume`` continues it and
gives the same result as an uninterrupted run, because each proposal's fine-tune
depends only on (parent weights, proposal, seed) and every seed is derived from the
run's seed and the step's name.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapter import train
from adapter.arch import Architecture
from adapter.data import Dataset, eval_loader, reopen, train_loader
from adapter.errors import AdaptError
from adapter.executors import Executor, dumps, loads, torch_threads
from adapter.export import save_exports
from adapter.pick import PICK_RULES, PickRule
from bench import zoo
from lut_db.calibration import Calibration
from lut_db.estimate import SlotCost, SlotEstimator
from lut_db.progress import Steps, silent
from lut_db.spec import Network

RESOURCES = ("latency_ms", "macs", "params")
SAY = {"latency_ms": "latency", "macs": "MACs", "params": "params"}  # in messages
CURVE_IMAGES = 2000  # test images a learning curve's per-epoch point is measured on
SHORT_STRETCH = 3  # doublings of the short-term fine-tune when proposals fall below the floor
MAX_RELAX = 6  # halvings of an iteration's reduction when no single slot can meet it
CHECKPOINT_FORMAT = 3  # 2: resources named with their units; 3: models of any source

Log = Callable[[str], None]
# missing keys -> (their entries, the label of the LUT version now holding them)
Measure = Callable[[list[str]], tuple[Mapping[str, float], str]]


# -- budgets --------------------------------------------------------------------------------

_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


@dataclass(frozen=True)
class Budget:
    """A bound on one resource: absolute (ms, MACs, params) or a ratio of the initial value."""

    resource: str
    value: float
    relative: bool

    @classmethod
    def parse(cls, resource: str, text: str) -> Budget:
        """Latency: ``0.5`` (ratio) or ``3.2ms``; MACs/params: ``0.5`` (ratio) or ``5M``."""
        t = str(text).strip().lower()
        where = f"{SAY.get(resource, resource)} budget {text!r}"
        if resource == "latency_ms" and t.endswith("ms"):
            return cls(resource, _positive(t[:-2], where), False)
        m = re.fullmatch(r"([0-9.eE+-]+)\s*([kmg]?)", t)
        if not m:
            unit = "e.g. 0.5 (of the initial) or 3.2ms" if resource == "latency_ms" else \
                "e.g. 0.5 (of the initial) or 5M"
            raise AdaptError(f"{where}: not understood; {unit}")
        value = _positive(m.group(1), where) * _SUFFIX[m.group(2)]
        if m.group(2) or (value > 1 and resource != "latency_ms"):
            return cls(resource, value, False)
        if value > 1:
            raise AdaptError(f"{where}: a bare number is a ratio of the initial latency "
                             "(0 < r <= 1); write e.g. 3.2ms for an absolute budget")
        return cls(resource, value, True)

    def absolute(self, initial: float) -> float:
        return self.value * initial if self.relative else self.value

    def __str__(self) -> str:
        if self.relative:
            return f"{self.value:g} x initial {SAY[self.resource]}"
        if self.resource == "latency_ms":
            return f"{self.value:g} ms"
        return f"{self.value:g} {self.resource}"


def _positive(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise AdaptError(f"{where}: {text!r} is not a number") from None
    if not v > 0 or not math.isfinite(v):
        raise AdaptError(f"{where}: must be positive")
    return v


# -- configuration ----------------------------------------------------------------------------


@dataclass
class AdaptConfig:
    """Everything that decides a run's result (a resumed run must match it exactly)."""

    model: str = "mobilenet_v1"  # a built-in, pkg.module:factory, or a saved model file
    tie_bottlenecks: bool | None = None  # None: the model's default (on for mobilenet_v2)
    width: float = 1.0  # the initial network's width multiplier (widths snapped to the grid)
    resolution: int = 32
    data: str = "digits"
    max_per_class: int | None = None
    lut: str = ""  # the LUT version label actually used, e.g. luts/host.db@2
    grid: int | None = None  # channel grid (default: the LUT sweep's)
    missing: str = "error"
    budgets: dict[str, str] = field(default_factory=lambda: {"latency_ms": "0.5"})
    reduction: float = 0.05  # first iteration's reduction, as a fraction of the initial value
    decay: float = 0.98
    pretrain_epochs: int = 15
    short_steps: int = 20
    # Proposals are compared after fine-tuning: when even the best one's holdout accuracy is
    # below this floor (the paper keeps it above 20 %), all of them are fine-tuned again with
    # twice the steps (up to 2**SHORT_STRETCH times), so the comparison is not noise.
    short_floor: float = 0.2
    pick: str = PickRule.ACCURACY  # a key of PICK_RULES
    fine_step: int | None = None  # widths this much finer than the grid, measured on demand
    long_epochs: int = 10
    batch_size: int = 64
    lr_pretrain: float = 0.1
    lr_short: float = 0.01
    lr_long: float = 0.02
    holdout_per_class: int = 10
    augment: bool = True
    threads: int = 1  # torch threads per proposal (part of the result: fixed everywhere)
    loader_workers: int = 1  # processes decoding images for the driver's own training
    seed: int = 0
    weights: str | None = None  # pretrained state dict instead of pretraining
    # The latency budget holds for the network measured whole on this device (and backend)
    # rather than for the LUT's estimate; None: the estimate (the paper's method).
    measured_on: str | None = None
    measured_backend: str | None = None
    max_iterations: int = 200  # a guard, not part of the result (may change on resume)
    # int8: the search prices the LUT's int8 keys and every network is also exported
    # full-integer (adapter.quantize), its accuracy measured on the file.
    dtype: str = "float32"
    calibration_batches: int = 8  # training batches whose activation ranges set int8 scales
    max_int8_drop: float = 1.0  # accuracy points; above: a quantization-aware fine-tune

    NOT_COMPARED = ("max_iterations", "loader_workers")  # loaders give the same batches

    def to_dict(self) -> dict[str, Any]:
        # Plain strings for the enums (--missing, --pick): a checkpoint is read back with
        # torch.load(weights_only=True), which refuses classes it does not know.
        return {k: v.value if isinstance(v, Enum) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AdaptConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def differences(self, other: AdaptConfig) -> list[str]:
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} (checkpoint) vs {b[k]!r} (now)" for k in a
                if k not in self.NOT_COMPARED and a[k] != b.get(k)]

    def budget_list(self) -> list[Budget]:
        if not self.budgets:
            raise AdaptError("give at least one budget (latency, MACs or params)")
        return [Budget.parse(r, v) for r, v in self.budgets.items()]

    def validate(self) -> None:
        if not 0 < self.width <= 1:
            raise AdaptError(f"--width must be in (0, 1], got {self.width}")
        if not 0 < self.reduction < 1:
            raise AdaptError(f"--reduction must be in (0, 1), got {self.reduction}")
        if not 0 < self.decay <= 1:
            raise AdaptError(f"--decay must be in (0, 1], got {self.decay}")
        if self.pick not in PICK_RULES:
            raise AdaptError(f"--pick must be one of {', '.join(PICK_RULES)}, got {self.pick!r}")
        if not 0 <= self.short_floor < 1:
            raise AdaptError(f"--short-floor must be in [0, 1), got {self.short_floor}")
        if self.dtype not in ("float32", "int8"):
            raise AdaptError(f"--dtype must be float32 or int8, got {self.dtype!r}")
        if self.calibration_batches < 1:
            raise AdaptError("--calibration-batches must be at least 1")
        if not self.max_int8_drop >= 0:
            raise AdaptError("--max-int8-drop must not be negative")
        if self.fine_step is not None and self.fine_step < 1:
            raise AdaptError("--fine-step must be at least 1")
        for name in ("short_steps", "batch_size", "holdout_per_class", "threads"):
            if getattr(self, name) < 1:
                raise AdaptError(f"{name.replace('_', '-')} must be at least 1")
        for name in ("pretrain_epochs", "long_epochs", "loader_workers"):
            if getattr(self, name) < 0:
                raise AdaptError(f"{name.replace('_', '-')} must not be negative")
        self.budget_list()


# -- the search space: slot widths -> resources, from the LUT -----------------------------------


@dataclass(frozen=True)
class Proposal:
    group: tuple[str, ...]
    widths: dict[str, int]  # the group's new widths
    resources: dict[str, float]

    @property
    def name(self) -> str:
        return "+".join(self.group)


class SearchSpace:
    """A model's width configs on the LUT's channel grid, and their resources.

    ``model`` is an ``adapter.arch.Architecture`` or what ``Architecture.load`` takes (a
    built-in name, ``pkg.module:factory`` or a saved model): its slots, their lockstep
    groups and its layers all come from the torch model."""

    def __init__(self, model: str | Architecture, resolution: int, classes: int,
                 table: Mapping[str, float], grid: int, missing: str = "error",
                 lut: str = "LUT", calibration: Calibration | None = None,
                 tie_bottlenecks: bool | None = None, fine_step: int | None = None,
                 measure: Measure | None = None, dtype: str = "float32"):
        self.arch = (model if isinstance(model, Architecture) else
                     Architecture.load(model, resolution, classes, tie_bottlenecks, dtype))
        self.fam = self.arch.family
        self.resolution, self.classes, self.grid = resolution, classes, grid
        self.lut = lut  # the version whose entries it uses (a derived one after measuring)
        self.fine_step, self.measure = fine_step, measure
        self.choices = zoo.slot_choices(self.fam, grid)
        layers = self.fam.slot_layers(resolution, classes)
        # latency is the LUT's calibrated estimate when the version has a calibration
        self.calibration = calibration
        self._latency = SlotEstimator(layers, dict(table), missing, lut, calibration)
        self._cost = {"macs": SlotCost(layers, lambda s: s.macs),
                      "params": SlotCost(layers, lambda s: s.params)}
        self.groups = sorted(self.arch.groups, key=lambda g: self.fam.slots.index(g[0]))

    # resources
    def resource(self, name: str, widths: Mapping[str, int]) -> float:
        if name == "latency_ms":
            return self._latency(widths) / 1000.0  # ms
        return self._cost[name](widths)

    def resources(self, widths: Mapping[str, int],
                  names: Sequence[str] = RESOURCES) -> dict[str, float]:
        return {r: self.resource(r, widths) for r in names}

    def network(self, widths: Mapping[str, int], name: str | None = None) -> Network:
        return self.fam.network(widths, resolution=self.resolution, classes=self.classes,
                                name=name)

    def minimum(self) -> dict[str, int]:
        return {s: self.choices[s][0] for s in self.fam.slots}

    def snap(self, widths: Mapping[str, int]) -> dict[str, int]:
        """Each width to the nearest width on the grid (a multiplier network on the LUT)."""
        return {s: min(self.choices[s], key=lambda c: (abs(c - w), c)) for s, w in widths.items()}

    # the search
    def candidates(self, widths: Mapping[str, int], group: tuple[str, ...]) -> list[dict]:
        """The group's smaller width settings, largest first (the lead slot's grid below it)."""
        lead = group[0]
        out = []
        for c in reversed([c for c in self.choices[lead] if c < widths[lead]]):
            ratio = c / widths[lead]
            step = {lead: c}
            for s in group[1:]:  # the others shrink by the same ratio, onto their grid
                below = [x for x in self.choices[s] if x <= max(1, round(ratio * widths[s]))]
                step[s] = below[-1] if below else self.choices[s][0]
            out.append(step)
        return out

    def propose(self, widths: Mapping[str, int], targets: Mapping[str, float]) -> list[Proposal]:
        """Per group: the largest smaller width setting that meets every target; with
        ``fine_step`` (and ``measure``), a single slot then tries the widths between that
        grid width and the one above it, measuring the keys they need on demand."""
        out, above = [], {}
        if self.measure:  # a width off the grid kept earlier gives its neighbours new shapes
            self._fetch({k for g in self.groups for step in self.candidates(widths, g)
                         for k in self.keys({**widths, **step}, g)})
        for group in self.groups:
            prev = {s: widths[s] for s in group}
            for step in self.candidates(widths, group):
                res = self._meets({**widths, **step}, targets)
                if res is not None:
                    out.append(Proposal(group, step, res))
                    above[group] = prev[group[0]]
                    break
                prev = step
        if self.fine_step and self.measure:
            out = self._finer(widths, targets, out, above)
        return out

    def _meets(self, trial: Mapping[str, int], targets: Mapping[str, float]
               ) -> dict[str, float] | None:
        res: dict[str, float] = {}
        for r, t in targets.items():  # short-circuit: latency is checked first
            res[r] = self.resource(r, trial)
            if res[r] > t:
                return None
        res.update(self.resources(trial, [r for r in RESOURCES if r not in res]))
        return res

    def _finer(self, widths: Mapping[str, int], targets: Mapping[str, float],
               proposals: list[Proposal], above: Mapping[tuple[str, ...], int]) -> list[Proposal]:
        """Each single-slot proposal moved up to the largest finer width that meets the
        targets; the keys those widths need are measured in one batch first."""
        trials = {}
        for p in proposals:
            slot = p.group[0]
            if len(p.group) == 1:
                top = (above[p.group] - 1) // self.fine_step * self.fine_step  # aligned
                trials[p.group] = [{slot: w} for w in range(top, p.widths[slot],
                                                            -self.fine_step)]
        self._fetch({key for group, steps in trials.items() for step in steps
                     for key in self.keys({**widths, **step}, group)})
        out = []
        for p in proposals:
            for step in trials.get(p.group, []):
                res = self._meets({**widths, **step}, targets)
                if res is not None:
                    p = Proposal(p.group, step, res)
                    break
            out.append(p)
        return out

    def _fetch(self, keys: set[str]) -> None:
        """Measure (one batch, ``measure``) the keys the table lacks."""
        absent = sorted(k for k in keys if k not in self._latency.table)
        if absent:
            table, self.lut = self.measure(absent)
            self._latency.table.update(table)
            self._latency.lut = self.lut

    def keys(self, widths: Mapping[str, int], group: Sequence[str]) -> list[str]:
        """LUT keys of the layers whose shape depends on ``group``'s slots."""
        return [make(widths).key for slots, make in self._latency.layers
                if set(slots) & set(group)]


def lut_grid(space: Mapping[str, Any], family: str, resolution: int, classes: int,
             lut: str, dtype: str = "float32", device: str = "DEVICE") -> int:
    """The channel grid of the LUT's ``dtype`` sweep that covers this model; clear errors
    (with the command that builds it on ``device``) otherwise. Sweeps of other dtypes do not
    count: an int8 search prices int8 layers only."""
    sweeps = [s for s in space.get("sweeps", []) if family in s.get("families", [])
              and s.get("dtype", "float32") == dtype]
    build = (f"netadapt lut --device {device} --space {family} --resolution {resolution} "
             f"--classes {classes}" + ("" if dtype == "float32" else f" --dtype {dtype}")
             + f" --lut {lut.split('@')[0]}")
    if not sweeps:
        raise AdaptError(f"{lut} holds no {dtype} sweep of {family} (its sweeps: "
                         f"{_sweeps(space) or 'none recorded'}); build one with: {build}"
                         + (", or give --grid" if dtype == "float32" else ""))
    at_res = [s for s in sweeps if resolution in s.get("resolutions", [])]
    if not at_res:
        have = sorted({r for s in sweeps for r in s.get("resolutions", [])})
        raise AdaptError(f"{lut} was swept at {', '.join(map(str, have))} px for {family}"
                         f"{'' if dtype == 'float32' else f' at {dtype}'}, but the model runs at "
                         f"{resolution} px: build the LUT for it with: {build}")
    return min(int(s["grid"]) for s in at_res)


def lut_dtypes(space: Mapping[str, Any]) -> list[str]:
    """The dtypes a LUT version's sweeps hold (float32 when none are recorded)."""
    return sorted({s.get("dtype", "float32") for s in space.get("sweeps", [])}) or ["float32"]


def _sweeps(space: Mapping[str, Any]) -> str:
    return "; ".join(f"{','.join(s.get('families', []))} at {s.get('resolutions')} px, grid "
                     f"{s.get('grid')}, {s.get('classes')} classes, "
                     f"{s.get('dtype', 'float32')}"
                     for s in space.get("sweeps", []))


def missing_keys(space: SearchSpace, table: Mapping[str, float]) -> list[str]:
    """LUT keys the search may need (every reachable shape) that the table lacks."""
    need = zoo.shape_space(space.fam, space.resolution, space.grid, space.classes)
    return sorted(s.key for s in need if s.key not in table)


# -- the resource-reduction schedule ----------------------------------------------------------


@dataclass
class Schedule:
    """target_i = current - reduction * initial * decay**(i-1), per resource, floored at the
    budget; a resource already within its budget only has to stay there."""

    budgets: dict[str, float]  # absolute
    initial: dict[str, float]
    reduction: float
    decay: float

    def targets(self, current: Mapping[str, float], iteration: int,
                relax: int = 0) -> dict[str, float]:
        out = {}
        for r, budget in self.budgets.items():
            if current[r] <= budget:
                out[r] = budget
                continue
            step = self.reduction * self.initial[r] * self.decay ** (iteration - 1) / 2 ** relax
            out[r] = max(budget, current[r] - step)
        return out

    def met(self, current: Mapping[str, float]) -> bool:
        return all(current[r] <= b for r, b in self.budgets.items())

    def check(self, minimum: Mapping[str, float]) -> None:
        """Refuse budgets nothing on the grid meets, and schedules that cannot reach them."""
        for r, b in self.budgets.items():
            if minimum[r] > b:
                raise AdaptError(
                    f"the {SAY[r]} budget ({_fmt(r, b)}) cannot be met: the smallest network on "
                    f"the LUT's grid (every layer at its minimum width) is {_fmt(r, minimum[r])}")
            need = 1 - b / self.initial[r]
            reach = self.reduction / (1 - self.decay) if self.decay < 1 else math.inf
            if need > 0 and reach < need:
                raise AdaptError(
                    f"the schedule can never reach the {SAY[r]} budget: reductions of "
                    f"{self.reduction:g} x decay {self.decay:g} add up to at most {reach:.2f} "
                    f"of the initial value, {need:.2f} is needed; raise --reduction or --decay")


def _fmt(resource: str, v: float) -> str:
    if resource == "latency_ms":
        return f"{v:.3f} ms"
    return f"{v / 1e6:.3f} M {'MACs' if resource == 'macs' else 'params'}"


# -- worker tasks (top level: executors import them by name) ----------------------------------


def make_context(cfg: AdaptConfig, data: Dataset) -> bytes:
    """What every worker needs once: how to open the data, the splits and the settings.
    Workers decode images in their own process (the pool is the parallelism)."""
    hold, rest = data.holdout_split(cfg.holdout_per_class)
    return dumps({"data": data.spec(), "hold": hold, "rest": rest,
                  "settings": {k: getattr(cfg, k) for k in
                               ("short_steps", "batch_size", "lr_short", "augment",
                                "threads")}})


def evaluate_proposal(ctx: dict, task: dict) -> dict:
    """Prune the parent to the proposal, short-term fine-tune, score on the holdout."""
    s = ctx["settings"]
    t0 = time.perf_counter()
    with torch_threads(s["threads"]):
        train.seed_all(task["seed"])
        arch = Architecture.from_dict(task["arch"])
        model = arch.rebuild(task["parent_widths"], loads(task["state"]))
        for slot, width in task["widths"].items():
            arch.prune_slot(model, slot, width)
        ds = reopen(ctx["data"])
        loss = train.train(model, train_loader(ds, ctx["rest"], s["batch_size"],
                                               task.get("steps", s["short_steps"]),
                                               task["seed"], s["augment"]), s["lr_short"])
        acc, hold_loss = train.evaluate(model, eval_loader(ds, "train", ctx["hold"]))
    return {"name": task["name"], "holdout_acc": acc, "holdout_loss": hold_loss,
            "train_loss": loss, "state": dumps(model.state_dict()),
            "seconds": time.perf_counter() - t0}


def curve_loader(ds: Dataset) -> Any:
    """The test images a learning curve is measured on after each epoch: the first
    CURVE_IMAGES (the whole test set would cost as much as the epoch on small data)."""
    return eval_loader(ds, "test", range(min(CURVE_IMAGES, len(ds.test_y))))


def train_from_scratch(ctx: dict, task: dict) -> dict:
    """A baseline (a width-multiplier network) trained with the initial network's recipe:
    the same images (the training set minus the holdout), epochs, schedule and
    augmentation; test accuracy recorded after every epoch."""
    s = ctx["settings"]
    t0 = time.perf_counter()
    with torch_threads(s["threads"]):
        train.seed_all(task["seed"])
        model = Architecture.from_dict(task["arch"]).fresh(task["widths"], task["seed"])
        ds = reopen(ctx["data"])
        curve: list[float] = []
        train.train(model, train_loader(ds, ctx["rest"], s["batch_size"], task["steps"],
                                        task["seed"], s["augment"]), task["lr"],
                    every=task["epoch_steps"],
                    on_every=lambda _: curve.append(train.evaluate(model, curve_loader(ds))[0]))
        acc, loss = train.evaluate(model, eval_loader(ds, "test"))
    return {"name": task["name"], "test_acc": acc, "test_loss": loss, "curve": curve,
            "state": dumps(model.state_dict()), "seconds": time.perf_counter() - t0}


# -- the algorithm ------------------------------------------------------------------------------


class NetAdapt:
    """One adaptation run in a run folder (checkpoint, history, plots, exports)."""

    def __init__(self, cfg: AdaptConfig, space: SearchSpace, data: Dataset, run_dir: Path,
                 executor: Executor, context: bytes | None = None, log: Log = print,
                 progress: Steps = silent):
        cfg.validate()
        if space.classes != len(data.classes):
            raise AdaptError(f"the model has {space.classes} classes, the data "
                             f"{len(data.classes)}")
        if data.resolution != cfg.resolution or space.resolution != cfg.resolution:
            raise AdaptError(f"resolution mismatch: config {cfg.resolution}, data "
                             f"{data.resolution}, search space {space.resolution}")
        self.cfg, self.space, self.data = cfg, space, data
        self.run_dir = Path(run_dir)
        self.executor = executor
        self.ctx = loads(context or make_context(cfg, data))
        self.log = log
        self.progress = progress  # each stage's steps, for whoever draws them
        self.arch = space.arch
        self.model: torch.nn.Module | None = None
        self.qat_model: torch.nn.Module | None = None  # the quantization-aware copy, if any
        self.state: dict[str, Any] = {}

    def widths(self) -> dict[str, int]:
        """The current network's slot widths."""
        return self.arch.widths(self.model)

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    # -- driver -----------------------------------------------------------------------------
    def run(self, resume: bool = False,
            on_iteration: Callable[[dict], None] | None = None) -> dict:
        """Pretrain (or load), adapt to the budgets, long-term fine-tune. Returns the summary.

        Training here uses ``cfg.threads`` torch threads like the workers do: results then
        do not depend on the machine's core count, and spinning OpenMP threads do not
        collapse when other processes load the cores (parallelism comes from the pool)."""
        self._start(resume)
        with torch_threads(self.cfg.threads):
            if self.state["stage"] == "start":
                self._pretrain()
            while self.state["stage"] == "adapting":
                entry = self._iteration()
                if on_iteration:
                    on_iteration(entry)
            if self.state["stage"] == "adapted":
                self._long_term()
        return self.summary()

    def _start(self, resume: bool) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        exists = self.checkpoint_path.exists()
        if exists and not resume:
            raise AdaptError(f"{self.run_dir} already holds a run: continue it with --resume, "
                             "or choose another --name")
        if not exists:
            if resume:
                self.log(f"nothing to resume in {self.run_dir}: starting a new run")
            self.state = {"stage": "start", "iteration": 0, "history": []}
            return
        ckpt = load_checkpoint(self.checkpoint_path)
        old = AdaptConfig.from_dict(ckpt["config"])
        diff = old.differences(self.cfg)
        if diff:
            raise AdaptError(f"{self.run_dir} was started with another configuration; "
                             "resuming it with this one would mix two runs:\n  "
                             + "\n  ".join(diff)
                             + "\nrun with the original options, or choose another --name")
        self.state = ckpt
        self.model = self.arch.rebuild(ckpt["model"]["widths"], ckpt["weights"])
        _set_rng(ckpt["rng"])
        self.log(f"resuming {self.run_dir} at stage {ckpt['stage']}, iteration "
                 f"{ckpt['iteration']}")

    def _save(self) -> None:
        ckpt = {**self.state, "format": CHECKPOINT_FORMAT, "config": self.cfg.to_dict(),
                "model": {"widths": self.widths()}, "weights": self.model.state_dict(),
                "rng": _get_rng()}
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(ckpt, tmp)
        os.replace(tmp, self.checkpoint_path)  # atomic: a kill never leaves half a checkpoint
        (self.run_dir / "history.json").write_text(json.dumps(self.state["history"], indent=1))

    # -- stages -------------------------------------------------------------------------------
    def _pretrain(self) -> None:
        cfg = self.cfg
        widths = self.space.snap(self.space.fam.widths(width_mult=cfg.width))
        res = self.space.resources(widths)
        # Budgets are checked before any training: an impossible one fails in a second.
        budgets = {b.resource: b.absolute(res[b.resource]) for b in cfg.budget_list()}
        measured = self._measured_target(widths, res["latency_ms"], budgets)
        schedule = Schedule(budgets, {r: res[r] for r in budgets}, cfg.reduction, cfg.decay)
        schedule.check(self.space.resources(self.space.minimum()))
        train.seed_all(train.derive_seed(cfg.seed, "init"))
        model = self.arch.fresh(widths, train.derive_seed(cfg.seed, "init"))
        state = _load_weights(cfg.weights) if cfg.weights else (
            self.arch.saved_state() if widths == self.arch.base else None)
        if state is not None:
            try:
                model.load_state_dict(state)
            except (RuntimeError, TypeError) as e:
                why = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                raise AdaptError(f"--weights {cfg.weights} do not fit {cfg.model} x"
                                 f"{cfg.width:g} ({' '.join(why[:2])})") from None
            self.log(f"initial network: weights from {cfg.weights or cfg.model}")
            steps = 0
        else:
            rest = self.ctx["rest"]
            steps = cfg.pretrain_epochs * train.steps_per_epoch(len(rest), cfg.batch_size)
            self.log(f"pretraining {cfg.model} for {cfg.pretrain_epochs} epochs ({steps} steps) "
                     f"on {len(rest)} images (the holdout stays unseen)")
            curve: list[float] = []
            epoch = train.steps_per_epoch(len(rest), cfg.batch_size)
            shown = _TrainingSteps(self.progress, "pretraining", steps, epoch, curve)

            def end_of_epoch(step: int) -> None:
                curve.append(train.evaluate(model, curve_loader(self.data))[0])
                shown.show(step)  # with the new accuracy
                self.log(f"  epoch {step // epoch}/{cfg.pretrain_epochs}: loss "
                         f"{shown.epoch_loss():.3f}, test acc {curve[-1]:.3f}")

            train.train(model, train_loader(self.data, rest, cfg.batch_size, steps,
                                            train.derive_seed(cfg.seed, "pretrain"), cfg.augment,
                                            cfg.loader_workers), cfg.lr_pretrain,
                        every=epoch, on_every=end_of_epoch, on_step=shown)
            self.state["curves"] = {"initial": curve}
        self.model = model
        self.state["initial_exports"] = save_exports(model, self.run_dir, "initial", self.arch)
        hold_acc, hold_loss = self._holdout()
        test_acc, _ = self._test()
        self.state.update(stage="adapting", iteration=0, budgets=budgets,
                          initial={"widths": widths, **res, "test_acc": test_acc,
                                   "holdout_acc": hold_acc},
                          pretrain_steps=steps)
        if measured:
            self.state["initial"]["measured_ms"] = measured["initial_ms"]
            self.state["measured_budget"] = measured
        self.state["history"] = [{"iteration": 0, "chosen": None, "widths": widths, **res,
                                  "holdout_acc": hold_acc, "holdout_loss": hold_loss,
                                  "targets": {}, "proposals": []}]
        self.log(f"initial: {_fmt('latency_ms', res['latency_ms'])} estimated, test acc "
                 f"{test_acc:.3f}, holdout acc {hold_acc:.3f}; budget "
                 + ", ".join(_fmt(r, b) for r, b in budgets.items()))
        if schedule.met(res) and self._measured_ok(0, widths, res["latency_ms"]):
            self.state["stage"] = "adapted"
        self._save()

    # -- a budget on measured latency ---------------------------------------------------------
    def _measure_ms(self, networks: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
        """Networks (name -> widths) measured whole on the device, in interleaved rounds."""
        got = measure({n: self.space.network(w, name=n) for n, w in networks.items()},
                      self.cfg.measured_on, self.cfg.measured_backend, log=self.log)
        if got is None:
            raise AdaptError(f"a measured latency budget needs {self.cfg.measured_on} "
                             "attached; attach it, or drop --measured-budget")
        return got

    def _measured_target(self, widths: Mapping[str, int], estimate_ms: float,
                         budgets: dict[str, float]) -> dict[str, Any] | None:
        """With a measured budget: the target in measured ms, from the initial network
        measured now; the estimate's budget (in ``budgets``) starts at it scaled by the
        initial network's estimated / measured latency."""
        budget = next((b for b in self.cfg.budget_list() if b.resource == "latency_ms"), None)
        if not self.cfg.measured_on or budget is None:
            return None
        measured = self._measure_ms({"initial": widths})["initial"]
        target = budget.absolute(measured)
        budgets["latency_ms"] = target * estimate_ms / measured
        self.log(f"initial: {measured:.3f} ms measured on {self.cfg.measured_on}; budget "
                 f"{target:.3f} ms measured = {budgets['latency_ms']:.3f} ms estimated")
        return {"device": self.cfg.measured_on, "initial_ms": measured, "target_ms": target,
                "relative": budget.value if budget.relative else None,
                "estimate_budget_ms": budgets["latency_ms"], "checks": []}

    def _measured_ok(self, iteration: int, widths: Mapping[str, int],
                     estimate_ms: float) -> bool:
        """With a measured budget: measure the network that meets the estimate's budget. Too
        slow: tighten the estimate's budget by estimated / measured and go on adapting.
        A relative budget is checked against the initial network measured alongside
        (same rounds), so the device's drift since the start does not count."""
        mb = self.state.get("measured_budget")
        if mb is None:
            return True
        nets = {f"iteration{iteration}": widths}
        if mb.get("relative"):
            nets["initial"] = self.state["initial"]["widths"]
        got = self._measure_ms(nets)
        measured = got[f"iteration{iteration}"]
        target = mb["relative"] * got["initial"] if mb.get("relative") else mb["target_ms"]
        ok = measured <= target
        new = self.state["budgets"]["latency_ms"] if ok else target * estimate_ms / measured
        mb["checks"].append({"iteration": iteration, "estimated_ms": estimate_ms,
                             "measured_ms": measured, "initial_ms": got.get("initial"),
                             "target_ms": target, "estimate_budget_ms": new})
        self.log(f"  measured {measured:.3f} ms on {mb['device']} (budget {target:.3f} ms"
                 + (f" = {mb['relative']:g} x the initial network now" if mb.get("relative")
                    else "")
                 + ("): met" if ok else f"): estimate's budget tightened to {new:.3f} ms"))
        if not ok:
            smallest = self.space.resource("latency_ms", self.space.minimum())
            if new < smallest:
                raise AdaptError(
                    f"the measured budget {target:.3f} ms cannot be met: at the device's "
                    f"measured / estimated ratio it needs an estimate of {new:.3f} ms, and "
                    f"the smallest network on the grid is {smallest:.3f} ms")
            self.state["budgets"]["latency_ms"] = new
        return ok

    def schedule(self) -> Schedule:
        s = self.state
        return Schedule(s["budgets"], {r: s["initial"][r] for r in s["budgets"]},
                        self.cfg.reduction, self.cfg.decay)

    def _iteration(self) -> dict:
        i = self.state["iteration"] + 1
        if i > self.cfg.max_iterations:
            raise AdaptError(f"stopped after {self.cfg.max_iterations} iterations without "
                             f"meeting the budget; continue with --resume --max-iterations "
                             f"{2 * self.cfg.max_iterations}")
        t0 = time.perf_counter()
        widths = self.widths()
        current = self.space.resources(widths)
        schedule = self.schedule()
        for relax in range(MAX_RELAX + 1):
            targets = schedule.targets(current, i, relax)
            proposals = self.space.propose(widths, targets)
            if proposals:
                break
        else:
            raise AdaptError(f"iteration {i}: no single-slot reduction lowers the network to "
                             f"{targets}; the LUT may be too noisy at this size")
        step = f"iteration {i}"
        results, steps = self._evaluate(i, widths, proposals)
        best = self._pick(proposals, results, current["latency_ms"])
        chosen, res = proposals[best], results[best]
        moved = ", ".join(f"{s} {widths[s]}->{w}" for s, w in chosen.widths.items())
        self.progress(step, len(proposals), len(proposals), f"kept {moved}: "
                      f"{_fmt('latency_ms', chosen.resources['latency_ms'])}, holdout acc "
                      f"{res['holdout_acc']:.3f}")
        self.model = self.arch.rebuild({**widths, **chosen.widths}, loads(res["state"]))
        entry = {
            "iteration": i, "targets": targets, "relaxed": relax, "chosen": chosen.name,
            "widths": self.widths(), **chosen.resources,
            "holdout_acc": res["holdout_acc"], "holdout_loss": res["holdout_loss"],
            "short_steps": steps, "lut": self.space.lut, "seconds": time.perf_counter() - t0,
            "proposals": [{"name": p.name, "from": {s: widths[s] for s in p.group},
                           "to": p.widths, **p.resources, "holdout_acc": r["holdout_acc"],
                           "holdout_loss": r["holdout_loss"], "train_loss": r["train_loss"],
                           "seconds": r["seconds"]} for p, r in zip(proposals, results)],
        }
        self.state["history"].append(entry)
        self.state["iteration"] = i
        self.log(f"iteration {i}: target {_fmt('latency_ms', targets['latency_ms'])}" if "latency_ms"
                 in targets else f"iteration {i}:")
        self.log(f"  {len(proposals)} proposals; kept {moved}: "
                 f"{_fmt('latency_ms', chosen.resources['latency_ms'])}, holdout acc "
                 f"{res['holdout_acc']:.3f} ({entry['seconds']:.1f} s)")
        if schedule.met(chosen.resources) and self._measured_ok(
                i, self.widths(), chosen.resources["latency_ms"]):
            self.state["stage"] = "adapted"
        self._save()  # a kill before this redoes the iteration, identically
        return entry

    def _evaluate(self, i: int, widths: Mapping[str, int],
                  proposals: Sequence[Proposal]) -> tuple[list[dict], int]:
        """Short-term fine-tune and score every proposal; again with twice the steps while
        even the best stays below ``short_floor`` (so proposals are compared, not noise)."""
        parent = {"arch": self.arch.to_dict(), "parent_widths": widths,
                  "state": dumps(self.model.state_dict())}
        steps = self.cfg.short_steps
        for stretch in range(SHORT_STRETCH + 1):
            tasks = [{**parent, "name": p.name, "widths": p.widths, "steps": steps,
                      "seed": train.derive_seed(self.cfg.seed, "short", i, p.name)}
                     for p in proposals]
            # one short of the total: the step ends when the kept proposal is known
            count = _Count(self.progress, f"iteration {i}", len(proposals),
                           f"{len(proposals)} proposals, {steps} fine-tune steps each")
            results = self.executor.map(evaluate_proposal, tasks, done=count)
            top = max(r["holdout_acc"] for r in results)
            if top >= self.cfg.short_floor or stretch == SHORT_STRETCH:
                return results, steps
            self.log(f"  best holdout accuracy {top:.3f} < {self.cfg.short_floor:g} after "
                     f"{steps} steps: fine-tuning the proposals for {2 * steps}")
            steps *= 2
        raise AssertionError("unreachable")

    def _pick(self, proposals: Sequence[Proposal], results: Sequence[dict],
              latency_ms: float) -> int:
        """Index of the proposal to keep, by ``cfg.pick`` (see PICK_RULES)."""
        if self.cfg.pick == "accuracy":
            def score(k: int) -> float:
                return results[k]["holdout_acc"]
        else:  # accuracy lost per ms saved, from the parent's holdout accuracy
            parent_acc = self.state["history"][-1]["holdout_acc"]

            def score(k: int) -> float:
                saved = max(latency_ms - proposals[k].resources["latency_ms"], 1e-9)
                return -(parent_acc - results[k]["holdout_acc"]) / saved
        return max(range(len(results)), key=lambda k: (score(k), -results[k]["holdout_loss"],
                                                       -k))

    def _long_term(self) -> None:
        cfg = self.cfg
        before, _ = self._test()
        n = len(self.data.train)
        steps = cfg.long_epochs * train.steps_per_epoch(n, cfg.batch_size)
        self.log(f"budget met after {self.state['iteration']} iterations; long-term fine-tune: "
                 f"{cfg.long_epochs} epochs ({steps} steps) on all {n} training images")
        train.seed_all(train.derive_seed(cfg.seed, "long"))
        train.train(self.model, train_loader(self.data, None, cfg.batch_size, steps,
                                             train.derive_seed(cfg.seed, "long"), cfg.augment,
                                             cfg.loader_workers), cfg.lr_long,
                    on_step=_TrainingSteps(self.progress, "long-term fine-tune", steps,
                                           train.steps_per_epoch(n, cfg.batch_size)))
        after, _ = self._test()
        self.state.update(stage="done", long_steps=steps,
                          adapted={"test_acc_before_long": before, "test_acc": after})
        self.log(f"test accuracy of the adapted network: {before:.3f} before long-term "
                 f"fine-tuning, {after:.3f} after")
        self._save()

    def _holdout(self) -> tuple[float, float]:
        return train.evaluate(self.model, eval_loader(self.data, "train", self.ctx["hold"]))

    def _test(self) -> tuple[float, float]:
        return train.evaluate(self.model, eval_loader(self.data, "test",
                                                      workers=self.cfg.loader_workers))

    # -- results -------------------------------------------------------------------------------
    def training_steps(self) -> int:
        """Steps the adapted network's lineage was trained for: pretrain + kept short-term
        fine-tunes + long-term (the budget the baselines get)."""
        s = self.state
        kept = sum(h.get("short_steps", self.cfg.short_steps) for h in s["history"][1:])
        return (s.get("pretrain_steps", 0) + kept
                + s.get("long_steps", 0))

    def summary(self) -> dict:
        s = copy.deepcopy(self.state)  # callers add to it; the checkpoint stays as it is
        widths = self.widths()
        res = self.space.resources(widths)
        return {
            "config": self.cfg.to_dict(), "stage": s["stage"], "iterations": s["iteration"],
            "pick_rule": PICK_RULES[self.cfg.pick], "budgets": s["budgets"], "data": self.data.describe(),
            "initial": s["initial"],
            "adapted": {"widths": widths, **res, **s.get("adapted", {}),
                        "holdout_acc": s["history"][-1]["holdout_acc"]},
            "training_steps": self.training_steps(),
            "recipe": self.recipe(),
            "netadapt_extra_steps": self.training_steps() - s.get("pretrain_steps", 0),
            "curves": s.get("curves", {}),
            "initial_exports": s.get("initial_exports"),
            "measured_budget": s.get("measured_budget"),
        }

    def recipe(self) -> dict[str, Any]:
        """How the initial network is trained, and so every multiplier network."""
        cfg, n = self.cfg, len(self.ctx["rest"])
        epoch = train.steps_per_epoch(n, cfg.batch_size)
        return {"epochs": cfg.pretrain_epochs, "steps": cfg.pretrain_epochs * epoch,
                "epoch_steps": epoch, "images": n, "lr": cfg.lr_pretrain,
                "schedule": "cosine", "augment": cfg.augment}

    def compare_multipliers(self, multipliers: Sequence[float],
                            equal_to: float | None = None) -> list[dict]:
        """Width-multiplier networks trained from scratch with the initial network's recipe
        (``recipe``), run through the executor, exported with their trained weights
        (``multipliers/<name>.tflite``); cached in the checkpoint."""
        fam, recipe = self.space.fam, self.recipe()
        if recipe["steps"] == 0:
            raise AdaptError("the multiplier networks are trained with the initial network's "
                             "recipe: give --pretrain-epochs (the initial network's weights "
                             "came from --weights)")
        nets = [(f"x{m:g}", m, self.space.snap(fam.widths(width_mult=m))) for m in multipliers]
        if equal_to is not None:
            m, w = equal_latency_multiplier(self.space, equal_to)
            nets.append((f"x{m:.2f} (equal latency)", m, w))
        key = [[n, m, w] for n, m, w in nets] + [recipe]
        cached = self.state.get("baselines", {})
        if cached.get("key") == key:
            return cached["results"]
        self.log(f"training {len(nets)} width-multiplier network(s) from scratch with the "
                 f"initial network's recipe ({recipe['epochs']} epochs, {recipe['steps']} "
                 f"steps each), on {self.executor.name}")
        tasks = [{"name": n, "arch": self.arch.to_dict(), "widths": w,
                  "steps": recipe["steps"], "epoch_steps": recipe["epoch_steps"],
                  "lr": self.cfg.lr_pretrain,
                  "seed": train.derive_seed(self.cfg.seed, "baseline", n)} for n, _, w in nets]
        results = self.executor.map(train_from_scratch, tasks, done=_Count(
            self.progress, "width-multiplier networks", len(tasks), "trained", last=True))
        folder = self.run_dir / "multipliers"
        folder.mkdir(exist_ok=True)
        out = []
        for (n, m, w), r in zip(nets, results):
            model = self.arch.rebuild(w, loads(r["state"]))
            stem = n.split()[0] + ("_equal_latency" if "equal" in n else "")
            out.append({"name": n, "multiplier": m, "widths": w, **self.space.resources(w),
                        "test_acc": r["test_acc"], "curve": r["curve"],
                        "seconds": r["seconds"],
                        "exports": save_exports(model, folder, stem, self.arch)})
        self.state["baselines"] = {"key": key, "results": out}
        self._save()
        return out


class _Count:
    """``done()`` per finished task, shown as a step of ``total``; the last one is left to the
    caller (``last=False``), who ends the step with what was decided."""

    def __init__(self, progress: Steps, name: str, total: int, detail: str,
                 last: bool = False) -> None:
        self.progress, self.name, self.total, self.detail = progress, name, total, detail
        self.cap = total if last else total - 0.5
        self.done = 0
        progress(name, 0, total, detail)

    def __call__(self) -> None:
        self.done += 1
        self.progress(self.name, min(self.done, self.cap), self.total, self.detail)


class _TrainingSteps:
    """Training steps as a step of ``total``: the epoch, the epoch's mean loss so far and
    the last test accuracy of the learning curve (``curve``), when there is one."""

    def __init__(self, progress: Steps, name: str, total: int, epoch: int,
                 curve: Sequence[float] = ()) -> None:
        self.progress, self.name, self.total, self.epoch = progress, name, total, epoch
        self.curve = curve
        self.losses: list[float] = []

    def epoch_loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else float("nan")

    def __call__(self, step: int, loss: float) -> None:
        if (step - 1) % self.epoch == 0:
            self.losses = []
        self.losses.append(loss)
        self.show(step)

    def show(self, step: int) -> None:
        epochs = math.ceil(self.total / self.epoch)
        acc = f", test acc {self.curve[-1]:.3f}" if self.curve else ""
        self.progress(self.name, step, self.total, f"epoch {math.ceil(step / self.epoch)}/"
                      f"{epochs}, loss {self.epoch_loss():.3f}{acc}")


def equal_latency_multiplier(space: SearchSpace, latency_ms: float) -> tuple[float, dict]:
    """The width multiplier (0.01 steps, widths snapped to the grid) whose estimated latency
    is closest to ``latency_ms``: the paper's layer-by-layer comparison partner."""
    best = None
    for m in np.arange(0.05, 1.0001, 0.01):
        w = space.snap(space.fam.widths(width_mult=float(m)))
        gap = abs(space.resource("latency_ms", w) - latency_ms)
        if best is None or gap < best[0]:
            best = (gap, round(float(m), 2), w)
    return best[1], best[2]


# -- checkpoints ------------------------------------------------------------------------------


def load_checkpoint(path: Path) -> dict:
    """A checkpoint, or AdaptError saying it is corrupt and what to do."""
    try:
        ckpt = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, bad pickle, wrong file ...
        raise AdaptError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); delete the run folder "
                         "(or choose another --name) to start over") from None
    need = {"format", "config", "stage", "iteration", "history", "model", "weights", "rng"}
    if not isinstance(ckpt, dict) or not need <= set(ckpt):
        raise AdaptError(f"checkpoint {path} is corrupt (missing "
                         f"{', '.join(sorted(need - set(ckpt) if isinstance(ckpt, dict) else need))}"
                         "); delete the run folder to start over")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise AdaptError(f"checkpoint {path} has format {ckpt['format']}, this version reads "
                         f"{CHECKPOINT_FORMAT}")
    return ckpt


def _load_weights(path: str) -> dict:
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise AdaptError(f"--weights {path}: cannot read a state dict ({e})") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _get_rng() -> dict:
    npst = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
            "numpy": [npst[0], torch.from_numpy(npst[1].astype(np.int64)), *npst[2:]]}


def _set_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate((3, tuple(rng["python"]), None))
    n = rng["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))


# -- verification on the device ---------------------------------------------------------------


def measure(networks: Mapping[str, Network | bytes], device: str, backend: str | None = None,
            rounds: int = 3, log: Log = print, progress: Steps = silent
            ) -> dict[str, float] | None:
    """Median latency (ms) of each network measured whole on the device (``bench.timing``:
    interleaved rounds, so drift hits all alike); None when the device is not attached."""
    got = measure_with_drift(networks, device, backend, rounds, log, progress=progress)
    return None if got is None else got[0]


DRIFT_KEYS = 100  # layers timed alone again beside the networks (about a second on host)


def measure_with_drift(networks: Mapping[str, Network | bytes], device: str,
                       backend: str | None = None, rounds: int = 3, log: Log = print,
                       lut: Mapping[str, float] | None = None, keys: Sequence[str] = (),
                       progress: Steps = silent) -> tuple[dict[str, float], float | None] | None:
    """``measure``, and with ``lut`` a sample of ``keys`` (layers of those networks) timed
    alone again between the rounds: how much slower the device runs them now than when
    the LUT was measured (sum / sum), the drift no estimate can know. None when the
    device is not attached."""
    from bench.devices import open_runners
    from bench.runners.base import RunnerError
    from bench.timing import DriftSample, NetworkFailed, session_state, sum_ratio, time_networks

    plan = [k for k in dict.fromkeys(keys) if lut and k in lut]
    plan = random.Random(0).sample(plan, min(DRIFT_KEYS, len(plan)))
    with contextlib.ExitStack() as stack:
        try:
            runners = stack.enter_context(open_runners(device, backend))
        except RunnerError as e:
            log(f"{device} is not attached ({e}): measured latency left out")
            return None
        if not runners:
            log(f"{device} is not attached: measured latency left out")
            return None

        sample = DriftSample(runners[0], plan)
        total, timed = rounds * len(networks), [0]

        def counted(n: int, what: str) -> None:
            timed[0] += n
            progress(f"measuring on {device}", timed[0], total, what)

        try:
            timed = time_networks(runners[0], networks, rounds, progress=counted,
                                  between=lambda p: sample.measure_slice(p, rounds))
        except NetworkFailed as e:
            raise AdaptError(f"{device} could not run a network: {e}") from None
        ms = {name: m.latency_ms for name, m in timed.items()}
        state = session_state(timed)
        if state is not None and state.warning():
            log(state.warning("the networks' latencies"))
    return ms, (sum_ratio(lut, sample.now) if lut and sample.now else None)


def interpolate_curve(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """y at x on the piecewise-linear curve through (xs, ys) sorted by x; None outside it."""
    pts = sorted(zip(xs, ys))
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def speedup_at_equal_accuracy(mult_ms: Sequence[float], mult_acc: Sequence[float],
                              adapted_ms: float, adapted_acc: float) -> float | None:
    """Latency the multiplier curve needs for the adapted accuracy, over the adapted latency.

    The curve is walked from fast to slow to the first network at least as accurate,
    interpolating from the one before it; when the fastest is already as accurate, its
    latency counts (the curve may do even better below it, so the ratio is an upper
    bound). None when no multiplier network reaches the adapted accuracy."""
    pts = sorted(zip(mult_ms, mult_acc))
    for i, (x1, y1) in enumerate(pts):
        if y1 >= adapted_acc:
            if i == 0:
                return x1 / adapted_ms
            x0, y0 = pts[i - 1]
            return (x0 + (x1 - x0) * (adapted_acc - y0) / (y1 - y0)) / adapted_ms
    return None
