"""What a ``--data`` source names, and opening it: ``load`` here, ``reopen`` in a worker
process (from ``Dataset.spec()``, its normalisation kept, once per process)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapter.data.cifar import cifar10
from adapter.data.dataset import Dataset
from adapter.data.digits import digits
from adapter.data.folders import image_folder, imagenet_folder
from adapter.data.idx import fashion_mnist, holds_idx, installed_fashion_mnist
from adapter.errors import AdaptError


def load(source: str, resolution: int, max_per_class: int | None = None) -> Dataset:
    """``digits``, ``fashion-mnist``, or a folder: Fashion-MNIST-style IDX files, CIFAR-10
    batches, ImageNet-style train/ + val/, or one subfolder per class."""
    ds = _open(source, resolution, max_per_class)
    named = source in ("digits", "fashion-mnist")
    ds.source = source if named else str(Path(source).resolve())  # for workers in other folders
    ds.max_per_class = max_per_class
    _OPENED[_key(ds.spec())] = ds
    return ds


def reopen(spec: Mapping[str, Any]) -> Dataset:
    """The dataset ``Dataset.spec`` describes, with its normalisation (once per process)."""
    key = _key(spec)
    if key not in _OPENED:
        ds = _open(spec["source"], spec["resolution"], spec["max_per_class"])
        ds.source, ds.max_per_class = spec["source"], spec["max_per_class"]
        ds._norm = (tuple(spec["mean"]), tuple(spec["std"]))
        _OPENED[key] = ds
    return _OPENED[key]


_OPENED: dict[tuple, Dataset] = {}


def _key(spec: Mapping[str, Any]) -> tuple:
    return (spec["source"], spec["resolution"], spec["max_per_class"], tuple(spec["mean"]),
            tuple(spec["std"]))


def _open(source: str, resolution: int, max_per_class: int | None) -> Dataset:
    if source == "digits":
        return digits(resolution, max_per_class)
    if source == "fashion-mnist":
        return installed_fashion_mnist(resolution, max_per_class)
    path = Path(source)
    if not path.is_dir():
        raise AdaptError(f"dataset {source!r}: not 'digits', not 'fashion-mnist' and not a folder")
    if holds_idx(path):
        return fashion_mnist(path, resolution, max_per_class)
    if (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    if (path / "data_batch_1").exists() or (path / "test_batch").exists():
        return cifar10(path, resolution, max_per_class)
    if (path / "train").is_dir() and (path / "val").is_dir():
        return imagenet_folder(path, resolution, max_per_class)
    return image_folder(path, resolution, max_per_class)
