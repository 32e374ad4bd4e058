"""Command-line flags. A flag that sets a config key is declared once, as a `Flag`: the parser
gets the argument from it and the config gets the value from it. Flags override the --config
file; --set overrides both.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn


class _Formatter(argparse.HelpFormatter):
    """Fills a flag's `{names}` with the names its registry holds when help is shown, so that
    plugins are listed and parsing a command line imports no registry (nor torch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        names_from = getattr(action, "names_from", None)
        if text is None or names_from is None:
            return text
        if "torch" not in sys.modules:  # the registries' modules import it: seconds
            from nas.logging import announce

            announce("loading PyTorch to list the registered names")
        module, name = names_from.split(":")
        registry = getattr(importlib.import_module(module), name)
        return text.replace("{names}", ", ".join(registry.names()))


class Parser(argparse.ArgumentParser):
    """Argument errors as one line, like every other user error (exit status 2); help lists the
    names of the registries flags choose from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"nas: error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Flag:
    """A flag that sets one config key, e.g. `--epochs` -> `run.epochs`."""

    name: str
    key: str
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None
    # A flag without a value that sets the key to True.
    switch: bool = False
    # "module:NAME" of the Registry whose names `--help` shows in place of "{names}" in `help`.
    names_from: str | None = None

    @property
    def dest(self) -> str:
        """The argparse attribute: `--data-dir` -> `data_dir`."""
        return self.name.removeprefix("--").replace("-", "_")

    def with_help(self, help: str) -> Flag:
        """The same flag, described for one command."""
        return dataclasses.replace(self, help=help)

    def add_to(self, parser: argparse.ArgumentParser | Any) -> None:
        """Add the argument to `parser` (or an argument group); unset, it is None."""
        if self.switch:
            parser.add_argument(self.name, action="store_const", const=True, help=self.help)
            return
        action = parser.add_argument(
            self.name, type=self.type, choices=self.choices, metavar=self.metavar, help=self.help
        )
        action.names_from = self.names_from  # read by the help formatter


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    """Add every flag of `flags` to `parser`."""
    for flag in flags:
        flag.add_to(parser)


def flag_settings(args: argparse.Namespace, flags: Sequence[Flag]) -> Iterator[tuple[str, Any]]:
    """(config key, value) of each flag given on the command line, in declaration order."""
    for flag in flags:
        value = getattr(args, flag.dest)
        if value is not None:
            yield flag.key, value


# Flags of several commands.
DATASET = Flag(
    "--dataset", "data.name", "dataset: {names} (default: digits)", names_from="nas.data:DATASETS"
)
DATA_DIR = Flag(
    "--data-dir",
    "data.data_dir",
    "folder: one sub-folder of images per class; cifar10: the folder holding CIFAR-10",
    metavar="DIR",
)
DATA_FILE = Flag("--data-file", "data.data_file", "npz or csv: the data file", metavar="FILE")
IMAGE_SIZE = Flag(
    "--image-size",
    "data.image_size",
    "folder only: resize and centre-crop every image to SxS (default: the files' own size)",
    int,
    metavar="S",
)
WORKERS = Flag(
    "--workers",
    "data.workers",
    "loader processes reading the samples (default: 0, the main process)",
    int,
    metavar="N",
)
EPOCHS = Flag("--epochs", "run.epochs", "epochs", int)
BATCH_SIZE = Flag("--batch-size", "data.batch_size", "images per step (per process)", int)
LAYERS = Flag("--layers", "model.layers", "cells in the network", int)
CHANNELS = Flag("--channels", "model.channels", "initial channels C", int)
SEED = Flag("--seed", "run.seed", "random seed (default: 0)", int)
DEVICE = Flag("--device", "run.device", "auto, cpu, cuda or cuda:N (default: auto)")
OUT = Flag("--out", "run.out", "run directory (default: runs/...)", metavar="DIR")

# The output flags of every command that writes one run directory.
OUTPUT = (SEED, DEVICE, OUT)


def config_file(text: str) -> str:
    """The --config argument: a YAML file, or the file of a built-in config name."""
    from nas.configs import config_path
    from nas.errors import NasError

    try:
        return str(config_path(text))
    except NasError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def config_arguments(
    parser: argparse.ArgumentParser, example: str, config_help: str = "YAML config file"
) -> None:
    """--config and --set, which every command that takes a configuration has."""
    from nas.configs import builtin_names

    parser.add_argument(
        "--config",
        metavar="FILE_OR_NAME",
        type=config_file,
        help=f"{config_help} or a built-in name: {', '.join(builtin_names())}",
    )
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help=f"override a config field, e.g. --set {example} (repeatable)",
    )


def run_arguments(parser: argparse.ArgumentParser) -> None:
    """--resume and --print-config, for the commands that write one run directory."""
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out DIR from its checkpoint"
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (defaults, --config, flags, --set) as YAML and exit",
    )


def launch_arguments(parser: argparse.ArgumentParser) -> None:
    """Multi-process options, passed to torch.distributed.run (see docs/distributed.md)."""
    group = parser.add_argument_group("distributed (torch.distributed.run)")
    group.add_argument(
        "--nproc-per-node", type=int, metavar="N", help="processes on this node (default: 1)"
    )
    group.add_argument("--nnodes", type=int, metavar="M", help="number of nodes (default: 1)")
    group.add_argument("--node-rank", type=int, metavar="R", help="this node's rank (0..M-1)")
    group.add_argument(
        "--rdzv-endpoint", metavar="HOST:PORT", help="rendezvous address, the same on every node"
    )
    group.add_argument(
        "--max-restarts", type=int, metavar="K", help="restart failed workers K times (resume)"
    )
