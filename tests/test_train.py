"""`nas train`, `nas show` and `nas export` end to end: run directory, resume, checks, exports."""

import json
import signal

import numpy as np
import pytest
import torch
import yaml

from nas.cli import main
from nas.genotype import Genotype
from nas.published import PUBLISHED_GENOTYPES
from nas.runtime.engine import FAULT_ENV
from nas.spaces import get_space
from nas.supernet import SearchNetwork
from tests.conftest import TINY_DATA, assert_refused, jsonl_rows, run_nas, tensorboard_runs

SMALL = [
    "--dataset",
    "digits",
    "--layers",
    "3",
    "--channels",
    "4",
    "--batch-size",
    "64",
    "--cutout",
    "3",
    "--set",
    "data.augment=false",
]
# SMALL on TINY_DATA: 115 training samples (13 held out), 7 steps of 16 per epoch.
TINY = [*SMALL, *TINY_DATA, "--batch-size", "16"]


def _searched_genotype(tmp_path):
    """A genotype.json as `nas search` writes it: derived from a supernet's alphas."""
    torch.manual_seed(3)
    network = SearchNetwork(get_space("darts"), 1, 10, channels=2, layers=3)
    path = tmp_path / "search" / "genotype.json"
    path.parent.mkdir()
    network.genotype().save(path)
    return path


def test_train_a_searched_genotype_on_digits(tmp_path, capsys) -> None:
    genotype_file = _searched_genotype(tmp_path)
    run = tmp_path / "run"
    code = main(
        ["train", "--genotype", str(genotype_file), *SMALL, "--epochs", "2", "--out", str(run)]
    )
    assert code == 0
    rows = jsonl_rows(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "best_val_acc", "lr"):
        assert isinstance(rows[-1][key], float), key
    assert rows[0]["drop_path"] == 0.0 and rows[1]["drop_path"] == pytest.approx(0.1)
    # The test split is evaluated only at the end, on the chosen and the final weights.
    assert "test_acc" not in rows[0] and "test_loss" not in rows[-1]
    assert rows[-1]["test_acc"] > 0.5  # two short epochs on digits already learn
    assert Genotype.load(run / "genotype.json") == Genotype.load(genotype_file)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["layers"] == 3 and config["train"]["lr"] == 0.025
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["val_acc"] == max(r["val_acc"] for r in rows) == rows[-1]["best_val_acc"]
    assert best["epoch"] == rows[-1]["best_epoch"] and best["test_acc"] == rows[-1]["test_acc"]
    assert (run / "checkpoints" / "last.pt").is_file()
    printed = capsys.readouterr().out
    assert "chosen on validation" in printed and f"nas export {run}" in printed
    runs = tensorboard_runs(run / "tb")
    assert {"run/lr", "run/drop_path"} <= set(runs[""].Tags()["scalars"])
    assert {"loss"} <= set(runs["train"].Tags()["scalars"]) and "loss" in runs["val"].Tags()[
        "scalars"
    ]
    assert [e.value for e in runs["val"].Scalars("accuracy")] == pytest.approx(
        [r["val_acc"] for r in rows]
    )
    assert runs[""].Tags()["images"] == ["genotype"]


