"""MNIST-1D (Greydanus 2020, "Scaling Down Deep Learning"): 1D signals of length 40, 10 digit
classes, 4,000 for training and 1,000 for testing.

The signals are generated offline by the `mnist1d` package (the `mnist1d` extra) with its
default arguments (`get_dataset_args()`, seed 42) through `make_dataset`, never downloaded. The
package's own train/test split is kept; a command's validation split comes from the training part.
Generation takes seconds, so the arrays are written once to a cache file, named by the generation
arguments and the package version, in `$NASFORGE_CACHE_DIR`, else `$XDG_CACHE_HOME/nasforge`, else
`~/.cache/nasforge`.

`mnist1d_shuffle` is the paper's spatially shuffled variant: the 40 positions of every signal,
train and test alike, in one fixed random order (numpy's default_rng(SHUFFLE_SEED)). It removes
the spatial structure that convolutions rely on (the paper's CNN falls from 94% to 56%).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nas.config import DataConfig
from nas.data import DATASETS, ImageData, channel_stats, normalised
from nas.io import atomic_write

# Environment variable naming the folder of nasforge's cached data.
CACHE_ENV = "NASFORGE_CACHE_DIR"
# Seed of the fixed order of the 40 positions in mnist1d_shuffle.
SHUFFLE_SEED = 0
# The arrays a cache file holds: train and test signals (N, L) and labels (N,).
_ARRAYS = ("x", "y", "x_test", "y_test")


def cache_dir() -> Path:
    """The folder of nasforge's cached data: $NASFORGE_CACHE_DIR, else $XDG_CACHE_HOME/nasforge,
    else ~/.cache/nasforge."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nasforge"


def _package() -> Any:
    """The `mnist1d.data` module. Raises NasError when the package is missing."""
    from nas.optional import optional_import

    optional_import("mnist1d", "generating MNIST-1D")
    import mnist1d.data

    return mnist1d.data


def _version(package: Any) -> str:
    """The installed version of the mnist1d package."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mnist1d")
    except PackageNotFoundError:  # imported from a source tree
        return str(getattr(package, "__version__", "unknown"))


def generation_args(package: Any) -> dict[str, Any]:
    """The package's default generation arguments, without its download address."""
    args = package.get_dataset_args(as_dict=True)
    args.pop("url", None)
    return args


def cache_path(args: dict[str, Any], version: str) -> Path:
    """The cache file of the signals generated with `args` by mnist1d `version`."""
    key = json.dumps({"args": args, "version": version}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / f"mnist1d-{version}-{digest}.npz"


def generate(package: Any, args: dict[str, Any]) -> dict[str, np.ndarray]:
    """The train and test signals and labels that `make_dataset` generates from `args`.

    make_dataset seeds Python's and numpy's global generators; their states are put back, so a
    run's own seeding is not disturbed.
    """
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        made = package.make_dataset(package.ObjectView(dict(args)))
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return {name: np.asarray(made[name]) for name in _ARRAYS}


def _read_cache(path: Path, length: int) -> dict[str, np.ndarray] | None:
    """The arrays of the cache file at `path`; None when it is missing, torn or not what
    generation writes (it is then generated again)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in _ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    for inputs, labels in (arrays["x"], arrays["y"]), (arrays["x_test"], arrays["y_test"]):
        if inputs.ndim != 2 or inputs.shape[1] != length or labels.shape != inputs.shape[:1]:
            return None
        if labels.dtype.kind not in "iu":
            return None
    return arrays


def load_arrays() -> dict[str, np.ndarray]:
    """MNIST-1D's arrays x (4000, 40), y, x_test (1000, 40) and y_test: read from the cache, or
    generated and cached (written atomically, so concurrent processes never read a torn file).
    Raises NasError when the mnist1d package is missing."""
    package = _package()
    args = generation_args(package)
    path = cache_path(args, _version(package))
    arrays = _read_cache(path, args["final_seq_length"])
    if arrays is None:
        arrays = generate(package, args)
        try:
            atomic_write(path, lambda file: np.savez(file, **arrays))
        except OSError as err:  # a read-only home: the data is still right, only not cached
            warnings.warn(
                f"MNIST-1D is not cached ({path.parent}: {err.strerror}); set {CACHE_ENV} to a "
                "writable folder",
                stacklevel=2,
            )
    return arrays


def shuffle_order(length: int) -> np.ndarray:
    """The fixed order of the `length` positions in mnist1d_shuffle."""
    return np.random.default_rng(SHUFFLE_SEED).permutation(length)


def _image_data(arrays: dict[str, np.ndarray]) -> ImageData:
    """Sequences (N, 1, L) normalised with the training part's statistics."""
    train = torch.from_numpy(arrays["x"].astype(np.float32)).unsqueeze(1)
    test = torch.from_numpy(arrays["x_test"].astype(np.float32)).unsqueeze(1)
    mean, std = channel_stats(train)
    return ImageData(
        train=TensorDataset(normalised(train, mean, std), torch.from_numpy(arrays["y"]).long()),
        test=TensorDataset(normalised(test, mean, std), torch.from_numpy(arrays["y_test"]).long()),
        in_channels=1,
        num_classes=10,
        image_size=train.shape[-1],
        mean=mean,
        std=std,
        kind="sequence",
        # A time-reversed digit is another digit.
        flips=False,
    )


@DATASETS.register("mnist1d")
def mnist1d(config: DataConfig) -> ImageData:
    """MNIST-1D with the package's own 4,000/1,000 train/test split (see the module docstring)."""
    return _image_data(load_arrays())


@DATASETS.register("mnist1d_shuffle")
def mnist1d_shuffle(config: DataConfig) -> ImageData:
    """MNIST-1D with the positions of every signal in one fixed shuffled order."""
    arrays = load_arrays()
    order = shuffle_order(arrays["x"].shape[1])
    return _image_data({**arrays, "x": arrays["x"][:, order], "x_test": arrays["x_test"][:, order]})
