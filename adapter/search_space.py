"""The search space: a model's slot widths on the LUT's channel grid, and their resources.

``SearchSpace`` prices any width config from the LUT (the version's calibrated estimate)
and makes one iteration's proposals: per slot (or lockstep group) the largest smaller
width that meets the schedule's targets. ``lut_grid`` and ``missing_keys`` say which
grid a LUT covers and which keys a search would need that it lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapter.arch import Architecture
from adapter.config import RESOURCES
from adapter.errors import AdaptError
from adapter.schedule import Schedule
from bench import zoo
from lut_db.calibration import Calibration
from lut_db.estimate import SlotCost, SlotEstimator
from lut_db.network import Network

MAX_RELAX = 6  # halvings of an iteration's reduction when no single slot can meet it
# missing keys -> (their entries, the label of the LUT version now holding them)
Measure = Callable[[list[str]], tuple[Mapping[str, float], str]]


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

    def iteration(self, widths: Mapping[str, int], schedule: Schedule, i: int
                  ) -> tuple[dict[str, float], int, list[Proposal]]:
        """Iteration ``i``'s (targets, relaxations, proposals): the schedule's targets, halved
        up to MAX_RELAX times while no single slot (or group) can meet them."""
        current = self.resources(widths)
        for relax in range(MAX_RELAX + 1):
            targets = schedule.targets(current, i, relax)
            proposals = self.propose(widths, targets)
            if proposals:
                return targets, relax, proposals
        raise AdaptError(f"iteration {i}: no single-slot reduction lowers the network to "
                         f"{targets}; the LUT may be too noisy at this size")

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


def default_dtype(space: Mapping[str, Any]) -> str:
    """The dtype a search prices by default: the LUT's when its sweeps hold one, else
    float32."""
    have = lut_dtypes(space)
    return have[0] if len(have) == 1 else "float32"


def _sweeps(space: Mapping[str, Any]) -> str:
    return "; ".join(f"{','.join(s.get('families', []))} at {s.get('resolutions')} px, grid "
                     f"{s.get('grid')}, {s.get('classes')} classes, "
                     f"{s.get('dtype', 'float32')}"
                     for s in space.get("sweeps", []))


def missing_keys(space: SearchSpace, table: Mapping[str, float]) -> list[str]:
    """LUT keys the search may need (every reachable shape) that the table lacks."""
    need = zoo.shape_space(space.fam, space.resolution, space.grid, space.classes)
    return sorted(s.key for s in need if s.key not in table)