@pytest.mark.slow
def test_killed_and_resumed_training_matches_uninterrupted(tmp_path) -> None:
    args = ["train", "--genotype", "DARTS_V2", *TINY, "--epochs", "2", "--seed", "5"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([*args, "--out", str(whole)]) == 0  # in-process: the killed run is the subprocess
    # 7 steps per epoch: step 10 is inside epoch 2, after epoch 1's checkpoint.
    crashed = run_nas(*args, "--out", str(killed), env={FAULT_ENV: "10"})
    assert crashed.returncode == -signal.SIGKILL
    assert len(jsonl_rows(killed)) == 1
    resumed = run_nas("train", "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert jsonl_rows(whole) == jsonl_rows(killed)
    for name in ("last.pt", "best.pt"):
        states = [
            torch.load(run / "checkpoints" / name, weights_only=True) for run in (whole, killed)
        ]
        networks = [s["task"]["network"] if "task" in s else s["network"] for s in states]
        for key in networks[0]:
            assert torch.equal(networks[0][key], networks[1][key]), (name, key)


def test_resume_refuses_a_checkpoint_of_another_genotype(tmp_path) -> None:
    run = tmp_path / "r"
    assert main(["train", "--genotype", "DARTS_V2", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    PUBLISHED_GENOTYPES["DARTS_V1"].save(run / "genotype.json")  # the run's genotype is edited
    resume = ("train", "--out", str(run), "--resume")
    assert_refused(*resume, cwd=tmp_path, contains="holds weights for another genotype")


def test_check_spec_names_the_mismatch() -> None:
    from nas.errors import NasError
    from nas.train_task import check_spec

    spec = {
        "genotype": PUBLISHED_GENOTYPES["DARTS_V2"].to_dict(),
        "network": "cifar",
        "layers": 20,
        "channels": 36,
        "auxiliary": True,
        "in_channels": 3,
        "num_classes": 10,
        "image_size": 32,
        "dataset": "cifar10",
    }
    check_spec(spec, dict(spec), "ckpt")
    with pytest.raises(NasError, match="channels 36 vs 16"):
        check_spec(spec, {**spec, "channels": 16}, "ckpt")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "digits"], "needs --genotype"),
        (["--genotype", "DARTS_V9", "--dataset", "digits"], "neither a published name"),
        (["--genotype", "DARTS_V2", "--dataset", "digits", "--cutout", "16"], "covers the whole"),
        (["--genotype", "DARTS_V2", "--network", "resnet"], "invalid choice"),
        (["--genotype", "DARTS_V2", "--set", "train.lrr=1"], "did you mean 'train.lr'"),
        (["--genotype", "DARTS_V2", "--drop-path", "1.5"], "model.drop_path"),
        (["--genotype", "DARTS_V2", "--json"], "goes with --summary"),
        (["--genotype", "DARTS_V2", "--network", "imagenet", "--channels", "47"], "must be even"),
    ],
)
def test_user_errors_are_one_line(tmp_path, args: list[str], message: str) -> None:
    assert_refused("train", *args, "--out", "x", cwd=tmp_path, contains=message)


def test_summary_json_without_training(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)

    def summary(*args: str) -> dict:
        assert main(["train", "--genotype", "DARTS_V2", "--summary", "--json", *args]) == 0
        return json.loads(capsys.readouterr().out)  # stdout is the JSON alone

    imagenet = summary("--network", "imagenet")
    assert imagenet["params"] == 4_718_752 and imagenet["image_size"] == 224
    assert imagenet["params_auxiliary"] > 0 and imagenet["mult_adds"] == 529_911_552
    cifar = summary("--image-size", "16")
    assert cifar["params"] == 3_349_342 and cifar["image_size"] == 16
    assert list(tmp_path.iterdir()) == []  # nothing written
    # a dataset named in a config file gives the input shape
    config = tmp_path.parent / "digits.yaml"
    config.write_text("data:\n  name: digits\n")
    shape = summary("--config", str(config))
    assert (shape["in_channels"], shape["image_size"], shape["num_classes"]) == (1, 8, 10)


