"""Training as a progress step: on a stderr that is not a terminal, the pretraining leaves one
line when it ends, with the last epoch's test accuracy (measured after the epoch's last step)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adapter import train
from adapter.search import _TrainingSteps
from netadapt_cli.progress import Bars


@pytest.mark.train  # six steps of a linear layer: the real loop's order of callbacks
def test_pretraining_ends_once_with_the_last_test_accuracy(
        capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(6)]
    curve: list[float] = []
    with Bars() as bars:
        shown = _TrainingSteps(bars, "pretraining", 6, 3, curve)

        def end_of_epoch(step: int) -> None:  # as the pretraining's: accuracy, then shown
            curve.append(0.5 + step / 100)
            shown.show(step)

        train.train(model, batches, 0.1, every=3, on_every=end_of_epoch, on_step=shown)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("pretraining 6/6: epoch 2/2, loss ")
    assert ", test acc 0.560 in " in lines[0]
