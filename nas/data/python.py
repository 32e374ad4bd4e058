"""Data given from Python (nas.search(data, ...)) as an ImageData: arrays, tensors or any torch
Dataset of (input, label) pairs.

What the data is comes from one sample's shape: (C, H, W) square images or (C, L) sequences
((L,) samples are one-channel sequences). Labels may be any values: they are mapped to class
indices in sorted order, and the values become the class names. The test part is the `test`
data when given, otherwise a fixed held-out fraction. Inputs are normalised with the training
part's per-channel statistics: in-memory tensors once (they stay a TensorDataset, the fast path),
any other Dataset sample by sample as it is read.

A run names such data `python` in its config (`data.name: python`): while the run builds its
config and task, `python_dataset(data)` registers it under that name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from nas.data import (
    DATASETS,
    ImageData,
    channel_stats,
    encode_labels,
    normalised,
    split,
)
from nas.errors import NasError

# The data.name of data given from Python.
PYTHON_DATASET = "python"
# The share of the data held out for testing when no test data is given (as digits does).
TEST_FRACTION = 0.2
# Normalisation statistics of a Dataset read sample by sample come from at most this many
# training samples (a fixed random subset): enough for a mean and a standard deviation.
STATS_SAMPLES = 2048


def as_image_data(data: Any, test: Any = None) -> ImageData:
    """`data` (and `test`) as an ImageData: an ImageData as it is, arrays `(x, y)` (numpy or
    tensors) or a torch Dataset of (input, label) pairs. Raises NasError for data it cannot use.
    """
    if isinstance(data, ImageData):
        if test is not None:
            raise NasError("an ImageData holds its own test split: do not pass test= with it")
        return data
    if isinstance(data, tuple | list) and len(data) == 2:
        return _from_tensors(*_arrays(data, "data"), test)
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return _from_tensors(*data.tensors, test)
    if isinstance(data, Dataset):
        return _from_dataset(data, test)
    raise NasError(
        f"data must be a dataset name, an ImageData, a torch Dataset of (input, label) pairs or "
        f"arrays (x, y); got {type(data).__name__}"
    )


@contextlib.contextmanager
def python_dataset(data: ImageData | None) -> Iterator[None]:
    """Make `data` the dataset named `python` inside the block (nothing when None)."""
    if data is None:
        yield
        return
    DATASETS.add(PYTHON_DATASET, lambda config: data)
    try:
        yield
    finally:
        DATASETS.discard(PYTHON_DATASET)


def _arrays(pair: Any, where: str) -> tuple[torch.Tensor, list[Any]]:
    """(inputs as a float tensor, labels as a list of values) of an (x, y) pair."""
    if not (isinstance(pair, tuple | list) and len(pair) == 2):
        raise NasError(f"{where} must be arrays (x, y) like the training data")
    x, y = pair
    try:
        inputs = torch.as_tensor(x).float()
        labels = y.tolist() if hasattr(y, "tolist") else list(y)
    except (TypeError, ValueError, RuntimeError) as err:
        raise NasError(
            f"{where}: x must be a numeric array and y a list of labels ({err})"
        ) from None
    if inputs.dim() == 0 or len(inputs) != len(labels):
        raise NasError(
            f"{where}: x has {len(inputs) if inputs.dim() else 0} samples and y {len(labels)} "
            "labels; give one label per sample"
        )
    return inputs, labels


def _sample_shape(shape: tuple[int, ...], where: str) -> tuple[str, tuple[int, ...]]:
    """(kind, (C, H, W) or (C, L)) of one sample's shape. Raises NasError for other shapes."""
    if len(shape) == 1:
        return "sequence", (1, shape[0])
    if len(shape) == 2:
        return "sequence", shape
    if len(shape) == 3 and shape[1] == shape[2]:
        return "image", shape
    raise NasError(
        f"{where}: a sample of shape {tuple(shape)} is neither a square (C, H, W) image nor a "
        "(C, L) sequence; resize or crop the images to a square"
    )


def _test_labels(values: list[Any], names: tuple[str, ...], where: str) -> torch.Tensor:
    """The class indices of the test labels `values` under the training data's class `names`."""
    index = {name: position for position, name in enumerate(names)}
    unseen = sorted({str(value) for value in values} - set(index), key=str)
    if unseen:
        raise NasError(
            f"{where} has labels the training data does not: {', '.join(unseen[:5])}; every "
            "test class must be one of the training classes"
        )
    return torch.tensor([index[str(value)] for value in values], dtype=torch.long)


