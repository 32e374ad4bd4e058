"""Defaults that follow what a dataset states, the flip rate, and data a command refuses."""

import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from nas.cli import main
from nas.config import Config, DataConfig, TrainConfig, validate
from nas.data import ImageData, load_dataset, loader
from nas.data.defaults import fit_to_data
from nas.errors import NasError
from nas.runtime.dist import Runtime

CPU = Runtime(rank=0, world_size=1, device=torch.device("cpu"))
SYNTHETIC = ["--dataset", "synthetic", "--set", "data.synthetic_samples=64"]


def _flipped(flips: bool, samples: int = 2000) -> int:
    """How many of `samples` asymmetric 4x4 images (too small to crop) one augmented training
    batch flips; every image comes out either as it was or flipped."""
    image = torch.arange(16.0).view(1, 4, 4)
    dataset = TensorDataset(image.expand(samples, 1, 4, 4).clone(), torch.zeros(samples).long())
    (batch, _) = next(iter(loader(dataset, samples, True, 3, 0, augment=True, flips=flips)))
    flipped = (batch == image.flip(-1)).flatten(1).all(1)
    assert torch.all(flipped | (batch == image).flatten(1).all(1))
    return int(flipped.sum())


def test_flip_rate_is_one_half_and_datasets_that_do_not_flip_never_do() -> None:
    samples = 2000
    # Binomial(2000, 1/2): sd 22.4; 4 sd either side. A 4/9 flip (randint(0, 9) % 2) gives ~889.
    assert abs(_flipped(True, samples) - samples / 2) <= 4 * (samples * 0.25) ** 0.5
    assert _flipped(False) == 0
    assert load_dataset(DataConfig(name="digits")).flips is False


def _small_train(name: str = "digits", **settings) -> TrainConfig:
    config = TrainConfig()
    for key, value in {"data.name": name, "model.genotype": "DARTS_V2", **settings}.items():
        config.set(key, value)
    validate(config)
    return config


def test_training_tasks_pass_the_datasets_flips_to_the_loader() -> None:
    from nas.genotype import load_genotype
    from nas.search_task import SearchTask
    from nas.train_task import TrainTask

    config = _small_train(**{"model.layers": 3, "model.channels": 2})
    config.resolve()
    task = TrainTask(config, load_genotype("DARTS_V2"), CPU)
    assert config.data.augment and task.batches(0).dataset.flips is False
    search = Config()
    search.set("model.space", "tiny")
    search.set("model.layers", 3)
    search.set("model.channels", 2)
    validate(search)
    search.resolve()
    assert search.data.augment and SearchTask(search, CPU).flips is False


def test_defaults_fit_digits_and_cifar_sized_data_keeps_the_papers(tmp_path) -> None:
    digits = _small_train()
    digits.resolve()
    assert (digits.data.augment, digits.data.cutout, digits.data.batch_size) == (True, 0, 64)
    assert (digits.model.layers, digits.model.channels, digits.run.epochs) == (8, 16, 30)
    big = TrainConfig()
    data = ImageData(
        TensorDataset(torch.zeros(10_000, 3, 32, 32), torch.zeros(10_000).long()),
        TensorDataset(torch.zeros(4, 3, 32, 32), torch.zeros(4).long()),
        3,
        10,
        32,
        (0.0,) * 3,
        (1.0,) * 3,
    )
    fit_to_data(big, data)
    big.resolve(fit_data=False)
    assert (big.data.augment, big.data.cutout, big.data.batch_size) == (True, 16, 96)
    assert (big.model.layers, big.model.channels, big.run.epochs) == (20, 36, 600)
    search = Config()
    fit_to_data(search, data)
    assert (search.data.augment, search.data.cutout) == (True, 0)  # DARTS's CIFAR-10 search


