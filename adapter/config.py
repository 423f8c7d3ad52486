"""A run's budgets and configuration: what decides an adaptation's result.

A budget bounds one resource (latency in ms, MACs or parameters), absolute or as a ratio
of the initial network's; ``AdaptConfig`` holds every setting of a `netadapt adapt` run,
so a resumed run can be refused when its settings differ from the checkpoint's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from adapter.errors import AdaptError
from adapter.pick import PICK_RULES, PickRule

RESOURCES = ("latency_ms", "macs", "params")
SAY = {"latency_ms": "latency", "macs": "MACs", "params": "params"}  # in messages
_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def fmt_resource(resource: str, v: float) -> str:
    """A resource's value as messages show it (ms, or millions of MACs / params)."""
    if resource == "latency_ms":
        return f"{v:.3f} ms"
    return f"{v / 1e6:.3f} M {'MACs' if resource == 'macs' else 'params'}"


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


def budget_options(budget: str | float, max_macs: str | float | None = None,
                   max_params: str | float | None = None) -> dict[str, str]:
    """``--budget``, ``--max-macs`` and ``--max-params`` as ``AdaptConfig.budgets``, each
    parsed once so a bad one is refused before any work."""
    out = {"latency_ms": str(budget)}
    if max_macs is not None:
        out["macs"] = str(max_macs)
    if max_params is not None:
        out["params"] = str(max_params)
    for r, v in out.items():
        Budget.parse(r, v)
    return out


def _positive(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise AdaptError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise AdaptError(f"{where}: {text!r} is not a finite number")
    if not v > 0:
        raise AdaptError(f"{where}: must be positive")
    return v



def _option(name: str) -> str:
    """A setting as messages name it: its `netadapt adapt` option, where it has one."""
    return name.replace("_", "-") if name in ("holdout_per_class", "threads") else \
        "--" + name.replace("_", "-")


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
        if self.resolution < 1:
            raise AdaptError(f"--resolution must be at least 1 (pixels), got {self.resolution}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise AdaptError(f"--max-per-class must be at least 1, got {self.max_per_class}; "
                             "leave it out to use every image")
        if self.grid is not None and self.grid < 1:
            raise AdaptError(f"--grid must be at least 1, got {self.grid}; leave it out to "
                             "use the LUT sweep's")
        if self.max_iterations < 1:
            raise AdaptError(f"--max-iterations must be at least 1, got {self.max_iterations}")
        for name in ("lr_pretrain", "lr_short", "lr_long"):
            if not 0 < getattr(self, name) < math.inf:  # NaN too
                raise AdaptError(f"{_option(name)} must be a positive number, got "
                                 f"{getattr(self, name)}")
        for name in ("short_steps", "batch_size", "holdout_per_class", "threads"):
            if getattr(self, name) < 1:
                raise AdaptError(f"{_option(name)} must be at least 1")
        for name in ("pretrain_epochs", "long_epochs", "loader_workers"):
            if getattr(self, name) < 0:
                raise AdaptError(f"{_option(name)} must not be negative")
        self.budget_list()
        self._check_network()

    def _check_network(self) -> None:
        """A built-in family's network at this width and resolution must be one its layers
        can hold (``LayerSpec``'s size limit), before images are resized to it."""
        from bench import zoo
        from lut_db.spec import SpecError

        if self.model not in zoo.FAMILIES:
            return
        try:
            zoo.family(self.model).network(width_mult=self.width, resolution=self.resolution,
                                           classes=1)
        except SpecError as e:
            raise AdaptError(f"--resolution {self.resolution}: {e}") from None
