"""`nas grow`: grow an ensemble of subnetworks (AdaNet)."""

from __future__ import annotations

import argparse
import json
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
    Flag("--target", "data.target", "csv only: the label column", metavar="COLUMN"),
    Flag("--iterations", "adanet.iterations", "at most this many iterations (3)", int),
    flags.EPOCHS.with_help("epochs each candidate trains (20)"),
    flags.BATCH_SIZE.with_help("samples per step, per process (64)"),
    Flag(
        "--generator",
        "adanet.generator",
        "subnetwork generator: {names} (default: mlp)",
        names_from="nas.adanet:GENERATORS",
    ),
    Flag(
        "--schedule",
        "adanet.schedule",
        "candidates on all processes (sync) or each on its own share of them (async)",
        choices=("sync", "async"),
    ),
    Flag("--mixture", "adanet.mixture", "mixture weights", choices=("scalar", "vector")),
    Flag(
        "--force-grow",
        "adanet.force_grow",
        "add the best candidate even when it does not lower the objective",
        switch=True,
    ),
    *flags.OUTPUT,
)


COMMAND = COMMANDS["grow"]


def add_parser(commands: Any) -> None:
    """`nas grow` and its options."""
    runner.add_parser(
        commands,
        COMMAND,
        FLAGS,
        run,
        help="grow an ensemble of subnetworks (AdaNet)",
        description="Grow an ensemble one subnetwork per iteration (AdaNet, Cortes et al. 2017). "
        "Writes a run directory with ensemble.json, candidates.jsonl, metrics.jsonl, "
        "config.yaml, checkpoints/ (last.pt, ensemble.pt) and tb/. Defaults: MLP candidates of "
        "width 128 on digits, 3 iterations, 20 epochs per candidate. See docs/adanet.md.",
        example="adanet.widths=[64,256]",
    )


def run(args: argparse.Namespace) -> int:
    """Grow; print the members, the objective and where the ensemble is."""
    if args.print_config:
        return runner.print_config(args, COMMAND, FLAGS)
    job = run_job(runner.request(args, COMMAND, FLAGS))
    task, ada, run_dir = job.task, job.config.adanet, job.run_dir

    def lines() -> list[str]:
        members = task.ensemble_dict()["members"]
        printed = [
            f"member {m['iteration'] + 1}: {json.dumps(m['architecture'])[:100]}" for m in members
        ]
        reason = (
            "no candidate lowered the objective" if task.stopped else "iteration budget reached"
        )
        printed.append(f"{len(members)} members after {len(task.reports)} iterations ({reason})")
        final = task.final_metrics
        if final:
            auc = f", test AUC {final['test_auc']:.4f}" if "test_auc" in final else ""
            printed.append(
                f"objective {final['objective']:.4f}, val acc {final['val_acc']:.4f}, "
                f"test acc {final['test_acc']:.4f}{auc}"
            )
        if ada.schedule == "async" and ada.forecast:
            s = task.stats
            printed.append(
                f"forecasts: leader guessed right {s['leader_hits']}/{s['leader_guesses']}, "
                f"candidates adopted {s['forecast_adopted']}/{s['forecast_candidates']}, "
                f"steps adopted {s['forecast_steps_adopted']}/{s['forecast_steps']}"
            )
        printed.append(f"written: {run_dir / 'ensemble.json'} (weights: checkpoints/ensemble.pt)")
        return printed

    return runner.finish(job, lines)
