"""adapter.data: the bundled digits, user folders, CIFAR-10 batches, and clear refusals."""

from __future__ import annotations

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
    assert d.train_x.shape == (1347, 3, 32, 32) and d.test_x.shape == (450, 3, 32, 32)
    assert d.train_x.dtype == torch.float32
    mean = d.train_x.mean((0, 2, 3))
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
    assert d.train_x.shape[1:] == (3, 16, 16)
    # red images are class 0: their red channel is above the mean
    assert (d.train_x[d.train_y == 0, 0] > 0).all()


def test_imagenet_style_folder(tmp_path: Path) -> None:
    for split, n in (("train", 12), ("val", 3)):
        for c in ("a", "b", "c"):
            for i in range(n):
                _png(tmp_path / "inet" / split / c / f"{i}.jpg", (i * 20, 0, 0), (40, 30))
    d = data.load(str(tmp_path / "inet"), 24, max_per_class=11)
    assert d.classes == ["a", "b", "c"]
    assert len(d.train_y) == 33 and len(d.test_y) == 9
    assert d.test_x.shape[1:] == (3, 24, 24)


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
    assert d.train_x.shape == (100, 3, 32, 32) and len(d.test_y) == 20


@pytest.mark.parametrize("setup,message", [
    (lambda p: p.mkdir(), "expected one subfolder per class"),
    (lambda p: [(p / c).mkdir(parents=True) for c in ("a", "b")], "/a: no images"),
    (lambda p: [_png(p / "a" / "1.png", (0, 0, 0)), _png(p / "b" / "1.png", (0, 0, 0)),
                (p / "b" / "2.png").write_bytes(b"garbage")], "2.png: not a readable image"),
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
    with pytest.raises(AdaptError, match="not 'digits' and not a folder"):
        data.load("/nonexistent/imagenet", 32)
