"""adapter.search end to end: budgets met, the paper's rule, checkpoint/resume identical
to an uninterrupted run, executors that agree. The search runs on fixed latencies (the
keys' MACs), the official code's options on a LUT measured for real."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from adapter import data
from adapter.checkpoints import load_checkpoint
from adapter.config import AdaptConfig
from adapter.errors import AdaptError
from adapter.executors import SerialExecutor, dumps, loads, make_executor
from adapter.models import build
from adapter.search import Search
from adapter.search_space import SearchSpace
from adapter.tasks import evaluate_proposal, make_context
from tests.fakes import CLASSES, GRID

# Small but real: MobileNetV1 x0.5 at 32 px on the digits, a few steps per stage.
SMALL = {"model": "mobilenet_v1", "width": 0.5, "resolution": 32,
         "budgets": {"latency_ms": "0.75", "params": "0.9"}, "reduction": 0.1, "decay": 0.9,
         "pretrain_epochs": 1, "short_steps": 3, "long_epochs": 1, "batch_size": 32,
         "lr_pretrain": 0.05, "lr_short": 0.01, "lr_long": 0.01, "seed": 3,
         "short_floor": 0.0}  # no lengthened fine-tunes (test_official_code_options has them)


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return data.load("digits", 32, max_per_class=50)  # 40 to train on per class: quick epochs


@pytest.fixture(scope="module")
def space(fixed_lut) -> SearchSpace:
    """Fixed latencies: which budgets can be met does not follow this machine's load."""
    table, path, res = fixed_lut
    return SearchSpace("mobilenet_v1", res, CLASSES, table, GRID, lut=f"{path}@1")


def adapt(cfg: AdaptConfig, space: SearchSpace, ds: data.Dataset, run_dir: Path,
          resume: bool = False, on_iteration=None) -> tuple[dict, Search]:
    context = make_context(cfg, ds)
    na = Search(cfg, space, ds, run_dir, SerialExecutor(context), context, log=lambda m: None)
    return na.run(resume=resume, on_iteration=on_iteration), na


@pytest.fixture(scope="module")
def finished(space, digits, tmp_path_factory) -> tuple[dict, Search]:
    cfg = AdaptConfig(**SMALL, lut=space._latency.lut)
    return adapt(cfg, space, digits, tmp_path_factory.mktemp("runs") / "whole")


@pytest.mark.train
def test_budgets_met_and_history_follows_the_schedule(finished) -> None:
    result, na = finished
    hist = na.state["history"]
    # >= 1, not more: on a LUT measured live one first proposal may already meet the budget
    assert result["stage"] == "done" and result["iterations"] == len(hist) - 1 >= 1
    budgets = result["budgets"]
    assert budgets["latency_ms"] == pytest.approx(0.75 * hist[0]["latency_ms"])
    assert result["adapted"]["latency_ms"] <= budgets["latency_ms"]
    assert result["adapted"]["params"] <= budgets["params"]
    for prev, h in itertools.pairwise(hist):
        assert h["latency_ms"] <= h["targets"]["latency_ms"] < prev["latency_ms"]
        assert h["params"] <= h["targets"]["params"]
        # the paper's rule: the kept proposal has the best holdout accuracy
        best = max(p["holdout_acc"] for p in h["proposals"])
        assert h["holdout_acc"] == best
        kept = [p for p in h["proposals"] if p["name"] == h["chosen"]]
        assert kept and kept[0]["to"].items() <= h["widths"].items()
    # the model really is the adapted architecture, and its latency is the LUT's estimate
    assert na.model.widths() == result["adapted"]["widths"] == hist[-1]["widths"]
    assert 0 <= result["adapted"]["test_acc"] <= 1 and "test_acc_before_long" in result["adapted"]
    run_dir = na.run_dir
    assert json.loads((run_dir / "history.json").read_text())[-1]["widths"] == hist[-1]["widths"]


