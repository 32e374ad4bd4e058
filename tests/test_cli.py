"""The `nas search` command end to end: run directory, outputs, resume rules, user errors."""

import json
import subprocess
import sys

import pytest
import yaml

from nas.cli import main
from nas.genotype import Genotype
from nas.spaces import get_space
from tests.conftest import TINY_DATA, tensorboard_runs

SMALL = [*TINY_DATA, "--layers", "3", "--channels", "4", "--batch-size", "8"]


def _run(tmp_path, *extra: str, out: str = "run") -> int:
    return main(["search", *SMALL, "--epochs", "2", "--out", str(tmp_path / out), *extra])


@pytest.mark.slow
@pytest.mark.parametrize("order", ["1", "2"])
def test_search_writes_the_run_directory(tmp_path, capsys, order: str) -> None:
    space = "darts" if order == "1" else "tiny"  # second order on the full space takes a minute
    assert _run(tmp_path, "--order", order, "--space", space) == 0
    run = tmp_path / "run"
    genotype = Genotype.load(run / "genotype.json")
    assert genotype.space == space
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    for key in (
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "lr",
        "epoch_seconds",
        "peak_mem_mb",
    ):
        assert isinstance(rows[-1][key], float), key
    history = [json.loads(line) for line in (run / "genotypes.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert Genotype.from_dict(history[-1]["genotype"]) == genotype
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["strategy"]["order"] == int(order) and config["meta"]["world_size"] == 1
    assert (run / "checkpoints" / "last.pt").is_file()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    printed = capsys.readouterr().out
    assert genotype.to_notation() in printed and str(run / "tb") in printed


@pytest.mark.slow
def test_tensorboard_holds_losses_alphas_and_genotype_picture(tmp_path) -> None:
    assert (
        main(["search", *SMALL, "--space", "tiny", "--epochs", "1", "--out", str(tmp_path / "r")])
        == 0
    )
    runs = tensorboard_runs(tmp_path / "r" / "tb")
    ops = list(get_space("tiny").ops)
    # one TensorBoard run per curve to compare: train and val, normal and reduce, each op
    assert sorted(runs) == sorted(["", "train", "val", "normal", "reduce", *ops])
    assert {"run/lr", "run/epoch_seconds"} <= set(runs[""].Tags()["scalars"])
    for series in ("train", "val"):
        assert set(runs[series].Tags()["scalars"]) == {"loss", "accuracy"}
    assert "run/param_free" in runs["normal"].Tags()["scalars"]
    for op in ops:  # tiny space: 5 edges per cell kind
        tags = runs[op].Tags()["scalars"]
        assert len(tags) == 2 * 5 and "alphas_normal/state3_from1" in tags
    images = ["genotype", "op_weights/normal", "op_weights/reduce"]
    assert sorted(runs[""].Tags()["images"]) == images


def test_config_file_and_set_override(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  space: tiny\nrun:\n  epochs: 1\n")
    out = tmp_path / "r"
    code = main(
        [
            "search",
            "--config",
            str(config),
            *SMALL,
            "--set",
            "strategy.alpha_lr=1e-3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["space"] == "tiny" and saved["strategy"]["alpha_lr"] == 1e-3
    assert saved["run"]["epochs"] == 1


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        (
            # A strategy's own option, a --set override and a flag; no torchrun for a print.
            "search",
            ["--strategy", "asap", "--set", "strategy.temperature=2.5", "--epochs", "3"]
            + ["--nproc-per-node", "2"],
            {"strategy.name": "asap", "strategy.temperature": 2.5, "run.epochs": 3},
        ),
        (
            "train",
            ["--genotype", "DARTS_V2", "--dataset", "digits", "--lr", "0.1", "--cutout", "3"],
            {"model.genotype": "DARTS_V2", "train.lr": 0.1, "data.cutout": 3, "run.epochs": 30},
        ),
        (
            "grow",
            ["--force-grow", "--set", "adanet.widths=[8]"],
            {"adanet.force_grow": True, "adanet.widths": [8]},
        ),
    ],
)
def test_print_config_prints_the_resolved_config_and_writes_nothing(
    tmp_path, capsys, monkeypatch, command: str, args: list, expected: dict
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("run:\n  seed: 7\n")
    assert main([command, "--config", "c.yaml", *args, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["run"]["seed"] == 7  # from the --config file
    for key, value in expected.items():
        section, name = key.split(".")
        assert printed[section][name] == value, key
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]


def test_print_config_refusals(tmp_path, capsys) -> None:
    assert main(["train", "--genotype", "DARTS_V2", "--summary", "--print-config"]) == 2
    assert "--print-config and --summary both print" in capsys.readouterr().err
    assert main(["search", "--set", "model.layers=three", "--print-config"]) == 2
    assert "expected int, got 'three'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "enas"], "unknown strategy 'enas'; choose one of: asap, darts"),
        (["--space", "nasbench"], "unknown search space 'nasbench'"),
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--set", "strategy.weight_rl=0.1"], "did you mean 'strategy.weight_lr'"),
        (["--set", "model.layers=three"], "expected int, got 'three'"),
        (["--data-dir", "/tmp"], "data.data_dir does nothing here"),
        (["--set", "data.train_portion=1.5"], "data.train_portion must be between 0 and 1"),
        (["--layers", "2"], "use at least 3 layers"),
        (["--batch-size", "1000"], "lower --batch-size"),
        (["--device", "cuda:0"], "CUDA is not available"),
        (["--config", "/nonexistent.yaml"], "config file '/nonexistent.yaml' does not exist"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, args: list, message: str) -> None:
    out = str(tmp_path / "never")  # a shared /tmp path would hold other runs' leftovers
    code = main(["search", "--dataset", "digits", "--epochs", "1", "--out", out, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("nas: error: ") and message in err[0]
    assert not (tmp_path / "never").exists()


def test_existing_run_is_never_overwritten_and_resume_must_match(tmp_path, capsys) -> None:
    args = ["--space", "tiny", "--epochs", "1"]
    assert main(["search", *SMALL, *args, "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main(["search", *SMALL, *args, "--out", str(tmp_path / "r")]) == 2
    assert "already holds a run; continue it with --resume" in capsys.readouterr().err
    assert main(["search", "--out", str(tmp_path / "r"), "--resume", "--order", "2"]) == 2
    assert "changes strategy.order" in capsys.readouterr().err
    files = sorted((tmp_path / "r").rglob("*"))
    resumed = ["search", "--out", str(tmp_path / "r"), "--resume", "--device", "cpu"]
    assert main([*resumed, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["space"] == "tiny" and printed["run"]["device"] == "cpu"
    assert sorted((tmp_path / "r").rglob("*")) == files
    assert main(["search", "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert main(["search", "--resume"]) == 2
    assert "--resume needs --out DIR" in capsys.readouterr().err


def test_argument_errors_are_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--order", "3"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "nas: error: argument --order: invalid choice: 3 (choose from 1, 2) (see nas search --help)"
    ]


def test_console_script_prints_no_traceback(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nas", "search", "--dataset", "imagenet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "nas: error: unknown dataset 'imagenet'; choose one of: breast_cancer, cifar10, csv, "
        "digits, folder, mnist1d, mnist1d_shuffle, npz, synthetic."
    ]
