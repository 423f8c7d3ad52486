"""adapter.NetAdapt, the object for a user's own training loop: a user's torch model shrunk
to a budget one ``step()`` at a time on the fixed LUT (every shape the model can be cut to
is a MobileNetV1 shape it holds), then exported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ai_edge_litert.interpreter import Interpreter
from torch import nn

from adapter import NetAdapt
from adapter.errors import AdaptError
from adapter.executors import torch_threads
from adapter.trace import trace
from lut_db.estimate import estimate
from tests.fakes import GRID
from tests.user_models import MobileNetV1Strided

# A task the model can learn in a few steps: the class is which of two channels are bright.
_g = torch.Generator().manual_seed(0)
X = torch.randn(96, 3, 32, 32, generator=_g)
Y = (X[:, 0].mean((1, 2)) > 0).long() + 2 * (X[:, 1].mean((1, 2)) > 0).long()


def fine_tune(model: nn.Module, steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for s in range(steps):
        i = (s * 16) % 64
        loss = F.cross_entropy(model(X[i:i + 16]), Y[i:i + 16])
        opt.zero_grad()
        loss.backward()
        opt.step()


def accuracy(model: nn.Module) -> float:
    model.eval()
    with torch.no_grad():
        return (model(X[64:]).argmax(1) == Y[64:]).float().mean().item()


def estimated_ms(model: nn.Module, table: dict) -> float:
    """The model traced now and summed from the LUT (the fixed LUT has no calibration)."""
    return estimate(trace(model, (32, 32, 3)), table).total_ms


@pytest.mark.train
def test_steps_to_the_budget_and_exports(fixed_lut, tmp_path: Path) -> None:
    table, path, _ = fixed_lut
    with torch_threads(1):  # tiny work: more threads only contend with the machine's load
        torch.manual_seed(0)
        model = MobileNetV1Strided()
        fine_tune(model, 8)
        mine = {k: v.clone() for k, v in model.state_dict().items()}
        steps: list[int] = []
        na = NetAdapt(model, X[:1], lut=f"{path}@1", budget=0.6, grid=GRID, reduction=0.2,
                      decay=1.0, short_steps=2, evaluate=accuracy,
                      train=lambda m, n: (steps.append(n), fine_tune(m, n)))
        initial = na.resources
        assert initial["latency_ms"] == pytest.approx(estimated_ms(model, table))
        assert na.history[0]["score"] == accuracy(model) and not na.done
        while not na.done:
            entry = na.step()
            # the paper's rule: the best-scoring proposal is kept, and it meets the target
            assert entry["score"] == max(p["score"] for p in entry["proposals"])
            assert entry["latency_ms"] <= entry["targets"]["latency_ms"]
        assert len(na.history) >= 2
        assert steps == [2] * sum(len(h["proposals"]) for h in na.history[1:])
        # the model held is the network the LUT priced, within the budget
        assert na.widths == na.history[-1]["widths"] != na.history[0]["widths"]
        assert na.resources["latency_ms"] <= 0.6 * initial["latency_ms"]
        assert estimated_ms(na.model, table) == pytest.approx(na.resources["latency_ms"])
        assert na.model(X[:2]).shape == (2, 10)
        # the caller's model is left as it was
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, mine[k], rtol=0, atol=0)
        with pytest.raises(AdaptError, match="every budget is met"):
            na.step()

        files = na.export(tmp_path / "out")
        saved = torch.load(files["torch"], weights_only=False).eval()
        with torch.no_grad():
            want = na.model.eval()(X[:4]).numpy()
            torch.testing.assert_close(saved(X[:4]).numpy(), want, rtol=0, atol=0)
    run = Interpreter(model_path=files["tflite"], num_threads=1).get_signature_runner()
    got = np.concatenate([next(iter(run(input=x[None].permute(0, 2, 3, 1).numpy()).values()))
                          for x in X[:4]])
    assert np.abs(got - want).max() <= 1e-4


def test_bad_settings_are_refused(fixed_lut) -> None:
    _, path, _ = fixed_lut
    model = MobileNetV1Strided()

    def make(example: torch.Tensor = X[:1], **kw: object) -> NetAdapt:
        return NetAdapt(model, example, lut=f"{path}@1", grid=GRID, train=fine_tune,
                        evaluate=accuracy, **kw)

    with pytest.raises(AdaptError, match=r"square 3-channel images .* got \(1, 3, 32, 16\)"):
        make(X[:1, :, :, :16])
    with pytest.raises(AdaptError, match=r"--reduction must be in \(0, 1\)"):
        make(reduction=1.5)
    with pytest.raises(AdaptError, match=r"latency budget \(0\.001 ms\) cannot be met"):
        make(budget="0.001ms")
