"""Datasets: real digits, synthetic, CIFAR-10 from the python-pickle format; seeded loaders."""

import pickle

import pytest
import torch

from nas.config import DataConfig
from nas.data import (
    DATASETS,
    Cifar10Options,
    SyntheticOptions,
    load_dataset,
    loader,
    split,
)
from nas.errors import NasError
from tests.test_dataset_conformance import write_fake_cifar


def test_digits_is_real_and_split_fixed() -> None:
    data = load_dataset(DataConfig(name="digits"))
    assert data.train.tensors[0].shape[1:] == (1, 8, 8)
    assert len(data.train) + len(data.test) == 1797
    assert (data.in_channels, data.num_classes, data.image_size) == (1, 10, 8)
    again = load_dataset(DataConfig(name="digits"))
    assert torch.equal(data.test.tensors[1], again.test.tensors[1])
    assert set(data.train.tensors[1].tolist()) == set(range(10))


def test_synthetic_shapes_follow_config() -> None:
    options = SyntheticOptions(synthetic_samples=50, synthetic_image_size=12)
    options.synthetic_channels, options.synthetic_classes = 2, 4
    config = DataConfig(name="synthetic", options=options)
    data = load_dataset(config)
    assert data.train.tensors[0].shape[1:] == (2, 12, 12) and data.num_classes == 4
    assert len(data.train) == 40


def test_split_is_disjoint_and_complete() -> None:
    data = load_dataset(
        DataConfig(name="synthetic", options=SyntheticOptions(synthetic_samples=100))
    )
    first, second = split(data.train, 0.5)
    assert len(first) + len(second) == len(data.train)
    rows = {
        tuple(x.flatten()[:5].tolist()) for x in torch.cat([first.tensors[0], second.tensors[0]])
    }
    assert len(rows) == len(data.train)


def test_training_loader_order_depends_on_seed_and_epoch_only() -> None:
    data = load_dataset(
        DataConfig(name="synthetic", options=SyntheticOptions(synthetic_samples=100))
    ).train

    def labels(seed: int, epoch: int) -> list:
        return [y.tolist() for _, y in loader(data, 8, True, seed, epoch)]

    assert labels(0, 3) == labels(0, 3)
    assert labels(0, 3) != labels(0, 4) and labels(0, 3) != labels(1, 3)
    assert all(len(batch) == 8 for batch in labels(0, 0))  # partial batch dropped


def test_cifar10_reads_python_batches(tmp_path) -> None:
    write_fake_cifar(tmp_path / "cifar-10-batches-py")
    data = load_dataset(DataConfig(name="cifar10", options=Cifar10Options(data_dir=str(tmp_path))))
    assert data.train.tensors[0].shape == (50, 3, 32, 32)
    assert data.test.tensors[0].shape == (10, 3, 32, 32)


def test_cifar10_errors_say_how_to_provide_it(tmp_path) -> None:
    with pytest.raises(NasError, match="cifar10 needs --data-dir"):
        load_dataset(DataConfig(name="cifar10"))
    with pytest.raises(NasError, match="no CIFAR-10 batches in .*cifar-10-python.tar.gz"):
        load_dataset(
            DataConfig(name="cifar10", options=Cifar10Options(data_dir=str(tmp_path / "nowhere")))
        )


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar10_refuses_pickles_that_run_code(tmp_path) -> None:
    folder = tmp_path / "c"
    write_fake_cifar(folder)
    with (folder / "test_batch").open("wb") as f:
        pickle.dump({b"data": _Exploit(), b"labels": []}, f)
    with pytest.raises(
        NasError, match="not a CIFAR-10 python batch.*refusing to load builtins.print"
    ):
        load_dataset(DataConfig(name="cifar10", options=Cifar10Options(data_dir=str(folder))))


def test_unknown_dataset_is_a_clear_error() -> None:
    with pytest.raises(
        NasError, match="unknown dataset 'mnist'; choose one of: .*cifar10, .*digits"
    ):
        load_dataset(DataConfig(name="mnist"))
    assert {"digits", "synthetic", "cifar10"} <= set(DATASETS.names())


def test_cutout_zeroes_one_clipped_square_per_image_reproducibly() -> None:
    images = torch.ones(64, 2, 10, 10)
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(64, dtype=torch.long))
    first = next(iter(loader(dataset, 64, True, seed=1, epoch=0, cutout=4)))[0]
    again = next(iter(loader(dataset, 64, True, seed=1, epoch=0, cutout=4)))[0]
    assert torch.equal(first, again)
    zeroed = (first == 0).all(dim=1)  # both channels are cut alike
    assert torch.equal(zeroed, (first == 0).any(dim=1))
    counts = zeroed.flatten(1).sum(1)
    # a 4x4 square centred on a random pixel, clipped at the border: 4 to 16 pixels
    assert counts.min() >= 4 and counts.max() == 16
    rows, cols = zeroed.any(2), zeroed.any(1)
    assert torch.all(rows.sum(1) * cols.sum(1) == counts)  # a rectangle, not scattered pixels
    assert torch.equal(images, torch.ones(64, 2, 10, 10))  # the dataset itself is untouched


def test_datasets_record_their_normalisation() -> None:
    data = load_dataset(DataConfig(name="digits"))
    assert len(data.mean) == len(data.std) == 1 and data.std[0] > 0
    assert abs(data.train.tensors[0].mean().item()) < 1e-4


def test_normalised_scales_each_channel_of_a_batch_of_images_or_sequences() -> None:
    from nas.data import normalised

    mean, std = (1.0, 2.0, 3.0), (1.0, 4.0, 2.0)
    for shape in ((5, 3, 4, 4), (5, 3, 7)):
        images = torch.randn(*shape)
        out = normalised(images, mean, std)
        for channel in range(3):
            expected = (images[:, channel] - mean[channel]) / std[channel]
            assert torch.allclose(out[:, channel], expected)
    with pytest.raises(ValueError, match="expected a batch"):
        normalised(torch.randn(3, 3, 3), (0.0,) * 2, (1.0,) * 2)
