"""Run directories: the time stamp of a default name, config.yaml with the package version, git
commit, world size and command line, and the world-size check of a resume. Which folders a run may
use is in nas/ownership.py; the config and run directory of a command are resolved in
nas/runs.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.ownership import shown_path
from nas.runtime.launch import RUN_STAMP_ENV


def run_stamp() -> str:
    """The time part of a default run directory name; the launcher fixes it for all workers."""
    stamp = os.environ.get(RUN_STAMP_ENV)
    if stamp:
        return stamp
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise NasError(
            "several processes need one run directory: give --out DIR (or start them with "
            "nas ... --nproc-per-node N, which names it for all of them)"
        )
    return time.strftime("%Y%m%d-%H%M%S")


def git_commit(package_dir: Path | None = None) -> str | None:
    """The commit of the nasforge checkout that `package_dir` (default: this package) runs from;
    None when nasforge is installed rather than checked out. The checkout is the git work tree
    whose top holds this `nas/` folder and a pyproject.toml naming nasforge, so an installed
    nasforge inside a user's repository (a virtualenv in it, a vendored copy) never records the
    user's commit.
    """
    package_dir = (package_dir or Path(__file__).parent).resolve()
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    if top is None or package_dir != Path(top).resolve() / "nas":
        return None
    try:
        pyproject = (package_dir.parent / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if re.search(r'^name\s*=\s*"nasforge"\s*$', pyproject, re.MULTILINE) is None:
        return None
    return _git(package_dir, "rev-parse", "HEAD")


def _git(cwd: Path, *args: str) -> str | None:
    """The output of `git ARGS` run in `cwd`, None if git fails or is missing."""
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def write_config(
    config: Any, run_dir: Path, world_size: int, command_line: str | None = None
) -> None:
    """Write run_dir/config.yaml: the resolved config plus a `meta` section (atomically).
    `command_line` is what started the run (default: `nas` and this process's arguments)."""
    import shlex

    import yaml

    from nas import __version__
    from nas.io import atomic_write_text

    data = config.to_dict()
    data["meta"] = {
        "nasforge_version": __version__,
        "git_commit": git_commit(),
        "world_size": world_size,
        "command": command_line or shlex.join(["nas", *sys.argv[1:]]),
    }
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(data, sort_keys=False))


def check_world_size(run_dir: Path, world_size: int) -> None:
    """Refuse to resume a run on another number of processes than it was trained on: the global
    batch and the data order depend on it, so the result would not be the run's. Raises NasError.
    """
    from nas.config import load_yaml

    meta = load_yaml(run_dir / "config.yaml").get("meta", {})
    saved = meta.get("world_size", 1) if isinstance(meta, dict) else None
    if type(saved) is not int or saved < 1:
        raise NasError(
            f"{shown_path(run_dir)}/config.yaml: meta.world_size is not a number of processes; "
            "restore the file as nasforge wrote it or start a new run"
        )
    if saved != world_size:
        how = f"--nproc-per-node {saved}" if saved > 1 else "one process"
        raise NasError(
            f"{shown_path(run_dir)} was trained on {saved} process(es), this resume runs "
            f"{world_size}; resume it with {how} (the global batch and data order depend on it)"
        )
