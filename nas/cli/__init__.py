"""The `nas` command: one module per subcommand over the shared runner (nas/cli/runner.py).
User errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from nas.cli import bench, export, grow, runner, sample, search, show, train, tune
from nas.cli.flags import Parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    from nas import __version__

    parser = Parser(prog="nas", description="nasforge: neural architecture search for PyTorch.")
    parser.add_argument("--version", action="version", version=f"nasforge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (search, train, grow, sample, show, export, tune, bench):
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `nas` console script; the exit status."""
    if "WORLD_SIZE" in os.environ:  # one of several processes
        from nas.errors import NasError
        from nas.runtime.launch import die_with_launcher, import_main_module, report_worker_error

        die_with_launcher()
        try:
            import_main_module()  # what the launcher's script registers
        except NasError as err:
            if not report_worker_error(str(err)):
                print(f"nas: error: {err}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    return runner.execute(args, argv)
