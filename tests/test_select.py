"""Model selection in `nas train` (best.pt chosen on a validation split, never on test) and the
hand-designed baselines (`nas train --model NAME`)."""

import json

import numpy as np
import pytest
import torch
import yaml

import nas
from nas.cli import main
from nas.config import TrainConfig, apply_dict, validate
from nas.data import labels_of
from nas.errors import NasError
from nas.models.baselines import BASELINES, build_baseline
from nas.runtime.dist import Runtime
from nas.train_task import TrainTask, training_split
from tests.conftest import assert_refused, jsonl_rows

CPU = Runtime(rank=0, world_size=1, device=torch.device("cpu"))
SYNTHETIC = {
    "name": "synthetic",
    "batch_size": 8,
    "augment": False,
    "cutout": 0,
    "synthetic_samples": 40,
    "synthetic_image_size": 4,
}


def _task(epochs: int, val_fraction: float) -> TrainTask:
    config = TrainConfig()
    sections = {
        "data": SYNTHETIC,
        "model": {"baseline": "logistic"},
        "run": {"epochs": epochs, "device": "cpu"},
        "train": {"val_fraction": val_fraction},
    }
    apply_dict(config, sections, "test")
    validate(config)
    config.resolve()
    return TrainTask(config, None, CPU)


# The scripted runs step the schedule without training steps.
scripted = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")


def _scripted_run(task: TrainTask, val: list[float], test: list[float]) -> list[int]:
    """Run the selection with scripted accuracies: `val[e]` and `test[e]` are the accuracies of
    the weights after epoch e + 1. Returns the epochs whose weights the test split saw."""
    epoch, tested = 0, []

    def accuracy(dataset):
        if dataset is task.data.test:
            tested.append(epoch + 1)
            return 0.0, test[epoch]
        assert dataset is task.val_set
        return 0.0, val[epoch]

    task._loss_and_accuracy = accuracy
    for epoch in range(len(val)):
        task.evaluate()
        task.end_epoch(epoch)
    return tested


@scripted
def test_best_is_chosen_on_validation_and_tested_once_chosen() -> None:
    task = _task(epochs=4, val_fraction=0.2)
    # Test accuracy peaks at epoch 4, validation at epochs 2 and 3 (a tie: the earlier wins).
    tested = _scripted_run(task, val=[0.5, 0.8, 0.8, 0.6], test=[0.9, 0.7, 0.95, 0.99])
    assert task.best_epoch == 2 and task.best_val_acc == 0.8
    assert task.best_test_acc == 0.7 and task.last_test_acc == 0.99
    payload = task.model_payload()
    assert (payload["epoch"], payload["val_acc"], payload["test_acc"]) == (2, 0.8, 0.7)
    # The test split saw only weights validation had chosen, and the final ones.
    assert tested == [1, 2, 4]


@scripted
def test_without_validation_best_is_the_last_epoch() -> None:
    task = _task(epochs=3, val_fraction=0)
    assert task.val_set is None and len(task.train_set) == len(task.data.train)
    tested = _scripted_run(task, val=[0.0] * 3, test=[0.9, 0.2, 0.5])
    assert task.best_epoch == 3 and task.best_test_acc == task.last_test_acc == 0.5
    assert tested == [3] and task.model_payload()["val_acc"] is None


def test_validation_is_a_fixed_part_of_the_training_split() -> None:
    task = _task(epochs=1, val_fraction=0.25)
    train, val = task.train_set.tensors[0], task.val_set.tensors[0]
    assert len(val) == 8 and len(train) + len(val) == len(task.data.train)
    rows = lambda x: {tuple(sample.flatten().tolist()) for sample in x}  # noqa: E731
    assert rows(train) | rows(val) == rows(task.data.train.tensors[0])
    assert not rows(val) & rows(task.data.test.tensors[0]) and not rows(val) & rows(train)
    again = training_split(task.config, task.data)[1]  # another rank, or a resumed run
    assert torch.equal(again.tensors[0], val) and torch.equal(
        labels_of(again), labels_of(task.val_set)
    )
    with pytest.raises(NasError, match="train.val_fraction=0.01 holds out 0 of the 32"):
        task.config.train.val_fraction = 0.01
        training_split(task.config, task.data)


@pytest.mark.parametrize("kind", ["image", "sequence"])
@pytest.mark.parametrize("name", BASELINES.names())
def test_every_baseline_reads_images_and_sequences(name: str, kind: str) -> None:
    size = 8 if kind == "image" else 40
    network = build_baseline(name, 2, 5, size, kind)
    x = torch.randn(3, 2, *([size, size] if kind == "image" else [size]))
    logits, auxiliary = network.forward_with_auxiliary(x)
    assert logits.shape == (3, 5) and auxiliary is None
    logits.sum().backward()
    for parameter_name, parameter in network.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name


