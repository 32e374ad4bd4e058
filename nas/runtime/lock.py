"""One owner per run directory: a non-blocking `flock` on RUN_DIR/.nasforge.lock.

The kernel drops a flock when its holder exits, however it exits (kill -9 included), so a dead
run never leaves its directory locked. The lock file stays; only the lock on it matters.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from nas.errors import NasError

LOCK_NAME = ".nasforge.lock"
# Set by the `nas` launcher to the run directory whose lock it holds for its workers.
HELD_LOCK_ENV = "NASFORGE_RUN_LOCK"


class RunDirLock:
    """The lock of one run directory, held from `acquire()` until `release()` or process exit."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, command: str | None = None) -> None:
        """Take the lock and record this process as its holder.

        Raises NasError naming the holder when another process has it. Creates the directory.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise NasError(busy_message(self.path.parent)) from None
        os.ftruncate(fd, 0)
        what = command or " ".join(["nas", *sys.argv[1:]])
        os.write(fd, f"{os.getpid()} {what[:200]}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(run_dir: Path) -> bool:
    """True when a live process holds the lock of `run_dir` (read-only probe)."""
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def busy_message(run_dir: Path) -> str:
    """The refusal for a run directory another process owns: who holds it and what to do."""
    try:
        holder = (run_dir / LOCK_NAME).read_text().strip()[:200] or "unknown"
    except OSError:
        holder = "unknown"
    pid, _, command = holder.partition(" ")
    return (
        f"{run_dir} is in use by a running nasforge process (pid {pid}: {command or '?'}); "
        "wait for it to end or stop it, or choose another --out"
    )


def held_by_launcher(run_dir: Path) -> bool:
    """True in a worker whose `nas` launcher holds the lock of `run_dir` for it."""
    held = os.environ.get(HELD_LOCK_ENV)
    return bool(held) and Path(held).resolve() == run_dir.resolve()


def owned_elsewhere(run_dir: Path) -> bool:
    """True when a process other than this run's own launcher holds the lock of `run_dir`.

    Only the first process of a run asks: on the other nodes of a multi-node run the lock (seen
    over shared storage) is node 0's launcher's.
    """
    if os.environ.get("RANK", "0") != "0":
        return False
    return is_locked(run_dir) and not held_by_launcher(run_dir)
