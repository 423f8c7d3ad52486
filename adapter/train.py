"""Training and evaluation: deterministic SGD on in-memory tensors.

Everything random (batch order, augmentation) draws from one ``torch.Generator``
seeded by the caller, so a fine-tune depends only on (model state, data, seed):
the same proposal gives the same network in any process, on any executor.
"""

from __future__ import annotations

import math
import random
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (crc32: not Python's salted ``hash``)."""
    return zlib.crc32(":".join(map(str, parts)).encode()) & 0x7FFFFFFF


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)  # cheap on CPU; refuses silent nondeterminism


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int,
          lr: float, seed: int, schedule: str = "cosine", weight_decay: float = 4e-5,
          augment: bool = True) -> float:
    """``steps`` SGD steps (momentum 0.9, Nesterov); returns the mean loss of the last 10%."""
    if steps <= 0:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=weight_decay)
    batch_size = min(batch_size, len(y))
    order, pos = torch.randperm(len(y), generator=gen), 0
    model.train()
    tail: list[float] = []
    for step in range(steps):
        if pos + batch_size > len(order):  # full batches only (BatchNorm needs > 1 sample)
            order, pos = torch.randperm(len(y), generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        xb = _shift(x[idx], gen) if augment else x[idx]
        for g in opt.param_groups:
            g["lr"] = _lr(lr, step, steps, schedule)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= steps - max(1, steps // 10):
            tail.append(loss.item())
    return float(np.mean(tail))


def _lr(base: float, step: int, steps: int, schedule: str) -> float:
    if schedule == "constant":
        return base
    return 0.5 * base * (1 + math.cos(math.pi * step / steps))  # cosine to zero


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to 1/16 of the image (edge pixels repeated)."""
    pad = max(1, x.shape[-1] // 16)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    offs = torch.randint(0, 2 * pad + 1, (len(x), 2), generator=gen).tolist()
    h, w = x.shape[-2:]
    return torch.stack([padded[i, :, a:a + h, b:b + w] for i, (a, b) in enumerate(offs)])


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 256) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(y), batch_size):
        out = model(x[i:i + batch_size])
        correct += int((out.argmax(1) == y[i:i + batch_size]).sum())
        loss += float(F.cross_entropy(out, y[i:i + batch_size], reduction="sum"))
    return correct / len(y), loss / len(y)
