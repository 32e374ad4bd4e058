"""What every run of `nas search`, `nas train` and `nas grow` shares, from the command line, from
Python (nas/api.py) or in `nas tune`: the config (defaults < config file < settings), the run
directory and its rules (nas/ownership.py), the runtime, the engine run.

A run is described by a `RunRequest`, which the CLI fills from its flags and nas.api from its
arguments. Nothing here imports torch at module level: `import nas.cli` stays light.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import NasError

# What may differ between a run's saved config and a resume of it.
# Not run.epochs: the cosine schedule is a function of the epoch budget.
RESUMABLE_CHANGES = {"run.device", "run.out"}


@dataclass
class RunRequest:
    """One run of a command: where its config comes from and where it writes.

    `settings` are (dotted config key, value) pairs applied in order over the defaults and the
    `config` file (a path) or mapping ({section: {key: value}}); `out` is the run directory
    (None: runs/<command>-<label>-<time>); `resume` continues the run in `out`.
    """

    command: str
    settings: list[tuple[str, Any]] = field(default_factory=list)
    config: str | dict[str, Any] | None = None
    out: str | None = None
    resume: bool = False
    # What started the run, for config.yaml (None: `nas` and this process's arguments).
    command_line: str | None = None


@dataclass(frozen=True)
class RunCommand:
    """A command that writes one run directory: `nas search`, `nas train`, `nas grow`."""

    name: str
    # Imported when called: the config class of the command.
    config_class: Callable[[], type]
    # The middle of the default run directory name, runs/<name>-<label(config)>-<time>.
    label: Callable[[Any], str]


def build_config(
    config_class: type,
    sections: Iterable[tuple[Any, str]],
    settings: Iterable[tuple[str, Any]],
    fit_data: bool = True,
) -> Any:
    """Defaults < each (YAML data, where it came from) of `sections` < each (key, value) of
    `settings`, checked and resolved (with `fit_data`, the unset data-dependent values from the
    dataset, which is loaded for it). Raises NasError.
    """
    from nas.config import apply_dict, validate

    config = config_class()
    for data, where in sections:
        apply_dict(config, data, where)
    for key, value in settings:
        config.set(key, value)
    validate(config)
    config.resolve(fit_data)
    return config


def resolve_config(
    request: RunRequest,
    command: RunCommand,
    base: Any = None,
    base_file: str = "",
    fit_data: bool = True,
) -> Any:
    """Defaults < saved config `base` (resume; read from `base_file`) < the request's config <
    its settings; `fit_data` as in `build_config`. Raises NasError.
    """
    from nas.config import load_yaml

    def sections() -> Iterator[tuple[Any, str]]:  # read in turn, so errors come in this order
        if base is not None:
            yield base, base_file
        if isinstance(request.config, dict):
            yield request.config, "config"
        elif request.config:
            yield load_yaml(request.config), str(request.config)

    return build_config(command.config_class(), sections(), request.settings, fit_data)


def prepare_run_dir(request: RunRequest, command: RunCommand) -> tuple[Any, Path]:
    """Resolve the config and the run directory of a run; writes nothing.

    A new run gets `out` or `runs/<command>-<label(config)>-<time>`, which must be missing,
    empty, or a run of this command that stopped before its first checkpoint (it restarts in
    place). A resume reloads the saved config and refuses changes other than RESUMABLE_CHANGES.
    A worker that torchrun restarted turns `request` into a resume. Raises NasError.
    """
    from nas.config import load_yaml
    from nas.ownership import check_new_run_dir, check_out_path, check_resume_dir, owned, shown_path
    from nas.rundir import run_stamp
    from nas.runtime.dist import restarted

    if request.out is not None:
        check_out_path(request.out)
    if not request.resume:
        config = resolve_config(request, command)
        if config.run.out is None:
            config.run.out = f"runs/{command.name}-{command.label(config)}-{run_stamp()}"
        check_out_path(config.run.out)
        run_dir = Path(config.run.out)
        if (run_dir / "checkpoints" / "last.pt").exists() and restarted() and owned(run_dir):
            # torchrun restarted this worker after a failure: continue from the last checkpoint.
            request.resume, request.out = True, str(run_dir)
        else:
            check_new_run_dir(run_dir, command.name)
            return config, run_dir
    if request.out is None:
        raise NasError("--resume needs --out DIR, the run directory to continue")
    run_dir = Path(request.out)
    check_resume_dir(run_dir, command.name)
    saved = load_yaml(run_dir / "config.yaml")
    if not isinstance(saved, dict):
        raise NasError(
            f"{shown_path(run_dir)}/config.yaml is not a run's saved config; start a new run"
        )
    config = resolve_config(request, command, saved, f"{shown_path(run_dir)}/config.yaml")
    changed = changed_keys(saved, config.to_dict(), RESUMABLE_CHANGES)
    if changed:
        raise NasError(
            f"--resume continues the run as saved in {shown_path(run_dir)}/config.yaml, but this "
            f"command changes {', '.join(changed)}; drop those options or start a new run"
        )
    return config, run_dir


def changed_keys(saved: Any, requested: dict[str, Any], allowed: set[str]) -> list[str]:
    """The `section.key`s whose value in `requested` differs from the `saved` config (a dict
    from YAML), leaving out the `allowed` ones.
    """
    return [
        f"{section}.{key}"
        for section, values in requested.items()
        for key, value in values.items()
        if saved.get(section, {}).get(key) != value and f"{section}.{key}" not in allowed
    ]


def check_before_launch(request: RunRequest, command: RunCommand, world_size: int) -> Any:
    """Resolve what every worker will resolve first (config, run directory, device), writing
    nothing, so that a refusal is raised once, before any worker starts; (config, run dir).
    Raises NasError.
    """
    from nas.rundir import check_world_size
    from nas.runtime.dist import resolve_device

    config, run_dir = prepare_run_dir(request, command)
    resolve_device(config.run.device)
    if request.resume:
        check_world_size(run_dir, world_size)
    return config, run_dir


def start_runtime(device: str, sync_batchnorm: bool) -> Any:
    """This process's runtime: one of several under torchrun, or the only one."""
    from nas.runtime import init_runtime

    return init_runtime(device, sync_batchnorm)


