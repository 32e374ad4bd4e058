"""A search killed mid-epoch and resumed ends exactly where an uninterrupted one ends (CPU)."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from nas.runtime.engine import FAULT_ENV

ARGS = ["search", "--dataset", "digits", "--space", "tiny", "--layers", "3", "--channels", "4",
        "--batch-size", "32", "--epochs", "3", "--seed", "7"]  # fmt: skip
TIMING = {"epoch_seconds", "peak_mem_mb"}


def _nas(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nas", *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def _rows(run, name: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / name).read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.mark.slow
@pytest.mark.parametrize("order", ["1", "2"])
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, order: str) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _nas(*ARGS, "--order", order, "--out", str(whole)).returncode == 0
    # 22 steps per epoch: step 30 is in the middle of epoch 2, after epoch 1's checkpoint.
    crashed = _nas(*ARGS, "--order", order, "--out", str(killed), env={FAULT_ENV: "30"})
    assert crashed.returncode == -signal.SIGKILL
    assert len(_rows(killed, "metrics.jsonl")) == 1
    resumed = _nas("search", "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr

    assert (whole / "genotype.json").read_text() == (killed / "genotype.json").read_text()
    assert _rows(whole, "metrics.jsonl") == _rows(killed, "metrics.jsonl")
    assert _rows(whole, "genotypes.jsonl") == _rows(killed, "genotypes.jsonl")
    states = [
        torch.load(run / "checkpoints" / "last.pt", weights_only=True)["task"]["network"]
        for run in (whole, killed)
    ]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_resume_refuses_a_new_epoch_budget(tmp_path) -> None:
    run = tmp_path / "r"
    assert _nas(*ARGS, "--epochs", "1", "--out", str(run)).returncode == 0
    result = _nas("search", "--out", str(run), "--resume", "--epochs", "2")
    assert result.returncode == 2 and "changes run.epochs" in result.stderr