def _from_tensors(inputs: torch.Tensor, values: Any, test: Any) -> ImageData:
    """In-memory data: normalised once, a TensorDataset per part."""
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    kind, shape = _sample_shape(tuple(inputs.shape[1:]), "data")
    labels, names = encode_labels(values)
    if test is None:
        train, held_out = split(TensorDataset(inputs, labels), 1.0 - TEST_FRACTION)
    else:
        if isinstance(test, TensorDataset) and len(test.tensors) == 2:
            test = test.tensors
        test_inputs, test_values = _arrays(test, "test")
        if tuple(test_inputs.shape[1:]) != tuple(inputs.shape[1:]):
            raise NasError(
                f"test samples have shape {tuple(test_inputs.shape[1:])}, the training samples "
                f"{tuple(inputs.shape[1:])}; give both the same shape"
            )
        train = TensorDataset(inputs, labels)
        held_out = TensorDataset(test_inputs, _test_labels(test_values, names, "test"))
    shaped = [part.tensors[0].reshape(len(part), *shape) for part in (train, held_out)]
    mean, std = channel_stats(shaped[0])
    return _described(
        TensorDataset(normalised(shaped[0], mean, std), train.tensors[1]),
        TensorDataset(normalised(shaped[1], mean, std), held_out.tensors[1]),
        kind,
        shape,
        names,
        (mean, std),
    )


def _described(
    train: Dataset,
    test: Dataset,
    kind: str,
    shape: tuple[int, ...],
    names: tuple[str, ...],
    stats: tuple[tuple[float, ...], tuple[float, ...]],
) -> ImageData:
    """The ImageData of normalised parts of samples of `shape`, normalised with `stats`."""
    return ImageData(
        train=train,
        test=test,
        in_channels=shape[0],
        num_classes=len(names),
        image_size=shape[-1],
        mean=stats[0],
        std=stats[1],
        kind=kind,
        class_names=names,
        flips=kind == "image",  # a flipped signal or table is another input
    )


class Normalised(Dataset):
    """A Dataset read sample by sample: each input as a float tensor of `shape`, normalised by
    (mean, std) per channel. `labels` holds every sample's class index (labels_of reads it).
    """

    def __init__(
        self,
        base: Dataset,
        shape: tuple[int, ...],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        labels: torch.Tensor,
    ) -> None:
        self.base = base
        self.shape = shape
        self.mean = mean
        self.std = std
        self.labels = labels
        per_channel = (len(mean),) + (1,) * (len(shape) - 1)
        self._mean = torch.tensor(mean).view(per_channel)
        self._std = torch.tensor(std).view(per_channel)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample, _ = self.base[index]
        inputs = torch.as_tensor(sample).float().reshape(self.shape)
        return (inputs - self._mean) / self._std, self.labels[index]


def _from_dataset(data: Dataset, test: Dataset | None) -> ImageData:
    """A Dataset read sample by sample, normalised on the fly."""
    if len(data) < 4:
        raise NasError(f"data has {len(data)} samples; a run needs at least 4")
    kind, shape = _sample_shape(tuple(torch.as_tensor(data[0][0]).shape), "data")
    labels, names = encode_labels(_label_values(data))
    if test is None:
        train, held_out = split(data, 1.0 - TEST_FRACTION)
        train_labels, test_labels = labels[train.indices], labels[held_out.indices]
    elif isinstance(test, Dataset):
        train, held_out, train_labels = data, test, labels
        test_labels = _test_labels(_label_values(test), names, "test")
    else:
        raise NasError(f"test must be a torch Dataset like the data; got {type(test).__name__}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    samples = [torch.as_tensor(train[int(i)][0]).float() for i in order[:STATS_SAMPLES]]
    mean, std = channel_stats(torch.stack(samples).reshape(len(samples), *shape))
    return _described(
        Normalised(train, shape, mean, std, train_labels),
        Normalised(held_out, shape, mean, std, test_labels),
        kind,
        shape,
        names,
        (mean, std),
    )


def _label_values(data: Dataset) -> list[Any]:
    """Every sample's label value: the `labels` attribute where the dataset has one."""
    labels = getattr(data, "labels", None)
    if labels is not None and len(labels) == len(data):
        return labels.tolist() if hasattr(labels, "tolist") else list(labels)
    values = [data[i][1] for i in range(len(data))]
    return [value.item() if isinstance(value, torch.Tensor) else value for value in values]
