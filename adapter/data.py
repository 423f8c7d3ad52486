"""Datasets for adaptation, read from disk and decoded on the fly (nothing is downloaded).

- ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans,
  10 classes), upscaled to the network's resolution: tiny, in memory, for fast tests;
- ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` (IDX files under
  ``/usr/share/datasets/fashion-mnist``), or a folder holding the same IDX files;
- an image folder, one subfolder per class (a fixed stratified train/test split);
- an ImageNet-style folder with ``train/`` and ``val/``, each one subfolder per class;
- the CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``).

A ``Dataset`` holds labels and where each image is (file paths, record numbers in a
memory-mapped IDX file, rows of a small array); ``train_loader`` and ``eval_loader``
read, resize and normalise images as batches are drawn, in loader worker processes
when asked. Normalisation uses per-channel statistics of a fixed sample of training
images. The holdout split of the paper (10 images per class taken from the training
set) is ``Dataset.holdout_split``.

Determinism: a training loader's batch order *and* each image's augmentation (crop
offset, flip) are drawn in the main process from one generator seeded by the caller,
and travel with the index; workers only apply them. Batches are therefore the same
for any number of loader workers, in any process, on any executor.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from adapter.errors import AdaptError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
SPLIT_SEED = 0  # the train/test split is fixed: run seeds change training, not the test set
TEST_FRACTION = 0.25
STATS_SAMPLE = 2000  # training images behind the normalisation (a fixed sample)
EVAL_BATCH = 256

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
FASHION_MNIST_INSTALL = "install it with: sudo apt install dataset-fashion-mnist, or make fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_MAGIC = {3: 2051, 1: 2049}  # unsigned bytes, 3 dimensions (images) or 1 (labels)


# -- one split's images: labels in memory, pixels read when asked for ------------------------


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
        x = _resize(self.raw(i)[None], self.resolution)[0]
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


class IdxImages(Images):
    """Records of a raw IDX image file, memory-mapped (opened lazily in each process)."""

    def __init__(self, path: Path, records: np.ndarray, labels: np.ndarray, resolution: int):
        super().__init__(labels, resolution)
        self.path, self.records = path, np.asarray(records, np.int64)
        self._map: np.ndarray | None = None

    def raw(self, i: int) -> torch.Tensor:
        if self._map is None:
            self._map = read_idx(self.path, 3)
        return torch.from_numpy(self._map[self.records[i]].astype(np.float32) / 255.0)[None]

    def __getstate__(self) -> dict:  # a worker maps the file itself; never pickle the pixels
        return {**self.__dict__, "_map": None}


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
        return _read_image(self.path(i), self.resolution)


# -- the dataset --------------------------------------------------------------------------


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
            self._norm = _stats(self.train)
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
        view = _View(self.split(split), *self.norm(), pad=0)
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
        return digits(resolution)
    if source == "fashion-mnist":
        if not FASHION_MNIST_DIR.is_dir():
            raise AdaptError(f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR} is missing): "
                             f"{FASHION_MNIST_INSTALL}")
        return fashion_mnist(FASHION_MNIST_DIR, resolution, max_per_class)
    path = Path(source)
    if not path.is_dir():
        raise AdaptError(f"dataset {source!r}: not 'digits', not 'fashion-mnist' and not a folder")
    if any(_idx_path(path, n) for n in IDX_FILES["train"]):
        return fashion_mnist(path, resolution, max_per_class)
    if (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    if (path / "data_batch_1").exists() or (path / "test_batch").exists():
        return cifar10(path, resolution, max_per_class)
    if (path / "train").is_dir() and (path / "val").is_dir():
        return imagenet_folder(path, resolution, max_per_class)
    return image_folder(path, resolution, max_per_class)


# -- loaders --------------------------------------------------------------------------------


def train_loader(data: Dataset, indices: Sequence[int] | torch.Tensor | None, batch_size: int,
                 steps: int, seed: int, augment: bool = True, workers: int = 0) -> DataLoader:
    """``steps`` full batches of training images (shuffled again after each pass), with
    random crop (zero padding of 1/8) and, where it fits, horizontal flips. Batch order and
    augmentation come from ``seed`` only: the same batches for any ``workers``."""
    idx = _indices(data.train, indices)
    pad = max(1, data.resolution // 8) if augment else 0
    sampler = _TrainBatches(idx, min(batch_size, len(idx)), steps, seed, pad,
                            augment and data.flip)
    return _loader(_View(data.train, *data.norm(), pad), sampler, workers)


def eval_loader(data: Dataset, split: str = "test",
                indices: Sequence[int] | torch.Tensor | None = None,
                batch_size: int = EVAL_BATCH, workers: int = 0) -> DataLoader:
    """The split's images (or ``indices`` of it) in order, resized and normalised only."""
    images = data.split(split)
    idx = _indices(images, indices).tolist()
    batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    return _loader(_View(images, *data.norm(), pad=0), batches, workers)


