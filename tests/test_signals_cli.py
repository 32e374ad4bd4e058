"""Cell search and training on 1D signals from the command line: an npz file of (N, C, L) or
(N, L) sequences through nas search, nas train, nas show, nas export and --summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
from nas.cli import main
from tests.conftest import assert_refused

SMALL = ["--layers", "3", "--channels", "4", "--epochs", "1"]
TINY = ["--space", "tiny", *SMALL]


def _write_signals(path: Path, samples: int = 64, channels: int | None = 2, length: int = 20):
    """Sequences whose class is where a bump sits: learnable, and only by looking along L."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, samples)
    x = rng.normal(0, 0.3, (samples, channels or 1, length)).astype(np.float32)
    for i, label in enumerate(labels):
        x[i, :, label * length // 3] += 2.0
    np.savez(path, x=x if channels else x[:, 0], y=labels)
    return path


@pytest.mark.slow
def test_search_train_show_export_on_npz_sequences(tmp_path, capsys) -> None:
    data = ["--dataset", "npz", "--data-file", str(_write_signals(tmp_path / "s.npz"))]
    small = [*data, "--batch-size", "16"]
    search, train = tmp_path / "search", tmp_path / "train"
    assert main(["search", *small, *TINY, "--out", str(search)]) == 0
    assert (search / "genotype.json").is_file()
    assert main(["train", "--genotype", str(search), *small, *SMALL, "--out", str(train)]) == 0
    model = nas.load_model(train)
    assert model(torch.randn(5, 2, 20)).shape == (5, 3)
    capsys.readouterr()
    assert main(["show", str(train)]) == 0
    assert "tiny" in capsys.readouterr().out
    out = tmp_path / "export"
    assert main(["export", str(train), "--format", "torchscript", "--out", str(out)]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["input_shape"] == ["batch", 2, 20]
    exported = torch.jit.load(str(out / "model.pt"))
    assert exported(torch.randn(4, 2, 20)).shape == (4, 3)
    capsys.readouterr()
    summary = ["train", "--genotype", str(search), "--summary", "--json", *data, *SMALL]
    assert main(summary) == 0
    sizes = json.loads(capsys.readouterr().out)
    assert (sizes["dims"], sizes["image_size"], sizes["in_channels"]) == (1, 20, 2)


def test_search_steps_on_npz_sequences_without_channels(tmp_path) -> None:
    """(N, L) arrays are one-channel sequences; the supernet is 1D (a 2D one would fail)."""
    path = _write_signals(tmp_path / "s.npz", samples=32, channels=None, length=12)
    args = ["--dataset", "npz", "--data-file", str(path), "--batch-size", "8"]
    assert main(["search", *args, *TINY, "--out", str(tmp_path / "run")]) == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    stem = state["task"]["network"]["stem.0.weight"]
    assert stem.shape == (4, 1, 3)  # Conv1d: (C, in_channels, 3) in the tiny space


def test_a_sequence_too_short_for_the_reductions_is_refused(tmp_path) -> None:
    path = _write_signals(tmp_path / "s.npz", samples=32, length=4)
    assert_refused(
        "search",
        "--dataset",
        "npz",
        "--data-file",
        str(path),
        *TINY,
        cwd=tmp_path,
        contains="sequences of length 4, too short for the 2 reduction cells",
    )


def test_cutout_on_sequences_is_refused(tmp_path) -> None:
    path = _write_signals(tmp_path / "s.npz", samples=32)
    assert_refused(
        "train",
        "--genotype",
        "DARTS_V2",
        "--dataset",
        "npz",
        "--data-file",
        str(path),
        "--cutout",
        "4",
        "--batch-size",
        "8",
        *SMALL,
        cwd=tmp_path,
        contains="data.cutout zeroes a square",
    )
