"""Shared fixtures: tiny supernets and batches that run in milliseconds on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.spaces import get_space
from nas.supernet import SearchNetwork

# One thread per process, in this one and in the CLI runs and DDP workers it starts (they inherit
# the variable). The suite runs such processes side by side on 2 cores, and two-thread torch
# processes side by side stall each other in OpenMP spin-waits: a tiny ASAP search that takes
# 5.8 s of CPU with one thread took 94 s with two next to other jobs. The networks here are too
# small to gain from a second thread.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_network(space: str = "tiny", in_channels: int = 1, classes: int = 3) -> SearchNetwork:
    """A 3-cell supernet with C=2 (normal, reduce, reduce) over 8x8 images."""
    return SearchNetwork(get_space(space), in_channels, classes, channels=2, layers=3)


def batch(size: int = 8, channels: int = 1, image: int = 8, classes: int = 3) -> tuple:
    """A random (images, labels) batch."""
    return torch.randn(size, channels, image, image), torch.randint(0, classes, (size,))


# Metrics that measure the machine, not the run: left out when runs are compared.
TIMING = {"epoch_seconds", "peak_mem_mb"}


def run_nas(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """`python -m nas ARGS` in a subprocess (no stdin), output captured, 10 minutes at most."""
    return subprocess.run(
        [sys.executable, "-m", "nas", *args], capture_output=True, text=True, timeout=600,
        env={**os.environ, **(env or {})}, cwd=cwd, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def jsonl_rows(run: Path, name: str = "metrics.jsonl") -> list[dict]:
    """The rows of a run's jsonl file, without the TIMING fields."""
    rows = [json.loads(line) for line in (run / name).read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]