def _loader(view: _View, batches: Any, workers: int) -> DataLoader:
    # workers only decode: nothing random happens in them, so no worker seeding is needed
    return _Loader(view, batch_sampler=batches, num_workers=workers, persistent_workers=False)


class _Loader(DataLoader):
    """A DataLoader whose workers' AdaptErrors (an unreadable image) stay one clear message
    (torch wraps them in a worker traceback)."""

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from super().__iter__()
        except AdaptError as e:
            lines = str(e).strip().splitlines()
            if len(lines) > 1 and "DataLoader worker" in lines[0]:
                raise AdaptError(lines[-1].removeprefix("adapter.errors.AdaptError: ")
                                 .removeprefix("AdaptError: ")) from None
            raise


def _indices(images: Images, indices: Sequence[int] | torch.Tensor | None) -> np.ndarray:
    idx = np.arange(len(images)) if indices is None else np.asarray(indices, np.int64)
    if len(idx) == 0:
        raise AdaptError("no images to load (an empty split)")
    return idx


class _TrainBatches(Sampler):
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


class _View(TorchDataset):
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


# -- the fast-test default --------------------------------------------------------------------


def digits(resolution: int) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()  # bundled with scikit-learn: no download
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION,
                              random_state=SPLIT_SEED, stratify=y)
    return _finish("digits", [str(i) for i in range(10)],
                   ArrayImages(x[tr], y[tr], resolution), ArrayImages(x[te], y[te], resolution),
                   flip=False, source="digits")


# -- Fashion-MNIST (IDX files) ----------------------------------------------------------------


