"""The Python API: `nas.search`, `nas.train` and `nas.grow` run what the commands of the same
names run (the CLI is a layer over the same nas.jobs.run_job), `nas.sample` draws random
genotypes as `nas sample` does, and `nas.create_model` / `nas.load_model` build a network from a
genotype or a trained run. See docs/python-api.md.

`data` is a registered dataset's name (its options as settings), an ImageData, a torch Dataset
of (input, label) pairs or arrays `(x, y)`; nas/data/python.py turns the last two into an
ImageData. Settings are keyword arguments named as the command's flags (`epochs=2`,
`batch_size=32`, `strategy="gdas"`) or dotted config keys (`**{"strategy.tau_max": 5}`), set
and checked by the same code as the CLI's.
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.runs import RunRequest


@dataclass(frozen=True)
class SearchResult:
    """A finished search: the genotype it found, its run directory and the per-epoch records
    (metrics.jsonl)."""

    genotype: Any
    run_dir: Path
    metrics: list[dict[str, Any]]


@dataclass(frozen=True)
class TrainResult:
    """A finished training: the network best.pt holds (the epoch with the best validation
    accuracy, or the last without validation; eval mode, CPU; what `nas export` exports), its
    spec (genotype or baseline, sizes, the input normalisation), its run directory, the
    per-epoch records, and the accuracies of best.pt's weights: `val_acc` (None without
    validation) and `test_acc`, and `last_test_acc` of the final weights."""

    model: Any
    spec: dict[str, Any]
    run_dir: Path
    metrics: list[dict[str, Any]]
    val_acc: float | None = None
    test_acc: float | None = None
    last_test_acc: float | None = None


@dataclass(frozen=True)
class GrowResult:
    """A finished AdaNet run: the ensemble (eval mode), its architecture (ensemble.json), its run
    directory and the per-epoch records."""

    model: Any
    architecture: dict[str, Any]
    run_dir: Path
    metrics: list[dict[str, Any]]


def search(
    data: Any,
    *,
    test: Any = None,
    config: str | Path | dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    nproc_per_node: int = 1,
    **settings: Any,
) -> SearchResult:
    """Search a cell architecture on `data`, as `nas search` does.

    Args:
        data: a dataset name, an ImageData, a torch Dataset of (input, label) pairs or arrays
            (x, y) of any label values.
        test: the test data of a Dataset or arrays (default: a fixed 20% of `data`).
        config: a YAML config file or its mapping ({section: {key: value}}).
        run_dir: the run directory (default: runs/search-<strategy>-<data>-<time>).
        resume: continue the run in `run_dir` from its last checkpoint (pass the same data).
        nproc_per_node: processes (DDP workers) on this machine; `data` reaches each of them.
        **settings: flag names (`epochs=2`) or dotted config keys (`**{"model.layers": 5}`).

    Returns the SearchResult. Raises NasError for a bad setting, data or run directory.
    """
    from nas.genotype import Genotype

    folder = _run("search", data, test, config, run_dir, resume, nproc_per_node, settings)
    return SearchResult(Genotype.load(folder / "genotype.json"), folder, _metrics(folder))


def train(
    genotype: Any = None,
    data: Any = None,
    *,
    model: str | None = None,
    test: Any = None,
    config: str | Path | dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    nproc_per_node: int = 1,
    **settings: Any,
) -> TrainResult:
    """Train the network of `genotype`, or the hand-designed network `model`, from scratch on
    `data`, as `nas train` does.

    `genotype` is a Genotype, a published name (DARTS_V2, ...), a genotype.json or a search run
    directory (a SearchResult's `run_dir`); `model` instead names a baseline (cnn, mlp,
    logistic). Give exactly one. The other arguments are those of `search`. Returns the
    TrainResult. Raises NasError.
    """
    from nas.genotype import Genotype

    if data is None:
        raise NasError("train needs data: a dataset name, a Dataset or arrays (x, y)")
    given = None
    if model is not None:
        if genotype is not None:
            raise NasError(f"genotype and model={model!r} both choose the network; give one")
        settings = {"model.baseline": model, **settings}
    elif genotype is None and not resume:
        raise NasError("train needs a genotype (or model=, a baseline such as 'cnn')")
    elif isinstance(genotype, Genotype):
        given = genotype
        if genotype.space == "darts":  # the notation reads back as the darts space
            settings = {"model.genotype": genotype.to_notation(), **settings}
    elif genotype is not None:
        settings = {"model.genotype": str(genotype), **settings}
    from nas.export import load_trained

    folder = _run("train", data, test, config, run_dir, resume, nproc_per_node, settings, given)
    network, facts = load_trained(folder)
    last = load_trained(folder, "last")[1]
    return TrainResult(
        network,
        facts["spec"],
        folder,
        _metrics(folder),
        facts["val_acc"],
        facts["test_acc"],
        last["test_acc"],
    )


def grow(
    data: Any,
    *,
    test: Any = None,
    config: str | Path | dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    nproc_per_node: int = 1,
    **settings: Any,
) -> GrowResult:
    """Grow an ensemble of subnetworks on `data` (AdaNet), as `nas grow` does. The arguments are
    those of `search`. Returns the GrowResult. Raises NasError.
    """
    from nas.adanet import load_ensemble

    folder = _run("grow", data, test, config, run_dir, resume, nproc_per_node, settings)
    ensemble, architecture = load_ensemble(folder)
    return GrowResult(ensemble, architecture, folder, _metrics(folder))


def sample(space: str = "darts", count: int = 8, seed: int = 0) -> list[Any]:
    """`count` random genotypes of the search space `space`, as `nas sample` writes them: each
    node keeps distinct inputs chosen uniformly among the earlier states and a uniformly chosen
    op other than `none` on each. The same seed gives the same list. Returns Genotypes. Raises
    NasError for an unknown space or a count or seed out of range.
    """
    from nas.sampling import sample_genotypes

    return sample_genotypes(space, count, seed)


def create_model(
    genotype: Any,
    *,
    num_classes: int,
    in_channels: int = 3,
    network: str = "cifar",
    layers: int | None = None,
    channels: int | None = None,
    auxiliary: bool = False,
) -> Any:
    """The discrete network of `genotype` with random weights, as `nas train` builds it.

    `genotype` is a Genotype, a published name, a genotype.json or a search run directory.
    `layers` and `channels` left unset take the network's paper values (cifar: 20 cells, C=36;
    imagenet: 14, 48). The network pools globally, so it takes any input size. Raises NasError.
    """
    from nas.genotype import Genotype, load_genotype
    from nas.jobs import COMMANDS
    from nas.models import NETWORKS
    from nas.runs import resolve_config

    if not isinstance(genotype, Genotype):
        genotype = load_genotype(str(genotype))
    settings = [
        ("model.network", network),
        ("model.layers", layers),
        ("model.channels", channels),
        ("model.auxiliary_weight", 0.4 if auxiliary else 0.0),
    ]
    # fit_data=False: the network does not depend on a dataset here
    checked = resolve_config(RunRequest("train", settings), COMMANDS["train"], fit_data=False)
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NasError(f"{name} must be a positive integer, got {value!r}")
    model = checked.model
    return NETWORKS[model.network](
        genotype,
        in_channels,
        num_classes,
        channels=model.channels,
        layers=model.layers,
        auxiliary=auxiliary,
    )


def load_model(run_dir: str | Path, which: str = "best") -> Any:
    """The trained network of a `nas train` run (its `which` checkpoint: best or last) or the
    ensemble of a `nas grow` run, in eval mode on the CPU. Raises NasError.
    """
    from nas.export import load_trained

    folder = Path(run_dir)
    if (folder / "ensemble.json").is_file():
        from nas.adanet import load_ensemble

        return load_ensemble(folder)[0]
    if which not in ("best", "last"):
        raise NasError(f"which must be best or last, got {which!r}")
    return load_trained(folder, which)[0]


def _run(
    command: str,
    data: Any,
    test: Any,
    config: Any,
    run_dir: Any,
    resume: bool,
    nproc_per_node: int,
    settings: dict[str, Any],
    genotype: Any = None,
) -> Path:
    """Run `command` on this process or `nproc_per_node` spawned ones; its run directory."""
    from nas.data.python import PYTHON_DATASET, as_image_data
    from nas.jobs import run_job

    if isinstance(nproc_per_node, bool) or not isinstance(nproc_per_node, int):
        raise NasError(f"nproc_per_node must be a number of processes, got {nproc_per_node!r}")
    if nproc_per_node < 1:
        raise NasError("nproc_per_node must be at least 1")
    if resume and run_dir is None:
        raise NasError("resume=True needs run_dir=, the run directory to continue")
    pairs = _settings(command, settings)
    python_data = None
    if isinstance(data, str):
        if test is not None:
            raise NasError("test= goes with data given as a Dataset or arrays, not a dataset name")
        pairs.insert(0, ("data.name", data))
    else:
        python_data = as_image_data(data, test)
        pairs.insert(0, ("data.name", PYTHON_DATASET))
    out = None if run_dir is None else str(run_dir)
    if out is not None:
        pairs.append(("run.out", out))
    if isinstance(config, Path):
        config = str(config)
    # config.yaml records the Python command that ran this
    command_line = shlex.join([Path(sys.executable).name, *sys.argv])
    request = RunRequest(command, pairs, config, out, resume, command_line)
    if nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        return _spawn(request, python_data, genotype, nproc_per_node)
    job = run_job(request, python_data, genotype)
    if job.record is None:
        raise KeyboardInterrupt
    return job.run_dir


def _spawn(request: RunRequest, data: Any, genotype: Any, nproc_per_node: int) -> Path:
    """Run `request` on `nproc_per_node` spawned workers; its run directory. The config and the
    run directory are checked here first, so a refusal comes once, before any worker starts.
    """
    from types import SimpleNamespace

    from nas.data.python import python_dataset
    from nas.jobs import COMMANDS
    from nas.ownership import hold_for_workers
    from nas.runs import check_before_launch
    from nas.runtime.launch import launch_function

    with python_dataset(data):
        run_dir = check_before_launch(request, COMMANDS[request.command], nproc_per_node)[1]
    if request.out is None:  # every worker writes into the folder named here
        request.out = str(run_dir)
        request.settings.append(("run.out", request.out))
    held = SimpleNamespace(
        command=request.command, out=request.out, resume=request.resume, node_rank=0
    )
    with hold_for_workers(held):
        status = launch_function(_worker, (request, data, genotype), nproc_per_node)
    if status != 0:
        raise KeyboardInterrupt
    return run_dir


def _worker(request: RunRequest, data: Any, genotype: Any) -> None:
    """One spawned worker of `_spawn`: its share of the run. A user error goes to the launcher,
    which raises it once."""
    from nas.jobs import run_job
    from nas.runtime.launch import die_with_launcher, report_worker_error

    die_with_launcher()
    try:
        job = run_job(request, data, genotype)
    except NasError as err:
        if report_worker_error(str(err)):
            sys.exit(2)
        raise
    if job.record is None:
        sys.exit(130)


# Flags the API takes as its own arguments: data (--dataset), run_dir (--out).
_OWN_ARGUMENTS = {"dataset": "data", "out": "run_dir"}


def _settings(command: str, settings: dict[str, Any]) -> list[tuple[str, Any]]:
    """(config key, value) of each keyword setting: a flag name of `command` or a dotted key.
    Raises NasError for any other name and for a value outside a flag's choices."""
    from nas.cli import grow as grow_command
    from nas.cli import search as search_command
    from nas.cli import train as train_command

    tables = {"search": search_command, "train": train_command, "grow": grow_command}
    flags = {flag.dest: flag for flag in tables[command].FLAGS}
    pairs = []
    for name, value in settings.items():
        if "." in name:
            pairs.append((name, value))
            continue
        if name in _OWN_ARGUMENTS:
            raise NasError(f"nas.{command}: give {name!r} as the argument {_OWN_ARGUMENTS[name]}=")
        flag = flags.get(name)
        if flag is None:
            names = sorted(set(flags) - set(_OWN_ARGUMENTS))
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise NasError(
                f"unknown setting {name!r} of nas.{command}; give a flag name ({', '.join(names)}) "
                f"or a dotted config key such as 'data.batch_size'{hint}"
            )
        if flag.choices is not None and value not in flag.choices:
            choices = ", ".join(map(repr, flag.choices))
            raise NasError(f"{name}={value!r}: choose one of {choices}")
        pairs.append((flag.key, value))
    return pairs


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run (metrics.jsonl)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
