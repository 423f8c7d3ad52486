"""Datasets for adaptation, read from disk and decoded on the fly (nothing is downloaded).

- ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans,
  10 classes), upscaled to the network's resolution: tiny, in memory, for fast tests
  (``digits.py``);
- ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` (IDX files under
  ``/usr/share/datasets/fashion-mnist``), or a folder holding the same IDX files (``idx.py``);
- an image folder, one subfolder per class (a fixed stratified train/test split), or an
  ImageNet-style folder with ``train/`` and ``val/``, each one subfolder per class
  (``folders.py``);
- the CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``; ``cifar.py``).

A ``Dataset`` (``dataset.py``) holds labels and where each image is (file paths, record
numbers in a memory-mapped IDX file, rows of a small array: ``images.py`` and each
format's own kind); ``load`` tells the formats apart and ``reopen`` opens the same data in
another process (``sources.py``). ``train_loader`` and ``eval_loader`` (``loaders.py``)
read, resize and normalise images as batches are drawn, in loader worker processes when
asked. Normalisation uses per-channel statistics of a fixed sample of training images. The
holdout split of the paper (10 images per class taken from the training set) is
``Dataset.holdout_split``.

Determinism: a training loader's batch order *and* each image's augmentation (crop
offset, flip) are drawn in the main process from one generator seeded by the caller,
and travel with the index; workers only apply them (``augment.py``). Batches are
therefore the same for any number of loader workers, in any process, on any executor.
"""

from adapter.data.cifar import cifar10
from adapter.data.dataset import Dataset
from adapter.data.digits import digits
from adapter.data.folders import FileImages, image_folder, imagenet_folder
from adapter.data.idx import FASHION_CLASSES, IdxImages, cache_dir, fashion_mnist, read_idx
from adapter.data.images import ArrayImages, Images
from adapter.data.loaders import eval_loader, train_loader
from adapter.data.sources import load, reopen

__all__ = ["FASHION_CLASSES", "ArrayImages", "Dataset", "FileImages", "IdxImages", "Images",
           "cache_dir", "cifar10", "digits", "eval_loader", "fashion_mnist", "image_folder",
           "imagenet_folder", "load", "read_idx", "reopen", "train_loader"]
