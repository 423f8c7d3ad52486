"""adapter.data: the bundled digits, Fashion-MNIST IDX files, user folders, CIFAR-10 batches,
streaming loaders that repeat given their seed, and clear refusals."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adapter import data
from adapter.errors import AdaptError


def test_digits_offline_default() -> None:
    d = data.load("digits", 32)
    assert d.classes == [str(i) for i in range(10)]
    train_x, _ = d.tensors("train")
    assert train_x.shape == (1347, 3, 32, 32) and len(d.test) == 450
    assert train_x.dtype == torch.float32
    mean = train_x.mean((0, 2, 3))
    torch.testing.assert_close(mean, torch.zeros(3), atol=1e-4, rtol=0)
    assert set(d.test_y.tolist()) == set(range(10))
    # the split is fixed: the test set never depends on the run
    torch.testing.assert_close(data.load("digits", 32).test_y, d.test_y)


def test_holdout_is_ten_per_class_from_training() -> None:
    d = data.load("digits", 16)
    hold, rest = d.holdout_split(10)
    assert len(hold) == 100 and len(hold) + len(rest) == len(d.train_y)
    assert not set(hold.tolist()) & set(rest.tolist())
    assert np.bincount(d.train_y[hold].numpy()).tolist() == [10] * 10
    with pytest.raises(AdaptError, match="the holdout takes 500 per class"):
        d.holdout_split(500)


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (20, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder(tmp_path: Path) -> None:
    for c, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        for i in range(12):
            _png(tmp_path / "pets" / c / f"{i}.png", color)
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image, skipped")
    d = data.load(str(tmp_path / "pets"), 16)
    assert d.classes == ["cat", "dog"]
    assert len(d.train_y) == 18 and len(d.test_y) == 6
    train_x, train_y = d.tensors("train")
    assert train_x.shape[1:] == (3, 16, 16)
    # red images are class 0: their red channel is above the mean
    assert (train_x[train_y == 0, 0] > 0).all()


def test_imagenet_style_folder(tmp_path: Path) -> None:
    for split, n in (("train", 12), ("val", 3)):
        for c in ("a", "b", "c"):
            for i in range(n):
                _png(tmp_path / "inet" / split / c / f"{i}.jpg", (i * 20, 0, 0), (40, 30))
    d = data.load(str(tmp_path / "inet"), 24, max_per_class=11)
    assert d.classes == ["a", "b", "c"]
    assert len(d.train_y) == 33 and len(d.test_y) == 9
    assert d.tensors("test")[0].shape[1:] == (3, 24, 24)


def test_cifar10_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, 20))}
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [
        n.encode() for n in ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]]}))
    d = data.load(str(tmp_path), 32)
    assert d.classes[:2] == ["plane", "car"]
    assert len(d.train) == 100 and len(d.test_y) == 20
    assert d.train.array.dtype == np.uint8  # kept as distributed, converted when drawn
    assert d.tensors("train", [0, 1])[0].shape == (2, 3, 32, 32)


@pytest.mark.parametrize("setup,message", [
    (lambda p: p.mkdir(), "expected one subfolder per class"),
    (lambda p: [(p / c).mkdir(parents=True) for c in ("a", "b")], "/a: no images"),
    (lambda p: _png(p / "only" / "1.png", (0, 0, 0)), r"at least 2\), found 1"),
    (lambda p: [_png(p / f"{i}.png", (0, 0, 0)) for i in range(3)], "3 loose image"),
    (lambda p: [_png(p / c / f"{i}.png", (0, 0, 0)) for c in "abc" for i in range(2)],
     "6 images are too few to split off a test set"),
    (lambda p: [_png(p / c / "1.png", (0, 0, 0)) for c in ("a", "b")],
     "class 'a' has 1 image"),
    (lambda p: [p.mkdir(), (p / "data_batch_1").write_bytes(b"\x80garbage")],
     "CIFAR-10 batch file\\(s\\) missing: data_batch_2"),
])
def test_bad_datasets_are_refused_clearly(tmp_path: Path, setup, message: str) -> None:
    path = tmp_path / "ds"
    setup(path)
    with pytest.raises(AdaptError, match=message):
        data.load(str(path), 16)


def test_corrupt_cifar_batch(tmp_path: Path) -> None:
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (tmp_path / name).write_bytes(b"\x80\x04garbage")
    with pytest.raises(AdaptError, match="data_batch_1: cannot read"):
        data.load(str(tmp_path), 32)


def test_not_a_dataset() -> None:
    with pytest.raises(AdaptError, match="not 'digits', not 'fashion-mnist' and not a folder"):
        data.load("/nonexistent/imagenet", 32)


# -- Fashion-MNIST: IDX files, gzip'd as Debian ships them ------------------------------------


def _idx(path: Path, array: np.ndarray, magic: int | None = None, gz: bool = True) -> None:
    """An IDX file of unsigned bytes: magic (2051 images, 2049 labels), dims, data."""
    magic = magic or (2051 if array.ndim == 3 else 2049)
    head = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    body = head + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(body)
    else:
        path.write_bytes(body)


def _fashion(root: Path, n_train: int = 3, n_test: int = 1, gz: bool = True) -> Path:
    """10 classes; every pixel of an image of class c is 20 * c + its index in the class."""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.repeat(np.arange(10), n)
        images = (20 * labels + np.tile(np.arange(n), 10))[:, None, None] * np.ones((28, 28))
        _idx(root / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        _idx(root / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
    return root


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("NETADAPT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_fashion_mnist_idx_files(tmp_path: Path, cache: Path) -> None:
    root = _fashion(tmp_path / "fashion-mnist")
    d = data.load(str(root), 32)
    assert d.classes == data.FASHION_CLASSES and d.name == "fashion-mnist"
    assert len(d.train) == 30 and len(d.test) == 10 and d.flip
    # gunzipped once into the cache, memory-mapped, opened only when an image is drawn
    assert sorted(p.name.rsplit("-", 1)[0] for p in (cache / "idx").iterdir()) == [
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte"]
    assert isinstance(d.train, data.IdxImages) and d.train.path.parent == cache / "idx"
    assert not any(isinstance(v, torch.Tensor) for v in vars(d.train).values())
    img, label = d.train[4]
    assert label == 1 and img.shape == (3, 32, 32)  # gray -> 3 channels at 32 px
    torch.testing.assert_close(img, torch.full((3, 32, 32), 21 / 255))
    # normalised with the training set's statistics (here: every training image)
    x, y = d.tensors("train")
    torch.testing.assert_close(x.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    assert y.tolist() == np.repeat(np.arange(10), 3).tolist()
    # pickled (for a worker) without its pixels; the copy maps the file itself
    copy = pickle.loads(pickle.dumps(d.train))
    assert copy._map is None and torch.equal(copy.image(4), img)
    # a subset per class; the test set stays whole
    small = data.load(str(root), 32, max_per_class=2)
    assert len(small.train) == 20 and len(small.test) == 10
    # raw (not gzip'd) IDX files are read in place
    raw = data.load(str(_fashion(tmp_path / "raw", gz=False)), 16)
    assert raw.train.path == tmp_path / "raw" / "train-images-idx3-ubyte"
    assert raw.classes == [str(i) for i in range(10)]  # not named Fashion-MNIST


def test_fashion_mnist_by_name(tmp_path: Path, cache: Path, monkeypatch) -> None:
    monkeypatch.setattr(data.idx, "FASHION_MNIST_DIR", _fashion(tmp_path / "share"))
    d = data.load("fashion-mnist", 32)
    assert d.name == "fashion-mnist" and d.spec()["source"] == "fashion-mnist"
    monkeypatch.setattr(data.idx, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(AdaptError, match=r"Fashion-MNIST is not installed .*install it with: "
                                         r"sudo apt install dataset-fashion-mnist, or make "
                                         r"fashion-mnist"):
        data.load("fashion-mnist", 32)


def _first_batch(spec: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(data.train_loader(data.reopen(spec), None, 8, 1, seed=3)))


def test_digits_keep_the_first_training_images_of_each_class() -> None:
    """``max_per_class`` caps the training split of the digits as of any source, in the
    full split's order; the test split stays whole."""
    full, small = data.load("digits", 16), data.load("digits", 16, max_per_class=30)
    assert np.bincount(small.train.labels).tolist() == [30] * 10
    assert len(small.test) == len(full.test) and small.spec()["max_per_class"] == 30
    first = np.flatnonzero(full.train.labels == 3)[:30]
    assert np.array_equal(small.train.labels[small.train.labels == 3], full.train.labels[first])


