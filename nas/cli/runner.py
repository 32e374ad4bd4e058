"""What the `nas` commands that write one run directory share: their parser (--config, --set,
flags, --resume, --print-config, launcher flags), the request they make of nas/jobs.py, the
start of several processes, and the lines printed at the end. The run itself (config, run
directory, engine) is in nas/runs.py, shared with the Python API.

Nothing here imports torch at module level: `import nas.cli` stays light.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from nas.cli import flags
from nas.cli.flags import Flag, flag_settings
from nas.errors import NasError
from nas.runs import RunCommand, RunRequest, check_before_launch, prepare_run_dir, resolve_config


def request(args: argparse.Namespace, command: RunCommand, command_flags: Sequence[Flag]) -> Any:
    """The RunRequest of a parsed command line: flags < --set, over the --config file."""
    from nas.config import parse_assignment

    settings = list(flag_settings(args, command_flags))
    settings += [parse_assignment(text) for text in args.overrides]
    return RunRequest(command.name, settings, args.config, args.out, args.resume)


def add_parser(
    commands: Any,
    command: RunCommand,
    command_flags: Sequence[Flag],
    handler: Callable[[argparse.Namespace], int],
    description: str,
    help: str,
    example: str,
    pre_launch: Callable[[argparse.Namespace], Any] | None = None,
) -> argparse.ArgumentParser:
    """The subparser of a run command: --config, --set, its flags, --resume, --print-config and
    the launcher flags. `pre_launch` (default: `check_before_launch` of its request) runs before
    torchrun.
    """
    parser = commands.add_parser(command.name, help=help, description=description)
    flags.config_arguments(parser, example)
    flags.add_flags(parser, command_flags)
    flags.run_arguments(parser)
    flags.launch_arguments(parser)

    def check(args: argparse.Namespace) -> Any:
        world_size = (args.nproc_per_node or 1) * (args.nnodes or 1)
        return check_before_launch(request(args, command, command_flags), command, world_size)

    parser.set_defaults(handler=handler, pre_launch=pre_launch or check)
    return parser


def print_config(
    args: argparse.Namespace, command: RunCommand, command_flags: Sequence[Flag]
) -> int:
    """`--print-config`: the config the command would run, as YAML on stdout; writes nothing.
    With --resume, the saved config with the allowed changes. Raises NasError.
    """
    import yaml

    asked = request(args, command, command_flags)
    config = prepare_run_dir(asked, command)[0] if args.resume else resolve_config(asked, command)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return 0


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


def finish(job: Any, lines: Callable[[], Iterable[str]]) -> int:
    """End of a run (a nas.jobs.Job): the exit status, and on the main process the command's
    `lines()` and where TensorBoard finds the run. An interrupted run printed its message already.
    """
    if job.record is None:
        return 130
    if not job.runtime.is_main:  # rank 0 reports
        return 0
    for line in lines():
        print(line)
    print(f"TensorBoard: tensorboard --logdir {job.run_dir / 'tb'}")
    return 0