def test_the_mnist1d_paper_baselines_on_length_40() -> None:
    cnn = build_baseline("cnn", 1, 10, 40, "sequence")
    lengths = []
    for layer in cnn.convs:
        if isinstance(layer, torch.nn.Conv1d):
            layer.register_forward_hook(lambda m, i, out: lengths.append(out.shape[-1]))
    cnn(torch.randn(1, 1, 40))
    assert lengths == [19, 10, 5]  # stride 2, padding 1: 40 -> 19 -> 10 -> 5
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    # conv 1*25*5+25, 2 x (25*25*3+25), linear 25*5*10+10 (Greydanus 2020's CNN)
    assert count(cnn) == 150 + 2 * 1900 + 1260 == 5210
    assert count(build_baseline("mlp", 1, 10, 40, "sequence")) == 15_210  # 40-100-100-10
    assert count(build_baseline("logistic", 1, 10, 40, "sequence")) == 410
    assert isinstance(build_baseline("cnn", 3, 10, 8, "image").convs[0], torch.nn.Conv2d)


def test_the_cnn_refuses_tables_and_inputs_too_small_to_convolve() -> None:
    with pytest.raises(NasError, match="use --model mlp or --model logistic"):
        build_baseline("cnn", 4, 2, 1, "table")
    with pytest.raises(NasError, match="side or length at least 3, got 2"):
        build_baseline("cnn", 1, 2, 2, "image")
    assert build_baseline("mlp", 4, 2, 1, "table")(torch.randn(2, 4, 1, 1)).shape == (2, 2)


def _sequences(tmp_path) -> str:
    generator = np.random.default_rng(0)
    labels = np.arange(60) % 3
    x = generator.normal(size=(60, 1, 40)).astype(np.float32) + labels[:, None, None]
    np.savez(tmp_path / "s.npz", x=x, y=labels)
    return str(tmp_path / "s.npz")


def test_train_a_baseline_on_sequences_then_export_and_load(tmp_path, capsys) -> None:
    data = ["--dataset", "npz", "--data-file", _sequences(tmp_path)]
    run = tmp_path / "run"
    args = ["train", "--model", "mlp", *data, "--epochs", "2", "--set", "run.device=cpu"]
    assert main([*args, "--out", str(run)]) == 0
    rows = jsonl_rows(run)
    assert "val_acc" in rows[0] and "test_acc" not in rows[0] and "test_acc" in rows[-1]
    assert not (run / "genotype.json").exists()
    saved = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert saved["baseline"] == "mlp" and saved["layers"] is None and saved["drop_path"] == 0
    printed = capsys.readouterr().out
    assert "chosen on validation" in printed and "test acc" in printed
    assert main(["train", "--out", str(run), "--resume"]) == 0  # finished: prints its result
    assert capsys.readouterr().out.splitlines()[0] == printed.splitlines()[0]
    model = nas.load_model(run)  # best.pt by default
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["spec"]["baseline"] == "mlp" and best["spec"]["kind"] == "sequence"
    assert model(torch.randn(2, 1, 40)).shape == (2, 3)
    out = tmp_path / "export"
    assert main(["export", str(run), "--format", "exported", "--out", str(out)]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["network"] == "mlp" and card["input_shape"] == ["batch", 1, 40]
    assert card["checkpoint"] == "best" and card["test_accuracy"] == rows[-1]["test_acc"]
    assert card["validation_accuracy"] == best["val_acc"]
    capsys.readouterr()
    assert main(["train", "--model", "cnn", *data, "--summary", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip())["params"] == 5210 - 1260 + 25 * 5 * 3 + 3


def test_python_api_trains_a_baseline(tmp_path) -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 1, 6, 6, generator=generator), torch.arange(48) % 2
    result = nas.train(
        model="logistic", data=(x, y), run_dir=tmp_path / "r", epochs=2, device="cpu"
    )
    assert result.spec["baseline"] == "logistic" and 0 <= result.test_acc <= 1
    assert result.val_acc == max(row["val_acc"] for row in result.metrics)
    assert result.last_test_acc == result.metrics[-1]["last_test_acc"]
    with pytest.raises(NasError, match="both choose the network"):
        nas.train("DARTS_V2", (x, y), model="cnn")


@pytest.mark.parametrize(
    ("args", "contains"),
    [
        (["--genotype", "DARTS_V2", "--model", "cnn"], "both choose the network"),
        (["--model", "mlp", "--layers", "3"], "--layers and --channels shape cell networks"),
        (["--model", "cnn", "--drop-path", "0.3"], "no auxiliary head and no paths to drop"),
        (["--model", "cnn", "--auxiliary-weight", "0.4"], "no auxiliary head"),
        (["--model", "resnet"], "unknown baseline model 'resnet'"),
        (["--model", "mlp", "--val-fraction", "1"], "train.val_fraction must be in [0, 1)"),
        ([], "or --model NAME"),
    ],
)
def test_refusals(tmp_path, args: list[str], contains: str) -> None:
    assert_refused(
        "train", *args, "--dataset", "synthetic", "--epochs", "1", cwd=tmp_path, contains=contains
    )
