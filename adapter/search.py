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

import copy
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapter import on_device, pick, train
from adapter.checkpoints import (
    CHECKPOINT_FORMAT,
    get_rng,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    set_rng,
)
from adapter.config import AdaptConfig, fmt_resource
from adapter.curves import equal_latency_multiplier
from adapter.data import Dataset, eval_loader, train_loader
from adapter.errors import AdaptError
from adapter.executors import Executor, dumps, loads, torch_threads
from adapter.export import save_exports
from adapter.schedule import Schedule
from adapter.search_space import Proposal, SearchSpace
from adapter.tasks import curve_loader, evaluate_proposal, make_context, train_from_scratch
from lut_db.progress import Steps, silent

SHORT_STRETCH = 3  # doublings of the short-term fine-tune when proposals fall below the floor

Log = Callable[[str], None]


class Search:
    """One adaptation run in a run folder (checkpoint, history, plots, exports): pretrain
    (or load), iterations whose proposals the executor fine-tunes in worker processes,
    long-term fine-tune. What `netadapt adapt` runs; ``adapter.netadapt.NetAdapt`` is the
    same iterations in the caller's process, with the caller's training loop."""

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
        set_rng(ckpt["rng"])
        self.log(f"resuming {self.run_dir} at stage {ckpt['stage']}, iteration "
                 f"{ckpt['iteration']}")

    def _save(self) -> None:
        save_checkpoint(self.checkpoint_path, {
            **self.state, "format": CHECKPOINT_FORMAT, "config": self.cfg.to_dict(),
            "model": {"widths": self.widths()}, "weights": self.model.state_dict(),
            "rng": get_rng()})
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
        state = load_weights(cfg.weights) if cfg.weights else (
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
        self.log(f"initial: {fmt_resource('latency_ms', res['latency_ms'])} estimated, test acc "
                 f"{test_acc:.3f}, holdout acc {hold_acc:.3f}; budget "
                 + ", ".join(fmt_resource(r, b) for r, b in budgets.items()))
        if schedule.met(res) and self._measured_ok(0, widths, res["latency_ms"]):
            self.state["stage"] = "adapted"
        self._save()

    # -- a budget on measured latency ---------------------------------------------------------
    def _measure_ms(self, networks: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
        """Networks (name -> widths) measured whole on the device, in interleaved rounds."""
        got = on_device.measure({n: self.space.network(w, name=n) for n, w in networks.items()},
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
        schedule = self.schedule()
        targets, relax, proposals = self.space.iteration(widths, schedule, i)
        step = f"iteration {i}"
        results, steps = self._evaluate(i, widths, proposals)
        parent_ms = self.space.resource("latency_ms", widths)
        best = pick.best(self.cfg.pick, [r["holdout_acc"] for r in results],
                         self.state["history"][-1]["holdout_acc"],
                         [parent_ms - p.resources["latency_ms"] for p in proposals],
                         [r["holdout_loss"] for r in results])
        chosen, res = proposals[best], results[best]
        moved = ", ".join(f"{s} {widths[s]}->{w}" for s, w in chosen.widths.items())
        self.progress(step, len(proposals), len(proposals), f"kept {moved}: "
                      f"{fmt_resource('latency_ms', chosen.resources['latency_ms'])}, holdout acc "
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
        self.log(f"iteration {i}: target {fmt_resource('latency_ms', targets['latency_ms'])}" if "latency_ms"
                 in targets else f"iteration {i}:")
        self.log(f"  {len(proposals)} proposals; kept {moved}: "
                 f"{fmt_resource('latency_ms', chosen.resources['latency_ms'])}, holdout acc "
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
            "pick_rule": pick.PICK_RULES[self.cfg.pick], "budgets": s["budgets"], "data": self.data.describe(),
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
    the last test accuracy of the learning curve (``curve``), when there is one. With a
    curve, the caller shows an epoch's last step once its accuracy is in: the step then
    ends once, with its final numbers."""

    def __init__(self, progress: Steps, name: str, total: int, epoch: int,
                 curve: Sequence[float] | None = None) -> None:
        self.progress, self.name, self.total, self.epoch = progress, name, total, epoch
        self.curve = curve
        self.losses: list[float] = []

    def epoch_loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else float("nan")

    def __call__(self, step: int, loss: float) -> None:
        if (step - 1) % self.epoch == 0:
            self.losses = []
        self.losses.append(loss)
        if self.curve is None or step % self.epoch:
            self.show(step)

    def show(self, step: int) -> None:
        epochs = math.ceil(self.total / self.epoch)
        acc = f", test acc {self.curve[-1]:.3f}" if self.curve else ""
        self.progress(self.name, step, self.total, f"epoch {math.ceil(step / self.epoch)}/"
                      f"{epochs}, loss {self.epoch_loss():.3f}{acc}")

