"""What every command that runs the engine shares, `nas tune` included: the config (defaults <
--config < flags < --set), the run directory and its rules (nas/ownership.py), the checks before
torchrun starts workers, the runtime, the engine run, and the lines printed at the end.

Nothing here imports torch at module level: `import nas.cli` stays light.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.cli import flags
from nas.cli.flags import Flag, flag_settings
from nas.errors import NasError

# What may differ between a run's saved config and a --resume of it.
# Not run.epochs: the cosine schedule is a function of the epoch budget.
RESUMABLE_CHANGES = {"run.device", "run.out"}


@dataclass(frozen=True)
class RunCommand:
    """A command that writes one run directory: `nas search`, `nas train`, `nas grow`."""

    name: str
    # Imported when called: the config class of the command.
    config_class: Callable[[], type]
    flags: Sequence[Flag]
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
    args: argparse.Namespace,
    command: RunCommand,
    base: Any = None,
    base_file: str = "",
    fit_data: bool = True,
) -> Any:
    """Defaults < saved config `base` (resume; read from `base_file`) < --config file < flags <
    --set; `fit_data` as in `build_config`. Raises NasError.
    """
    from nas.config import load_yaml, parse_assignment

    def sections() -> Iterator[tuple[Any, str]]:  # read in turn, so errors come in this order
        if base is not None:
            yield base, base_file
        if args.config:
            yield load_yaml(args.config), args.config

    overrides = (parse_assignment(text) for text in args.overrides)
    settings = itertools.chain(flag_settings(args, command.flags), overrides)
    return build_config(command.config_class(), sections(), settings, fit_data)


def prepare_run_dir(args: argparse.Namespace, command: RunCommand) -> tuple[Any, Path]:
    """Resolve the config and the run directory of `nas COMMAND`; writes nothing.

    A new run gets `--out` or `runs/<command>-<label(config)>-<time>`, which must be missing,
    empty, or a run of this command that stopped before its first checkpoint (it restarts in
    place). `--resume` reloads the saved config and refuses changes other than RESUMABLE_CHANGES.
    Raises NasError.
    """
    from nas.config import load_yaml
    from nas.ownership import check_new_run_dir, check_out_path, check_resume_dir, owned, shown_path
    from nas.rundir import run_stamp
    from nas.runtime.dist import restarted

    if args.out is not None:
        check_out_path(args.out)
    if not args.resume:
        config = resolve_config(args, command)
        if config.run.out is None:
            config.run.out = f"runs/{command.name}-{command.label(config)}-{run_stamp()}"
        check_out_path(config.run.out)
        run_dir = Path(config.run.out)
        if (run_dir / "checkpoints" / "last.pt").exists() and restarted() and owned(run_dir):
            # torchrun restarted this worker after a failure: continue from the last checkpoint.
            args.resume, args.out = True, str(run_dir)
        else:
            check_new_run_dir(run_dir, command.name)
            return config, run_dir
    if args.out is None:
        raise NasError("--resume needs --out DIR, the run directory to continue")
    run_dir = Path(args.out)
    check_resume_dir(run_dir, command.name)
    saved = load_yaml(run_dir / "config.yaml")
    if not isinstance(saved, dict):
        raise NasError(
            f"{shown_path(run_dir)}/config.yaml is not a run's saved config; start a new run"
        )
    config = resolve_config(args, command, saved, f"{shown_path(run_dir)}/config.yaml")
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


def add_parser(
    commands: Any,
    command: RunCommand,
    handler: Callable[[argparse.Namespace], int],
    description: str,
    help: str,
    example: str,
    pre_launch: Callable[[argparse.Namespace], Any] | None = None,
) -> argparse.ArgumentParser:
    """The subparser of a run command: --config, --set, its flags, --resume, --print-config and
    the launcher flags. `pre_launch` (default `check_before_launch`) runs before torchrun.
    """
    parser = commands.add_parser(command.name, help=help, description=description)
    flags.config_arguments(parser, example)
    flags.add_flags(parser, command.flags)
    flags.run_arguments(parser)
    flags.launch_arguments(parser)
    parser.set_defaults(
        handler=handler, pre_launch=pre_launch or (lambda args: check_before_launch(args, command))
    )
    return parser


def print_config(args: argparse.Namespace, command: RunCommand) -> int:
    """`--print-config`: the config the command would run, as YAML on stdout; writes nothing.
    With --resume, the saved config with the allowed changes. Raises NasError.
    """
    import yaml

    config = prepare_run_dir(args, command)[0] if args.resume else resolve_config(args, command)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return 0


def check_before_launch(args: argparse.Namespace, command: RunCommand) -> Any:
    """Resolve what every worker will resolve first (config, run directory, device), writing
    nothing, so that a refusal is printed once, before any worker starts; the config. Raises
    NasError.
    """
    from nas.rundir import check_world_size
    from nas.runtime.dist import resolve_device

    config, run_dir = prepare_run_dir(args, command)
    resolve_device(config.run.device)
    if args.resume:
        check_world_size(run_dir, (args.nproc_per_node or 1) * (args.nnodes or 1))
    return config


def execute(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run the parsed command (under torchrun when it asks for several processes); its exit
    status. User errors print one line and give 2; an interrupt gives 130.
    """
    try:
        if hasattr(args, "nproc_per_node") and "torch" not in sys.modules:
            from nas.logging import announce

            announce("loading PyTorch")  # the config checks import it: seconds of silence
        if _launch_requested(args):
            from nas.ownership import hold_for_workers
            from nas.runtime.launch import LAUNCHER_FLAGS, launch

            args.pre_launch(args)
            options = {key: getattr(args, key) for key in LAUNCHER_FLAGS}
            with hold_for_workers(args):
                return launch(sys.argv[1:] if argv is None else argv, options)
        return args.handler(args)
    except NasError as err:
        if not _reported_to_launcher(err):
            print(f"nas: error: {err}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:  # torch.OutOfMemoryError is a RuntimeError
        from nas.errors import out_of_memory_message

        message = out_of_memory_message(err, args.command)
        if message is None:
            raise
        print(f"nas: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nnas: interrupted", file=sys.stderr)
        return 130


def _reported_to_launcher(err: NasError) -> bool:
    """True when this is a worker of `nas ... --nproc-per-node N` and its launcher will print
    the error (once, for every worker).
    """
    if "WORLD_SIZE" not in os.environ:
        return False
    from nas.runtime.launch import report_worker_error

    return report_worker_error(str(err))


def _launch_requested(args: argparse.Namespace) -> bool:
    """True when a command asks for several processes and is not one of them yet. Raises
    NasError for bad launcher flags.
    """
    if not hasattr(args, "nproc_per_node") or getattr(args, "print_config", False):
        return False
    from nas.runtime.launch import LAUNCHER_FLAGS, check_options, wants_launch

    check_options({key: getattr(args, key) for key in LAUNCHER_FLAGS})
    return wants_launch(args.nproc_per_node, args.nnodes)


def start_runtime(device: str, sync_batchnorm: bool) -> Any:
    """This process's runtime: one of several under torchrun, or the only one."""
    from nas.runtime import init_runtime

    return init_runtime(device, sync_batchnorm)


def start_run(config: Any, run_dir: Path, args: argparse.Namespace) -> Any:
    """The runtime of a command's run, seeded. Writes nothing: the run directory is claimed in
    `run_engine`, once the task (data, model) was built from the checked inputs.
    """
    from nas.rundir import check_world_size
    from nas.runtime.checkpoint import seed_everything

    runtime = start_runtime(config.run.device, config.run.sync_batchnorm)
    if args.resume:
        check_world_size(run_dir, runtime.world_size)
    seed_everything(config.run.seed)
    return runtime


def run_engine(
    args: argparse.Namespace,
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
    if runtime.is_main:  # every input was checked by now: the first write into the folder
        lock = claim_run_dir(run_dir, args.command, config, runtime.world_size, args.resume)
    try:
        if runtime.is_main and write is not None and not args.resume:
            write()
        epochs = epochs or config.run.epochs
        try:
            with runtime.until_done():
                return engine_epochs(task, runtime, run_dir, epochs, args.resume, banner)
        except KeyboardInterrupt:
            checkpointed = (run_dir / "checkpoints" / "last.pt").is_file()
            message = interrupted_message(args.command, run_dir, checkpointed)
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


def finish(
    runtime: Any, record: dict[str, Any] | None, run_dir: Path, lines: Callable[[], Iterable[str]]
) -> int:
    """End of a run: the exit status, and on the main process the command's `lines()` and where
    TensorBoard finds the run. An interrupted run (`record` None) printed its message already.
    """
    if record is None:
        return 130
    if not runtime.is_main:  # rank 0 reports
        return 0
    for line in lines():
        print(line)
    print(f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    return 0


def note_unfinished(genotype: Any) -> None:
    """One stderr note (first process only) when the genotype's search had not finished."""
    from nas.genotype import unfinished_note

    note = unfinished_note(genotype)
    if note and os.environ.get("RANK", "0") == "0":
        print(f"nas: {note}", file=sys.stderr)
