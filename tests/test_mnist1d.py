"""MNIST-1D: what the package generates with its defaults, its own split, the cache, the
shuffled variant and the missing package."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import pytest
import torch

from nas.config import DataConfig
from nas.data import labels_of, load_dataset
from nas.data import mnist1d as module
from nas.errors import NasError


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    """The arrays, generated once into the session's cache (conftest's _data_cache)."""
    return module.load_arrays()


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch, arrays):
    """An empty cache folder, and generation replaced by a copy of `arrays` that counts its
    calls."""
    monkeypatch.setenv(module.CACHE_ENV, str(tmp_path / "cache"))
    calls = []

    def generate(package, args):
        calls.append(args)
        return {name: array.copy() for name, array in arrays.items()}

    monkeypatch.setattr(module, "generate", generate)
    return calls


def _cache_file() -> os.PathLike:
    package = module._package()
    return module.cache_path(module.generation_args(package), module._version(package))


def test_mnist1d_holds_4000_training_and_1000_test_signals_of_length_40(arrays) -> None:
    data = load_dataset(DataConfig(name="mnist1d"))
    assert (len(data.train), len(data.test)) == (4000, 1000)
    assert data.kind == "sequence" and (data.in_channels, data.image_size) == (1, 40)
    assert data.class_names == tuple(str(digit) for digit in range(10)) and not data.flips
    signals = data.train.tensors[0]
    assert signals.shape == (4000, 1, 40) and signals.dtype == torch.float32
    # normalised with the training part's statistics
    assert abs(float(signals.mean())) < 1e-4 and abs(float(signals.std()) - 1) < 1e-3
    raw = torch.from_numpy(arrays["x_test"]).float().unsqueeze(1)
    expected = (raw - data.mean[0]) / data.std[0]
    assert torch.allclose(data.test.tensors[0], expected, atol=1e-5)
    assert torch.equal(labels_of(data.test), torch.from_numpy(arrays["y_test"]))
    assert sorted(labels_of(data.train).unique().tolist()) == list(range(10))


@pytest.mark.slow  # generates the data a second time: 6 s on a quiet machine, 18 s on a busy one
def test_the_split_is_the_packages_own_with_its_default_arguments(arrays) -> None:
    import mnist1d.data

    direct = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    for name in ("x", "y", "x_test", "y_test"):
        assert np.array_equal(arrays[name], direct[name]), name
    again = module.load_arrays()
    assert all(np.array_equal(arrays[name], again[name]) for name in arrays)


def test_generation_leaves_the_global_generators_as_they_were(arrays) -> None:
    package = module._package()
    np.random.seed(7)
    random.seed(7)
    numpy_next, python_next = np.random.rand(), random.random()
    np.random.seed(7)
    random.seed(7)
    args = {**module.generation_args(package), "num_samples": 20}
    module.generate(package, args)
    assert np.random.rand() == numpy_next and random.random() == python_next


def test_a_second_load_reads_the_cache_file(fresh_cache, monkeypatch, arrays) -> None:
    first = module.load_arrays()
    assert len(fresh_cache) == 1 and _cache_file().is_file()
    assert _cache_file().parent == module.cache_dir()

    def fail(package, args):
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(module, "generate", fail)
    second = module.load_arrays()
    assert all(np.array_equal(first[name], second[name]) for name in arrays)


@pytest.mark.parametrize("damage", ["garbage", "torn", "wrong_shape"])
def test_a_damaged_cache_file_is_generated_again(fresh_cache, arrays, damage) -> None:
    module.load_arrays()
    path = _cache_file()
    if damage == "garbage":
        path.write_bytes(b"not an npz file")
    elif damage == "torn":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        np.savez(path, **{**arrays, "x": arrays["x"][:, :20]})
    loaded = module.load_arrays()
    assert len(fresh_cache) == 2
    assert all(np.array_equal(loaded[name], arrays[name]) for name in arrays)
    assert module._read_cache(path, 40) is not None  # written again, whole


def test_an_unwritable_cache_still_gives_the_data_with_a_warning(
    fresh_cache, tmp_path, monkeypatch, arrays
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv(module.CACHE_ENV, str(blocker / "cache"))
    with pytest.warns(UserWarning, match=f"not cached.*set {module.CACHE_ENV}"):
        loaded = module.load_arrays()
    assert np.array_equal(loaded["x"], arrays["x"])


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(module.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert module.cache_dir() == tmp_path / "xdg" / "nasforge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert module.cache_dir() == tmp_path / "home" / ".cache" / "nasforge"
    monkeypatch.setenv(module.CACHE_ENV, str(tmp_path / "mine"))
    assert module.cache_dir() == tmp_path / "mine"


def test_the_cache_file_is_keyed_by_the_arguments_and_the_version() -> None:
    args = module.generation_args(module._package())
    path = module.cache_path(args, "1.0")
    assert module.cache_path(dict(args), "1.0") == path
    assert module.cache_path({**args, "seed": 43}, "1.0") != path
    assert module.cache_path(args, "1.1") != path


def test_the_shuffled_variant_permutes_every_signal_the_same_way(arrays) -> None:
    plain = load_dataset(DataConfig(name="mnist1d"))
    shuffled = load_dataset(DataConfig(name="mnist1d_shuffle"))
    order = module.shuffle_order(40)
    assert sorted(order.tolist()) == list(range(40)) and not np.array_equal(order, np.arange(40))
    assert np.array_equal(module.shuffle_order(40), order)  # fixed
    for name in ("train", "test"):
        before, after = getattr(plain, name), getattr(shuffled, name)
        assert torch.equal(labels_of(before), labels_of(after))
        assert torch.allclose(after.tensors[0], before.tensors[0][..., order], atol=1e-5)
    raw = torch.from_numpy(arrays["x_test"][:, order]).float().unsqueeze(1)
    assert torch.allclose(shuffled.test.tensors[0], (raw - shuffled.mean[0]) / shuffled.std[0])


def test_without_the_package_the_error_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mnist1d", None)  # as if it were not installed
    for name in ("mnist1d", "mnist1d_shuffle"):
        with pytest.raises(NasError) as err:
            load_dataset(DataConfig(name=name))
        assert str(err.value) == (
            "generating MNIST-1D needs mnist1d: install the mnist1d extra: "
            "pip install 'nasforge[mnist1d]'"
        )


@pytest.mark.parametrize("name", ["mnist1d", "mnist1d_shuffle"])
def test_final_training_defaults_are_fitted_to_mnist1d_and_given_values_win(
    name, arrays, capsys
) -> None:
    import yaml

    from nas.cli import main

    def resolved(*flags: str) -> dict:
        argv = ["train", "--genotype", "DARTS_V2", "--dataset", name, *flags, "--print-config"]
        assert main(argv) == 0
        return yaml.safe_load(capsys.readouterr().out)

    config = resolved()
    assert (config["data"]["batch_size"], config["run"]["epochs"]) == (100, 50)
    assert (config["model"]["layers"], config["model"]["channels"]) == (8, 16)
    config = resolved("--batch-size", "32", "--epochs", "3", "--layers", "5")
    assert (config["data"]["batch_size"], config["run"]["epochs"]) == (32, 3)
    assert (config["model"]["layers"], config["model"]["channels"]) == (5, 16)
