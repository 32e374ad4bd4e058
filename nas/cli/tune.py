"""`nas tune`: an optuna study over the config of `nas search` or `nas train` (nas/tune/)."""

from __future__ import annotations

import argparse
from typing import Any

from nas.cli import flags
from nas.cli.flags import Flag

FLAGS = (
    Flag("--trials", "tune.trials", "trials the study should hold (tune.trials)", int),
    Flag("--sampler", "tune.sampler", "random, grid or tpe (tune.sampler)"),
    Flag("--pruner", "tune.pruner", "none, asha or hyperband (tune.pruner)"),
    Flag(
        "--timeout",
        "tune.timeout",
        "start no trial after this (tune.timeout)",
        float,
        metavar="SECONDS",
    ),
    flags.DEVICE,
)


def add_parser(commands: Any) -> None:
    """`nas tune` and its options."""
    parser = commands.add_parser(
        "tune",
        help="hyperparameter search over nas search or nas train (optuna)",
        description="Tune the fields a config declares under tune: params: with optuna "
        "(pip install 'nasforge[hpo]'). Each trial is a run directory in --out; re-running the "
        "same command continues the study. See docs/tuning.md.",
    )
    flags.config_arguments(parser, "tune.min_epochs=2", "YAML config with a tune: section")
    flags.add_flags(parser, FLAGS)
    parser.add_argument(
        "--storage",
        metavar="URL_OR_FILE",
        help="an RDB URL (postgresql://...) or a journal file shared by several workers "
        "(default: SQLite in --out)",
    )
    parser.add_argument("--study", metavar="NAME", help="study name (default: the config's name)")
    parser.add_argument("--out", metavar="DIR", help="study directory (default: runs/tune-NAME)")
    flags.launch_arguments(parser)
    parser.set_defaults(handler=run, pre_launch=_check_before_launch)


def _check_before_launch(args: argparse.Namespace) -> None:
    from nas.tune.run import plan

    plan(args, list(flags.flag_settings(args, FLAGS)))


def run(args: argparse.Namespace) -> int:
    """Run the study (or continue it); print the best trial."""
    from nas.tune.run import tune_main

    return tune_main(args, list(flags.flag_settings(args, FLAGS)))
