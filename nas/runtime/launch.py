"""Start a command on several processes through torch's own launcher (torch.distributed.run).

`nas search|train --nproc-per-node N [--nnodes M --node-rank R --rdzv-endpoint HOST:PORT]
[--max-restarts K] ...` re-runs the same command line as
`python -m torch.distributed.run ... -m nas ...`, with torchrun's agent running in the
launcher's own process. Each worker then finds RANK, WORLD_SIZE and
LOCAL_RANK in its environment (see `init_runtime`). Running `torchrun ... -m nas ...` directly is
the same thing. When a script started the command (`nas.cli.main([...])`), each worker imports
that script first, as multiprocessing's spawn start method does, so that what it registers (a
dataset, a strategy) exists in the workers too.

`launch_function` runs a Python function on N spawned workers of the same agent: the Python
API's `nproc_per_node`.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import runpy
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nas.errors import NasError

# Set by the launcher: the time part of the default run directory name, the same in every worker.
RUN_STAMP_ENV = "NASFORGE_RUN_STAMP"
# Set by the launcher for its workers: where they report user errors, and the launcher's pid.
ERROR_DIR_ENV = "NASFORGE_ERROR_DIR"
LAUNCHER_PID_ENV = "NASFORGE_LAUNCHER_PID"
# Set by the launcher: its main module ("path:FILE" or "module:NAME"), which the workers import
# first, so that what a user's script registers (a dataset, a strategy) exists in them too.
MAIN_MODULE_ENV = "NASFORGE_MAIN_MODULE"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# What torchrun's agent handles (TORCHELASTIC_SIGNALS_TO_HANDLE's default).
_AGENT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)

# argparse dest -> torch.distributed.run flag
LAUNCHER_FLAGS = {
    "nproc_per_node": "--nproc-per-node",
    "nnodes": "--nnodes",
    "node_rank": "--node-rank",
    "rdzv_endpoint": "--rdzv-endpoint",
    "max_restarts": "--max-restarts",
}


def wants_launch(nproc_per_node: int | None, nnodes: int | None) -> bool:
    """True when the command asks for several processes and is not already one of them."""
    several = (nproc_per_node or 1) > 1 or (nnodes or 1) > 1
    return several and "WORLD_SIZE" not in os.environ


def check_options(options: dict[str, Any]) -> None:
    """Refuse launcher flags that torch.distributed.run would reject with a traceback, or that
    would start processes that can never meet. Raises NasError.
    """
    for key in ("nproc_per_node", "nnodes"):
        value = options.get(key)
        if value is not None and value < 1:
            raise NasError(f"{LAUNCHER_FLAGS[key]} must be at least 1")
    nnodes, node_rank = options.get("nnodes") or 1, options.get("node_rank")
    if nnodes > 1 and not options.get("rdzv_endpoint"):
        raise NasError(
            "--nnodes above 1 needs --rdzv-endpoint HOST:PORT (the same on every node) and "
            "--node-rank"
        )
    if node_rank is not None and not 0 <= node_rank < nnodes:
        raise NasError(f"--node-rank must be between 0 and --nnodes - 1 ({nnodes - 1})")
    if (options.get("max_restarts") or 0) < 0:
        raise NasError("--max-restarts must be 0 or more")
    endpoint = options.get("rdzv_endpoint")
    if endpoint is not None:
        host, _, port = str(endpoint).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise NasError(
                f"--rdzv-endpoint {str(endpoint)[:100]!r} is not HOST:PORT (a port 1-65535)"
            )


def launch(argv: Sequence[str], options: dict[str, Any]) -> int:
    """Run `nas ARGV` under torch.distributed.run, whose agent runs in this process; the exit
    status (2 when a worker stopped on a user error, printed once).

    `options` maps LAUNCHER_FLAGS keys to values (None: not given). A single node without a
    rendezvous endpoint uses `--standalone` (a free local port).
    """
    check_options(options)
    command = [] if options.get("rdzv_endpoint") else ["--standalone"]
    for key, flag in LAUNCHER_FLAGS.items():
        value = options.get(key)
        if value is not None:
            command += [flag, str(value)]
    # The workers get the whole command line: they find WORLD_SIZE set, so the launcher flags
    # in it start nothing (and config.yaml records the command as the user typed it).
    command += ["-m", "nas", *argv]
    os.environ[RUN_STAMP_ENV] = time.strftime("%Y%m%d-%H%M%S")
    main = main_module()
    if main is not None:
        os.environ[MAIN_MODULE_ENV] = main
    try:
        return run_agent(command)
    finally:
        os.environ.pop(MAIN_MODULE_ENV, None)


def main_module() -> str | None:
    """This process's main module as multiprocessing's spawn start method finds it: a script's
    path or a module's name; None for a package's `__main__` (`python -m nas`), which is not for
    importing, or when there is none (an interactive session).
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return None if spec.name.split(".")[-1] == "__main__" else f"module:{spec.name}"
    path = getattr(main, "__file__", None)
    return f"path:{os.path.abspath(path)}" if path else None


_main_import = {"running": False, "called_back": False}


def import_main_module() -> None:
    """In a worker of `launch`: import the launcher's main module (MAIN_MODULE_ENV) as
    multiprocessing does, as `__mp_main__`, so its `if __name__ == "__main__":` block does not
    run. Raises NasError when the module calls back into nas while it is imported (an unguarded
    `main(...)` would run the command twice in every worker).
    """
    reference = os.environ.get(MAIN_MODULE_ENV)
    if not reference or "WORLD_SIZE" not in os.environ:
        return
    if _main_import["running"]:
        _main_import["called_back"] = True
        raise NasError(_CALLED_WHEN_IMPORTED)
    kind, _, target = reference.partition(":")
    _main_import.update(running=True, called_back=False)
    try:
        if kind == "module":
            importlib.import_module(target)
        else:
            sys.path.insert(0, os.path.dirname(target))  # as when the script itself runs
            runpy.run_path(target, run_name="__mp_main__")
    finally:
        _main_import["running"] = False
    if _main_import["called_back"]:
        raise NasError(_CALLED_WHEN_IMPORTED)


