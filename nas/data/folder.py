"""The user's folder of images by class: DIR/<class name>/*.png|jpg|jpeg, read with Pillow.

An optional DIR/test/ with the same layout is the test split; otherwise 20% of the images are held
out by the fixed split permutation. The images may have any size: `image_size` S resizes each one
(shorter side S) and crops its centre to S x S; without it they must all be square and of one size.
If any image is in colour, every image is read as RGB (3 channels), otherwise as grey (1 channel).
Pixels are 8-bit (input scale 255), normalised with the channel statistics of a fixed sample of
the training images.

A set whose decoded tensors would take more than `memory_limit_mb` is streamed: each image is
decoded when a loader reads it (`data.workers` processes), and only the statistics sample is
decoded while the dataset is built. Smaller sets are decoded once into memory (the fast path).
Both give the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from nas.config import DataConfig
from nas.data import DATASETS, ImageData, channel_stats, split
from nas.errors import NasError
from nas.options import Options

EXTENSIONS = (".png", ".jpg", ".jpeg")
TEST_FOLDER = "test"
_TEST_FRACTION = 0.2
# Training images decoded for the normalisation statistics (the first of a fixed permutation).
STATS_SAMPLE = 256
# Pillow modes read as grey; any other (RGB, RGBA, P, CMYK, ...) makes the dataset RGB.
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass
class FolderOptions(Options):
    """Where the images are, their size, and when they are streamed."""

    # The folder (--data-dir) with one sub-folder of PNG/JPEG images per class.
    data_dir: str | None = None
    # Side S of the square inputs (--image-size): each image is resized (shorter side S) and
    # centre-cropped. None: the images' own size (they must all be square and of one size).
    image_size: int | None = None
    # Decoded size in MB (float32) above which images are streamed from disk instead of held in
    # memory; 0 always streams.
    memory_limit_mb: int = 1024

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (
                self.image_size is None or self.image_size >= 1,
                "data.image_size must be at least 1",
            ),
            (self.memory_limit_mb >= 0, "data.memory_limit_mb must be 0 (always stream) or more"),
        ]


@dataclass(frozen=True)
class _Layout:
    """The image files of the training and test splits and their labels."""

    classes: tuple[str, ...]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]] | None


class UnreadableImage(NasError):
    """An image that cannot be decoded. Raised in a loader worker, it reaches the main process
    re-raised by DataLoader with the worker's traceback in its message: only its own line is kept.
    """

    def __init__(self, message: str) -> None:
        marker = f"{type(self).__module__}.{type(self).__qualname__}: "
        super().__init__(message.rpartition(marker)[2])


class FolderImages(Dataset):
    """Images decoded from disk when read: (normalised (C, S, S) float tensor, label).

    Picklable (paths and tensors only), so loader worker processes can read it.
    """

    def __init__(
        self,
        paths: list[Path],
        labels: torch.Tensor,
        mode: str,
        size: int | None,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.paths = paths
        self.labels = labels
        self.mode = mode
        self.size = size
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = decode(self.paths[index], self.mode, self.size)
        return (image - self.mean) / self.std, self.labels[index]


def _pillow() -> Any:
    """Pillow's Image module."""
    from nas.optional import optional_import

    optional_import("PIL", "reading a folder of images")
    from PIL import Image  # a submodule: `import PIL` alone does not load it

    return Image


