"""What the executors run for a search (top level: they import these by name).

Each task gets the run's context once (``make_context``: how to open the data, the
holdout split and the settings) and decodes its images in its own process.
"""

from __future__ import annotations

import time
from typing import Any

from adapter import train
from adapter.arch import Architecture
from adapter.config import AdaptConfig
from adapter.data import Dataset, eval_loader, reopen, train_loader
from adapter.executors import dumps, loads, torch_threads

CURVE_IMAGES = 2000  # test images a learning curve's per-epoch point is measured on


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
