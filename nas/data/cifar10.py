"""CIFAR-10 from a local folder: the python-pickle batches, unpickled without running code and
checked on load.

A batch is a dict with `data` (N x 3072 uint8: 3 channels of 32x32, row-major) and `labels`
(N integers in 0..9), as in cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nas.config import DataConfig
from nas.data import DATASETS, ImageData, normalised
from nas.errors import NasError, shorten
from nas.options import Options

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
_IMAGE_BYTES = 3 * 32 * 32
_CLASSES = 10
_ARCHIVE = "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"

Images = tuple[torch.Tensor, torch.Tensor]


def read_cifar10(data_dir: str | None) -> tuple[Images, Images]:
    """((train images, labels), (test images, labels)); images are floats in [0, 1].

    Raises NasError for a missing folder or file and for a batch that is not CIFAR-10.
    """
    if data_dir is None:
        raise NasError(
            "cifar10 needs --data-dir DIR holding the python version of CIFAR-10 "
            f"({_ARCHIVE}, extracted)"
        )
    root = Path(data_dir)
    folder = _find_folder(root)
    if folder is None:
        folder = _torchvision_download(root)
    train = [_read_batch(folder / name) for name in TRAIN_FILES]
    test = _read_batch(folder / TEST_FILE)
    return (torch.cat([t[0] for t in train]), torch.cat([t[1] for t in train])), test


def _find_folder(root: Path) -> Path | None:
    """The folder holding the batches: `root` or its cifar-10-batches-py/. A folder with some
    of them is chosen too, so a missing one is reported instead of downloaded again.
    """
    for folder in (root, root / "cifar-10-batches-py"):
        if any((folder / name).exists() for name in (*TRAIN_FILES, TEST_FILE)):
            return folder
    return None


def _torchvision_download(root: Path) -> Path:
    message = (
        f"no CIFAR-10 batches in {str(root)!r}: expected data_batch_1..5 and test_batch there or "
        f"in its cifar-10-batches-py/ folder (extract {_ARCHIVE} into it)"
    )
    from nas.optional import optional_import

    try:
        torchvision = optional_import("torchvision", "downloading CIFAR-10")
    except NasError as err:
        raise NasError(f"{message}; {err}") from None
    try:  # torchvision downloads and verifies the same python-pickle archive
        torchvision.datasets.CIFAR10(str(root), download=True)
    except Exception as err:
        raise NasError(f"{message}; the torchvision download failed too ({err})") from None
    folder = _find_folder(root)
    if folder is None:
        raise NasError(message)
    return folder


class _ArrayUnpickler(pickle.Unpickler):
    """Loads only plain containers and numpy arrays: a CIFAR batch file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> type:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}"[:120])


def _read_batch(path: Path) -> Images:
    """One batch file as (images (N, 3, 32, 32) in [0, 1], labels (N,)). Raises NasError."""
    if not path.is_file():
        raise NasError(f"CIFAR-10 file {str(path)!r} is missing; re-extract {_ARCHIVE}")
    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise NasError(
            f"{path}: not a CIFAR-10 python batch, or truncated ({str(err)[:120]}); "
            f"re-extract {_ARCHIVE}"
        ) from None
    except (MemoryError, RecursionError):
        raise NasError(f"{path}: not a CIFAR-10 python batch; re-extract {_ARCHIVE}") from None
    data, labels = _fields(path, batch)
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0), labels


def _fields(path: Path, batch: object) -> tuple[np.ndarray, torch.Tensor]:
    """The checked `data` array and `labels` tensor of an unpickled batch."""
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise NasError(f"{path}: not a CIFAR-10 python batch (expected a dict with data, labels)")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise NasError(f"{path}: data must be a 2-D uint8 array (one row of bytes per image)")
    if data.shape[1] != _IMAGE_BYTES:
        raise NasError(
            f"{path}: images of {data.shape[1]} bytes, but a CIFAR-10 image is 3x32x32 = "
            f"{_IMAGE_BYTES}; re-extract {_ARCHIVE}"
        )
    labels = batch[b"labels"]
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(map(_is_integer, labels)):
        raise NasError(f"{path}: labels must be a list of integers")
    if len(labels) != len(data):
        raise NasError(f"{path}: {len(labels)} labels for {len(data)} images; they must match")
    bad = [label for label in labels if not 0 <= label < _CLASSES]
    if bad:
        raise NasError(f"{path}: label {shorten(bad[0])} is out of range; CIFAR-10 labels are 0..9")
    return data, torch.tensor(labels, dtype=torch.long)


def _is_integer(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass
class Cifar10Options(Options):
    """Where CIFAR-10 is."""

    # The folder holding the python-pickle batches (--data-dir); it must be given.
    data_dir: str | None = None


@DATASETS.register("cifar10", options=Cifar10Options)
def cifar10(config: DataConfig) -> ImageData:
    """CIFAR-10 from `data_dir`: the python-pickle batches (data_batch_1..5, test_batch)."""
    (train_images, train_labels), (test_images, test_labels) = read_cifar10(config.options.data_dir)
    return ImageData(
        train=TensorDataset(normalised(train_images, MEAN, STD), train_labels),
        test=TensorDataset(normalised(test_images, MEAN, STD), test_labels),
        in_channels=3,
        num_classes=10,
        image_size=32,
        mean=MEAN,
        std=STD,
        class_names=CLASS_NAMES,
        input_scale=255.0,
    )
