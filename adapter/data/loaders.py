"""Torch DataLoaders over a ``Dataset``: training batches (shuffled, augmented from a seed)
and evaluation batches (in order), images decoded as they are drawn."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from adapter.data.augment import TrainBatches, View
from adapter.data.dataset import Dataset
from adapter.data.images import Images
from adapter.errors import AdaptError

EVAL_BATCH = 256


def train_loader(data: Dataset, indices: Sequence[int] | torch.Tensor | None, batch_size: int,
                 steps: int, seed: int, augment: bool = True, workers: int = 0) -> DataLoader:
    """``steps`` full batches of training images (shuffled again after each pass), with
    random crop (zero padding of 1/8) and, where it fits, horizontal flips. Batch order and
    augmentation come from ``seed`` only: the same batches for any ``workers``."""
    idx = _indices(data.train, indices)
    pad = max(1, data.resolution // 8) if augment else 0
    sampler = TrainBatches(idx, min(batch_size, len(idx)), steps, seed, pad,
                           augment and data.flip)
    return _loader(View(data.train, *data.norm(), pad), sampler, workers)


def eval_loader(data: Dataset, split: str = "test",
                indices: Sequence[int] | torch.Tensor | None = None,
                batch_size: int = EVAL_BATCH, workers: int = 0) -> DataLoader:
    """The split's images (or ``indices`` of it) in order, resized and normalised only."""
    images = data.split(split)
    idx = _indices(images, indices).tolist()
    batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    return _loader(View(images, *data.norm(), pad=0), batches, workers)


def _loader(view: View, batches: Any, workers: int) -> DataLoader:
    # workers only decode: nothing random happens in them, so no worker seeding is needed
    return _Loader(view, batch_sampler=batches, num_workers=workers, persistent_workers=False)


class _Loader(DataLoader):
    """A DataLoader whose workers' AdaptErrors (an unreadable image) stay one clear message
    (torch wraps them in a worker traceback), and whose workers stop when it is left."""

    def __iter__(self) -> Iterator[Any]:
        batches = super().__iter__()
        try:
            yield from batches
        except AdaptError as e:
            lines = str(e).strip().splitlines()
            if len(lines) > 1 and "DataLoader worker" in lines[0]:
                raise AdaptError(lines[-1].removeprefix("adapter.errors.AdaptError: ")
                                 .removeprefix("AdaptError: ")) from None
            raise
        finally:
            # Now, not when the garbage collector gets to an iterator an error's traceback
            # holds: by then its queues may be closed first, and torch waits 5 s for each
            # worker before it kills it.
            stop = getattr(batches, "_shutdown_workers", None)  # with workers only
            if stop is not None:
                stop()


def _indices(images: Images, indices: Sequence[int] | torch.Tensor | None) -> np.ndarray:
    idx = np.arange(len(images)) if indices is None else np.asarray(indices, np.int64)
    if len(idx) == 0:
        raise AdaptError("no images to load (an empty split)")
    return idx