def test_show_prints_and_draws_both_cells(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "cells.png"
    assert main(["show", "DARTS_V2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for text in (
        "normal cell:",
        "reduce cell:",
        "state 5 = skip_connect(0) + dil_conv_3x3(2)",
        "3.35M parameters",
    ):
        assert text in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    assert min(imread(out).shape[:2]) > 800  # both cells, one above the other, at 100 dpi
    assert_refused("show", "DARTS_V2", "--out", "cells.svg", cwd=tmp_path, contains="PNG")


def test_show_replaces_only_its_own_drawing(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    ours = tmp_path / "cells.png"
    for _ in range(2):  # drawing again over its own drawing is allowed
        assert main(["show", "DARTS_V2", "--out", str(ours)]) == 0
    from matplotlib import pyplot

    users = tmp_path / "photo.png"
    pyplot.imsave(users, np.zeros((4, 4)))  # a PNG nasforge did not draw
    (tmp_path / "notes.png").write_text("not even a PNG")
    for name in ("photo.png", "notes.png"):
        assert_refused("show", "DARTS_V2", "--out", name, cwd=tmp_path, contains="not a drawing")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert (
        main(["train", "--genotype", "DARTS_V2", *SMALL, "--epochs", "1", "--out", str(run)]) == 0
    )
    return run


@pytest.mark.parametrize("fmt", ["torchscript", "exported", "onnx"])
def test_export_round_trips(trained_run, tmp_path, fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    from nas.export import load_trained

    out = tmp_path / fmt
    assert main(["export", str(trained_run), "--format", fmt, "--out", str(out)]) == 0
    network, facts = load_trained(trained_run)
    images = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        expected = network(images)
    if fmt == "torchscript":
        actual = torch.jit.load(str(out / "model.pt"))(images)
    elif fmt == "exported":
        actual = torch.export.load(str(out / "model.pt2")).module()(images)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out / "model.onnx"))
        actual = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    card = json.loads((out / "model_card.json").read_text())
    assert card["input_shape"] == ["batch", 1, 8, 8] and card["num_classes"] == 10
    # digits' pixels are 0..16: a user divides by 16, then normalises
    assert card["class_names"] == [str(digit) for digit in range(10)]
    assert card["input_normalisation"]["input_scale"] == 16.0
    assert card["test_accuracy"] == facts["test_acc"] and card["params"] > 0
    from nas.export import FILE_NAMES

    assert card["exports"] == {fmt: FILE_NAMES[fmt]} and (out / FILE_NAMES[fmt]).is_file()
    assert Genotype.load(out / "genotype.json") == PUBLISHED_GENOTYPES["DARTS_V2"]


def test_model_card_of_a_checkpoint_without_class_names_or_input_scale(
    trained_run, tmp_path
) -> None:
    from nas.runtime.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(trained_run / "checkpoints" / "best.pt", restore_rng=False)
    for key in ("class_names", "input_scale"):
        del payload["spec"][key]
    save_checkpoint(tmp_path / "old" / "checkpoints" / "best.pt", payload)
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "old"), "--format", "exported", "--out", str(out)]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["class_names"] == [str(label) for label in range(10)]
    assert card["input_normalisation"]["input_scale"] == 1.0


def test_export_of_a_search_run_is_a_clear_error(tmp_path) -> None:
    from nas.runtime.checkpoint import save_checkpoint

    needs = "needs a run directory written by nas train"
    assert_refused("export", str(tmp_path), "--format", "torchscript", cwd=tmp_path, contains=needs)
    # a search run's last.pt: network and strategy state, no model spec
    state = {"network": {"alpha_normal": torch.zeros(2)}, "strategy": {}}
    save_checkpoint(tmp_path / "checkpoints" / "last.pt", {"epoch": 1, "task": state})
    last = ("export", str(tmp_path), "--format", "exported", "--checkpoint", "last")
    assert_refused(*last, cwd=tmp_path, contains="not a nas train checkpoint")


def test_export_of_the_last_checkpoint_reports_its_test_accuracy(trained_run, tmp_path) -> None:
    assert (
        main(
            [
                "export",
                str(trained_run),
                "--format",
                "exported",
                "--checkpoint",
                "last",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
    card = json.loads((tmp_path / "e" / "model_card.json").read_text())
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert card["checkpoint"] == "last" and card["test_accuracy"] == rows[-1]["last_test_acc"]
    (tmp_path / "file").write_text("")
    bad = ("export", str(trained_run), "--format", "exported", "--out", str(tmp_path / "file"))
    assert_refused(*bad, cwd=tmp_path, contains="pick another --out")


def test_export_reads_the_spec_under_its_older_key(trained_run, tmp_path) -> None:
    """A best.pt saved when the network spec was stored as "model" (not "spec") still exports."""
    from nas.export import load_trained
    from nas.runtime.checkpoint import load_checkpoint, save_checkpoint

    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    state = load_checkpoint(trained_run / "checkpoints" / "best.pt", restore_rng=False)
    assert "spec" in state and "model" not in state
    state = {key: value for key, value in state.items() if key not in ("rng", "checkpoint_version")}
    state["model"] = state.pop("spec")
    save_checkpoint(old / "checkpoints" / "best.pt", state)
    network, facts = load_trained(old)
    assert facts["spec"] == load_trained(trained_run)[1]["spec"]
