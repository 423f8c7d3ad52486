"""`netadapt adapt` as a call: NetAdapt against a device's LUT, width-multiplier baselines,
export and verification on the device; the result is what ``result.json`` holds."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lut_db.progress import Steps, silent
from netadapt.errors import OptionError

Log = Callable[[str], None]
MULTIPLIERS = "0.25,0.5,0.75,1.0"


def adapt(model: str, lut: str | Path, budget: str | float = "0.5",
          data: str = "fashion-mnist", *, tie_bottlenecks: bool | None = None,
          width: float = 1.0, resolution: int = 32, dtype: str | None = None,
          weights: str | Path | None = None, measured_budget: bool = False,
          max_macs: str | None = None, max_params: str | None = None,
          reduction: float = 0.05, decay: float = 0.98, short_floor: float = 0.2,
          pick: str = "accuracy", fine_step: int | None = None, grid: int | None = None,
          missing: str = "error", sweep: bool = True, max_iterations: int = 200,
          workers: int = min(2, os.cpu_count() or 1), ray: str | None = None,
          max_per_class: int | None = None, loader_workers: int = 1,
          pretrain_epochs: int = 15, short_steps: int = 20, long_epochs: int = 10,
          batch_size: int = 64, lr_pretrain: float = 0.1, lr_short: float = 0.01,
          lr_long: float = 0.02, seed: int = 0, calibration_batches: int = 8,
          max_int8_drop: float = 1.0, device: str | None = None, measure_rounds: int = 3,
          no_measure: bool = False, compare_multipliers: bool = False,
          multipliers: str | Sequence[float] = MULTIPLIERS, name: str | None = None,
          runs_dir: str | Path = "runs", resume: bool = False, log: Log | None = None,
          progress: Steps = silent) -> dict[str, Any]:
    """Shrink ``model`` (mobilenet_v1, mobilenet_v2, ``pkg.module:factory`` or a saved
    model) to ``budget`` (a ratio of its initial estimate, or "3.2ms") on the LUT of a
    device (``lut``: ``file[@version]``), training on ``data``; then export the networks and
    verify them on the device. Writes the run folder ``runs_dir/name`` and returns its
    result. Each keyword is the `netadapt adapt` option of the same name."""
    from adapter import data as datasets
    from adapter import pipeline
    from adapter.config import AdaptConfig, budget_options
    from adapter.search_space import default_dtype
    from bench.devices import load_config

    budget, lut = str(budget), str(lut)
    budgets = budget_options(budget, max_macs or None, max_params or None)  # checked now
    mults = _multipliers(multipliers)
    runs = Path(runs_dir)
    run_dir = runs / (name or run_name(model, lut, budget, seed, dtype or "float32"))
    store, version = pipeline.lut_for(lut, run_dir, resume)
    if dtype is None:  # the LUT's, when its sweeps hold one dtype
        dtype = default_dtype(version.space)
        if name is None and dtype != "float32":  # the run folder is named after it
            run_dir = runs / run_name(model, lut, budget, seed, dtype)
            store.close()
            store, version = pipeline.lut_for(lut, run_dir, resume)
    if dtype not in ("float32", "int8"):
        raise OptionError(f"--dtype {dtype}: adapt prices float32 or int8")
    target = device or version.device  # measured on: the LUT's device unless told
    if measured_budget:
        load_config(target)  # an unknown device is refused before any work
    if not no_measure and measure_rounds < 1:
        raise OptionError(f"--measure-rounds must be at least 1, got {measure_rounds}")
    say = log or (lambda _m: None)
    cfg = AdaptConfig(
        model=model, tie_bottlenecks=tie_bottlenecks, width=width, resolution=resolution,
        data=data, max_per_class=max_per_class, lut=f"{store.path}@{version.id}",
        grid=grid, missing=missing, budgets=budgets, reduction=reduction, decay=decay,
        pretrain_epochs=pretrain_epochs, short_steps=short_steps, short_floor=short_floor,
        pick=pick, fine_step=fine_step, long_epochs=long_epochs, batch_size=batch_size,
        lr_pretrain=lr_pretrain, lr_short=lr_short, lr_long=lr_long, seed=seed,
        loader_workers=loader_workers, weights=str(weights) if weights else None,
        max_iterations=max_iterations, measured_on=target if measured_budget else None,
        measured_backend=version.backend if measured_budget else None, dtype=dtype,
        calibration_batches=calibration_batches, max_int8_drop=max_int8_drop)
    cfg.validate()  # before the data loads and keys are swept: a bad option costs nothing
    dataset = datasets.load(data, resolution, max_per_class)
    say(f"data: {dataset.describe()}")
    space, used = pipeline.search_space(store, version, model, resolution,
                                        len(dataset.classes), grid, missing, log=say,
                                        tie_bottlenecks=tie_bottlenecks, fine_step=fine_step,
                                        dtype=dtype, sweep=sweep, progress=progress)
    cfg.grid = space.grid  # the grid the search uses (the LUT sweep's unless given)
    return pipeline.adapt(cfg, space, dataset, run_dir, workers=workers, ray=ray,
                          resume=resume, multipliers=mults if compare_multipliers else None,
                          device=target, backend=version.backend, measure=not no_measure,
                          measure_rounds=measure_rounds, lut_used=used, log=say,
                          progress=progress)


def run_name(model: str, lut: str, budget: str, seed: int, dtype: str = "float32") -> str:
    """The run folder's name unless given: model, device, budget, seed (and a dtype not
    float32, so float32 runs keep their old names)."""
    device = Path(lut.split("@")[0]).stem
    stem = Path(model.split(":")[-1]).stem  # a factory's or a saved model's name
    tail = "" if dtype == "float32" else f"-{dtype}"
    budget = "".join(budget.split()).replace(".", "p")  # "3.2 ms" -> 3p2ms: no space in a path
    return f"{stem}-{device}-{budget}-s{seed}{tail}"


def _multipliers(value: str | Sequence[float]) -> list[float]:
    try:
        values = ([float(v) for v in value.split(",") if v.strip()] if isinstance(value, str)
                  else [float(v) for v in value])
    except ValueError:
        raise OptionError("--multipliers must be numbers separated by commas") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise OptionError("--multipliers: each multiplier must be in (0, 1]")
    return values
