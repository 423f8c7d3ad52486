"""The CIFAR-10 python batches as distributed (``data_batch_1..5``, ``test_batch``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from adapter.data.dataset import Dataset, finish, first_per_class
from adapter.data.images import ArrayImages
from adapter.errors import AdaptError


def cifar10(path: Path, resolution: int, max_per_class: int | None = None) -> Dataset:
    """The CIFAR-10 python batches as distributed (pickled dicts of uint8 rows, kept as
    uint8: 150 MB for the training set, each image converted when drawn)."""
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in names + ["test_batch"] if not (path / n).is_file()]
    if missing:
        raise AdaptError(f"{path}: CIFAR-10 batch file(s) missing: {', '.join(missing)}")
    xtr, ytr = zip(*(_cifar_batch(path / n) for n in names))
    xte, yte = _cifar_batch(path / "test_batch")
    x, y = np.concatenate(xtr), np.concatenate(ytr)
    if max_per_class:  # the whole split uncopied otherwise
        keep = first_per_class(y, max_per_class, 10)
        x, y = x[keep], y[keep]
    classes = [str(i) for i in range(10)]
    meta = path / "batches.meta"
    if meta.is_file():
        classes = [n.decode() for n in _unpickle(meta).get(b"label_names", [])] or classes
    return finish("cifar10", classes, ArrayImages(x, y, resolution),
                  ArrayImages(xte, yte, resolution))


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    try:
        data = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d[b"labels"], np.int64)
    except (KeyError, ValueError) as e:
        raise AdaptError(f"{path}: not a CIFAR-10 batch ({e})") from None
    if len(data) != len(labels) or labels.min() < 0 or labels.max() > 9:
        raise AdaptError(f"{path}: not a CIFAR-10 batch (labels do not match the images)")
    return data, labels


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - truncated or foreign files fail in many ways
        raise AdaptError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise AdaptError(f"{path}: not a CIFAR-10 batch (expected a pickled dict)")
    return d
