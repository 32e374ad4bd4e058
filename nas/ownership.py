"""Who may write a run directory: nasforge writes only into folders it marked as its runs, one
process owns a run at a time, and restarts, resumes and launchers touch only nasforge's files.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.io import TEMP_SUFFIX

# Written into every run directory nasforge creates (or takes while empty). Only a folder with
# it is ever restarted, resumed or cleaned up; any other non-empty folder is the user's.
MARKER_NAME = ".nasforge-run"
MARKER_FORMAT = "nasforge.run"
# What a restart before the first checkpoint deletes: results of the run that died.
STALE_RESULTS = {
    "search": ["genotype.json", "op_weights_normal.png", "op_weights_reduce.png"],
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
            f"{shown_path(run_dir)} already holds a run; continue it with --resume or choose "
            "another --out"
        )


def check_resume_dir(run_dir: Path, command: str) -> None:
    """--resume needs a run of `command` with a checkpoint that no live process owns."""
    if not run_dir.is_dir():
        raise NasError(
            f"{shown_path(run_dir)} does not exist, so it holds no checkpoint to resume; "
            "check --out"
        )
    checkpoint = run_dir / "checkpoints" / "last.pt"
    if not (run_dir / MARKER_NAME).is_file() and not _legacy_run(run_dir):
        raise NasError(
            f"{shown_path(run_dir)} is not a nasforge run directory (no {MARKER_NAME}), so it "
            "holds no run to resume; check --out"
        )
    _check_owner(run_dir, command)
    from nas.runtime.lock import busy_message, owned_elsewhere

    if owned_elsewhere(run_dir):
        raise NasError(busy_message(run_dir))
    if not checkpoint.is_file():
        raise NasError(
            f"{shown_path(run_dir)} stopped before its first checkpoint, so there is nothing to "
            f"resume; start it again without --resume: {restart_command(run_dir, command)}"
        )


def claim_run_dir(
    run_dir: Path,
    command: str,
    config: Any,
    world_size: int,
    resume: bool,
    command_line: str | None = None,
) -> Any:
    """Make `run_dir` this run's (main process, after every input was checked): lock it, mark
    it, drop temp files a kill left and, for a new run, a dead run's results; write config.yaml
    (with `command_line`, see nas.rundir.write_config).

    Returns the held RunDirLock (None when the launcher holds it). Raises NasError when another
    process owns the folder.
    """
    from nas.io import remove_temp_files
    from nas.rundir import write_config
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
            write_config(config, run_dir, world_size, command_line)
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


def interrupted_message(command: str, run_dir: Path, checkpointed: bool) -> str:
    """What a Ctrl-C leaves: a run to --resume, or (before the first checkpoint) one to start
    again with the same command.
    """
    import shlex

    if checkpointed:
        return (
            "interrupted; completed epochs are checkpointed. Continue with: "
            f"nas {command} --out {shlex.quote(str(run_dir))} --resume"
        )
    return (
        "interrupted before the first checkpoint, so there is nothing to resume. Start it again "
        f"with: {restart_command(run_dir, command)}"
    )


def _check_owner(run_dir: Path, command: str) -> None:
    """Refuse a folder that is not a run of `nas COMMAND` made by nasforge."""
    marker = run_dir / MARKER_NAME
    if not marker.is_file():
        if _legacy_run(run_dir):
            return
        names = sorted(p.name for p in run_dir.iterdir())
        shown = ", ".join(_short(n, 40) for n in names[:3]) + (", ..." if len(names) > 3 else "")
        raise NasError(
            f"{shown_path(run_dir)} is not empty ({shown}) and nasforge did not create it; "
            "nasforge writes runs only into new or empty folders, so choose another --out"
        )
    owner = _marker_command(marker)
    if owner != command:
        what = f"a nas {owner} run" if owner else f"an unreadable {MARKER_NAME}"
        raise NasError(
            f"{shown_path(run_dir)} holds {what}, not a nas {command} run; choose another --out"
        )


def check_study_folder(folder: Path) -> None:
    """`nas tune --out`: a missing or empty folder, or a study nasforge made. Several workers
    share one study folder (each trial has its own run directory), so it takes no lock. Raises
    NasError; writes nothing.
    """
    check_out_path(str(folder))
    if not folder.is_dir():
        return
    names = [p.name for p in folder.iterdir() if not p.name.endswith(TEMP_SUFFIX)]
    if not names:  # empty, or another worker is writing the marker right now
        return
    if not (folder / MARKER_NAME).is_file() and (folder / "tune.yaml").is_file():
        return  # a study from before folders were marked
    _check_owner(folder, "tune")


def owned(run_dir: Path) -> bool:
    """True for a run directory nasforge made (marked, or a run from before markers)."""
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


def shown_path(path: Path) -> str:
    """A path for an error line, shortened like `_short`."""
    return _short(str(path))