_CALLED_WHEN_IMPORTED = (
    'the script runs nas when it is imported; put that call under `if __name__ == "__main__":` '
    "(each worker of --nproc-per-node imports the script to find what it registers)"
)


def run_agent(torchrun_args: list[str]) -> int:
    """Run torch.distributed.run's agent here, so the workers are this process's children: they
    die with it (see `die_with_launcher`) and report user errors to it through files. The exit
    status (2 after a user error, printed once).
    """
    from torch.distributed import run as torchrun

    status, message, failures = _agent(lambda: torchrun.run(torchrun.parse_args(torchrun_args)))
    if message is not None:
        print(f"nas: error: {message}", file=sys.stderr)
        return 2
    for rank, failure in sorted(failures.items()):  # their own output above says why
        print(
            f"nas: worker rank {rank} (pid {failure.pid}) failed with exit code {failure.exitcode}",
            file=sys.stderr,
        )
    return status


def launch_function(function: Callable[..., Any], args: tuple, nproc_per_node: int) -> int:
    """Run `function(*args)` on `nproc_per_node` processes of this node under torch's elastic
    agent (as `--standalone` does): spawned workers, which get `args` pickled and import the
    caller's main module as multiprocessing does. The exit status: 0, or 128 + a signal that
    stopped the run.

    Raises NasError with the user error a worker reported, and torch's ChildFailedError (with
    the workers' tracebacks) when one failed otherwise.
    """
    import uuid

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    options = torchrun.parse_args(
        ["--nproc-per-node", str(nproc_per_node), "--max-restarts", "0", "nas"]
    )
    # What torchrun's --standalone sets: a rendezvous on a free local port.
    options.rdzv_backend, options.rdzv_endpoint = "c10d", "localhost:0"
    options.rdzv_id = str(uuid.uuid4())
    config = torchrun.config_from_args(options)[0]
    raised: list[ChildFailedError] = []

    def start() -> None:
        try:
            elastic_launch(config, function)(*args)
        except ChildFailedError as err:
            raised.append(err)
            raise

    status, message, failures = _agent(start)
    if message is not None:
        raise NasError(message)
    if raised:
        raise raised[0]
    return status


def _agent(start: Callable[[], None]) -> tuple[int, str | None, dict[int, Any]]:
    """Call `start()`, which runs torch's elastic agent, with the environment its workers
    report to; (exit status, the user error a worker reported or None, failed workers by rank).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    handled = {sig: signal.getsignal(sig) for sig in _AGENT_SIGNALS}  # the agent replaces them
    saved_env = {key: os.environ.get(key) for key in (ERROR_DIR_ENV, LAUNCHER_PID_ENV)}
    with tempfile.TemporaryDirectory(prefix="nasforge-launch-") as errors:
        os.environ[ERROR_DIR_ENV] = errors
        os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
        quiet = _QuietAfterUserError(Path(errors))
        handlers = [
            *logging.getLogger("torch").handlers,
            *logging.getLogger("torch.distributed").handlers,
        ]
        for handler in handlers:
            handler.addFilter(quiet)
        failures = {}
        try:
            start()
            status = 0
        except ChildFailedError as err:
            failures = err.failures
            status = 1
        except SignalException as err:
            print(
                f"nas: stopped by {signal.Signals(err.sigval).name}; the workers were stopped "
                "too (completed epochs are checkpointed: continue with --resume)",
                file=sys.stderr,
            )
            status = 128 + int(err.sigval)
        finally:
            for handler in handlers:
                handler.removeFilter(quiet)
            for sig, action in handled.items():
                signal.signal(sig, action)
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        message = worker_error(Path(errors))
    return status, message, failures


class _QuietAfterUserError(logging.Filter):
    """Drops torch.distributed's log lines once a worker has reported a user error: the agent's
    'failed (exitcode ...)' and 'closing signal' lines would bury the one line that matters.
    """

    def __init__(self, errors: Path) -> None:
        super().__init__()
        self.errors = errors

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("torch.distributed"):
            return True
        return not any(self.errors.iterdir())


def report_worker_error(message: str) -> bool:
    """In a worker of `launch`: hand a user error's message to the launcher, which prints it
    once. False outside such a worker (the caller prints it).
    """
    folder = os.environ.get(ERROR_DIR_ENV)
    if not folder or "WORLD_SIZE" not in os.environ:
        return False
    rank = int(os.environ.get("RANK", "0"))
    try:
        (Path(folder) / f"rank-{rank:06d}.txt").write_text(message)
    except OSError:
        return False
    return True


def worker_error(folder: Path) -> str | None:
    """The user error the lowest rank reported, if any."""
    reports = sorted(folder.glob("rank-*.txt"))
    return reports[0].read_text() if reports else None


def die_with_launcher() -> None:
    """In a worker of `launch`: ask Linux to kill this process when the launcher dies (even by
    SIGKILL), and exit now if it already has. No-op elsewhere.
    """
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if not launcher or "WORLD_SIZE" not in os.environ or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The launcher may have died before the prctl: this process was then re-parented already.
    if os.getppid() != int(launcher):
        os._exit(1)
