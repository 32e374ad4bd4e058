"""The runs of `nas search`, `nas train` and `nas grow`, one function each: resolve the config and
the run directory, build the engine Task, run it. The CLI (nas/cli/) and the Python API
(nas/api.py) both call `run_job`, so a run is the same whichever started it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.runs import (
    RunCommand,
    RunRequest,
    note_unfinished,
    prepare_run_dir,
    run_engine,
    start_run,
)


def _search_config() -> type:
    from nas.config import Config

    return Config


def _train_config() -> type:
    from nas.config import TrainConfig

    return TrainConfig


def _grow_config() -> type:
    from nas.adanet.config import GrowConfig

    return GrowConfig


def _genotype_label(source: str) -> str:
    if source.lstrip().startswith("Genotype("):  # the notation names no file
        return "notation"
    path = Path(source)
    # cut: the label goes into a directory name, which the file system limits
    return (path.parent.name if path.name == "genotype.json" else path.stem)[:60]


COMMANDS = {
    "search": RunCommand("search", _search_config, lambda c: f"{c.strategy.name}-{c.data.name}"),
    "train": RunCommand(
        "train",
        _train_config,
        lambda c: (
            f"{c.model.baseline or _genotype_label(c.model.genotype or 'genotype')}-{c.data.name}"
        ),
    ),
    "grow": RunCommand("grow", _grow_config, lambda c: f"{c.adanet.generator}-{c.data.name}"),
}


@dataclass
class Job:
    """A run that ended: its config, run directory, runtime and task, and the last epoch's
    record (None when it was interrupted)."""

    config: Any
    run_dir: Path
    runtime: Any
    task: Any
    record: dict[str, Any] | None


def run_job(request: RunRequest, data: Any = None, genotype: Any = None) -> Job:
    """Run `request` in this process (one of several under torchrun). `data`, an ImageData given
    from Python, is the dataset `python` of the run; `genotype`, a Genotype given from Python,
    is what a train run trains. Raises NasError.
    """
    from nas.data.python import python_dataset

    with python_dataset(data):
        if request.command == "search":
            return _search(request)
        if request.command == "train":
            return _train(request, genotype)
        return _grow(request)


def _search(request: RunRequest) -> Job:
    config, run_dir = prepare_run_dir(request, COMMANDS["search"])
    from nas.search_task import SearchTask

    runtime = start_run(config, run_dir, request.resume)
    task = SearchTask(config, runtime)
    banner = (
        f"nas search: {config.strategy.name} on "
        f"{config.data.name}, space {config.model.space}, {config.model.layers} cells, "
        f"C={config.model.channels}"
    )
    record = run_engine(request, task, config, run_dir, runtime, banner)
    return Job(config, run_dir, runtime, task, record)


def _train(request: RunRequest, genotype: Any) -> Job:
    from nas.genotype import Genotype, load_genotype

    config, run_dir = prepare_run_dir(request, COMMANDS["train"])
    baseline = config.model.baseline
    if baseline is not None:
        if genotype is not None:
            raise NasError(f"a genotype and model={baseline!r} both choose the network; give one")
    elif request.resume:
        genotype = Genotype.load(run_dir / "genotype.json")
    elif genotype is None:
        if config.model.genotype is None:
            raise NasError(
                "nas train needs --genotype NAME_OR_FILE (a published name such as DARTS_V2, a "
                "genotype.json from nas search, or a search run directory) or --model NAME (a "
                "hand-designed network: cnn, mlp, logistic)"
            )
        genotype = load_genotype(config.model.genotype)
    if genotype is not None:
        note_unfinished(genotype)

    from nas.data import load_dataset
    from nas.logging import announce
    from nas.train_task import TrainTask, check_training_data

    announce(f"loading dataset {config.data.name}")
    data = load_dataset(config.data)  # a bad dataset is refused before the run dir is written
    check_training_data(config, data)
    runtime = start_run(config, run_dir, request.resume)
    task = TrainTask(config, genotype, runtime, data)
    if baseline is not None:
        network = f"the {baseline} baseline"
    else:
        network = (
            f"{config.model.genotype or 'a genotype'} ({config.model.network} network, "
            f"{config.model.layers} cells, C={config.model.channels})"
        )
    validation = config.train.val_fraction
    selection = (
        f"best.pt chosen on a validation split ({validation:.0%} of the training split)"
        if validation > 0
        else "no validation (train.val_fraction=0): best.pt is the last epoch"
    )
    banner = f"nas train: {network} on {config.data.name}; {selection}"
    write = None if genotype is None else lambda: genotype.save(run_dir / "genotype.json")
    record = run_engine(request, task, config, run_dir, runtime, banner, write=write)
    return Job(config, run_dir, runtime, task, record)


def _grow(request: RunRequest) -> Job:
    config, run_dir = prepare_run_dir(request, COMMANDS["grow"])
    from nas.adanet.task import GrowTask, check_grow_data
    from nas.data import load_dataset
    from nas.logging import announce

    announce(f"loading dataset {config.data.name}")
    data = load_dataset(config.data)  # a bad dataset is refused before the run dir is touched
    check_grow_data(config, data)
    runtime = start_run(config, run_dir, request.resume)
    task = GrowTask(config, runtime, data)
    ada = config.adanet
    if ada.schedule == "async" and task.shares == 1 and runtime.is_main:
        print(
            "nas grow: note: with one process (or one candidate) the async schedule has one "
            "share: it trains like sync, without forecasting",
            file=sys.stderr,
        )
    banner = (
        f"nas grow: {ada.generator} candidates on {config.data.name}, up to {ada.iterations} "
        f"iterations of {config.run.epochs} candidate epochs + 1 mixture epoch "
        f"({ada.mixture_epochs} passes), "
        f"{ada.schedule} schedule"
    )
    record = run_engine(request, task, config, run_dir, runtime, banner, task.total_epochs)
    return Job(config, run_dir, runtime, task, record)