def test_explicit_values_win_and_the_resolved_ones_are_printed(capsys) -> None:
    args = ["--genotype", "DARTS_V2", "--dataset", "digits", "--epochs", "3", "--cutout", "5"]
    assert main(["train", *args, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    values = printed["data"] | printed["run"] | printed["model"]
    expected = {"cutout": 5, "epochs": 3, "augment": True, "batch_size": 64, "layers": 8}
    assert {key: values[key] for key in expected} == expected
    size = ["--set", "data.synthetic_image_size=4"]
    assert main(["search", *SYNTHETIC, *size, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)  # 4x4 images flip, too small to crop
    assert printed["data"]["augment"] is True and printed["data"]["cutout"] == 0


def test_explicit_values_that_cannot_work_are_refused() -> None:
    with pytest.raises(NasError, match="data.cutout=8 covers the whole 8x8 images of digits"):
        _small_train(**{"data.cutout": 8}).resolve()


def test_augmenting_images_that_neither_crop_nor_flip_is_refused() -> None:
    data = load_dataset(DataConfig(name="digits"))
    tiny = ImageData(data.train, data.test, 1, 10, 4, data.mean, data.std, flips=False)
    config = _small_train(**{"data.augment": True})
    with pytest.raises(NasError, match="data.augment does nothing on digits"):
        fit_to_data(config, tiny)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--dataset", "breast_cancer"], "nas search builds cell networks over images"),
        (
            ["train", "--genotype", "DARTS_V2", "--dataset", "breast_cancer"],
            "breast_cancer is a table of 30 features; grow an ensemble",
        ),
        (
            ["grow", "--dataset", "breast_cancer", "--generator", "cnn"],
            "the cnn generator builds cell networks over images",
        ),
    ],
)
def test_commands_refuse_data_they_cannot_use(tmp_path, capsys, argv: list, message: str) -> None:
    assert main([*argv, "--out", str(tmp_path / "run"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "run").exists()


def test_sequences_fit_cell_search_and_are_refused_by_the_cnn_generator() -> None:
    from nas.adanet.config import AdaNetConfig
    from nas.adanet.generators import GENERATORS, DataShape

    signals = TensorDataset(torch.zeros(8, 2, 40), torch.zeros(8).long())
    data = ImageData(signals, signals, 2, 3, 40, (0.0,) * 2, (1.0,) * 2, kind="sequence")
    config = Config()
    fit_to_data(config, data)
    assert (config.data.augment, config.data.cutout) == (False, 0)  # no image ideas by default
    config = Config()
    config.set("data.augment", True)
    fit_to_data(config, data)  # a crop along L, asked for
    config = Config()
    config.set("data.cutout", 4)
    with pytest.raises(NasError, match="data.cutout zeroes a square of an image"):
        fit_to_data(config, data)
    short = TensorDataset(torch.zeros(8, 2, 6), torch.zeros(8).long())
    config = Config()
    config.set("data.augment", True)
    with pytest.raises(NasError, match="too short to crop"):
        fit_to_data(config, ImageData(short, short, 2, 3, 6, (0.0,) * 2, (1.0,) * 2, "sequence"))
    shape = DataShape(2, 40, 3, "sequence")
    assert shape.features == 80  # the mlp generator reads a sample flattened
    with pytest.raises(NasError, match="holds sequences; use --generator mlp"):
        GENERATORS.get("cnn")(AdaNetConfig(generator="cnn"), shape)


@pytest.mark.slow
def test_the_printed_next_step_trains_on_the_same_data(tmp_path, capsys) -> None:
    import shlex

    data = [*SYNTHETIC, "--set", "data.synthetic_image_size=8"]
    tiny = [
        "--space",
        "tiny",
        "--layers",
        "3",
        "--channels",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "8",
    ]
    assert main(["search", *data, *tiny, "--out", str(tmp_path / "search")]) == 0
    hint = next(line for line in capsys.readouterr().out.splitlines() if "train it: " in line)
    argv = shlex.split(hint.split("train it: ")[1])[1:]
    assert "data.synthetic_samples=64" in argv
    assert main([*argv, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)["data"]
    # 51 training samples: a batch of 25 (two an epoch), 8x8 images cropped by 1 pixel
    assert printed["synthetic_samples"] == 64 and printed["batch_size"] == 25
    small = ["--layers", "3", "--channels", "2", "--epochs", "1"]
    assert main([*argv, *small, "--out", str(tmp_path / "train")]) == 0
