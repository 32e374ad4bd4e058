"""Run directories: resolving a command's config and run directory (the rules on which folders a
run may use are in nas/ownership.py), and writing config.yaml with the package version, git
commit, world size and command line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.ownership import shown_path
from nas.runtime.dist import restarted
from nas.runtime.launch import RUN_STAMP_ENV

# What may differ between a run's saved config and a --resume of it.
# Not run.epochs: the cosine schedule is a function of the epoch budget.
RESUMABLE_CHANGES = {"run.device", "run.out"}


def resolve_config(
    args: argparse.Namespace,
    config_class: type,
    flags: dict[str, str],
    base: Any = None,
    base_file: str = "saved config",
) -> Any:
    """Defaults < saved config `base` (resume; read from `base_file`) < --config file < flags <
    --set. Raises NasError.
    """
    from nas.config import apply_dict, load_yaml, parse_assignment, validate

    config = config_class()
    if base is not None:
        apply_dict(config, base, base_file)
    if args.config:
        apply_dict(config, load_yaml(args.config), args.config)
    for flag, key in flags.items():
        value = getattr(args, flag)
        if value is not None:
            config.set(key, value)
    for text in args.overrides:
        config.set(*parse_assignment(text))
    validate(config)
    config.resolve()
    return config


def _changed_keys(saved: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    return [
        f"{section}.{key}"
        for section, values in requested.items()
        for key, value in values.items()
        if saved.get(section, {}).get(key) != value
    ]


def prepare_run_dir(
    args: argparse.Namespace, command: str, config_class: type, flags: dict[str, str], name: Any
) -> tuple[Any, Path]:
    """Resolve the config and the run directory of `nas COMMAND`; writes nothing.

    A new run gets `--out` or `runs/<command>-<name(config)>-<time>`, which must be missing,
    empty, or a run of this command that stopped before its first checkpoint (it restarts in
    place). `--resume` reloads the saved config and refuses changes other than RESUMABLE_CHANGES.
    Raises NasError.
    """
    from nas.config import load_yaml
    from nas.ownership import check_new_run_dir, check_out_path, check_resume_dir, owned

    if args.out is not None:
        check_out_path(args.out)
    if not args.resume:
        config = resolve_config(args, config_class, flags)
        if config.run.out is None:
            config.run.out = f"runs/{command}-{name(config)}-{run_stamp()}"
        check_out_path(config.run.out)
        run_dir = Path(config.run.out)
        if (run_dir / "checkpoints" / "last.pt").exists() and restarted() and owned(run_dir):
            # torchrun restarted this worker after a failure: continue from the last checkpoint.
            args.resume, args.out = True, str(run_dir)
        else:
            check_new_run_dir(run_dir, command)
            return config, run_dir
    if args.out is None:
        raise NasError("--resume needs --out DIR, the run directory to continue")
    run_dir = Path(args.out)
    check_resume_dir(run_dir, command)
    saved = load_yaml(run_dir / "config.yaml")
    if not isinstance(saved, dict):
        raise NasError(
            f"{shown_path(run_dir)}/config.yaml is not a run's saved config; start a new run"
        )
    config = resolve_config(
        args, config_class, flags, base=saved, base_file=f"{shown_path(run_dir)}/config.yaml"
    )
    changed = [k for k in _changed_keys(saved, config.to_dict()) if k not in RESUMABLE_CHANGES]
    if changed:
        raise NasError(
            f"--resume continues the run as saved in {shown_path(run_dir)}/config.yaml, but this "
            f"command changes {', '.join(changed)}; drop those options or start a new run"
        )
    return config, run_dir


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


def git_commit() -> str | None:
    """The commit of the nasforge checkout, or None outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def write_config(config: Any, run_dir: Path, world_size: int) -> None:
    """Write run_dir/config.yaml: the resolved config plus a `meta` section (atomically)."""
    import shlex

    import yaml

    from nas import __version__
    from nas.io import atomic_write_text

    data = config.to_dict()
    data["meta"] = {
        "nasforge_version": __version__,
        "git_commit": git_commit(),
        "world_size": world_size,
        "command": shlex.join(["nas", *sys.argv[1:]]),
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
