"""The user's arrays in one .npz file (numpy.savez).

`x` holds (N, C, H, W) square images or (N, C, L) / (N, L) sequences, `y` the N labels of any
values (numbers or text; class names are the values, in sorted order). Optional `x_test` and
`y_test` are the test split; otherwise 20% is held out by the fixed split permutation. uint8
inputs are divided by 255 (input scale 255); other numbers are used as they are. The file is read
with allow_pickle=False: it cannot run code.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nas.config import DataConfig
from nas.data import DATASETS, ImageData, channel_stats, encode_labels, from_arrays, normalised
from nas.errors import NasError, shorten
from nas.options import Options

_TEST_FRACTION = 0.2
# The first bytes of a .npz file (a zip archive) and of a single .npy array.
_ZIP_MAGIC = b"PK"
_NPY_MAGIC = b"\x93NUMPY"


@dataclass
class NpzOptions(Options):
    """The user's .npz file."""

    # The file (--data-file) with arrays x and y, and optionally x_test and y_test.
    data_file: str | None = None


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz file at `path`. Raises NasError."""
    if path.is_dir():
        raise NasError(f"data file {str(path)!r} is a directory; give the .npz file itself")
    if not path.is_file():
        raise NasError(f"data file {str(path)!r} does not exist")
    try:
        with path.open("rb") as file:
            magic = file.read(len(_NPY_MAGIC))
        if magic == _NPY_MAGIC:
            raise NasError(
                f"{path}: a single array (.npy); save x and y with numpy.savez(FILE, x=..., y=...)"
            )
        if not magic.startswith(_ZIP_MAGIC):
            raise NasError(f"{path}: not a .npz file; save the arrays with numpy.savez")
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise NasError(
                f"{path}: holds Python objects (an object array), which are not read; store "
                "numbers, or labels as fixed-width text (numpy.array(labels, dtype=str))"
            ) from None
        raise NasError(f"{path}: not a .npz file ({err}); save it with numpy.savez") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise NasError(
            f"{path}: not a readable .npz file ({err}); save it with numpy.savez"
        ) from None


def _inputs(path: Path, arrays: dict[str, np.ndarray], name: str) -> tuple[torch.Tensor, str]:
    """The array `name` as float (N, C, H, W) images or (N, C, L) sequences, and its kind."""
    x = arrays[name]
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise NasError(f"{path}: {name} holds {x.dtype} values; it must hold numbers")
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim not in (3, 4) or 0 in x.shape:
        raise NasError(
            f"{path}: {name} has shape {x.shape}; expected (N, C, H, W) images, or (N, C, L) or "
            "(N, L) sequences"
        )
    if x.ndim == 4 and x.shape[2] != x.shape[3]:
        raise NasError(
            f"{path}: {name} holds {x.shape[2]}x{x.shape[3]} images, but the networks take "
            "square images; resize or crop them to SxS"
        )
    values = torch.from_numpy(x.astype(np.float32)) / (255.0 if x.dtype == np.uint8 else 1.0)
    if not torch.isfinite(values).all():
        raise NasError(f"{path}: {name} holds NaN or infinite values; fill or drop those samples")
    return values, "image" if x.ndim == 4 else "sequence"


def _labels(path: Path, arrays: dict[str, np.ndarray], name: str, count: int) -> list[object]:
    """The array `name` as a list of N label values."""
    y = arrays[name]
    if y.ndim != 1:
        raise NasError(f"{path}: {name} has shape {y.shape}; expected one label per sample (N,)")
    if len(y) != count:
        raise NasError(f"{path}: {name} holds {len(y)} labels for {count} inputs; they must match")
    return y.tolist()


@DATASETS.register("npz", options=NpzOptions)
def npz(config: DataConfig) -> ImageData:
    """The user's arrays (see the module docstring)."""
    if config.options.data_file is None:
        raise NasError(
            "--dataset npz needs --data-file FILE.npz holding arrays x and y (see docs/data.md)"
        )
    path = Path(config.options.data_file)
    arrays = read_arrays(path)
    missing = [name for name in ("x", "y") if name not in arrays]
    has_test = [name in arrays for name in ("x_test", "y_test")]
    if missing or any(has_test) != all(has_test):
        wanted = [*missing, *(name for name in ("x_test", "y_test") if any(has_test))]
        raise NasError(
            f"{path}: no array {' or '.join(n for n in wanted if n not in arrays)}; it holds "
            f"{shorten(sorted(arrays), 200)}, and needs x and y (and x_test with y_test)"
        )
    images, kind = _inputs(path, arrays, "x")
    values = _labels(path, arrays, "y", len(images))
    labels, class_names = encode_labels(values)
    if len(class_names) < 2:
        raise NasError(f"{path}: y holds {len(class_names)} class; a classifier needs 2 or more")
    info = {
        "kind": kind,
        "class_names": class_names,
        "input_scale": 255.0 if arrays["x"].dtype == np.uint8 else 1.0,
        "flips": kind == "image",
    }
    if not all(has_test):
        try:
            return from_arrays(images, labels, _TEST_FRACTION, len(class_names), **info)
        except NasError as err:
            raise NasError(f"{path}: {err}") from None
    test_images, _ = _inputs(path, arrays, "x_test")
    if test_images.shape[1:] != images.shape[1:]:
        raise NasError(
            f"{path}: x_test samples are {tuple(test_images.shape[1:])}, x samples "
            f"{tuple(images.shape[1:])}; they must match"
        )
    index = {name: position for position, name in enumerate(class_names)}
    test_values = _labels(path, arrays, "y_test", len(test_images))
    unseen = [value for value in test_values if str(value) not in index]
    if unseen:
        raise NasError(
            f"{path}: y_test holds label {shorten(unseen[0])}, which y does not; the test split "
            "may only hold classes it was trained on"
        )
    test_labels = torch.tensor([index[str(value)] for value in test_values], dtype=torch.long)
    mean, std = channel_stats(images)
    return ImageData(
        train=TensorDataset(normalised(images, mean, std), labels),
        test=TensorDataset(normalised(test_images, mean, std), test_labels),
        in_channels=images.shape[1],
        num_classes=len(class_names),
        image_size=images.shape[-1],
        mean=mean,
        std=std,
        **info,
    )
