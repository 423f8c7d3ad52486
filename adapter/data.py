"""Datasets for adaptation, all read from disk (nothing is ever downloaded).

- ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans,
  10 classes), upscaled to the network's resolution: the offline default.
- an image folder, one subfolder per class (split into train/test here);
- an ImageNet-style folder with ``train/`` and ``val/``, each one subfolder per class;
- the CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``).

Everything becomes in-memory NCHW float tensors at the network's resolution,
normalised with the training set's per-channel mean and std. The holdout split
of the paper (10 images per class taken from the training set) is ``holdout_split``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from adapter.errors import AdaptError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
SPLIT_SEED = 0  # the train/test split is fixed: run seeds change training, not the test set
TEST_FRACTION = 0.25


@dataclass
class Dataset:
    name: str
    classes: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def resolution(self) -> int:
        return int(self.train_x.shape[-1])

    def describe(self) -> str:
        return (f"{self.name}: {len(self.classes)} classes, {len(self.train_y)} train / "
                f"{len(self.test_y)} test images at {self.resolution} px")

    def holdout_split(self, per_class: int = 10, seed: int = SPLIT_SEED
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(holdout indices, the rest): ``per_class`` training images of each class held out."""
        rng = np.random.default_rng(seed)
        y = self.train_y.numpy()
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


def load(source: str, resolution: int, max_per_class: int | None = None) -> Dataset:
    """``digits`` or a path (CIFAR-10 batches, ImageNet-style train/val, or class folders)."""
    if source == "digits":
        return digits(resolution)
    path = Path(source)
    if not path.is_dir():
        raise AdaptError(f"dataset {source!r}: not 'digits' and not a folder")
    if (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    if (path / "data_batch_1").exists() or (path / "test_batch").exists():
        return cifar10(path, resolution, max_per_class)
    if (path / "train").is_dir() and (path / "val").is_dir():
        return imagenet_folder(path, resolution, max_per_class)
    return image_folder(path, resolution, max_per_class)


# -- the offline default --------------------------------------------------------------------


def digits(resolution: int) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()  # bundled with scikit-learn: no download
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    y = torch.from_numpy(d.target.astype(np.int64))
    tr, te = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION,
                              random_state=SPLIT_SEED, stratify=y.numpy())
    x = _resize(x, resolution).expand(-1, 3, -1, -1)
    return _finish("digits", [str(i) for i in range(10)], x[tr], y[tr], x[te], y[te])


# -- user data ------------------------------------------------------------------------------


def image_folder(path: Path, resolution: int, max_per_class: int | None = None) -> Dataset:
    """One subfolder per class; a stratified, fixed split makes the test set."""
    from sklearn.model_selection import train_test_split

    classes, x, y = _read_classes(path, resolution, max_per_class)
    counts = np.bincount(y.numpy(), minlength=len(classes))
    if counts.min() < 2:
        small = classes[int(counts.argmin())]
        raise AdaptError(f"{path}: class {small!r} has {counts.min()} image(s); at least 2 are "
                         "needed to split off a test set")
    tr, te = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION,
                              random_state=SPLIT_SEED, stratify=y.numpy())
    return _finish(path.name, classes, x[tr], y[tr], x[te], y[te])


def imagenet_folder(path: Path, resolution: int, max_per_class: int | None = None) -> Dataset:
    """``train/CLASS/*`` and ``val/CLASS/*`` (val classes must be training classes)."""
    classes, xtr, ytr = _read_classes(path / "train", resolution, max_per_class)
    vclasses, xte, yte = _read_classes(path / "val", resolution, max_per_class)
    unknown = sorted(set(vclasses) - set(classes))
    if unknown:
        raise AdaptError(f"{path / 'val'}: class folder(s) {', '.join(unknown)} are not in "
                         f"{path / 'train'}")
    remap = torch.tensor([classes.index(c) for c in vclasses])
    return _finish(path.name, classes, xtr, ytr, xte, remap[yte])


def cifar10(path: Path, resolution: int, max_per_class: int | None = None) -> Dataset:
    """The CIFAR-10 python batches as distributed (pickled dicts of uint8 rows)."""
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in names + ["test_batch"] if not (path / n).is_file()]
    if missing:
        raise AdaptError(f"{path}: CIFAR-10 batch file(s) missing: {', '.join(missing)}")
    xtr, ytr = zip(*(_cifar_batch(path / n) for n in names))
    xte, yte = _cifar_batch(path / "test_batch")
    x, y = np.concatenate(xtr), np.concatenate(ytr)
    if max_per_class:
        keep = np.concatenate([np.flatnonzero(y == c)[:max_per_class] for c in range(10)])
        x, y = x[np.sort(keep)], y[np.sort(keep)]
    classes = [str(i) for i in range(10)]
    meta = path / "batches.meta"
    if meta.is_file():
        classes = [n.decode() for n in _unpickle(meta).get(b"label_names", [])] or classes
    return _finish("cifar10", classes, _resize(torch.from_numpy(x), resolution),
                   torch.from_numpy(y), _resize(torch.from_numpy(xte), resolution),
                   torch.from_numpy(yte))


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    try:
        data = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d[b"labels"], np.int64)
    except (KeyError, ValueError) as e:
        raise AdaptError(f"{path}: not a CIFAR-10 batch ({e})") from None
    if len(data) != len(labels) or labels.min() < 0 or labels.max() > 9:
        raise AdaptError(f"{path}: not a CIFAR-10 batch (labels do not match the images)")
    return data.astype(np.float32) / 255.0, labels


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - truncated or foreign files fail in many ways
        raise AdaptError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise AdaptError(f"{path}: not a CIFAR-10 batch (expected a pickled dict)")
    return d


def _read_classes(path: Path, resolution: int, max_per_class: int | None
                  ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    if not path.is_dir():
        raise AdaptError(f"{path}: no such folder")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise AdaptError(f"{path}: expected one subfolder per class (at least 2), found "
                         f"{len(classes)}")
    xs, ys = [], []
    for i, c in enumerate(classes):
        files = sorted(p for p in (path / c).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise AdaptError(f"{path / c}: no images (looked for {', '.join(sorted(IMAGE_EXTS))})")
        for f in files[:max_per_class]:
            xs.append(_read_image(f, resolution))
            ys.append(i)
    return classes, torch.stack(xs), torch.tensor(ys)


def _read_image(path: Path, resolution: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
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


# -- shared ---------------------------------------------------------------------------------


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def _finish(name: str, classes: list[str], xtr: torch.Tensor, ytr: torch.Tensor,
            xte: torch.Tensor, yte: torch.Tensor) -> Dataset:
    if len(ytr) == 0 or len(yte) == 0:
        raise AdaptError(f"{name}: empty train or test split")
    mean = xtr.mean((0, 2, 3), keepdim=True)
    std = xtr.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    norm = lambda x: ((x - mean) / std).float().contiguous()
    return Dataset(name, classes, norm(xtr), ytr.long(), norm(xte), yte.long())
