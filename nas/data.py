"""Datasets (digits, synthetic, cifar10) as in-memory tensors, splits and seeded loaders.

Every dataset is a builder in the DATASETS registry: `(DataConfig) -> ImageData`; a builder that
reads settings of its own registers their dataclass (`@DATASETS.register("name", options=...)`,
see nas/options.py) and reads them as `config.options`. Splits are fixed permutations (seed 0), so
every run of every command sees the same train/val/test images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
)

from nas.config import DataConfig
from nas.errors import NasError
from nas.options import Options
from nas.registry import Registry

_SPLIT_SEED = 0  # fixed: splits never depend on the run's seed


@dataclass
class ImageData:
    """A labelled image dataset with a fixed train/test split. Images are normalised floats."""

    train: TensorDataset
    test: TensorDataset
    in_channels: int
    num_classes: int
    image_size: int
    # Per-channel statistics the raw images were normalised with: (x - mean) / std.
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASETS: Registry[Callable[[DataConfig], ImageData]] = Registry("dataset")


def load_dataset(config: DataConfig) -> ImageData:
    """Build the dataset named by `config.name` (with its default options if `config.options` is
    None). Raises NasError for unknown or missing data."""
    builder = DATASETS.get(config.name)
    if config.options is None:
        config = replace(config, options=DATASETS.options(config.name)())
    return builder(config)


def split(dataset: TensorDataset, first_fraction: float) -> tuple[TensorDataset, TensorDataset]:
    """Split into two parts by a fixed permutation; the first holds `first_fraction` of it."""
    images, labels = dataset.tensors
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    cut = int(round(first_fraction * len(labels)))
    if cut < 2 or len(labels) - cut < 2:
        raise NasError(
            f"a split of {len(labels)} samples at {first_fraction} leaves a part too small "
            "(under 2 samples); use more samples or a fraction nearer 0.5"
        )
    first, second = order[:cut], order[cut:]
    return TensorDataset(images[first], labels[first]), TensorDataset(
        images[second], labels[second]
    )


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def _normalised(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    shape = (1, len(mean), 1, 1)
    return (images - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def _from_arrays(
    images: torch.Tensor, labels: torch.Tensor, test_fraction: float, classes: int
) -> ImageData:
    train, test = split(TensorDataset(images, labels), 1.0 - test_fraction)
    mean, std = _channel_stats(train.tensors[0])
    return ImageData(
        train=TensorDataset(_normalised(train.tensors[0], mean, std), train.tensors[1]),
        test=TensorDataset(_normalised(test.tensors[0], mean, std), test.tensors[1]),
        in_channels=images.shape[1],
        num_classes=classes,
        image_size=images.shape[-1],
        mean=mean,
        std=std,
    )


@DATASETS.register("digits")
def _digits(config: DataConfig) -> ImageData:
    """scikit-learn's handwritten digits: 1797 real 8x8 grey images, 10 classes; 20% held out."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    return _from_arrays(images, labels, test_fraction=0.2, classes=10)


@dataclass
class SyntheticOptions(Options):
    """The size of the synthetic dataset (`data.synthetic_samples=...`)."""

    # Samples in all (train and test together).
    synthetic_samples: int = 1024
    # Side of the square images.
    synthetic_image_size: int = 32
    synthetic_channels: int = 3
    synthetic_classes: int = 10

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (self.synthetic_samples >= 4, "data.synthetic_samples must be at least 4"),
            (self.synthetic_classes >= 2, "data.synthetic_classes must be at least 2"),
            (self.synthetic_image_size >= 1, "data.synthetic_image_size must be at least 1"),
            (self.synthetic_channels >= 1, "data.synthetic_channels must be at least 1"),
        ]


@DATASETS.register("synthetic", options=SyntheticOptions)
def _synthetic(config: DataConfig) -> ImageData:
    """Random images labelled by a fixed random linear teacher on pooled pixels (learnable)."""
    options = config.options
    generator = torch.Generator().manual_seed(1234)
    size, channels = options.synthetic_image_size, options.synthetic_channels
    images = torch.randn(options.synthetic_samples, channels, size, size, generator=generator)
    pooled = torch.nn.functional.adaptive_avg_pool2d(images, 2).flatten(1)
    teacher = torch.randn(pooled.shape[1], options.synthetic_classes, generator=generator)
    labels = (pooled @ teacher).argmax(dim=1)
    return _from_arrays(images, labels, test_fraction=0.2, classes=options.synthetic_classes)


def _tabular(features: torch.Tensor, labels: torch.Tensor, classes: int) -> ImageData:
    """Tabular data as (N, F, 1, 1) "images": each feature is a channel, standardised."""
    return _from_arrays(features[:, :, None, None], labels, test_fraction=0.2, classes=classes)


@DATASETS.register("breast_cancer")
def _breast_cancer(config: DataConfig) -> ImageData:
    """scikit-learn's breast cancer data: 569 samples, 30 features, binary; 20% held out."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    features = torch.tensor(data.data, dtype=torch.float32)
    return _tabular(features, torch.tensor(data.target, dtype=torch.long), classes=2)


@dataclass
class CsvOptions(Options):
    """The user's CSV table."""

    # The file (--data-file): a header row, then numeric feature columns and the label column.
    data_file: str | None = None
    # The label column's name (--target).
    target: str | None = None


