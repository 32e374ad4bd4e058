"""The conformance test every registered dataset passes: what it states, fixed splits, sharding
and errors. A dataset joins by adding a function to SAMPLES that makes small sample data for it
(the datasets that read the user's files write tiny ones into `tmp_path`)."""

import dataclasses
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from nas.config import DataConfig
from nas.data import (
    DATASETS,
    KINDS,
    Cifar10Options,
    CsvOptions,
    SyntheticOptions,
    labels_of,
    load_dataset,
    loader,
    split,
)
from nas.errors import NasError
from tests.test_data_files import folder_sample, npz_sample


def write_fake_cifar(folder: Path, samples: int = 10) -> None:
    """CIFAR-10's python-pickle batches with `samples` random images each."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (samples, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, samples).tolist(),
        }
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)


def write_csv(path: Path) -> None:
    """A 20-row table: two numeric features and a text label."""
    rows = [f"{i % 7},{(i * 3) % 5 - 2.5},{'yes' if i % 3 else 'no'}" for i in range(20)]
    path.write_text("\n".join(["height,width,label", *rows]) + "\n")


def _cifar10(folder: Path) -> DataConfig:
    write_fake_cifar(folder / "cifar-10-batches-py")
    return DataConfig(name="cifar10", options=Cifar10Options(data_dir=str(folder)))


def _csv(folder: Path) -> DataConfig:
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "table.csv")
    options = CsvOptions(data_file=str(folder / "table.csv"), target="label")
    return DataConfig(name="csv", options=options)


def _synthetic(folder: Path) -> DataConfig:
    options = SyntheticOptions(synthetic_samples=40, synthetic_image_size=8)
    return DataConfig(name="synthetic", options=options)


# name -> a function making a small config of that dataset (its files written under the folder).
SAMPLES: dict[str, Callable[[Path], DataConfig]] = {
    "digits": lambda folder: DataConfig(name="digits"),
    # generated once per session into conftest's cache folder
    "mnist1d": lambda folder: DataConfig(name="mnist1d"),
    "mnist1d_shuffle": lambda folder: DataConfig(name="mnist1d_shuffle"),
    "breast_cancer": lambda folder: DataConfig(name="breast_cancer"),
    "synthetic": _synthetic,
    "cifar10": _cifar10,
    "csv": _csv,
    "folder": folder_sample,
    "npz": npz_sample,
}
# Options that name the user's input: a dataset with one must refuse a missing path.
_INPUT_FIELDS = ("data_dir", "data_file")
_WORLD = 3  # processes in the sharding checks


def _config(name: str, folder: Path) -> DataConfig:
    if name not in SAMPLES:
        pytest.fail(f"add a sample for dataset {name} to SAMPLES in {Path(__file__).name}")
    return SAMPLES[name](folder)


def _sample_shape(kind: str, channels: int, size: int) -> tuple[int, ...]:
    shapes = {"image": (channels, size, size), "sequence": (channels, size)}
    return shapes.get(kind, (channels, 1, 1))  # a table: features as (F, 1, 1)


def _samples(dataset: Dataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first, a middle and the last sample."""
    return [dataset[i] for i in sorted({0, len(dataset) // 2, len(dataset) - 1})]


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_states_what_it_is(name: str, tmp_path) -> None:
    data = load_dataset(_config(name, tmp_path))
    assert data.kind in KINDS and data.num_classes >= 2
    assert len(data.class_names) == data.num_classes
    assert data.input_scale > 0 and isinstance(data.flips, bool)
    assert len(data.mean) == len(data.std) == data.in_channels and min(data.std) > 0
    shape = _sample_shape(data.kind, data.in_channels, data.image_size)
    for part in (data.train, data.test):
        assert len(part) >= 2
        for x, y in _samples(part):
            assert x.dtype == torch.float32 and tuple(x.shape) == shape
            assert torch.isfinite(x).all() and int(y) == y
        labels = labels_of(part)
        assert labels.dtype == torch.long and labels.shape == (len(part),)
        assert int(labels.min()) >= 0 and int(labels.max()) < data.num_classes
    assert len(labels_of(data.train).unique()) >= 2


def _same(first: Dataset, second: Dataset) -> bool:
    """Same labels in the same order, and the same samples where checked."""
    return torch.equal(labels_of(first), labels_of(second)) and all(
        torch.equal(a[0], b[0]) for a, b in zip(_samples(first), _samples(second))
    )


@pytest.mark.parametrize("name", DATASETS.names())
def test_splits_are_fixed_across_runs_and_seeds(name: str, tmp_path) -> None:
    torch.manual_seed(1)
    data = load_dataset(_config(name, tmp_path / "first"))
    weights, alphas = split(data.train, 0.5)  # nas search's train/val split
    torch.manual_seed(2)  # another run seed
    again = load_dataset(_config(name, tmp_path / "again"))
    assert _same(data.train, again.train) and _same(data.test, again.test)
    weights_again, alphas_again = split(again.train, 0.5)
    assert _same(weights, weights_again) and _same(alphas, alphas_again)
    assert len(weights) + len(alphas) == len(data.train)


class _Indices(Dataset):
    """Sample i of `base` read as (i, label): which samples a loader yields."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(index), torch.as_tensor(self.base[index][1])


def _shard_indices(dataset: Dataset, train: bool, rank: int) -> list[int]:
    batches = loader(_Indices(dataset), 1, train, seed=0, epoch=0, shard=(rank, _WORLD))
    return [int(i) for indices, _ in batches for i in indices]


@pytest.mark.parametrize("name", DATASETS.names())
def test_loader_shards_are_disjoint_and_cover_the_split(name: str, tmp_path) -> None:
    data = load_dataset(_config(name, tmp_path))
    for part, train in ((data.train, True), (data.test, False)):
        shards = [_shard_indices(part, train, rank) for rank in range(_WORLD)]
        seen = [i for shard in shards for i in shard]
        assert len(seen) == len(set(seen))  # disjoint
        # training drops the last len % W samples of each epoch's permutation (equal shards)
        covered = len(part) - len(part) % _WORLD if train else len(part)
        assert len(seen) == covered and set(seen) <= set(range(len(part)))


@pytest.mark.parametrize("name", DATASETS.names())
def test_missing_input_is_a_clear_error(name: str, tmp_path) -> None:
    config = _config(name, tmp_path / "sample")
    fields = [f.name for f in dataclasses.fields(config.options or DATASETS.options(name)())]
    inputs = [field for field in _INPUT_FIELDS if field in fields]
    if not inputs:
        pytest.skip(f"{name} reads no input of the user's")
    for field in inputs:
        missing = dataclasses.replace(config.options, **{field: str(tmp_path / "missing")})
        with pytest.raises(NasError, match="missing"):
            load_dataset(dataclasses.replace(config, options=missing))
        empty = dataclasses.replace(config.options, **{field: None})
        with pytest.raises(NasError):
            load_dataset(dataclasses.replace(config, options=empty))