@pytest.mark.train
def test_resume_after_a_kill_gives_the_same_result(finished, space, digits, tmp_path) -> None:
    whole, whole_na = finished
    cfg = AdaptConfig(**SMALL, lut=space._latency.lut)

    def kill(entry: dict) -> None:
        if entry["iteration"] == 1:
            raise KeyboardInterrupt  # as if the process died after the checkpoint

    with pytest.raises(KeyboardInterrupt):
        adapt(cfg, space, digits, tmp_path / "run", on_iteration=kill)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 1
    resumed, na = adapt(cfg, space, digits, tmp_path / "run", resume=True)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]
    assert strip([{**e, "proposals": strip(e["proposals"])} for e in na.state["history"]]) == \
        strip([{**e, "proposals": strip(e["proposals"])} for e in whole_na.state["history"]])
    assert resumed["adapted"] == whole["adapted"]
    for k, v in whole_na.model.state_dict().items():
        torch.testing.assert_close(na.model.state_dict()[k], v, rtol=0, atol=0)


@pytest.mark.train
def test_resume_refusals(finished, space, digits, tmp_path) -> None:
    _, na = finished
    cfg = AdaptConfig(**{**SMALL, "short_steps": 4}, lut=space._latency.lut)
    with pytest.raises(AdaptError, match=r"(?s)another configuration.*short_steps: 3 \(checkpoint\) "
                                         r"vs 4 \(now\)"):
        adapt(cfg, space, digits, na.run_dir, resume=True)
    with pytest.raises(AdaptError, match="already holds a run: continue it with --resume"):
        adapt(AdaptConfig(**SMALL, lut=space._latency.lut), space, digits, na.run_dir)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(AdaptError, match="checkpoint .* is corrupt"):
        adapt(AdaptConfig(**SMALL, lut=space._latency.lut), space, digits, bad, resume=True)


@pytest.mark.train
def test_the_initial_network_trains_as_its_multiplier_baseline(space, digits, tmp_path,
                                                                monkeypatch) -> None:
    """The initial network's pretraining and the width-multiplier baselines'
    (``train_from_scratch``) are one recipe: on one seed they give the same network, bit
    for bit. Their own seeds differ (derived from "init"/"pretrain" and from the baseline's
    name), so in a comparison the two differ by seed noise only."""
    from adapter import train
    from adapter.arch import load_exported

    monkeypatch.setattr(train, "derive_seed", lambda *parts: 7)
    cfg = AdaptConfig(**{**SMALL, "budgets": {"latency_ms": "1.0"}, "long_epochs": 1},
                      lut=space._latency.lut)
    result, na = adapt(cfg, space, digits, tmp_path / "run")
    base = na.compare_multipliers([cfg.width])[0]
    assert base["widths"] == result["initial"]["widths"]
    assert base["curve"] == result["curves"]["initial"]
    assert base["test_acc"] == result["initial"]["test_acc"]
    initial = load_exported(result["initial_exports"]["torch"]).state_dict()
    again = load_exported(base["exports"]["torch"]).state_dict()
    assert initial.keys() == again.keys()
    assert all(torch.equal(initial[k], again[k]) for k in initial)


def test_unreachable_budget_names_the_smallest_latency(space, digits, tmp_path) -> None:
    cfg = AdaptConfig(**{**SMALL, "budgets": {"latency_ms": "0.001ms"}, "pretrain_epochs": 0},
                      lut=space._latency.lut)
    with pytest.raises(AdaptError, match=r"latency budget \(0\.001 ms\) cannot be met: the "
                                         r"smallest network .* is \d+\.\d+ ms"):
        adapt(cfg, space, digits, tmp_path / "r")


@pytest.fixture(scope="module")
def proposals(space, digits) -> tuple[bytes, list[dict], list[dict]]:
    """One iteration's first two proposals (one per worker) as tasks, with the context they
    run in and their results run serially (what every executor must give)."""
    context = make_context(AdaptConfig(**SMALL), digits)
    model = build("mobilenet_v1", space.snap(space.fam.widths(width_mult=0.5)), 32, 10, seed=0)
    widths = model.widths()
    parent = {"arch": space.arch.to_dict(), "parent_widths": widths,
              "state": dumps(model.state_dict())}
    props = space.propose(widths, {"latency_ms": 0.97 * space.resource("latency_ms", widths)})[:2]
    tasks = [{**parent, "name": p.name, "widths": p.widths, "seed": 11} for p in props]
    return context, tasks, SerialExecutor(context).map(evaluate_proposal, tasks)