def test_a_worker_reopens_the_same_data(tmp_path: Path, cache: Path) -> None:
    """Executor workers get the dataset's description (not its images) and draw the same
    batches from it in another process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    d = data.load(str(_fashion(tmp_path / "fashion")), 32)
    spec = d.spec()
    assert set(spec) == {"source", "resolution", "max_per_class", "mean", "std"}
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        x, y = pool.submit(_first_batch, spec).result()
    want_x, want_y = _first_batch(spec)
    assert torch.equal(x, want_x) and torch.equal(y, want_y)


@pytest.mark.skipif(not (data.idx.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_the_installed_fashion_mnist(cache: Path) -> None:
    d = data.load("fashion-mnist", 32, max_per_class=100)
    assert d.describe() == "fashion-mnist: 10 classes, 1000 train / 10000 test images at 32 px"
    x, y = next(iter(data.train_loader(d, None, 8, 1, seed=0)))
    assert x.shape == (8, 3, 32, 32) and y.max() < 10


def _corrupt_header(root: Path) -> None:
    _idx(root / "train-images-idx3-ubyte", np.zeros((30, 28, 28)), magic=2049)


def _truncated(root: Path) -> None:
    p = root / "train-images-idx3-ubyte.gz"
    body = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(body[:-100]))


@pytest.mark.parametrize("break_it,message", [
    (lambda r: (r / "t10k-labels-idx1-ubyte.gz").unlink(),
     r"Fashion-MNIST file\(s\) missing: t10k-labels-idx1-ubyte.gz"),
    (_corrupt_header, r"ubyte-\w+: not an IDX file of images \(magic 2049, expected 2051\)"),
    (_truncated, "IDX header says 30x28x28 bytes of data, the file holds 23420 \\(truncated"),
    (lambda r: (r / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip"),
     "train-labels-idx1-ubyte.gz: cannot decompress"),
    (lambda r: _idx(r / "train-labels-idx1-ubyte", np.zeros(30)), "all of one class"),
    (lambda r: _idx(r / "t10k-labels-idx1-ubyte", np.zeros(3)), "test has 10 images but 3 labels"),
])
def test_bad_idx_files_are_refused_clearly(tmp_path: Path, cache: Path, break_it,
                                           message: str) -> None:
    root = _fashion(tmp_path / "fm")
    break_it(root)
    with pytest.raises(AdaptError, match=message):
        data.load(str(root), 32)
    assert not list((cache / "idx").glob("*.tmp"))  # no half-written cache file


# -- streaming and loaders --------------------------------------------------------------------


def _pets(root: Path, n: int = 12) -> Path:
    for c, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        for i in range(n):
            _png(root / c / f"{i:02d}.png", color)
    return root


def test_image_folder_is_decoded_on_the_fly(tmp_path: Path) -> None:
    d = data.load(str(_pets(tmp_path / "pets")), 16)
    # the dataset holds paths (as bytes), not pixels
    assert isinstance(d.train, data.FileImages) and d.train.files.dtype.kind == "S"
    assert not any(isinstance(v, torch.Tensor) for v in vars(d.train).values())
    path = d.train.path(0)
    assert path.parent.name in ("cat", "dog") and path.is_file()
    before = d.train.image(0)
    _png(path, (0, 255, 0))  # change the file: the next read sees it
    after = d.train.image(0)
    assert before[1].max() == 0 and (after[1] == 1).all()


def test_an_unreadable_image_is_one_message_when_drawn(tmp_path: Path) -> None:
    import multiprocessing

    root = _pets(tmp_path / "pets")
    d = data.load(str(root), 16)
    d.test.path(2).write_bytes(b"garbage")  # broken after the dataset was opened
    before = set(multiprocessing.active_children())
    for workers in (0, 1):
        with pytest.raises(AdaptError) as e:
            list(data.eval_loader(d, "test", workers=workers))
        assert str(e.value) == (f"{d.test.path(2)}: not a readable image (cannot identify "
                                f"image file '{d.test.path(2)}')")
        # the worker stops with the error (left to the garbage collector, while the error
        # is held, its shutdown waited 5 s and then killed it)
        assert set(multiprocessing.active_children()) <= before


def _batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_training_batches_repeat_given_the_seed(tmp_path: Path) -> None:
    d = data.load(str(_pets(tmp_path / "pets")), 16)
    rest = d.holdout_split(2)[1]
    a = _batches(data.train_loader(d, rest, 8, 5, seed=1))
    assert len(a) == 5 and all(x.shape == (8, 3, 16, 16) for x, _ in a)
    for again in (_batches(data.train_loader(d, rest, 8, 5, seed=1)),
                  _batches(data.train_loader(d, rest, 8, 5, seed=1, workers=2))):
        for (x, y), (x2, y2) in zip(a, again):
            assert torch.equal(x, x2) and torch.equal(y, y2)
    other = _batches(data.train_loader(d, rest, 8, 5, seed=2))
    assert any(not torch.equal(x, x2) for (x, _), (x2, _) in zip(a, other))
    # only the given indices are drawn (the holdout stays unseen)
    sampler = data.train_loader(d, rest, 8, 5, seed=1).batch_sampler
    drawn = {i for batch in sampler for i, *_ in batch}
    assert drawn <= set(rest.tolist()) and len(drawn) > 8


def test_augmentation_crops_and_flips_where_it_fits(tmp_path: Path) -> None:
    d = data.load("digits", 32)
    keys = [k for b in data.train_loader(d, None, 64, 10, seed=0).batch_sampler for k in b]
    assert not any(flip for *_, flip in keys)  # digits: a flipped 2 is no 2
    assert {top for _, top, _, _ in keys} == set(range(9))  # crop offsets 0..2*pad, pad 4
    pets = data.load(str(_pets(tmp_path / "pets")), 16)
    keys = [k for b in data.train_loader(pets, None, 8, 10, seed=0).batch_sampler for k in b]
    assert 0.3 < np.mean([flip for *_, flip in keys]) < 0.7
    # evaluation: the images as they are, in order
    x, y = next(iter(data.eval_loader(d, "test", batch_size=450)))
    want, want_y = d.tensors("test")
    assert torch.equal(x, want) and torch.equal(y, want_y)
    # a training batch without augmentation is the plain image
    (xb, _), = data.train_loader(d, [5], 1, 1, seed=0, augment=False)
    assert torch.equal(xb[0], d.tensors("train", [5])[0][0])