@DATASETS.register("csv", options=CsvOptions)
def _csv(config: DataConfig) -> ImageData:
    """The user's table: a header row, numeric feature columns and a label column (`target`,
    any values, read as class names in sorted order); 20% held out.
    """
    from nas.csv_table import read_table

    options = config.options
    if options.data_file is None or options.target is None:
        raise NasError("--dataset csv needs --data-file FILE and --target COLUMN (the label)")
    path = Path(options.data_file)
    features, labels, classes = read_table(path, options.target)
    try:
        return _tabular(features, labels, len(classes))
    except NasError as err:
        raise NasError(f"{path}: {err}") from None


@dataclass
class Cifar10Options(Options):
    """Where CIFAR-10 is."""

    # The folder holding the python-pickle batches (--data-dir); it must be given.
    data_dir: str | None = None


@DATASETS.register("cifar10", options=Cifar10Options)
def _cifar10(config: DataConfig) -> ImageData:
    """CIFAR-10 from `data_dir`: the python-pickle batches (data_batch_1..5, test_batch)."""
    from nas.cifar import MEAN, STD, read_cifar10

    (train_images, train_labels), (test_images, test_labels) = read_cifar10(config.options.data_dir)
    return ImageData(
        train=TensorDataset(_normalised(train_images, MEAN, STD), train_labels),
        test=TensorDataset(_normalised(test_images, MEAN, STD), test_labels),
        in_channels=3,
        num_classes=10,
        image_size=32,
        mean=MEAN,
        std=STD,
    )


class _Augmented(Dataset):
    """Training augmentation on normalised tensors, drawn from one seeded generator.

    `crop_flip`: random crop (pad 4) and horizontal flip, the standard CIFAR augmentation.
    `cutout`: zero a `cutout` x `cutout` square centred on a uniformly drawn pixel, clipped at the
    border (DeVries and Taylor 2017, as used by DARTS's final training); zero is the mean pixel
    after normalisation.
    """

    def __init__(
        self, base: TensorDataset, generator: torch.Generator, crop_flip: bool, cutout: int
    ) -> None:
        self.base = base
        self.generator = generator
        self.crop_flip = crop_flip
        self.cutout = cutout

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.base[index]
        height, width = image.shape[-2:]
        if self.crop_flip:
            padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
            top, left, flip = torch.randint(0, 9, (3,), generator=self.generator).tolist()
            image = padded[:, top : top + height, left : left + width]
            if flip % 2:
                image = image.flip(-1)
        if self.cutout:
            centre_y = int(torch.randint(0, height, (1,), generator=self.generator))
            centre_x = int(torch.randint(0, width, (1,), generator=self.generator))
            half = self.cutout // 2
            image = image.clone()
            image[
                :,
                max(centre_y - half, 0) : min(centre_y + half, height),
                max(centre_x - half, 0) : min(centre_x + half, width),
            ] = 0.0
        return image, label


def loader(
    dataset: TensorDataset,
    batch_size: int,
    train: bool,
    seed: int,
    epoch: int,
    augment: bool = False,
    cutout: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> DataLoader:
    """A loader for one epoch of this process's shard (`shard` = (rank, world size)).

    Training loaders shuffle with a DistributedSampler seeded by (seed, epoch) (`set_epoch`), so a
    resumed run sees the same batches, and drop the last partial batch (BatchNorm needs more than
    one sample). Rank r takes every W-th index of one permutation of the whole split, so step k's
    batches of the W ranks together are step k's batch of one process with W times the batch size.
    Evaluation loaders read rank r's every W-th sample in order (sum the metrics over the ranks).
    """
    rank, world = shard
    if not train:
        part = dataset if world == 1 else Subset(dataset, range(rank, len(dataset), world))
        return DataLoader(part, batch_size=batch_size, sampler=SequentialSampler(part))
    source: Dataset = dataset
    if augment or cutout:
        generator = torch.Generator().manual_seed((seed * 100_003 + epoch) * 64 + rank)
        source = _Augmented(dataset, generator, augment, cutout)
    sampler = DistributedSampler(
        source, num_replicas=world, rank=rank, shuffle=True, seed=seed * 100_003, drop_last=True
    )
    sampler.set_epoch(epoch)
    return DataLoader(source, batch_size=batch_size, sampler=sampler, drop_last=True)


@torch.no_grad()
def classifier_sums(
    network: Callable[[torch.Tensor], torch.Tensor],
    dataset: TensorDataset,
    batch_size: int,
    device: torch.device,
    shard: tuple[int, int] = (0, 1),
) -> list[float]:
    """[summed cross-entropy, correct predictions] of `network` on this process's share of
    `dataset`; sum them over the ranks and divide by len(dataset) for the means.
    """
    loss_sum = correct = 0.0
    for images, labels in loader(dataset, batch_size, False, 0, 0, shard=shard):
        images, labels = images.to(device), labels.to(device)
        logits = network(images)
        loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(dim=1) == labels).sum().item()
    return [loss_sum, correct]


def batches_per_epoch(dataset: TensorDataset, batch_size: int, world: int = 1) -> int:
    """Number of full batches a training loader yields on each of `world` processes."""
    return len(dataset) // world // batch_size


def check_batch_size(dataset: TensorDataset, batch_size: int, what: str) -> None:
    """Raise NasError if `dataset` cannot fill one batch."""
    if len(dataset) < batch_size:
        raise NasError(
            f"the {what} split has {len(dataset)} samples, fewer than one batch of {batch_size}; "
            "lower --batch-size"
        )


def cycle(loader_factory: Callable[[int], DataLoader]) -> Iterator:
    """Endless iterator over successive loaders (loader_factory(0), loader_factory(1), ...)."""
    round_ = 0
    while True:
        yield from loader_factory(round_)
        round_ += 1
