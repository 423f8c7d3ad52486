"""NetAdapt with your own training loop: one object, three calls.

    na = NetAdapt(model, torch.zeros(1, 3, 32, 32), lut="luts/host.db", budget=0.5,
                  train=fine_tune, evaluate=holdout_accuracy)
    while not na.done:
        na.step()            # one iteration: proposals, short fine-tunes, the best one kept
    fine_tune(na.model, 2000)  # your long-term fine-tune
    na.export("out")         # out/adapted.pt (the whole model), .tflite, .json
    # on an int8 LUT: na.export("out", calibration_images=x) also writes adapted_int8.tflite

The model is traced and its slots are Torch-Pruning's groups (``adapter.arch``). Every
proposal is priced from the LUT (``SearchSpace``: the version's calibrated estimate)
before anything is pruned, then pruned by Torch-Pruning keeping the filters of largest L2
norm, fine-tuned by ``train(model, steps)`` and scored by ``evaluate(model)`` (higher is
better: the paper scores holdout accuracy). Keywords are `netadapt adapt`'s options.
`netadapt adapt` runs the same iterations (``SearchSpace.iteration``, ``pick.best``) with
its own data, training, worker processes and checkpoints (``adapter.search.Search``):
a caller's training loop cannot be shipped to worker processes, so here proposals are
fine-tuned one after another in the caller's process.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adapter import quantize
from adapter.arch import Architecture
from adapter.config import AdaptConfig, budget_options, fmt_resource
from adapter.errors import AdaptError
from adapter.export import write_tflite
from adapter.pick import best as pick_best
from adapter.pipeline import search_space
from adapter.schedule import Schedule
from adapter.search_space import default_dtype
from adapter.train import derive_seed, in_eval, seed_all
from lut_db.progress import Steps, silent
from lut_db.store import open_lut

Train = Callable[[nn.Module, int], object]  # fine-tune the model in place for that many steps
Evaluate = Callable[[nn.Module], float]  # the model's score, higher is better
Log = Callable[[str], None]


class NetAdapt:
    """Shrinks ``model`` to the budgets on a device's LUT, one iteration per ``step()``.

    ``example_inputs``: a batch of the model's input, NCHW with 3 channels and square
    images (the LUT's layers are keyed at one resolution). ``train(model, steps)``
    fine-tunes a pruned copy in place (make its optimizer inside: every proposal is a new
    model); ``evaluate(model)`` scores one, higher is better (the initial model too, once,
    here). The caller's model is left as it is: ``model`` is the adapted copy. Keywords
    are `netadapt adapt`'s options; ``device``: where keys the LUT lacks are measured
    (default: the LUT's own device)."""

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, *, lut: str | Path,
                 train: Train, evaluate: Evaluate, budget: str | float = 0.5,
                 max_macs: str | float | None = None, max_params: str | float | None = None,
                 reduction: float = 0.05, decay: float = 0.98, short_steps: int = 20,
                 pick: str = "accuracy", grid: int | None = None, missing: str = "error",
                 sweep: bool = True, device: str | None = None, fine_step: int | None = None,
                 tie_bottlenecks: bool | None = None, dtype: str | None = None,
                 max_iterations: int = 200, seed: int = 0, log: Log | None = None,
                 progress: Steps = silent) -> None:
        resolution = _resolution(example_inputs)
        store, version = open_lut(str(lut))
        dtype = dtype or default_dtype(version.space)
        source = type(model).__name__
        cfg = AdaptConfig(model=source, tie_bottlenecks=tie_bottlenecks, resolution=resolution,
                          lut=str(lut), grid=grid, missing=missing,
                          budgets=budget_options(budget, max_macs, max_params),
                          reduction=reduction, decay=decay, short_steps=short_steps,
                          pick=pick, fine_step=fine_step, max_iterations=max_iterations,
                          seed=seed, dtype=dtype)
        cfg.validate()  # bad settings are refused before any tracing, in the CLI's words
        self.model = copy.deepcopy(model)
        classes = _classes(self.model, example_inputs)
        self.arch = Architecture.of(self.model, source, resolution, classes, tie_bottlenecks,
                                    dtype)
        self.space, self.lut = search_space(store, version, self.arch, resolution, classes,
                                            grid, missing, device, log, fine_step=fine_step,
                                            dtype=dtype, sweep=sweep, progress=progress)
        if fine_step is None:  # else the space measures finer widths into the store
            store.close()
        self._train, self._evaluate, self.dtype = train, evaluate, dtype
        self.short_steps, self.pick, self.seed = short_steps, pick, seed
        self.max_iterations, self.progress = max_iterations, progress
        self.log = log or (lambda _m: None)
        initial = self.resources
        self.schedule = _schedule(cfg, initial)
        self.schedule.check(self.space.resources(self.space.minimum()))
        self.history: list[dict[str, Any]] = [{"iteration": 0, "widths": self.widths,
                                               **initial, "score": float(evaluate(self.model))}]
        self.log(f"initial: {fmt_resource('latency_ms', initial['latency_ms'])} estimated on "
                 f"{self.lut}, score {self.history[0]['score']:.4g}; budget "
                 + ", ".join(fmt_resource(r, b) for r, b in self.schedule.budgets.items()))

    @property
    def widths(self) -> dict[str, int]:
        """The adapted model's slot widths."""
        return self.arch.widths(self.model)

    @property
    def resources(self) -> dict[str, float]:
        """The adapted model's ``latency_ms`` (the LUT's estimate), ``macs`` and ``params``."""
        return self.space.resources(self.widths)

    @property
    def done(self) -> bool:
        """Every budget is met."""
        return self.schedule.met(self.resources)

    def step(self) -> dict[str, Any]:
        """One NetAdapt iteration: per slot the largest width meeting the schedule's target,
        each pruned from the current model, fine-tuned for ``short_steps`` and scored; the
        best by ``pick`` becomes the model. Returns the iteration's record (``history``)."""
        i = len(self.history)
        if self.done:
            raise AdaptError("every budget is met already: nothing left to adapt")
        if i > self.max_iterations:
            raise AdaptError(f"stopped after {self.max_iterations} iterations without meeting "
                             "the budget; raise max_iterations")
        widths, parent = self.widths, self.history[-1]
        targets, relax, proposals = self.space.iteration(widths, self.schedule, i)
        scores: list[float] = []
        saved = [parent["latency_ms"] - p.resources["latency_ms"] for p in proposals]
        kept = self.model
        for k, p in enumerate(proposals):
            self.progress(f"iteration {i}", k, len(proposals), f"fine-tuning {p.name}")
            candidate = copy.deepcopy(self.model)
            self.arch.prune_to(candidate, p.widths)
            seed_all(derive_seed(self.seed, "short", i, p.name))
            self._train(candidate, self.short_steps)
            scores.append(float(self._evaluate(candidate)))
            if pick_best(self.pick, scores, parent["score"], saved) == k:
                kept = candidate  # the best so far; only it is held, not every copy
        best = pick_best(self.pick, scores, parent["score"], saved)
        chosen, self.model = proposals[best], kept
        entry = {"iteration": i, "targets": targets, "relaxed": relax, "chosen": chosen.name,
                 "widths": self.widths, **chosen.resources, "score": scores[best],
                 "lut": self.space.lut,
                 "proposals": [{"name": p.name, "to": p.widths, **p.resources, "score": s}
                               for p, s in zip(proposals, scores)]}
        self.history.append(entry)
        moved = ", ".join(f"{s} {widths[s]}->{w}" for s, w in chosen.widths.items())
        self.progress(f"iteration {i}", len(proposals), len(proposals), f"kept {moved}")
        self.log(f"iteration {i}: {len(proposals)} proposals; kept {moved}: "
                 f"{fmt_resource('latency_ms', chosen.resources['latency_ms'])}, score "
                 f"{scores[best]:.4g}")
        return entry

    def export(self, folder: str | Path, stem: str = "adapted",
               calibration_images: torch.Tensor | None = None) -> dict[str, str]:
        """``stem``.pt (the whole model: pruned layers no longer fit the class's state
        dict; ``netadapt adapt --model`` and ``torch.load(weights_only=False)`` read it),
        ``stem``.tflite (its weights, numerically the torch model, float32) and ``stem``.json
        (its Network, what the LUT prices) in ``folder``; returns their paths.

        With ``calibration_images`` (NCHW, at least 32 of your training images, normalised
        as the model sees them), also ``stem``_int8.tflite: the full-integer file phones
        run, activation ranges from those images, written only once it computes its
        quantization (``adapter.quantize.check_parity`` on the same images). On an int8 LUT
        they are required: the network was priced as int8, so a float file alone is not
        what was adapted."""
        if calibration_images is None and self.dtype == "int8":
            raise AdaptError("this NetAdapt priced int8 layers: pass export(..., "
                             "calibration_images=...) with at least "
                             f"{quantize.MIN_CALIBRATION_IMAGES} training images (NCHW) for "
                             "the int8 file's activation ranges")
        folder = Path(folder)
        res = self.arch.resolution
        q = None if calibration_images is None else _int8(self.model, calibration_images,
                                                          res, stem)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"torch": folder / f"{stem}.pt", "tflite": folder / f"{stem}.tflite",
                 "network": folder / f"{stem}.json"}
        torch.save(self.model, paths["torch"])
        net = write_tflite(self.model, paths["tflite"], (res, res, 3), name=stem)
        paths["network"].write_text(net.to_json(indent=1))
        if q is not None:
            paths["int8"] = folder / f"{stem}_int8.tflite"
            paths["int8"].write_bytes(q.tflite)
        return {k: str(v) for k, v in paths.items()}


