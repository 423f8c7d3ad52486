"""Augmentation that repeats: each training image's crop offset and flip are drawn in the
main process with the batch (``TrainBatches``) and travel with its index; loader workers
only apply them (``View``), so batches are the same for any number of workers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from adapter.data.images import Images


class TrainBatches(Sampler):
    """Batches of (index, crop top, crop left, flip), all drawn here from one generator."""

    def __init__(self, indices: np.ndarray, batch_size: int, steps: int, seed: int, pad: int,
                 flip: bool):
        self.indices, self.batch_size, self.steps = indices, batch_size, steps
        self.seed, self.pad, self.flip = seed, pad, flip

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[tuple[int, int, int, bool]]]:
        gen = torch.Generator().manual_seed(self.seed)
        n, bs = len(self.indices), self.batch_size
        order, pos = torch.randperm(n, generator=gen), 0
        for _ in range(self.steps):
            if pos + bs > n:  # full batches only (BatchNorm needs > 1 sample)
                order, pos = torch.randperm(n, generator=gen), 0
            idx = self.indices[order[pos:pos + bs].numpy()]
            pos += bs
            offs = torch.randint(0, 2 * self.pad + 1, (bs, 2), generator=gen).tolist()
            flips = (torch.rand(bs, generator=gen) < 0.5).tolist() if self.flip else [False] * bs
            yield [(int(i), a, b, f) for i, (a, b), f in zip(idx, offs, flips)]


class View(TorchDataset):
    """A split as the loader sees it: normalised, augmented when the key says how."""

    def __init__(self, images: Images, mean: Sequence[float], std: Sequence[float], pad: int):
        self.images, self.pad = images, pad
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int, int, bool]) -> tuple[torch.Tensor, int]:
        i, top, left, flip = key if isinstance(key, tuple) else (key, 0, 0, False)
        x, y = self.images[i]
        if self.pad:
            r, p = x.shape[-1], self.pad
            x = F.pad(x, (p, p, p, p))[:, top:top + r, left:left + r]
        if flip:
            x = x.flip(-1)
        return ((x - self.mean) / self.std).contiguous(), y
