"""Shared fixtures: tiny supernets and batches that run in milliseconds on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="session", autouse=True)
def _data_cache(tmp_path_factory):
    """Generated datasets (MNIST-1D) are cached in the session's temp folder, never the user's
    cache; the CLI subprocesses inherit the variable."""
    from nas.data.mnist1d import CACHE_ENV

    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        del os.environ[CACHE_ENV]
    else:
        os.environ[CACHE_ENV] = previous


def tiny_network(space: str = "tiny", in_channels: int = 1, classes: int = 3) -> SearchNetwork:
    """A 3-cell supernet with C=2 (normal, reduce, reduce) over 8x8 images."""
    return SearchNetwork(get_space(space), in_channels, classes, channels=2, layers=3)


def batch(size: int = 8, channels: int = 1, image: int = 8, classes: int = 3) -> tuple:
    """A random (images, labels) batch."""
    return torch.randn(size, channels, image, image), torch.randint(0, classes, (size,))


# A dataset for runs whose subject is not the data: 160 random 8x8 one-channel images (128 to
# train on), labelled by a fixed teacher; a few steps per epoch instead of digits' tens.
TINY_DATA = [
    "--dataset",
    "synthetic",
    "--set",
    "data.synthetic_samples=160",
    "--set",
    "data.synthetic_image_size=8",
    "--set",
    "data.synthetic_channels=1",
]


# Metrics that measure the machine, not the run: left out when runs are compared.
TIMING = {"epoch_seconds", "peak_mem_mb", "hessian_seconds"}


def run_nas(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """`python -m nas ARGS` in a subprocess (no stdin), output captured, 10 minutes at most."""
    return subprocess.run(
        [sys.executable, "-m", "nas", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def jsonl_rows(run: Path, name: str = "metrics.jsonl") -> list[dict]:
    """The rows of a run's jsonl file, without the TIMING fields."""
    rows = [json.loads(line) for line in (run / name).read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def tensorboard_runs(tb: Path, **size_guidance: int) -> dict[str, Any]:
    """The EventAccumulator of each TensorBoard run in `tb` (a run's tb/ folder), by series: ""
    for tb/ itself, else the subfolder's name (`RunLogger.scalar`)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = {}
    for folder in [tb, *sorted(path for path in tb.iterdir() if path.is_dir())]:
        events = EventAccumulator(str(folder), size_guidance={"images": 0, **size_guidance})
        events.Reload()
        runs["" if folder == tb else folder.name] = events
    return runs


def file_states(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` (hidden ones too): relative path -> (content, mode)."""
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mode)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_refused(*args: str, cwd: Path, subprocess_run: bool = False, contains: str = "") -> str:
    """Run `nas ARGS` in `cwd` and check it refused cleanly; return its error line.

    A refusal exits with status 2, prints exactly one stderr line starting with `nas: error:`
    (no traceback, no huge echoed value) and leaves every file under `cwd` as it was. In-process
    by default (fast); `subprocess_run=True` for what needs a real process (launcher, signals).
    """
    import contextlib
    import io

    before = file_states(cwd)
    if subprocess_run:
        result = run_nas(*args, cwd=cwd)
        status, stderr = result.returncode, result.stderr
    else:
        from nas.cli import main

        buffer, previous = io.StringIO(), Path.cwd()
        os.chdir(cwd)
        try:
            with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(io.StringIO()):
                try:
                    status = main(list(args))
                except SystemExit as exit_:
                    status = exit_.code
        finally:
            os.chdir(previous)
        stderr = buffer.getvalue()
    lines = stderr.strip().splitlines()
    assert status == 2, f"exit status {status}, stderr:\n{stderr}"
    assert len(lines) == 1 and lines[0].startswith("nas: error:"), f"stderr:\n{stderr}"
    assert "Traceback" not in stderr and len(lines[0]) <= 600, lines[0][:1000]
    assert contains in lines[0], f"{contains!r} not in: {lines[0]}"
    assert file_states(cwd) == before, "a refused command changed files under its folder"
    return lines[0]
