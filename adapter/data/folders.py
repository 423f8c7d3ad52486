"""Folders of image files: one subfolder per class, or ImageNet's train/ + val/ layout;
each image decoded (and scaled) only when it is drawn."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from adapter.data.dataset import SPLIT_SEED, TEST_FRACTION, Dataset, finish
from adapter.data.images import Images
from adapter.errors import AdaptError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}


class FileImages(Images):
    """Image files under ``root`` (relative paths as bytes: no per-file Python objects that
    forked loader workers would copy by touching their reference counts)."""

    def __init__(self, root: Path, files: Sequence[Path], labels: np.ndarray, resolution: int):
        super().__init__(labels, resolution)
        self.root = root
        self.files = np.array([os.fsencode(f.relative_to(root)) for f in files], dtype=bytes)

    def path(self, i: int) -> Path:
        return self.root / os.fsdecode(self.files[i])

    def raw(self, i: int) -> torch.Tensor:
        return read_image(self.path(i), self.resolution)


def image_folder(path: Path, resolution: int, max_per_class: int | None = None) -> Dataset:
    """One subfolder per class; a stratified, fixed split makes the test set."""
    from sklearn.model_selection import train_test_split

    classes, files, y = _list_classes(path, max_per_class)
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < 2:
        small = classes[int(counts.argmin())]
        raise AdaptError(f"{path}: class {small!r} has {counts.min()} image(s); at least 2 are "
                         "needed to split off a test set")
    try:
        tr, te = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION,
                                  random_state=SPLIT_SEED, stratify=y)
    except ValueError:  # a test set of fewer images than classes
        raise AdaptError(f"{path}: {len(y)} images are too few to split off a test set "
                         f"({TEST_FRACTION:.0%}) holding each of the {len(classes)} classes"
                         ) from None
    return finish(path.name, classes,
                  FileImages(path, [files[i] for i in tr], y[tr], resolution),
                  FileImages(path, [files[i] for i in te], y[te], resolution))


def imagenet_folder(path: Path, resolution: int, max_per_class: int | None = None) -> Dataset:
    """``train/CLASS/*`` and ``val/CLASS/*`` (val classes must be training classes)."""
    classes, ftr, ytr = _list_classes(path / "train", max_per_class)
    vclasses, fte, yte = _list_classes(path / "val", max_per_class, min_classes=1)
    unknown = sorted(set(vclasses) - set(classes))
    if unknown:
        raise AdaptError(f"{path / 'val'}: class folder(s) {', '.join(unknown)} are not in "
                         f"{path / 'train'}")
    remap = np.array([classes.index(c) for c in vclasses])
    return finish(path.name, classes, FileImages(path, ftr, ytr, resolution),
                  FileImages(path, fte, remap[yte], resolution))


def _list_classes(path: Path, max_per_class: int | None, min_classes: int = 2
                  ) -> tuple[list[str], list[Path], np.ndarray]:
    """Class names, image files and labels (the files are read later, one at a time)."""
    if not path.is_dir():
        raise AdaptError(f"{path}: no such folder")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < min_classes:
        loose = sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        raise AdaptError(f"{path}: expected one subfolder per class (at least {min_classes}), "
                         f"found {len(classes)}"
                         + (f" and {loose} loose image(s): put each class in its own subfolder"
                            if loose else ""))
    files: list[Path] = []
    labels: list[int] = []
    for i, c in enumerate(classes):
        found = sorted(p for p in (path / c).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not found:
            raise AdaptError(f"{path / c}: no images (looked for {', '.join(sorted(IMAGE_EXTS))})")
        found = found[:max_per_class]
        files.extend(found)
        labels.extend([i] * len(found))
    return classes, files, np.array(labels, np.int64)


def read_image(path: Path, resolution: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("RGB", (resolution, resolution))  # JPEG: decode at a reduced scale, fast
            im = im.convert("RGB")
            scale = resolution / min(im.size)  # shorter side to resolution, centre crop
            w, h = max(resolution, round(im.width * scale)), max(resolution,
                                                                 round(im.height * scale))
            im = im.resize((w, h), Image.BILINEAR)
            left, top = (w - resolution) // 2, (h - resolution) // 2
            im = im.crop((left, top, left + resolution, top + resolution))
            arr = np.asarray(im, np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise AdaptError(f"{path}: not a readable image ({e})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
