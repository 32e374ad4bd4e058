"""Datasets: what each one is, fixed splits and seeded loaders.

Every dataset is a builder in the DATASETS registry, one module each in this package:
`(DataConfig) -> ImageData`. A builder that reads settings of its own registers their dataclass
(`@DATASETS.register("name", options=...)`, see nas/options.py) and reads them as
`config.options`. Splits are fixed permutations (seed 0), so every run of every command sees the
same train/val/test samples. A split holds either in-memory tensors (a TensorDataset, the fast
path) or any torch Dataset read sample by sample (streamed from disk through loader workers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from nas.config import DataConfig
from nas.errors import NasError
from nas.registry import Registry

_SPLIT_SEED = 0  # fixed: splits never depend on the run's seed

# What a dataset's samples are: "image" (C, H, W), "sequence" (C, L) or "table" (F features,
# stored as (F, 1, 1)).
KINDS = ("image", "sequence", "table")


@dataclass
class ImageData:
    """A labelled dataset with a fixed train/test split, and what it is.

    Samples are normalised float tensors: (x / input_scale - mean) / std per channel, where x is
    the raw input as the user has it (pixel values, sensor readings, table cells).
    """

    train: Dataset
    test: Dataset
    in_channels: int
    num_classes: int
    # The side of the square images (the length of a sequence, 1 for a table).
    image_size: int
    # Per-channel statistics the scaled inputs were normalised with: (x - mean) / std.
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str = "image"
    # The name of each class, by label index.
    class_names: tuple[str, ...] = ()
    # Raw inputs are divided by this before normalisation (digits' pixels are 0..16: 16).
    input_scale: float = 1.0
    # Whether a horizontal flip keeps an image's label (not for digits or text).
    flips: bool = True

    @property
    def dims(self) -> int:
        """Spatial dims of a sample: 1 for a (C, L) sequence, 2 for a (C, H, W) image."""
        return 1 if self.kind == "sequence" else 2

    def __post_init__(self) -> None:
        if not self.class_names:
            self.class_names = tuple(str(label) for label in range(self.num_classes))


DATASETS: Registry[Callable[[DataConfig], ImageData]] = Registry("dataset")


def load_dataset(config: DataConfig) -> ImageData:
    """Build the dataset named by `config.name` (with its default options if `config.options` is
    None). Raises NasError for unknown or missing data."""
    builder = DATASETS.get(config.name)
    if config.options is None:
        config = replace(config, options=DATASETS.options(config.name)())
    return builder(config)


def labels_of(dataset: Dataset) -> torch.Tensor:
    """All labels of `dataset` without reading its inputs where it can: a TensorDataset, a Subset
    of one, or a dataset with a `labels` tensor attribute (the streamed datasets have one)."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, torch.Tensor):
        return labels
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def split(dataset: Dataset, first_fraction: float) -> tuple[Dataset, Dataset]:
    """Split into two parts by a fixed permutation; the first holds `first_fraction` of it.
    In-memory tensors stay TensorDatasets; any other dataset is split into two Subsets."""
    size = len(dataset)
    order = torch.randperm(size, generator=torch.Generator().manual_seed(_SPLIT_SEED))
    cut = int(round(first_fraction * size))
    if cut < 2 or size - cut < 2:
        raise NasError(
            f"a split of {size} samples at {first_fraction} leaves a part too small "
            "(under 2 samples); use more samples or a fraction nearer 0.5"
        )
    first, second = order[:cut], order[cut:]
    if isinstance(dataset, TensorDataset):
        images, labels = dataset.tensors
        return TensorDataset(images[first], labels[first]), TensorDataset(
            images[second], labels[second]
        )
    return Subset(dataset, first.tolist()), Subset(dataset, second.tolist())


def encode_labels(values: Sequence[object]) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Labels of any values (ints, strings, floats) as indices 0..K-1 in sorted order of the
    values, and the K class names (the values as text)."""
    unique = sorted(set(values), key=lambda value: (isinstance(value, str), value))
    index = {value: position for position, value in enumerate(unique)}
    encoded = torch.tensor([index[value] for value in values], dtype=torch.long)
    return encoded, tuple(str(value) for value in unique)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of (N, C, ...) inputs."""
    dims = (0, *range(2, images.dim()))
    mean = images.mean(dim=dims)
    std = images.std(dim=dims).clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def normalised(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """(images - mean) / std per channel of a batch of (N, C, ...) inputs."""
    if images.dim() < 2 or images.shape[1] != len(mean):
        raise ValueError(f"expected a batch (N, {len(mean)}, ...), got {tuple(images.shape)}")
    shape = (1, len(mean)) + (1,) * (images.dim() - 2)
    return (images - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def from_arrays(
    images: torch.Tensor,
    labels: torch.Tensor,
    test_fraction: float,
    classes: int,
    **info: object,
) -> ImageData:
    """In-memory data from (N, C, H, W) inputs: a fixed test split of `test_fraction`,
    normalised with the training part's channel statistics. `info` sets ImageData's other fields
    (kind, class_names, input_scale, flips)."""
    train, test = split(TensorDataset(images, labels), 1.0 - test_fraction)
    mean, std = channel_stats(train.tensors[0])
    return ImageData(
        train=TensorDataset(normalised(train.tensors[0], mean, std), train.tensors[1]),
        test=TensorDataset(normalised(test.tensors[0], mean, std), test.tensors[1]),
        in_channels=images.shape[1],
        num_classes=classes,
        image_size=images.shape[-1],
        mean=mean,
        std=std,
        **info,
    )


# The loaders and the built-in datasets (which register themselves) use the definitions above.
from nas.data import cifar10, digits, folder, mnist1d, npz, synthetic, tabular  # noqa: E402, F401
from nas.data.cifar10 import Cifar10Options  # noqa: E402
from nas.data.folder import FolderOptions  # noqa: E402
from nas.data.loading import (  # noqa: E402
    batches_per_epoch,
    check_batch_size,
    classifier_sums,
    cycle,
    loader,
)
from nas.data.npz import NpzOptions  # noqa: E402
from nas.data.synthetic import SyntheticOptions  # noqa: E402
from nas.data.tabular import CsvOptions  # noqa: E402

__all__ = [
    "DATASETS",
    "KINDS",
    "Cifar10Options",
    "CsvOptions",
    "FolderOptions",
    "ImageData",
    "NpzOptions",
    "SyntheticOptions",
    "batches_per_epoch",
    "channel_stats",
    "check_batch_size",
    "classifier_sums",
    "cycle",
    "encode_labels",
    "from_arrays",
    "labels_of",
    "load_dataset",
    "loader",
    "normalised",
    "split",
]
