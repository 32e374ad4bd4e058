"""One trial: the command's config with the trial's parameters, run by the engine, reporting each
epoch's metric to the study. Runs on every process of a DDP trial; only rank 0 talks to optuna.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from nas.config import parse_assignment
from nas.errors import NasError
from nas.tune.commands import TunableCommand
from nas.tune.config import ParamSpec, TuneConfig


class TrialPruned(Exception):
    """Raised by the epoch hook on every process when the pruner stops the trial."""


def trial_config(
    command: TunableCommand, base: dict[str, Any], overrides: list[str], params: dict[str, Any]
) -> Any:
    """The command's config: `base` sections < `--set` overrides < the trial's `params`, checked
    and resolved. Raises NasError (a sampled combination the command refuses).
    """
    from nas.runs import build_config

    overrides_then_params = itertools.chain(
        (parse_assignment(text) for text in overrides), params.items()
    )
    return build_config(command.config_class, [(base, "--config")], overrides_then_params)


def suggest(trial: Any, specs: dict[str, ParamSpec]) -> dict[str, Any]:
    """Sample every declared parameter from an optuna trial."""
    params: dict[str, Any] = {}
    for key, spec in specs.items():
        if spec.type == "categorical":
            params[key] = trial.suggest_categorical(key, list(spec.choices))
        elif spec.type == "int":
            step = int(spec.step or 1)
            params[key] = trial.suggest_int(key, spec.low, spec.high, step=step, log=spec.log)
        else:
            params[key] = trial.suggest_float(
                key, spec.low, spec.high, step=spec.step, log=spec.log
            )
    return params


class EpochReporter:
    """Engine epoch hook: reports `metric` to the optuna trial and asks the pruner.

    On rank 0 `trial` is the optuna trial; elsewhere it is None and the decision comes from rank
    0 by broadcast, so every process stops at the same epoch.
    """

    def __init__(self, trial: Any, metric: str, runtime: Any) -> None:
        self.trial = trial
        self.metric = metric
        self.runtime = runtime
        self.values: list[float] = []

    def __call__(self, record: dict[str, Any]) -> None:
        if self.metric not in record:
            raise NasError(
                f"tune.metric {self.metric!r} is not in the epoch metrics "
                f"({', '.join(sorted(record))})"
            )
        value = float(record[self.metric])
        self.values.append(value)
        prune = False
        if self.trial is not None:
            if math.isfinite(value):
                self.trial.report(value, step=int(record["epoch"]))
            prune = self.trial.should_prune()
        if self.runtime.broadcast_object(prune):
            raise TrialPruned(f"pruned after epoch {record['epoch']}")


def run_trial(
    command: TunableCommand,
    tune: TuneConfig,
    config: Any,
    run_dir: Path,
    runtime: Any,
    reporter: EpochReporter,
) -> dict[str, Any]:
    """Train the trial's run in `run_dir` through the engine; its last epoch's record.

    Raises TrialPruned when the pruner stops it, and whatever the run raises.
    """
    from nas.ownership import write_marker
    from nas.rundir import write_config
    from nas.runs import engine_epochs
    from nas.runtime.checkpoint import seed_everything

    config.run.out = str(run_dir)
    seed_everything(config.run.seed)
    if runtime.is_main:
        write_marker(run_dir, tune.command)  # a run of that command, as `nas COMMAND` makes
    # built first: a train trial's validation split (tune.holdout) is part of its config
    task = command.build(config, runtime, run_dir, tune)
    if runtime.is_main:
        write_config(config, run_dir, runtime.world_size)
    return engine_epochs(task, runtime, run_dir, config.run.epochs, epoch_hooks=[reporter])
