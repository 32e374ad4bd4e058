"""Run directories: resolving a command's config, refusing to overwrite or misresume a run, and
writing config.yaml with the package version, git commit, world size and command line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.runtime.dist import restarted
from nas.runtime.launch import RUN_STAMP_ENV

# What may differ between a run's saved config and a --resume of it.
# Not run.epochs: the cosine schedule is a function of the epoch budget.
RESUMABLE_CHANGES = {"run.device", "run.out"}


def resolve_config(
    args: argparse.Namespace, config_class: type, flags: dict[str, str], base: Any = None
) -> Any:
    """Defaults < saved config (resume) < --config file < flags < --set. Raises NasError."""
    from nas.config import apply_dict, load_yaml, parse_assignment, validate

    config = config_class()
    if base is not None:
        apply_dict(config, base, "saved config")
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

    if args.out is not None:
        check_out_path(args.out)
    if not args.resume:
        config = resolve_config(args, config_class, flags)
        if config.run.out is None:
            config.run.out = f"runs/{command}-{name(config)}-{run_stamp()}"
        check_out_path(config.run.out)
        run_dir = Path(config.run.out)
        if (run_dir / "checkpoints" / "last.pt").exists() and restarted() and _owned(run_dir):
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
        raise NasError(f"{_cut(run_dir)}/config.yaml is not a run's saved config; start a new run")
    config = resolve_config(args, config_class, flags, base=saved)
    changed = [k for k in _changed_keys(saved, config.to_dict()) if k not in RESUMABLE_CHANGES]
    if changed:
        raise NasError(
            f"--resume continues the run as saved in {_cut(run_dir)}/config.yaml, but this command "
            f"changes {', '.join(changed)}; drop those options or start a new run"
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

    saved = (load_yaml(run_dir / "config.yaml") or {}).get("meta", {}).get("world_size", 1)
    if saved != world_size:
        how = f"--nproc-per-node {saved}" if saved > 1 else "one process"
        raise NasError(
            f"{_cut(run_dir)} was trained on {saved} process(es), this resume runs {world_size}; "
            f"resume it with {how} (the global batch and data order depend on it)"
        )


# Written into every run directory nasforge creates (or takes while empty). Only a folder with
# it is ever restarted, resumed or cleaned up; any other non-empty folder is the user's.
MARKER_NAME = ".nasforge-run"
MARKER_FORMAT = "nasforge.run"
# What a restart before the first checkpoint deletes: results of the run that died.
STALE_RESULTS = {
    "search": ["genotype.json"],
    "grow": ["ensemble.json", "checkpoints/ensemble.pt"],
    "train": ["checkpoints/best.pt"],
}


def check_out_path(out: str) -> None:
    """Refuse an --out that cannot name a run directory: empty, a file, under a file, or in a
    folder the user cannot write. Raises NasError.
    """
    if not out.strip():
        raise NasError("--out is empty; give the run directory to write, e.g. --out runs/my-run")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise NasError(f"--out {_short(out)} is a file, not a folder; give a new or empty folder")
    existing = next((p for p in [path, *path.parents] if p.exists() or p.is_symlink()), Path("."))
    if not existing.is_dir():
        raise NasError(f"--out {_short(out)}: {_short(str(existing))} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NasError(f"--out {_short(out)}: {_short(str(existing))} is not writable by you")


def check_new_run_dir(run_dir: Path, command: str) -> None:
    """A new run may use a missing or empty folder, or restart its own run that stopped before
    the first checkpoint. Raises NasError otherwise; writes nothing.
    """
    from nas.runtime.lock import LOCK_NAME, busy_message, owned_elsewhere

    # a bare lock file is what a launcher holding the folder for its workers leaves so far
    if not run_dir.is_dir() or all(p.name == LOCK_NAME for p in run_dir.iterdir()):
        return
    _check_owner(run_dir, command)
    if owned_elsewhere(run_dir):
        raise NasError(busy_message(run_dir))
    if (run_dir / "checkpoints" / "last.pt").exists():
        raise NasError(
            f"{_cut(run_dir)} already holds a run; continue it with --resume or choose "
            "another --out"
        )


def check_resume_dir(run_dir: Path, command: str) -> None:
    """--resume needs a run of `command` with a checkpoint that no live process owns."""
    if not run_dir.is_dir():
        raise NasError(
            f"{_cut(run_dir)} does not exist, so it holds no checkpoint to resume; check --out"
        )
    checkpoint = run_dir / "checkpoints" / "last.pt"
    if not (run_dir / MARKER_NAME).is_file() and not _legacy_run(run_dir):
        raise NasError(
            f"{_cut(run_dir)} is not a nasforge run directory (no {MARKER_NAME}), so it holds "
            "no run to resume; check --out"
        )
    _check_owner(run_dir, command)
    from nas.runtime.lock import busy_message, owned_elsewhere

    if owned_elsewhere(run_dir):
        raise NasError(busy_message(run_dir))
    if not checkpoint.is_file():
        raise NasError(
            f"{_cut(run_dir)} stopped before its first checkpoint, so there is nothing to resume; "
            f"start it again without --resume: {restart_command(run_dir, command)}"
        )


def claim_run_dir(run_dir: Path, command: str, config: Any, world_size: int, resume: bool) -> Any:
    """Make `run_dir` this run's (main process, after every input was checked): lock it, mark
    it, drop temp files a kill left and, for a new run, a dead run's results; write config.yaml.

    Returns the held RunDirLock (None when the launcher holds it). Raises NasError when another
    process owns the folder.
    """
    from nas.io import remove_temp_files
    from nas.runtime.lock import RunDirLock, held_by_launcher

    lock = None
    if not held_by_launcher(run_dir):
        lock = RunDirLock(run_dir)
        lock.acquire()
    try:
        write_marker(run_dir, command)
        for folder in (run_dir, run_dir / "checkpoints"):
            remove_temp_files(folder)
        if not resume:
            for name in STALE_RESULTS.get(command, []):
                (run_dir / name).unlink(missing_ok=True)
            write_config(config, run_dir, world_size)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock


@contextlib.contextmanager
def hold_for_workers(args: argparse.Namespace) -> Iterator[None]:
    """In the `nas` launcher: check --out and hold its lock while the workers run.

    The workers find the held folder in HELD_LOCK_ENV and do not take the lock themselves, so
    torchrun's restarts of them are never refused. Without --out the folder's name is only known
    to the workers (it comes from their config): rank 0 then takes the lock. On other nodes
    (--node-rank above 0) node 0's launcher holds it. A folder the workers never claimed (they
    failed on bad input) is left as it was: the lock file, and the folder if made here, go.
    Raises NasError.
    """
    from nas.runtime.lock import HELD_LOCK_ENV, LOCK_NAME, RunDirLock

    command = getattr(args, "command", None)
    if command not in STALE_RESULTS or args.out is None or (args.node_rank or 0) > 0:
        yield
        return
    check_out_path(args.out)
    run_dir = Path(args.out)
    if args.resume:
        check_resume_dir(run_dir, command)
    else:
        check_new_run_dir(run_dir, command)
    created = not run_dir.exists()
    had_lock_file = (run_dir / LOCK_NAME).exists()
    lock = RunDirLock(run_dir)
    lock.acquire()
    previous = os.environ.get(HELD_LOCK_ENV)
    os.environ[HELD_LOCK_ENV] = str(run_dir.resolve())
    try:
        yield
    finally:
        _restore_env(HELD_LOCK_ENV, previous)
        lock.release()
        if not (run_dir / MARKER_NAME).exists():  # no worker claimed it: undo the lock file
            if not had_lock_file:
                (run_dir / LOCK_NAME).unlink(missing_ok=True)
            if created and not any(run_dir.iterdir()):
                run_dir.rmdir()


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def write_marker(run_dir: Path, command: str) -> None:
    """Mark `run_dir` as a run of `nas COMMAND` (kept when it is already marked)."""
    import json

    from nas.io import atomic_write_text

    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / MARKER_NAME
    if not marker.is_file():
        data = {"format": MARKER_FORMAT, "command": command}
        atomic_write_text(marker, json.dumps(data) + "\n")


def restart_command(run_dir: Path, command: str) -> str:
    """The command line that starts the run in `run_dir` again from scratch, in place."""
    import shlex

    from nas.config import load_yaml

    recorded = None
    if (run_dir / "config.yaml").is_file():
        try:
            recorded = (load_yaml(run_dir / "config.yaml") or {}).get("meta", {}).get("command")
        except (NasError, AttributeError):
            recorded = None
    if not isinstance(recorded, str) or len(recorded) > 300:
        where = shlex.quote(str(run_dir))
        return f"nas {command} --out {where} (with the options it was first started with)"
    try:
        words = [w for w in shlex.split(recorded) if w != "--resume"]
    except ValueError:  # an unbalanced quote: recorded by a nasforge that did not quote
        words = [w for w in recorded.split() if w != "--resume"]
    if "--out" not in words and not any(w.startswith("--out=") for w in words):
        words += ["--out", str(run_dir)]
    return shlex.join(words)


def _check_owner(run_dir: Path, command: str) -> None:
    """Refuse a folder that is not a run of `nas COMMAND` made by nasforge."""
    marker = run_dir / MARKER_NAME
    if not marker.is_file():
        if _legacy_run(run_dir):
            return
        names = sorted(p.name for p in run_dir.iterdir())
        shown = ", ".join(_short(n, 40) for n in names[:3]) + (", ..." if len(names) > 3 else "")
        raise NasError(
            f"{_cut(run_dir)} is not empty ({shown}) and nasforge did not create it; nasforge "
            "writes runs only into new or empty folders, so choose another --out"
        )
    owner = _marker_command(marker)
    if owner != command:
        what = f"a nas {owner} run" if owner else f"an unreadable {MARKER_NAME}"
        raise NasError(
            f"{_cut(run_dir)} holds {what}, not a nas {command} run; choose another --out"
        )


def _owned(run_dir: Path) -> bool:
    return (run_dir / MARKER_NAME).is_file() or _legacy_run(run_dir)


def _marker_command(marker: Path) -> str | None:
    import json

    try:
        data = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT:
        return None
    command = data.get("command")
    return command if isinstance(command, str) else None


def _legacy_run(run_dir: Path) -> bool:
    """A run made before run directories were marked: a checkpoint and a config.yaml with the
    `meta` section nasforge writes.
    """
    import yaml

    config, checkpoint = run_dir / "config.yaml", run_dir / "checkpoints" / "last.pt"
    if not (config.is_file() and checkpoint.is_file()):
        return False
    try:
        data = yaml.safe_load(config.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return (
        isinstance(data, dict)
        and isinstance(data.get("meta"), dict)
        and ("nasforge_version" in data["meta"])
    )


def _short(text: str, limit: int = 120) -> str:
    """`text` cut to `limit` characters, so an error line never echoes a huge value."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cut(path: Path) -> str:
    """A path for an error line, shortened like `_short`."""
    return _short(str(path))