def fashion_mnist(path: Path, resolution: int, max_per_class: int | None = None) -> Dataset:
    """IDX files as distributed (gzip'd or not): ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``.

    A gzip'd image file is decompressed once into the cache (``cache_dir``) and memory-
    mapped: gzip cannot seek without decompressing from the start, a raw file gives each
    image in O(1), and loader workers share its pages through the OS cache."""
    splits = {}
    for split, (images, labels) in IDX_FILES.items():
        missing = [n for n in (images, labels) if not _idx_path(path, n)]
        if missing:
            raise AdaptError(f"{path}: Fashion-MNIST file(s) missing: "
                             + ", ".join(f"{n}.gz" for n in missing)
                             + (f" ({FASHION_MNIST_INSTALL})" if path == FASHION_MNIST_DIR else ""))
        raw = _raw_idx(_idx_path(path, images))
        x = read_idx(raw, 3)
        y = np.array(read_idx(_raw_idx(_idx_path(path, labels)), 1), np.int64)
        if len(x) != len(y):
            raise AdaptError(f"{path}: {split} has {len(x)} images but {len(y)} labels")
        splits[split] = (raw, y)
    (xtr, ytr), (xte, yte) = splits["train"], splits["test"]
    n_classes = int(max(ytr.max(), yte.max())) + 1
    _check_classes(path, ytr, n_classes)
    keep = np.arange(len(ytr))
    if max_per_class:
        keep = np.sort(np.concatenate([np.flatnonzero(ytr == c)[:max_per_class]
                                       for c in range(n_classes)]))
    fashion = n_classes == 10 and (path == FASHION_MNIST_DIR or "fashion" in path.name.lower())
    classes = FASHION_CLASSES if fashion else [str(i) for i in range(n_classes)]
    return _finish("fashion-mnist" if fashion else path.name, classes,
                   IdxImages(xtr, keep, ytr[keep], resolution),
                   IdxImages(xte, np.arange(len(yte)), yte, resolution))


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """A raw IDX file of unsigned bytes with ``ndim`` dimensions, memory-mapped (checked)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
        size = path.stat().st_size
    except OSError as e:
        raise AdaptError(f"{path}: cannot read ({e})") from None
    magic = int.from_bytes(head[:4], "big") if len(head) >= 4 else None
    if magic != IDX_MAGIC[ndim] or len(head) < 4 + 4 * ndim:
        raise AdaptError(f"{path}: not an IDX file of {'images' if ndim == 3 else 'labels'} "
                         f"(magic {magic}, expected {IDX_MAGIC[ndim]})")
    shape = tuple(int.from_bytes(head[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim))
    if size != len(head) + int(np.prod(shape)):
        raise AdaptError(f"{path}: IDX header says {'x'.join(map(str, shape))} bytes of data, "
                         f"the file holds {size - len(head)} (truncated?)")
    if shape[0] == 0:
        raise AdaptError(f"{path}: no records")
    return np.memmap(path, np.uint8, "r", offset=len(head), shape=shape)


def cache_dir() -> Path:
    """Where decompressed data lives: $NETADAPT_CACHE, else $XDG_CACHE_HOME/netadapt."""
    if os.environ.get("NETADAPT_CACHE"):
        return Path(os.environ["NETADAPT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "netadapt"


def _idx_path(folder: Path, name: str) -> Path | None:
    for p in (folder / name, folder / f"{name}.gz"):
        if p.is_file():
            return p
    return None


def _raw_idx(path: Path) -> Path:
    """The file itself, or its gunzipped copy in the cache (made once, atomically)."""
    if path.suffix != ".gz":
        return path
    st = path.stat()
    tag = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    out = cache_dir() / "idx" / f"{path.stem}-{tag[:12]}"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    try:
        with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError) as e:  # BadGzipFile is an OSError
        tmp.unlink(missing_ok=True)
        raise AdaptError(f"{path}: cannot decompress ({type(e).__name__}: {e})") from None
    os.replace(tmp, out)  # a kill never leaves half a file under the final name
    return out


# -- user folders -----------------------------------------------------------------------------


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
    return _finish(path.name, classes,
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
    return _finish(path.name, classes, FileImages(path, ftr, ytr, resolution),
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


def _read_image(path: Path, resolution: int) -> torch.Tensor:
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


# -- CIFAR-10 ---------------------------------------------------------------------------------


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
    if max_per_class:
        keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:max_per_class] for c in range(10)]))
        x, y = x[keep], y[keep]
    classes = [str(i) for i in range(10)]
    meta = path / "batches.meta"
    if meta.is_file():
        classes = [n.decode() for n in _unpickle(meta).get(b"label_names", [])] or classes
    return _finish("cifar10", classes, ArrayImages(x, y, resolution),
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


# -- shared ---------------------------------------------------------------------------------


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def _check_classes(where: Path | str, labels: np.ndarray, n_classes: int) -> None:
    counts = np.bincount(labels, minlength=n_classes)
    if (counts > 0).sum() < 2:
        raise AdaptError(f"{where}: the training images are all of one class; a classifier "
                         "needs at least 2")


def _finish(name: str, classes: list[str], train: Images, test: Images, flip: bool = True,
            source: str = "") -> Dataset:
    if len(train) == 0 or len(test) == 0:
        raise AdaptError(f"{name}: empty train or test split")
    return Dataset(name, classes, train, test, flip=flip, source=source)


def _stats(images: Images, sample: int = STATS_SAMPLE
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
