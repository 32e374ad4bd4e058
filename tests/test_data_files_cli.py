"""The user's own data from the command line: search, train, export and grow on folders and npz
files, and --workers and --image-size as flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.cli import main
from tests.conftest import assert_refused, run_nas
from tests.test_data_files import write_digits, write_images

TINY = ["--space", "tiny", "--layers", "3", "--channels", "4", "--epochs", "1"]


def test_workers_must_not_be_negative(tmp_path) -> None:
    assert_refused("search", "--workers", "-1", cwd=tmp_path, contains="data.workers must be 0")


def test_image_size_is_an_option_of_the_folder_dataset_only(tmp_path) -> None:
    assert_refused(
        "search", "--dataset", "digits", "--image-size", "8", cwd=tmp_path, contains="folder"
    )


def _search_train_export(tmp_path: Path, *data_args: str, fresh: bool = False) -> dict:
    """`nas search` (in a `fresh` process: only what nasforge imports itself is loaded), then
    `nas train --genotype RUN`, then `nas export` on the same data; the trained run's metrics."""
    search, train = tmp_path / "search", tmp_path / "train"
    small = [*data_args, "--batch-size", "16", "--set", "data.augment=false"]
    search_args = ["search", *small, *TINY, "--out", str(search)]
    if fresh:
        result = run_nas(*search_args)
        assert result.returncode == 0, result.stderr
    else:
        assert main(search_args) == 0
    train_args = [*small, "--layers", "3", "--channels", "4", "--epochs", "1"]
    tail = ["--cutout", "0", "--auxiliary-weight", "0", "--out", str(train)]
    assert main(["train", "--genotype", str(search), *train_args, *tail]) == 0
    assert (
        main(["export", str(train), "--format", "torchscript", "--out", str(tmp_path / "x")]) == 0
    )
    assert (tmp_path / "x" / "model.pt").is_file()
    return json.loads((train / "metrics.jsonl").read_text().splitlines()[-1])


@pytest.mark.slow
def test_search_train_export_a_streamed_folder_of_pngs_with_two_workers(tmp_path) -> None:
    root = write_digits(tmp_path / "digits", 240)
    streamed = ["--set", "data.memory_limit_mb=0", "--workers", "2"]
    metrics = _search_train_export(
        tmp_path, "--dataset", "folder", "--data-dir", str(root), *streamed, fresh=True
    )
    assert 0 <= metrics["test_acc"] <= 1


@pytest.mark.slow
def test_search_train_export_an_npz_file(tmp_path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:240, None] * 255 / 16).astype(np.uint8)
    np.savez(tmp_path / "digits.npz", x=x, y=digits.target[:240])
    metrics = _search_train_export(
        tmp_path, "--dataset", "npz", "--data-file", f"{tmp_path}/digits.npz"
    )
    assert 0 <= metrics["test_acc"] <= 1


def test_train_summary_image_size_resizes_a_folder(tmp_path, capsys) -> None:
    root = write_images(tmp_path / "d", mode="RGB", size=(10, 12))
    args = ["--dataset", "folder", "--data-dir", str(root), "--image-size", "6"]
    assert main(["train", "--genotype", "DARTS_V2", "--summary", "--json", *args]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["in_channels"], summary["image_size"], summary["num_classes"]) == (3, 6, 3)


def test_grow_refuses_sequences(tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(40, 12)).astype(np.float32)
    np.savez(tmp_path / "s.npz", x=x, y=np.arange(40) % 2)
    args = ["grow", "--dataset", "npz", "--data-file", "s.npz", "--out", "g"]
    assert_refused(*args, cwd=tmp_path, contains="holds sequences")


_SMALL_DATA = ["--dataset", "synthetic", "--batch-size", "8", "--epochs", "1", "--workers", "3"]
_SMALL_DATA += ["--set", "data.synthetic_samples=64", "--set", "data.synthetic_image_size=8"]
_COMMANDS = {
    "search": ["search", *_SMALL_DATA, "--space", "tiny", "--layers", "3", "--channels", "2"],
    "train": [
        "train",
        "--genotype",
        "DARTS_V2",
        *_SMALL_DATA,
        "--layers",
        "3",
        "--channels",
        "4",
        "--cutout",
        "0",
    ],
    "grow": ["grow", *_SMALL_DATA, "--iterations", "1", "--set", "adanet.mixture_epochs=1"],
}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(_COMMANDS))
def test_workers_reach_every_loader_of_a_command(tmp_path, monkeypatch, command: str) -> None:
    from nas.data import loading

    asked: list[int] = []

    class Recording(loading.DataLoader):
        def __init__(self, *args, num_workers: int = 0, **kwargs) -> None:  # noqa: ANN002, ANN003
            asked.append(num_workers)
            super().__init__(*args, **kwargs)  # in this process: the test needs no workers

    monkeypatch.setattr(loading, "DataLoader", Recording)
    assert main([*_COMMANDS[command], "--out", str(tmp_path / "run")]) == 0
    assert asked and set(asked) == {3}