@pytest.mark.parametrize("ray", [False, True])
@pytest.mark.train
def test_executors_give_identical_results(proposals, ray: bool) -> None:
    """The proposals of one iteration, on a local pool (or Ray) and serially."""
    if ray:
        pytest.importorskip("ray")
    context, tasks, want = proposals
    ex = make_executor(context, workers=2, ray="local" if ray else None)
    try:
        got = ex.map(evaluate_proposal, tasks)
    finally:
        ex.close()
    assert ex.name.startswith("ray" if ray else "pool")
    for w, g in zip(want, got):
        assert (g["name"], g["holdout_acc"], g["holdout_loss"], g["train_loss"]) == \
            (w["name"], w["holdout_acc"], w["holdout_loss"], w["train_loss"])
        ws, gs = loads(w["state"]), loads(g["state"])
        for k in ws:
            torch.testing.assert_close(gs[k], ws[k], rtol=0, atol=0)


# For the measured-budget tests: which networks meet a budget follows the fixed latencies
# alone, so no pretraining, no long-term fine-tune, one short-term step per proposal and no
# lengthened ones (an untrained network's holdout accuracy stays below any floor: 1 -> 2 ->
# 4 -> 8 steps).
UNTRAINED = {"pretrain_epochs": 0, "long_epochs": 0, "short_floor": 0.0, "short_steps": 1}


class SlowDevice:
    """A device that runs every network ``offset`` x the initial estimate slower than the
    LUT says (a fixed per-network cost the layer sum misses, as on a real device)."""

    def __init__(self, space: SearchSpace, offset: float):
        self.space, self.offset, self.calls = space, offset, []
        self.initial = space.resource("latency_ms", space.snap(space.fam.widths(width_mult=0.5)))

    def __call__(self, networks, device, backend=None, rounds=3, log=print):
        out = {}
        for name, net in networks.items():
            widths = dict(zip(self.space.fam.slots, net.meta["widths"]))
            est = self.space.resource("latency_ms", widths)
            out[name] = est + self.offset * self.initial
            self.calls.append((name, device, est, out[name]))
        return out


@pytest.mark.train
def test_a_measured_budget_is_met_on_the_device(space, digits, tmp_path, monkeypatch) -> None:
    device = SlowDevice(space, 0.3)
    monkeypatch.setattr("adapter.on_device.measure", device)
    cfg = AdaptConfig(**{**SMALL, **UNTRAINED, "budgets": {"latency_ms": "0.75"}},
                      lut=space._latency.lut, measured_on="slowphone")
    result, _ = adapt(cfg, space, digits, tmp_path / "m")
    mb = result["measured_budget"]
    initial_ms = device.initial * 1.3
    assert mb["initial_ms"] == pytest.approx(initial_ms)
    assert mb["target_ms"] == pytest.approx(0.75 * initial_ms)
    *tight, last = mb["checks"]
    assert tight, "the estimate's first budget is too loose for this device"
    assert all(c["measured_ms"] > mb["target_ms"] for c in tight)
    assert all(c["initial_ms"] == pytest.approx(initial_ms) for c in mb["checks"])
    assert last["measured_ms"] <= mb["target_ms"]
    budgets = [c["estimate_budget_ms"] for c in mb["checks"]]
    assert budgets == sorted(budgets, reverse=True)
    assert result["budgets"]["latency_ms"] == pytest.approx(budgets[-1])
    assert result["adapted"]["latency_ms"] + 0.3 * device.initial <= mb["target_ms"]
    assert {d for _, d, _, _ in device.calls} == {"slowphone"}
    # the checks are in the checkpoint: a resumed finished run measures nothing again
    n = len(device.calls)
    again, _ = adapt(cfg, space, digits, tmp_path / "m", resume=True)
    assert again["measured_budget"] == mb and len(device.calls) == n


class CliffDevice(SlowDevice):
    """A device on which every network but the initial one runs 10x slower than the LUT
    says (as when a GPU delegate refuses the narrower layers and falls back to the CPU)."""

    def __call__(self, networks, device, backend=None, rounds=3, log=print):
        out = super().__call__(networks, device, backend, rounds, log)
        return {n: ms * (1 if n == "initial" else 10) for n, ms in out.items()}


