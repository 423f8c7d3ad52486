"""One split's images: labels in memory, pixels read and resized when asked for. Each
format brings its own kind (``IdxImages``, ``FileImages``); small arrays are ``ArrayImages``."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset as TorchDataset


class Images(TorchDataset):
    """Images of one split, each read and resized to ``resolution`` on every access."""

    def __init__(self, labels: np.ndarray, resolution: int):
        self.labels = np.asarray(labels, np.int64)
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.image(i), int(self.labels[i])

    def image(self, i: int) -> torch.Tensor:
        """3 x resolution x resolution, float in [0, 1]; grayscale repeated on 3 channels."""
        x = resize(self.raw(i)[None], self.resolution)[0]
        return x.expand(3, -1, -1) if x.shape[0] == 1 else x

    def raw(self, i: int) -> torch.Tensor:
        """C x H x W float in [0, 1], any size."""
        raise NotImplementedError


class ArrayImages(Images):
    """Rows of a small N x C x H x W array (uint8 or float in [0, 1]): digits, CIFAR-10."""

    def __init__(self, array: np.ndarray, labels: np.ndarray, resolution: int):
        super().__init__(labels, resolution)
        self.array = array

    def raw(self, i: int) -> torch.Tensor:
        a = self.array[i]
        x = torch.from_numpy(np.asarray(a, np.float32))
        return x / 255.0 if a.dtype == np.uint8 else x


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