def start_run(config: Any, run_dir: Path, resume: bool) -> Any:
    """The runtime of a command's run, seeded. Writes nothing: the run directory is claimed in
    `run_engine`, once the task (data, model) was built from the checked inputs.
    """
    from nas.rundir import check_world_size
    from nas.runtime.checkpoint import seed_everything

    runtime = start_runtime(config.run.device, config.run.sync_batchnorm)
    if resume:
        check_world_size(run_dir, runtime.world_size)
    seed_everything(config.run.seed)
    return runtime


def run_engine(
    request: RunRequest,
    task: Any,
    config: Any,
    run_dir: Path,
    runtime: Any,
    banner: str,
    epochs: int | None = None,
    write: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    """Claim the run directory, call `write()` (main process, new runs), then run `task` under
    the engine (`epochs` engine epochs, default run.epochs); the last epoch's record, None when
    interrupted (printed). The run directory stays locked until the run ends.
    """
    from nas.ownership import claim_run_dir, interrupted_message

    lock = None
    command, resume = request.command, request.resume
    if runtime.is_main:  # every input was checked by now: the first write into the folder
        lock = claim_run_dir(
            run_dir, command, config, runtime.world_size, resume, request.command_line
        )
    try:
        if runtime.is_main and write is not None and not resume:
            write()
        epochs = epochs or config.run.epochs
        try:
            with runtime.until_done():
                return engine_epochs(task, runtime, run_dir, epochs, resume, banner)
        except KeyboardInterrupt:
            checkpointed = (run_dir / "checkpoints" / "last.pt").is_file()
            message = interrupted_message(command, run_dir, checkpointed)
            print(f"\nnas: {message}", file=sys.stderr)
            return None
    finally:
        if lock is not None:
            lock.release()


def engine_epochs(
    task: Any,
    runtime: Any,
    run_dir: Path,
    epochs: int,
    resume: bool = False,
    banner: str | None = None,
    epoch_hooks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Run `task` for `epochs` engine epochs (from the checkpoint when `resume`), logging into
    `run_dir`; the last epoch's record. The main process prints `banner` with the epochs first.
    """
    from nas.logging import RunLogger
    from nas.runtime import Engine

    logger = RunLogger(run_dir, enabled=runtime.is_main)
    try:
        engine = Engine(task, runtime, logger, run_dir, epochs, epoch_hooks=epoch_hooks)
        start = engine.resume() if resume else 0
        if banner is not None and runtime.is_main:
            processes = f", {runtime.world_size} processes" if runtime.is_distributed else ""
            print(
                f"{banner}, epochs {start + 1}..{epochs}, device {runtime.device}{processes}, "
                f"run dir {run_dir}",
                file=sys.stderr,
            )
        return engine.run(start)
    finally:
        logger.close()


def note_unfinished(genotype: Any) -> None:
    """One stderr note (first process only) when the genotype's search had not finished."""
    from nas.genotype import unfinished_note

    note = unfinished_note(genotype)
    if note and os.environ.get("RANK", "0") == "0":
        print(f"nas: {note}", file=sys.stderr)
