"""The validation set: seedable networks drawn from a LUT version's sweep space.

Width-multiplier networks, random per-layer width configs on the LUT's channel grid and
off it, NetAdapt-like steps (one layer or lockstep group narrowed), every resolution the
version holds, and held-out families (``analysis.families``) that no sweep contained.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from analysis.families import HELD_OUT
from bench.zoo import MULTIPLIERS, Family, family, make_divisible, slot_choices
from lut_db.errors import UserError
from lut_db.network import Network

KINDS = ("multiplier", "random", "netadapt", "resolution", "off_grid", "held_out")


class ValidationError(UserError):
    """A validation that cannot run as asked; the message is for the user as it is."""


@dataclass(frozen=True)
class Space:
    """What a LUT version was swept over: families, resolutions, grid, classes, dtypes."""

    families: tuple[str, ...]
    resolutions: tuple[int, ...]
    grid: int
    classes: int
    dtypes: tuple[str, ...] = ("float32",)

    @classmethod
    def of(cls, space: Mapping[str, Any]) -> Space:
        sweeps = [s for s in space.get("sweeps", []) if isinstance(s, dict)]
        if not sweeps:
            raise ValidationError("the LUT version records no sweep space (families, "
                                  "resolutions, grid), so there is nothing to sample from")
        fams = tuple(dict.fromkeys(f for s in sweeps for f in s.get("families", [])))
        res = tuple(dict.fromkeys(int(r) for s in sweeps for r in s.get("resolutions", [])))
        grids = [int(s.get("grid", 32)) for s in sweeps]
        dtypes = tuple(dict.fromkeys(str(s.get("dtype", "float32")) for s in sweeps))
        return cls(fams, res, max(grids), int(sweeps[0].get("classes", 1000)), dtypes)


def _snap(value: float, choices: Sequence[int]) -> int:
    return min(choices, key=lambda c: (abs(c - value), c))


def random_widths(fam: Family, rng: random.Random, grid: int | None,
                  factor: tuple[float, float] = (0.25, 1.0)) -> list[int]:
    """A pruned-looking config: a global factor drawn from ``factor`` jittered per slot.

    On the grid (``grid`` given): each width snapped to the slot's LUT choices. Off it
    (``grid`` None): rounded to multiples of 8 that are not multiples of the LUT grid.
    """
    g = rng.uniform(*factor)
    out = []
    for slot, base in zip(fam.slots, fam.base):
        target = base * min(1.0, max(0.03, g * rng.uniform(0.8, 1.2)))
        if grid is not None:
            out.append(_snap(target, slot_choices(fam, grid)[slot]))
        else:
            out.append(make_divisible(target, 8))
    return out


def _off_grid(fam: Family, rng: random.Random, grid: int) -> list[int]:
    """Random widths with at least a third of the slots off the grid (multiples of 8)."""
    widths = random_widths(fam, rng, None)
    for i, w in enumerate(widths):
        if w % grid == 0 and rng.random() < 0.5 and w > 8:
            widths[i] = w - 8
    return widths


def _netadapt_step(fam: Family, rng: random.Random, grid: int) -> tuple[list[int], str]:
    """A NetAdapt-like step: a multiplier or random parent with one slot (group) narrowed."""
    start = (list(fam.multiplier(rng.choice(MULTIPLIERS[1:]))) if rng.random() < 0.5
             else random_widths(fam, rng, grid))
    choices = slot_choices(fam, grid)
    for _ in range(20):
        i = rng.randrange(len(fam.slots))
        smaller = [c for c in choices[fam.slots[i]] if c < start[i]]
        if smaller:
            start[i] = rng.choice(smaller[-3:])
            return start, fam.slots[i]
    return start, ""


def _name(fam: str, kind: str, net: Network) -> str:
    """Names are content hashes: equal networks get equal names across seeds and runs."""
    digest = hashlib.sha1(net.to_json().encode()).hexdigest()[:8]
    return f"{fam}-{kind}-{net.input_shape[0]}-{digest}"


def make_network(fam: Family, kind: str, widths: Sequence[int], resolution: int, classes: int,
          held_out: bool = False, note: str = "") -> Network:
    net = fam.network(list(widths), resolution=resolution, classes=classes, name="tmp")
    name = _name(fam.name, kind, net)
    meta = {**net.meta, "kind": kind, "held_out": held_out}
    if note:
        meta["note"] = note
    return Network(name, net.input_shape, net.nodes, net.outputs, meta)


def plan_counts(n: int, n_families: int, extra_resolutions: bool) -> dict[str, int]:
    """How many networks of each kind a set of ``n`` gets (multipliers are all taken)."""
    mult = len(MULTIPLIERS) * n_families
    held = max(2, round(0.12 * n))
    off = max(2, round(0.12 * n))
    res = max(2, round(0.12 * n)) if extra_resolutions else 0
    rest = max(0, n - mult - held - off - res)
    step = rest // 3
    return {"multiplier": mult, "netadapt": step, "random": rest - step, "resolution": res,
            "off_grid": off, "held_out": held}


def sample_networks(space: Space, n: int = 60, seed: int = 0,
                    held_out: Iterable[str] = tuple(HELD_OUT),
                    off_grid: bool = True) -> list[Network]:
    """A seedable validation set of (about) ``n`` networks drawn from ``space``; without
    ``held_out`` families or ``off_grid`` widths, random configs on the grid take their
    places (a calibration set: every key in the LUT)."""
    if not space.families or not space.resolutions:
        raise ValidationError("the LUT's space has no families or resolutions to sample")
    rng = random.Random(seed)
    fams = [family(f) for f in space.families]
    main, others = space.resolutions[0], space.resolutions[1:]
    counts = plan_counts(n, len(fams), bool(others))
    nets: list[Network] = []
    for f in fams:
        nets += [make_network(f, "multiplier", f.multiplier(m), main, space.classes)
                 for m in MULTIPLIERS]
    for i in range(counts["random"]):
        f = fams[i % len(fams)]
        nets.append(make_network(f, "random", random_widths(f, rng, space.grid), main, space.classes))
    for i in range(counts["netadapt"]):
        f = fams[i % len(fams)]
        widths, slot = _netadapt_step(f, rng, space.grid)
        nets.append(make_network(f, "netadapt", widths, main, space.classes, note=f"narrowed {slot}"))
    for i in range(counts["resolution"]):
        f = fams[i % len(fams)]
        nets.append(make_network(f, "resolution", random_widths(f, rng, space.grid),
                          others[i % len(others)], space.classes))
    for i in range(counts["off_grid"] if off_grid else 0):
        f = fams[i % len(fams)]
        nets.append(make_network(f, "off_grid", _off_grid(f, rng, space.grid), main, space.classes))
    held = [HELD_OUT[h] for h in held_out]
    for i in range(counts["held_out"] if held else 0):
        f = held[i % len(held)]
        m = rng.choice(MULTIPLIERS)
        widths = f.multiplier(m) if i < 2 * len(held) else random_widths(f, rng, space.grid)
        nets.append(make_network(f, "held_out", widths, main, space.classes, held_out=True))
    nets = _unique(nets)
    for i in range(20 * n):  # duplicates (small spaces): top up with more random configs
        if len(nets) >= n:
            break
        f = fams[i % len(fams)]
        nets = _unique(nets + [make_network(f, "random", random_widths(f, rng, space.grid), main,
                                     space.classes)])
    return at_dtypes(nets, space.dtypes)


def at_dtypes(nets: Sequence[Network], dtypes: Sequence[str]) -> list[Network]:
    """Each network at one of ``dtypes`` in turn (a LUT version may hold float32 and int8
    sweeps); a network not at float32 is named after its dtype too."""
    out = []
    for i, net in enumerate(nets):
        dtype = dtypes[i % len(dtypes)]
        if dtype != "float32":
            net = net.with_dtype(dtype)
            net = Network(f"{net.name}-{dtype}", net.input_shape, net.nodes, net.outputs,
                          {**net.meta, "dtype": dtype})
        out.append(net)
    return out


def _unique(nets: list[Network]) -> list[Network]:
    seen: dict[str, Network] = {}
    for net in nets:
        seen.setdefault(net.name, net)
    return list(seen.values())