@pytest.mark.train
def test_a_measured_budget_the_device_cannot_meet(space, digits, tmp_path, monkeypatch) -> None:
    """The first network that meets the estimate's budget measures 10x over it: tightened by
    that ratio, the estimate's budget falls below the smallest network on the grid."""
    monkeypatch.setattr("adapter.on_device.measure", CliffDevice(space, 0.0))
    cfg = AdaptConfig(**{**SMALL, **UNTRAINED, "budgets": {"latency_ms": "0.9"}},
                      lut=space._latency.lut, measured_on="slowphone")
    with pytest.raises(AdaptError, match=r"measured budget .* cannot be met: .* smallest "
                                         r"network on the grid is"):
        adapt(cfg, space, digits, tmp_path / "m")
    monkeypatch.setattr("adapter.on_device.measure", lambda *a, **k: None)
    with pytest.raises(AdaptError, match="needs slowphone attached"):
        adapt(cfg, space, digits, tmp_path / "n")


def test_speedup_at_equal_accuracy_takes_the_first_network_as_accurate() -> None:
    from adapter.curves import speedup_at_equal_accuracy as speedup

    ms, acc = [0.1, 0.2, 0.4], [0.90, 0.95, 0.99]
    assert speedup(ms, acc, 0.1, 0.97) == pytest.approx(3.0)  # 0.3 ms on the curve
    assert speedup(ms, acc, 0.2, 0.80) == pytest.approx(0.5)  # the fastest already does it
    assert speedup(ms, acc, 0.2, 0.995) is None
    # a saturated curve: the fastest is as accurate, later ones dip and come back
    assert speedup([0.02, 0.3, 0.24], [0.991, 0.987, 0.991], 0.234, 0.989) == \
        pytest.approx(0.02 / 0.234)


@pytest.mark.alone  # widths measured on demand join a LUT measured earlier
@pytest.mark.sweep
@pytest.mark.train
def test_official_code_options(real_lut, configs, digits, tmp_path) -> None:
    """The official code's pick rule (accuracy drop per ms saved), widths finer than the
    grid measured on the device when first needed, and short-term fine-tunes lengthened
    while even the best proposal stays below the accuracy floor."""
    import shutil

    from adapter.pipeline import OnDemand
    from lut_db.store import LutStore

    shutil.copy(real_lut[1], tmp_path / "fast.db")
    store = LutStore.open(tmp_path / "fast.db")
    version = store.version(1)
    fine = SearchSpace("mobilenet_v1", 32, CLASSES, store.table(version), GRID,
                       lut=f"{store.path}@1", fine_step=8, measure=OnDemand(store, version, "fast", None))
    # 0.9: one iteration (its target is the budget), the options' every check made on it;
    # no long-term fine-tune (none of them reads it: its steps count 0 below)
    cfg = AdaptConfig(**{**SMALL, "budgets": {"latency_ms": "0.9"}, "short_steps": 1,
                         "short_floor": 0.99, "pick": "drop-per-latency", "fine_step": 8,
                         "long_epochs": 0}, lut=f"{store.path}@1")
    result, na = adapt(cfg, fine, digits, tmp_path / "run")
    hist = na.state["history"]
    assert len(hist) >= 2  # an iteration at least: the loops below check something
    assert result["pick_rule"].startswith("smallest holdout accuracy drop per ms")
    for prev, h in itertools.pairwise(hist):
        # nobody reaches 99 % after 1 step: 1 -> 2 -> 4 -> 8 steps, then compared anyway
        assert h["short_steps"] == 8
        rate = {p["name"]: (prev["holdout_acc"] - p["holdout_acc"])
                / (prev["latency_ms"] - p["latency_ms"]) for p in h["proposals"]}
        assert rate[h["chosen"]] == min(rate.values())
    assert na.training_steps() == result["training_steps"] == \
        na.state["pretrain_steps"] + 8 * (len(hist) - 1) + na.state["long_steps"]
    # finer widths: every proposal is the largest width on a grid of 8 (not the LUT's 64)
    # that meets the target, the keys those widths need measured into derived versions (a
    # grid of 8 has widths no grid-64 LUT holds, so some are measured whatever the LUT says)
    for prev, h in itertools.pairwise(hist):
        for p in h["proposals"]:
            (slot, w), = p["to"].items()
            assert w % 8 == 0 or w in fine.choices[slot]
            if w + 8 < p["from"][slot]:
                wider = {**prev["widths"], slot: w + 8}
                assert fine.resource("latency_ms", wider) > h["targets"]["latency_ms"]
    assert [v.parent for v in store.versions()][:2] == [None, 1]
    assert any(h["lut"] != f"{store.path}@1" for h in hist[1:])
