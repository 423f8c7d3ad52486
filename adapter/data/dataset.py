"""The dataset: a name, its classes, a train and a test split of images, and the
normalisation computed from the training images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapter.data.augment import View
from adapter.data.images import Images
from adapter.errors import AdaptError

SPLIT_SEED = 0  # the train/test split is fixed: run seeds change training, not the test set
TEST_FRACTION = 0.25
STATS_SAMPLE = 2000  # training images behind the normalisation (a fixed sample)


@dataclass
class Dataset:
    name: str
    classes: list[str]
    train: Images
    test: Images
    flip: bool = True  # horizontal flips are a fair augmentation (not for digits)
    source: str = ""  # load(source, resolution, max_per_class) opens it again (workers)
    max_per_class: int | None = None
    _norm: tuple[tuple[float, ...], tuple[float, ...]] | None = field(default=None, repr=False)

    @property
    def resolution(self) -> int:
        return self.train.resolution

    @property
    def train_y(self) -> torch.Tensor:
        return torch.from_numpy(self.train.labels)

    @property
    def test_y(self) -> torch.Tensor:
        return torch.from_numpy(self.test.labels)

    def norm(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) of the training images (a fixed sample), computed once."""
        if self._norm is None:
            self._norm = channel_stats(self.train)
        return self._norm

    def spec(self) -> dict[str, Any]:
        """How a worker opens the same data (plain values: ``reopen`` takes it back)."""
        mean, std = self.norm()
        return {"source": self.source, "resolution": self.resolution,
                "max_per_class": self.max_per_class, "mean": list(mean), "std": list(std)}

    def describe(self) -> str:
        return (f"{self.name}: {len(self.classes)} classes, {len(self.train)} train / "
                f"{len(self.test)} test images at {self.resolution} px")

    def split(self, name: str) -> Images:
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {name!r}")
        return self.train if name == "train" else self.test

    def tensors(self, split: str = "test", indices: Sequence[int] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Some normalised images as one tensor (tests, export checks; not for a large set)."""
        view = View(self.split(split), *self.norm(), pad=0)
        idx = range(len(view)) if indices is None else [int(i) for i in indices]
        xs, ys = zip(*(view[i] for i in idx))
        return torch.stack(xs), torch.tensor(ys)

    def holdout_split(self, per_class: int = 10, seed: int = SPLIT_SEED
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(holdout indices, the rest): ``per_class`` training images of each class held out."""
        rng = np.random.default_rng(seed)
        y = self.train.labels
        hold = []
        for c in range(len(self.classes)):
            idx = np.flatnonzero(y == c)
            if len(idx) <= per_class:
                raise AdaptError(f"{self.name}: class {self.classes[c]!r} has {len(idx)} training "
                                 f"images; the holdout takes {per_class} per class and "
                                 "fine-tuning needs more")
            hold.extend(rng.choice(idx, per_class, replace=False).tolist())
        mask = np.zeros(len(y), bool)
        mask[hold] = True
        return torch.from_numpy(np.flatnonzero(mask)), torch.from_numpy(np.flatnonzero(~mask))


def finish(name: str, classes: list[str], train: Images, test: Images, flip: bool = True,
           source: str = "") -> Dataset:
    if len(train) == 0 or len(test) == 0:
        raise AdaptError(f"{name}: empty train or test split")
    return Dataset(name, classes, train, test, flip=flip, source=source)


def first_per_class(labels: np.ndarray, max_per_class: int | None, n_classes: int
                    ) -> np.ndarray:
    """Positions of the first ``max_per_class`` labels of each class, in their order (all
    of them when it is None): what ``max_per_class`` keeps of a training split."""
    if not max_per_class:
        return np.arange(len(labels))
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:max_per_class]
                                   for c in range(n_classes)]))


def check_classes(where: Path | str, labels: np.ndarray, n_classes: int) -> None:
    counts = np.bincount(labels, minlength=n_classes)
    if (counts > 0).sum() < 2:
        raise AdaptError(f"{where}: the training images are all of one class; a classifier "
                         "needs at least 2")


def channel_stats(images: Images, sample: int = STATS_SAMPLE
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a fixed sample of ``images``, streamed one by one."""
    n = len(images)
    pick = np.arange(n) if n <= sample else \
        np.sort(np.random.default_rng(SPLIT_SEED).choice(n, sample, replace=False))
    s = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    for i in pick:
        x = images.image(int(i)).double()
        s += x.sum((1, 2))
        s2 += (x * x).sum((1, 2))
    pixels = len(pick) * images.resolution ** 2
    mean = s / pixels
    std = (s2 / pixels - mean ** 2).clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())
