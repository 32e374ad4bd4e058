"""A search killed mid-epoch and resumed ends exactly where an uninterrupted one ends (CPU)."""

import signal

import pytest
import torch

from nas.cli import main
from nas.runtime.engine import FAULT_ENV
from tests.conftest import TINY_DATA, assert_refused, jsonl_rows, run_nas

# 8 steps per epoch (64 search-training samples, batch 8).
ARGS = [
    "search",
    *TINY_DATA,
    "--space",
    "tiny",
    "--layers",
    "3",
    "--channels",
    "4",
    "--batch-size",
    "8",
    "--epochs",
    "2",
    "--seed",
    "7",
]


# First order with the collapse diagnostics on (the eigenvalue every epoch): they must resume
# exactly too. They change nothing in the search itself (tests/test_collapse.py).
DIAGNOSTICS = ["--set", "collapse.hessian_every=1", "--set", "collapse.hessian_samples=32"]


@pytest.mark.slow
@pytest.mark.parametrize(("order", "extra"), [("1", DIAGNOSTICS), ("2", [])], ids=["1", "2"])
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, order: str, extra: list) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    args = [*ARGS, "--order", order, *extra]
    assert main([*args, "--out", str(whole)]) == 0  # in-process: the killed run is the subprocess
    # 8 steps per epoch: step 12 is in the middle of epoch 2, after epoch 1's checkpoint.
    crashed = run_nas(*args, "--out", str(killed), env={FAULT_ENV: "12"})
    assert crashed.returncode == -signal.SIGKILL
    assert len(jsonl_rows(killed, "metrics.jsonl")) == 1
    resumed = run_nas("search", "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr

    assert (whole / "genotype.json").read_text() == (killed / "genotype.json").read_text()
    assert jsonl_rows(whole, "metrics.jsonl") == jsonl_rows(killed, "metrics.jsonl")
    assert jsonl_rows(whole, "genotypes.jsonl") == jsonl_rows(killed, "genotypes.jsonl")
    assert jsonl_rows(whole, "op_weights.jsonl") == jsonl_rows(killed, "op_weights.jsonl")
    if extra:
        assert all("hessian_eigenvalue" in row for row in jsonl_rows(killed))
    states = [
        torch.load(run / "checkpoints" / "last.pt", weights_only=True)["task"]["network"]
        for run in (whole, killed)
    ]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_resume_refuses_a_new_epoch_budget(tmp_path) -> None:
    run = tmp_path / "r"
    assert main([*ARGS, "--epochs", "1", "--out", str(run)]) == 0
    resume = ("search", "--out", str(run), "--resume", "--epochs", "2")
    assert_refused(*resume, cwd=tmp_path, contains="changes run.epochs")
