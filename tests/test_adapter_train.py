"""adapter.train: the learning-rate schedule (torch's scheduler, the same numbers as before),
and the eval-mode block that tracing and quantizing run in."""

from __future__ import annotations

import math

import pytest
import torch

from adapter.train import in_eval, lr_schedule


def old_lr(base: float, step: int, steps: int, schedule: str) -> float:
    """The formula the training loop set by hand before it used torch's scheduler."""
    if schedule == "constant":
        return base
    return 0.5 * base * (1 + math.cos(math.pi * step / steps))


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
@pytest.mark.parametrize("base,steps", [(0.05, 1), (0.05, 7), (0.1, 469), (0.01, 1875)])
def test_each_step_runs_at_the_old_formulas_lr(schedule: str, base: float, steps: int) -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base, momentum=0.9, nesterov=True)
    sched = lr_schedule(opt, steps, schedule)
    got = []
    for _ in range(steps):  # the loop's order: the step runs, then the schedule moves on
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert got == [old_lr(base, step, steps, schedule) for step in range(steps)]  # exact


def test_seeding_turns_on_deterministic_algorithms_without_inductor() -> None:
    """seed_all makes torch refuse nondeterministic ops, without importing torch._inductor
    (1.4 s in every process that trains); checked in a fresh process."""
    import subprocess
    import sys

    code = ("import sys, torch; from adapter.train import seed_all; seed_all(1); "
            "print(torch.are_deterministic_algorithms_enabled(), 'torch._inductor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "False"]


def test_a_forward_pass_in_eval_moves_no_statistics_and_restores_the_mode() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    before = model[1].running_mean.clone()
    with in_eval(model):
        assert not model.training and not model[1].training
        model(torch.randn(2, 3, 4, 4) + 5)
    assert model.training and torch.equal(model[1].running_mean, before)
    with pytest.raises(RuntimeError), in_eval(model):
        model(torch.randn(2, 5, 4, 4))  # wrong channels: the mode comes back all the same
    assert model.training
    model.eval()
    with in_eval(model):
        pass
    assert not model.training  # a model in eval stays in eval
