"""Training and evaluation: deterministic SGD on batches from ``adapter.data`` loaders.

Everything random (batch order, augmentation) is drawn by the training loader from
one ``torch.Generator`` seeded by the caller, so a fine-tune depends only on (model
state, data, seed): the same proposal gives the same network in any process, on any
executor, with any number of loader workers.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (crc32: not Python's salted ``hash``)."""
    return zlib.crc32(":".join(map(str, parts)).encode()) & 0x7FFFFFFF


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # Refuse silent nondeterminism. The flag itself, not torch.use_deterministic_algorithms:
    # that also imports torch._inductor to set its config (1.4 s in every process that
    # trains, a worker included), and nothing here is compiled by inductor.
    torch._C._set_deterministic_algorithms(True)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def train(model: nn.Module, batches: DataLoader, lr: float, schedule: str = "cosine",
          weight_decay: float = 4e-5, every: int = 0,
          on_every: Callable[[int], None] | None = None,
          on_step: Callable[[int, float], None] | None = None) -> float:
    """One SGD step (momentum 0.9, Nesterov) per batch of ``batches`` (``data.train_loader``);
    returns the mean loss of the last 10% of the steps. ``on_every(step)`` is called after
    every ``every`` steps (e.g. each epoch, to record a learning curve), ``on_step(step,
    loss)`` after each step (progress)."""
    steps = len(batches)
    if steps <= 0:
        return float("nan")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=weight_decay)
    sched = lr_schedule(opt, steps, schedule)
    model.train()
    tail: list[float] = []
    for step, (xb, yb) in enumerate(batches):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step:
            on_step(step + 1, loss.item())
        if on_every and every and (step + 1) % every == 0:
            on_every(step + 1)
            model.train()
        if step >= steps - max(1, steps // 10):
            tail.append(loss.item())
    return float(np.mean(tail))


def lr_schedule(opt: torch.optim.Optimizer, steps: int, schedule: str) -> LambdaLR:
    """Step ``i`` of ``steps`` runs at the base lr times 0.5 (1 + cos(pi i / steps)), cosine
    to zero (or the base lr with ``constant``). Not ``CosineAnnealingLR``: its recursive
    update drifts from the closed form by ~1e-15, which would change trained weights."""
    if schedule == "constant":
        return LambdaLR(opt, lambda step: 1.0)
    return LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))


@contextmanager
def in_eval(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode for a forward pass that must not move batch norm's running
    statistics (tracing, quantizing, reading its output width); its mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
             ) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode over ``batches`` (``data.eval_loader``)."""
    model.eval()
    correct, loss, n = 0, 0.0, 0
    for xb, yb in batches:
        out = model(xb)
        correct += int((out.argmax(1) == yb).sum())
        loss += float(F.cross_entropy(out, yb, reduction="sum"))
        n += len(yb)
    return correct / n, loss / n
