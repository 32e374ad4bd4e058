"""The commands `nas tune` can tune, in a registry: each builds its engine Task from a config.

To make another command tunable (for example `nas grow`), register a `TunableCommand` here:

    @TUNABLE_COMMANDS.register("grow")
    def _grow() -> TunableCommand:
        from nas.adanet.config import GrowConfig

        return TunableCommand(GrowConfig, lambda tune: ("val_acc", "val_loss"), _build_grow)

The entry is a factory, so registering imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.registry import Registry
from nas.tune.config import TuneConfig

# Every Task's engine record also has these.
TRAIN_METRICS = ("train_loss", "train_acc")


@dataclass(frozen=True)
class TunableCommand:
    """How `nas tune` runs one trial of a command.

    `build(config, runtime, run_dir, tune)` is called on every process with the trial's resolved
    config and the study settings, and returns the engine Task; it may write files into `run_dir`
    on the main process. `metrics(tune)` are the keys of the per-epoch record the objective may
    read, the default first.
    """

    config_class: type
    metrics: Callable[[TuneConfig], tuple[str, ...]]
    build: Callable[[Any, Any, Path, TuneConfig], Any]
    # Shown under best.yaml: how to reproduce the best trial.
    reproduce: str = ""


TUNABLE_COMMANDS: Registry[Callable[[], TunableCommand]] = Registry("tunable command")


@TUNABLE_COMMANDS.register("search")
def _search() -> TunableCommand:
    from nas.config import Config

    return TunableCommand(
        Config,
        lambda tune: ("val_acc", "val_loss", *TRAIN_METRICS),
        _build_search,
        reproduce="nas search --config best.yaml",
    )


@TUNABLE_COMMANDS.register("train")
def _train() -> TunableCommand:
    from nas.config import TrainConfig

    def metrics(tune: TuneConfig) -> tuple[str, ...]:
        return ("val_acc", "val_loss", "best_val_acc", *TRAIN_METRICS)

    return TunableCommand(
        TrainConfig, metrics, _build_train, reproduce="nas train --config best.yaml"
    )


def get_command(name: str) -> TunableCommand:
    """The tunable command `name`. Raises NasError naming the choices."""
    return TUNABLE_COMMANDS.get(name)()


def _build_search(config: Any, runtime: Any, run_dir: Path, tune: TuneConfig) -> Any:
    from nas.search_task import SearchTask

    return SearchTask(config, runtime)


def _build_train(config: Any, runtime: Any, run_dir: Path, tune: TuneConfig) -> Any:
    from nas.genotype import load_genotype
    from nas.train_task import TrainTask
    from nas.tune.holdout import holdout_train_task

    if config.model.genotype is None:
        raise NasError(
            "tuning nas train needs model.genotype in the config: a published name (DARTS_V2, "
            "...), a genotype.json or a search run directory"
        )
    genotype = load_genotype(config.model.genotype)
    if tune.holdout > 0:  # select on held-out training data, never on the test split
        task = holdout_train_task(config, genotype, runtime, tune.holdout)
    else:  # the config's own validation split (train.val_fraction)
        task = TrainTask(config, genotype, runtime)
    if runtime.is_main:
        genotype.save(run_dir / "genotype.json")
    return task
