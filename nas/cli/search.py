"""`nas search`: search a cell architecture with a supernet."""

from __future__ import annotations

import argparse
from typing import Any

from nas.cli import flags, runner
from nas.cli.flags import Flag
from nas.jobs import COMMANDS, run_job

FLAGS = (
    flags.DATASET,
    flags.DATA_DIR,
    flags.DATA_FILE,
    flags.IMAGE_SIZE,
    flags.WORKERS,
    flags.EPOCHS.with_help("search epochs"),
    flags.BATCH_SIZE,
    flags.LAYERS,
    flags.CHANNELS,
    *flags.OUTPUT,
    Flag(
        "--strategy",
        "strategy.name",
        "search strategy: {names} (default: darts)",
        names_from="nas.strategies:STRATEGIES",
    ),
    Flag(
        "--space",
        "model.space",
        "search space: {names} (default: darts)",
        names_from="nas.spaces:SPACES",
    ),
    Flag("--order", "strategy.order", "1: first order, 2: unrolled", int, choices=(1, 2)),
)


COMMAND = COMMANDS["search"]


def add_parser(commands: Any) -> None:
    """`nas search` and its options."""
    runner.add_parser(
        commands,
        COMMAND,
        FLAGS,
        run,
        help="search a cell architecture with a supernet (DARTS)",
        description="Search a cell architecture. Writes a run directory with genotype.json, "
        "genotypes.jsonl, metrics.jsonl, config.yaml, checkpoints/ and tb/ (TensorBoard). "
        "Defaults: DARTS on digits, 50 epochs, 8 cells, C=16, batch 64.",
        example="data.batch_size=32",
    )


def run(args: argparse.Namespace) -> int:
    """Search; print the genotype and how to train it."""
    if args.print_config:
        return runner.print_config(args, COMMAND, FLAGS)
    job = run_job(runner.request(args, COMMAND, FLAGS))

    def lines() -> list[str]:
        genotype, record = job.run_dir / "genotype.json", job.record
        last = []  # a resumed run that had finished runs no epoch
        if record:
            last.append(
                f"epoch {record['epoch']}: train acc {record['train_acc']:.3f}, "
                f"val acc {record['val_acc']:.3f}, {record['epoch_seconds']:.1f} s/epoch"
            )
        return [
            *last,
            f"genotype: {job.task.genotype().to_notation()}",
            f"written: {genotype}",
            f"train it: nas train --genotype {genotype} {_dataset_arguments(job.config)}",
        ]

    return runner.finish(job, lines)


def _dataset_arguments(config: Any) -> str:
    """`--dataset NAME` and `--set data.KEY=VALUE` for each of the dataset's own options that
    differs from its default, so that the printed command trains on the same data."""
    import dataclasses
    import shlex

    from nas.data import DATASETS

    arguments = ["--dataset", config.data.name]
    defaults = DATASETS.options(config.data.name)()
    for key, value in dataclasses.asdict(config.data.options).items():
        if value != getattr(defaults, key):
            arguments += ["--set", f"data.{key}={value}"]
    return shlex.join(arguments)
