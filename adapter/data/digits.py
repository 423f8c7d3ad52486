"""The fast-test default: scikit-learn's bundled handwritten digits (no download)."""

from __future__ import annotations

import numpy as np

from adapter.data.dataset import SPLIT_SEED, TEST_FRACTION, Dataset, finish, first_per_class
from adapter.data.images import ArrayImages


def digits(resolution: int, max_per_class: int | None = None) -> Dataset:
    """1,797 real 8x8 scans of 10 digits, upscaled to ``resolution``; no flips (a mirrored
    digit is not the same digit). ``max_per_class`` keeps the first so many training images
    of each class (the test split stays whole), as for the other sources."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()  # bundled with scikit-learn: no download
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION,
                              random_state=SPLIT_SEED, stratify=y)
    tr = tr[first_per_class(y[tr], max_per_class, 10)]
    return finish("digits", [str(i) for i in range(10)],
                  ArrayImages(x[tr], y[tr], resolution), ArrayImages(x[te], y[te], resolution),
                  flip=False, source="digits")