def decode(path: Path, mode: str, size: int | None) -> torch.Tensor:
    """The image at `path` as a (C, H, W) float tensor in [0, 1], in Pillow `mode` ("L" or
    "RGB"), resized and centre-cropped to `size` x `size` if `size`. Raises NasError."""
    image_module = _pillow()
    from PIL import ImageOps

    try:
        with image_module.open(path) as image:
            image = image.convert(mode)
            if size is not None:
                image = ImageOps.fit(image, (size, size), image_module.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as err:  # Pillow's errors for broken files
        raise UnreadableImage(
            f"{path}: not a readable image ({err}); replace or remove the file"
        ) from None
    pixels = torch.from_numpy(array.copy()).float() / 255.0
    return pixels[None] if pixels.dim() == 2 else pixels.permute(2, 0, 1)


def _header(path: Path) -> tuple[tuple[int, int], str]:
    """(width, height) and Pillow mode of an image, read from its header only."""
    image_module = _pillow()
    try:
        with image_module.open(path) as image:
            return image.size, image.mode
    except (OSError, ValueError, SyntaxError) as err:
        raise UnreadableImage(
            f"{path}: not a readable image ({err}); replace or remove the file"
        ) from None


def _class_files(root: Path, known: tuple[str, ...] | None) -> dict[str, list[Path]]:
    """{class name: its image files} of the sub-folders of `root` (without `test/` at the top).
    With `known` classes (a test split), a folder of another class is an error."""
    folders = sorted(
        entry
        for entry in root.iterdir()
        if entry.is_dir() and not entry.name.startswith(".") and entry.name != TEST_FOLDER
    )
    files = {}
    for folder in folders:
        if known is not None and folder.name not in known:
            raise NasError(
                f"{folder}: class {folder.name!r} is not among the training classes "
                f"({', '.join(known)}); the test split may only hold classes it was trained on"
            )
        images = sorted(
            path
            for path in folder.iterdir()
            if path.suffix.lower() in EXTENSIONS and not path.name.startswith(".")
        )
        if not images:
            raise NasError(
                f"{folder}: no PNG or JPEG images in this class folder; add some or remove it"
            )
        files[folder.name] = images
    return files


def scan(root: Path) -> _Layout:
    """The classes and image files under `root`. Raises NasError for a layout that is not one
    sub-folder of images per class."""
    if not root.is_dir():
        raise NasError(
            f"data folder {str(root)!r} does not exist; --data-dir must name a folder holding one "
            "sub-folder of images per class"
        )
    train = _class_files(root, None)
    if len(train) < 2:
        raise NasError(
            f"{root}: {len(train)} class folder(s); a classifier needs at least 2 sub-folders of "
            "images, one per class"
        )
    classes = tuple(train)
    labelled = [(path, label) for label, name in enumerate(classes) for path in train[name]]
    test = None
    if (root / TEST_FOLDER).is_dir():
        test_files = _class_files(root / TEST_FOLDER, classes)
        test = [(path, classes.index(name)) for name, paths in test_files.items() for path in paths]
        if not test:
            raise NasError(f"{root / TEST_FOLDER}: no class folders; remove it or add the classes")
    return _Layout(classes, labelled, test)


def _common_size(files: list[Path], sizes: list[tuple[int, int]]) -> int:
    """The side of images that are all square and of one size. Raises NasError naming files."""
    (first, first_size), *others = sorted(zip(files, sizes))
    for path, size in others:
        if size != first_size:
            raise NasError(
                f"{first} is {first_size[0]}x{first_size[1]} but {path} is {size[0]}x{size[1]}; "
                "give --image-size S to resize every image to SxS"
            )
    width, height = first_size
    if width != height:
        raise NasError(
            f"{first}: images are {width}x{height}, but the networks take square images; "
            "give --image-size S to resize and centre-crop them to SxS"
        )
    return width


def _sample_stats(
    paths: list[Path], mode: str, size: int | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Channel statistics of a fixed sample of the training images."""
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(0))
    sample = [paths[i] for i in order[:STATS_SAMPLE].tolist()]
    return channel_stats(torch.stack([decode(path, mode, size) for path in sample]))


@DATASETS.register("folder", options=FolderOptions)
def folder(config: DataConfig) -> ImageData:
    """The user's images by class folder (see the module docstring)."""
    options = config.options
    if options.data_dir is None:
        raise NasError(
            "--dataset folder needs --data-dir DIR holding one sub-folder of PNG/JPEG images per "
            "class (see docs/data.md)"
        )
    root = Path(options.data_dir)
    layout = scan(root)
    train, test = layout.train, layout.test
    if test is None:
        labels = torch.tensor([label for _, label in train])
        try:
            kept, held = split(TensorDataset(torch.arange(len(train)), labels), 1 - _TEST_FRACTION)
        except NasError as err:
            raise NasError(f"{root}: {err}") from None
        train, test = ([train[i] for i in part.tensors[0].tolist()] for part in (kept, held))
    files = [path for path, _ in train + test]
    headers = [_header(path) for path in files]
    colour = any(mode not in _GREY_MODES for _, mode in headers)
    mode, channels = ("RGB", 3) if colour else ("L", 1)
    size = options.image_size or _common_size(files, [size for size, _ in headers])
    mean, std = _sample_stats([path for path, _ in train], mode, options.image_size)
    splits = []
    for part in (train, test):
        paths = [path for path, _ in part]
        labels = torch.tensor([label for _, label in part], dtype=torch.long)
        splits.append(FolderImages(paths, labels, mode, options.image_size, mean, std))
    decoded_mb = len(files) * channels * size * size * 4 / 2**20
    if decoded_mb <= options.memory_limit_mb:
        splits = [_in_memory(part) for part in splits]
    return ImageData(
        train=splits[0],
        test=splits[1],
        in_channels=channels,
        num_classes=len(layout.classes),
        image_size=size,
        mean=mean,
        std=std,
        class_names=layout.classes,
        input_scale=255.0,
    )


def _in_memory(images: FolderImages) -> TensorDataset:
    """Every image decoded once: the in-memory fast path."""
    return TensorDataset(torch.stack([images[i][0] for i in range(len(images))]), images.labels)