def _int8(model: nn.Module, images: torch.Tensor, resolution: int,
          stem: str) -> quantize.Int8Model:
    """The model quantized with ``images``' ranges, checked against the integer reference
    on them before anything is written."""
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) != 4 or shape[1:] != (3, resolution, resolution) \
            or shape[0] < quantize.MIN_CALIBRATION_IMAGES:
        raise AdaptError(f"calibration_images must be at least {quantize.MIN_CALIBRATION_IMAGES}"
                         f" images of shape (3, {resolution}, {resolution}), NCHW; got {shape}")
    with in_eval(model):  # batch norm folded with its running statistics, none of them moved
        q = quantize.quantize(model, images, (resolution, resolution, 3), stem)
    quantize.check_parity(quantize.parity(q, images), f"{stem}_int8.tflite")
    return q


def _schedule(cfg: AdaptConfig, initial: dict[str, float]) -> Schedule:
    """The budgets made absolute against the initial model, and the reduction schedule."""
    budgets = cfg.budget_list()
    return Schedule({b.resource: b.absolute(initial[b.resource]) for b in budgets},
                    {b.resource: initial[b.resource] for b in budgets}, cfg.reduction, cfg.decay)


def _resolution(example: torch.Tensor) -> int:
    shape = tuple(getattr(example, "shape", ()))
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
        raise AdaptError(f"example_inputs must be a batch of square 3-channel images (N, 3, R, "
                         f"R): the LUT's layers are keyed at one resolution; got {shape}")
    return int(shape[2])


def _classes(model: nn.Module, example: torch.Tensor) -> int:
    """The model's output width: what the traced network must end in."""
    with in_eval(model), torch.no_grad():
        return int(model(example[:1]).shape[-1])
