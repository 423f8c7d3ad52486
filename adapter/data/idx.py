"""Fashion-MNIST and any data in its IDX files: memory-mapped, one record read per image."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from adapter.data.dataset import Dataset, check_classes, finish, first_per_class
from adapter.data.images import Images
from adapter.errors import AdaptError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
FASHION_MNIST_INSTALL = "install it with: sudo apt install dataset-fashion-mnist, or make fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_MAGIC = {3: 2051, 1: 2049}  # unsigned bytes, 3 dimensions (images) or 1 (labels)


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


def installed_fashion_mnist(resolution: int, max_per_class: int | None = None) -> Dataset:
    """Debian's ``dataset-fashion-mnist``, or how to install it."""
    if not FASHION_MNIST_DIR.is_dir():
        raise AdaptError(f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR} is missing): "
                         f"{FASHION_MNIST_INSTALL}")
    return fashion_mnist(FASHION_MNIST_DIR, resolution, max_per_class)


def holds_idx(folder: Path) -> bool:
    """Does ``folder`` hold Fashion-MNIST-style training files?"""
    return any(find_idx(folder, n) for n in IDX_FILES["train"])


def fashion_mnist(path: Path, resolution: int, max_per_class: int | None = None) -> Dataset:
    """IDX files as distributed (gzip'd or not): ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``.

    A gzip'd image file is decompressed once into the cache (``cache_dir``) and memory-
    mapped: gzip cannot seek without decompressing from the start, a raw file gives each
    image in O(1), and loader workers share its pages through the OS cache."""
    splits = {}
    for split, (images, labels) in IDX_FILES.items():
        missing = [n for n in (images, labels) if not find_idx(path, n)]
        if missing:
            raise AdaptError(f"{path}: Fashion-MNIST file(s) missing: "
                             + ", ".join(f"{n}.gz" for n in missing)
                             + (f" ({FASHION_MNIST_INSTALL})" if path == FASHION_MNIST_DIR else ""))
        raw = _raw_idx(find_idx(path, images))
        x = read_idx(raw, 3)
        y = np.array(read_idx(_raw_idx(find_idx(path, labels)), 1), np.int64)
        if len(x) != len(y):
            raise AdaptError(f"{path}: {split} has {len(x)} images but {len(y)} labels")
        splits[split] = (raw, y)
    (xtr, ytr), (xte, yte) = splits["train"], splits["test"]
    n_classes = int(max(ytr.max(), yte.max())) + 1
    check_classes(path, ytr, n_classes)
    keep = first_per_class(ytr, max_per_class, n_classes)
    fashion = n_classes == 10 and (path == FASHION_MNIST_DIR or "fashion" in path.name.lower())
    classes = FASHION_CLASSES if fashion else [str(i) for i in range(n_classes)]
    return finish("fashion-mnist" if fashion else path.name, classes,
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


def find_idx(folder: Path, name: str) -> Path | None:
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
