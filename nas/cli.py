"""The `nas` command. User errors print one line and exit with status 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from nas.errors import NasError

# CLI flag -> config key. Flags override the --config file; --set overrides both.
COMMON_FLAGS = {
    "dataset": "data.name",
    "data_dir": "data.data_dir",
    "epochs": "run.epochs",
    "batch_size": "data.batch_size",
    "layers": "model.layers",
    "channels": "model.channels",
    "seed": "run.seed",
    "device": "run.device",
    "out": "run.out",
}
SEARCH_FLAGS = {
    **COMMON_FLAGS,
    "strategy": "strategy.name",
    "space": "model.space",
    "order": "strategy.order",
}
GROW_FLAGS = {
    "dataset": "data.name",
    "data_file": "data.data_file",
    "target": "data.target",
    "epochs": "run.epochs",
    "batch_size": "data.batch_size",
    "seed": "run.seed",
    "device": "run.device",
    "out": "run.out",
    "generator": "adanet.generator",
    "iterations": "adanet.iterations",
    "schedule": "adanet.schedule",
    "mixture": "adanet.mixture",
    "force_grow": "adanet.force_grow",
}
TRAIN_FLAGS = {
    **COMMON_FLAGS,
    "genotype": "model.genotype",
    "network": "model.network",
    "auxiliary_weight": "model.auxiliary_weight",
    "drop_path": "model.drop_path",
    "cutout": "data.cutout",
    "lr": "train.lr",
    "label_smoothing": "train.label_smoothing",
}


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line, like every other user error (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"nas: error: {message} (see {self.prog} --help)\n")


def _config_arguments(
    parser: argparse.ArgumentParser,
    example: str,
    config_help: str = "YAML config (see experiments/configs/)",
) -> None:
    """--config and --set, which every command that takes a configuration has."""
    parser.add_argument("--config", metavar="FILE", help=config_help)
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help=f"override a config field, e.g. --set {example} (repeatable)",
    )


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    """--seed, --device, --out and --resume, for the commands that write one run directory."""
    parser.add_argument("--seed", type=int, help="random seed (default: 0)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/...)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out DIR from its checkpoint"
    )


def _run_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """Options shared by the commands that search or train a cell network."""
    _config_arguments(parser, "data.batch_size=32")
    parser.add_argument("--dataset", help="digits, synthetic or cifar10")
    parser.add_argument("--data-dir", help="folder holding CIFAR-10 (cifar10 only)")
    parser.add_argument("--epochs", type=int, help=f"{what} epochs")
    parser.add_argument("--batch-size", type=int, help="images per step (per process)")
    parser.add_argument("--layers", type=int, help="cells in the network")
    parser.add_argument("--channels", type=int, help="initial channels C")
    _output_arguments(parser)


def _launch_arguments(parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    from nas import __version__

    parser = _Parser(prog="nas", description="nasforge: neural architecture search for PyTorch.")
    parser.add_argument("--version", action="version", version=f"nasforge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    search = commands.add_parser(
        "search",
        help="search a cell architecture with a supernet (DARTS)",
        description="Search a cell architecture. Writes a run directory with genotype.json, "
        "genotypes.jsonl, metrics.jsonl, config.yaml, checkpoints/ and tb/ (TensorBoard). "
        "Defaults: DARTS on digits, 50 epochs, 8 cells, C=16, batch 64.",
    )
    _run_arguments(search, "search")
    _launch_arguments(search)
    search.add_argument("--strategy", help="search strategy (default: darts)")
    search.add_argument("--space", help="search space (default: darts)")
    search.add_argument("--order", type=int, choices=[1, 2], help="1: first order, 2: unrolled")
    search.set_defaults(handler=_search)

    train = commands.add_parser(
        "train",
        help="train the network of a genotype (final training)",
        description="Train a genotype's network from scratch and test it every epoch. Writes a "
        "run directory with genotype.json, metrics.jsonl, config.yaml, checkpoints/last.pt and "
        "best.pt, and tb/. Defaults: the DARTS paper's CIFAR-10 training (600 epochs, batch 96, "
        "20 cells, C=36, SGD 0.025 cosine to 0, auxiliary 0.4, drop-path 0.2, cutout 16).",
    )
    train.add_argument(
        "--genotype",
        metavar="NAME_OR_FILE",
        help="DARTS_V1, DARTS_V2, PC_DARTS_cifar, PC_DARTS_image, a genotype.json, or a search "
        "run directory",
    )
    train.add_argument("--network", choices=["cifar", "imagenet"], help="network (default: cifar)")
    _run_arguments(train, "training")
    _launch_arguments(train)
    train.add_argument("--lr", type=float, help="initial learning rate (default: 0.025)")
    train.add_argument("--auxiliary-weight", type=float, help="0 for no auxiliary head")
    train.add_argument("--drop-path", type=float, help="final drop-path probability")
    train.add_argument("--cutout", type=int, help="cutout side in pixels, 0 for none")
    train.add_argument("--label-smoothing", type=float, help="label smoothing (default: 0)")
    train.add_argument(
        "--summary",
        action="store_true",
        help="print parameters and multiply-adds of the network, do not train",
    )
    train.add_argument("--json", action="store_true", help="with --summary: one JSON line")
    train.add_argument(
        "--image-size", type=int, help="with --summary: input side (default: the network's)"
    )
    train.set_defaults(handler=_train)

    _grow_parser(commands)

    show = commands.add_parser(
        "show",
        help="describe a genotype and draw its cells",
        description="Print a genotype's cells and network sizes; with --out, draw the normal and "
        "the reduction cell as a PNG (needs matplotlib: pip install 'nasforge[plot]').",
    )
    show.add_argument("genotype", metavar="NAME_OR_FILE", help="published name, file or run dir")
    show.add_argument("--out", metavar="FILE.png", help="write the drawing here")
    show.set_defaults(handler=_show)

    export = commands.add_parser(
        "export",
        help="export a trained model (TorchScript, ONNX or torch.export)",
        description="Export the network trained in RUN_DIR, with its genotype and a model card "
        "(model_card.json), into RUN_DIR/export/ or --out DIR. The exported model is run once "
        "and checked against the trained network.",
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="a nas train run directory")
    export.add_argument(
        "--format", required=True, choices=["torchscript", "onnx", "exported"], dest="format"
    )
    export.add_argument(
        "--checkpoint", choices=["best", "last"], default="best", help="which weights (best)"
    )
    export.add_argument("--out", metavar="DIR", help="output folder (default: RUN_DIR/export)")
    export.set_defaults(handler=_export)

    _tune_parser(commands)

    bench = commands.add_parser("bench", help="benchmarks (supernet step)")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="WHAT")
    supernet = benches.add_parser(
        "supernet",
        help="time one search iteration (alpha step + weight step)",
        description="Time one full DARTS search iteration (alpha step + weight step) of the "
        "supernet on synthetic 3-channel images after warm-up: ms per iteration, images/s "
        "(train + val images) and peak memory.",
    )
    supernet.add_argument("--size", type=int, default=16, help="image side (default: 16)")
    supernet.add_argument("--channels", type=int, default=8, help="initial channels C (8)")
    supernet.add_argument("--layers", type=int, default=5, help="cells (default: 5)")
    supernet.add_argument("--batch", type=int, default=32, help="images per split (32)")
    supernet.add_argument("--order", type=int, default=1, choices=[1, 2], help="1 or 2")
    supernet.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    supernet.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    supernet.add_argument("--iterations", type=int, default=10, help="timed iterations (10)")
    supernet.add_argument("--warmup", type=int, default=2, help="untimed iterations first (2)")
    supernet.add_argument(
        "--path", choices=["reference", "fast"], default="fast",
        help="supernet forward: per-edge reference or fast (default: fast)",
    )  # fmt: skip
    supernet.add_argument(
        "--compare", action="store_true",
        help="time the reference and the fast path in alternating runs; report the speedup",
    )  # fmt: skip
    supernet.add_argument("--rounds", type=int, default=3, help="--compare: runs per path (3)")
    supernet.add_argument(
        "--partial-channels", type=int, default=1, metavar="K",
        help="PC-DARTS: mixed ops see 1/K of the channels (default: 1, off)",
    )  # fmt: skip
    supernet.add_argument(
        "--checkpoint", action="store_true", help="activation checkpointing per cell"
    )
    supernet.add_argument(
        "--channels-last", action="store_true", help="NHWC memory format for weights and images"
    )
    supernet.add_argument("--json", action="store_true", help="one JSON line")
    supernet.set_defaults(handler=_bench_supernet)
    return parser


def _tune_parser(commands: Any) -> None:
    tune = commands.add_parser(
        "tune",
        help="hyperparameter search over nas search or nas train (optuna)",
        description="Tune the fields a config declares under tune: params: with optuna "
        "(pip install 'nasforge[hpo]'). Each trial is a run directory in --out; re-running the "
        "same command continues the study. See docs/tuning.md.",
    )
    _config_arguments(tune, "tune.min_epochs=2", "YAML config with a tune: section")
    tune.add_argument("--trials", type=int, help="trials the study should hold (tune.trials)")
    tune.add_argument("--sampler", help="random, grid or tpe (tune.sampler)")
    tune.add_argument("--pruner", help="none, asha or hyperband (tune.pruner)")
    tune.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="start no trial after this (tune.timeout)"
    )
    tune.add_argument(
        "--storage", metavar="URL_OR_FILE",
        help="an RDB URL (postgresql://...) or a journal file shared by several workers "
        "(default: SQLite in --out)",
    )  # fmt: skip
    tune.add_argument("--study", metavar="NAME", help="study name (default: the config's name)")
    tune.add_argument("--out", metavar="DIR", help="study directory (default: runs/tune-NAME)")
    tune.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    _launch_arguments(tune)
    tune.set_defaults(handler=_tune)


def _grow_parser(commands: Any) -> None:
    grow = commands.add_parser(
        "grow",
        help="grow an ensemble of subnetworks (AdaNet)",
        description="Grow an ensemble one subnetwork per iteration (AdaNet, Cortes et al. 2017). "
        "Writes a run directory with ensemble.json, candidates.jsonl, metrics.jsonl, "
        "config.yaml, checkpoints/ (last.pt, ensemble.pt) and tb/. Defaults: MLP candidates of "
        "width 128 on digits, 3 iterations, 20 epochs per candidate. See docs/adanet.md.",
    )
    _config_arguments(grow, "adanet.widths=[64,256]")
    grow.add_argument("--dataset", help="digits, synthetic, breast_cancer or csv")
    grow.add_argument("--data-file", metavar="FILE", help="csv only: the table to learn")
    grow.add_argument("--target", metavar="COLUMN", help="csv only: the label column")
    grow.add_argument("--iterations", type=int, help="at most this many iterations (3)")
    grow.add_argument("--epochs", type=int, help="epochs each candidate trains (20)")
    grow.add_argument("--batch-size", type=int, help="samples per step, per process (64)")
    grow.add_argument("--generator", help="subnetwork generator: mlp or cnn (default: mlp)")
    grow.add_argument("--schedule", choices=["sync", "async"], help="candidates on all "
                      "processes (sync) or each on its own share of them (async)")  # fmt: skip
    grow.add_argument("--mixture", choices=["scalar", "vector"], help="mixture weights")
    grow.add_argument(
        "--force-grow", action="store_const", const=True,
        help="add the best candidate even when it does not lower the objective",
    )  # fmt: skip
    _output_arguments(grow)
    _launch_arguments(grow)
    grow.set_defaults(handler=_grow)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `nas` console script."""
    if "WORLD_SIZE" in os.environ:  # one of several processes
        from nas.runtime.launch import die_with_launcher

        die_with_launcher()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if _launch_requested(args):
            from nas.ownership import hold_for_workers
            from nas.runtime.launch import LAUNCHER_FLAGS, launch

            _check_before_launch(args)
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
    if not hasattr(args, "nproc_per_node"):
        return False
    from nas.runtime.launch import LAUNCHER_FLAGS, check_options, wants_launch

    check_options({key: getattr(args, key) for key in LAUNCHER_FLAGS})
    return wants_launch(args.nproc_per_node, args.nnodes)


def _check_before_launch(args: argparse.Namespace) -> None:
    """Resolve what every worker will resolve first (config, run directory, genotype, device),
    writing nothing, so that a refusal is printed once, before any worker starts. Raises
    NasError.
    """
    from nas.rundir import check_world_size, prepare_run_dir
    from nas.runtime.dist import resolve_device

    if args.command == "tune":
        from nas.tune.run import plan

        plan(args)
        return
    if args.command == "train" and args.summary:
        raise NasError("--summary runs on one process: drop --nproc-per-node and --nnodes")
    from nas.adanet.config import GrowConfig
    from nas.config import Config, TrainConfig

    config_class, flags = {
        "search": (Config, SEARCH_FLAGS),
        "train": (TrainConfig, TRAIN_FLAGS),
        "grow": (GrowConfig, GROW_FLAGS),
    }[args.command]
    config, run_dir = prepare_run_dir(args, args.command, config_class, flags, lambda c: "check")
    resolve_device(config.run.device)
    if args.resume:
        check_world_size(run_dir, (args.nproc_per_node or 1) * (args.nnodes or 1))
    elif args.command == "train":
        from nas.published import load_genotype

        if config.model.genotype is None:
            raise NasError("nas train needs --genotype NAME_OR_FILE (see nas train --help)")
        load_genotype(config.model.genotype)


def _run_engine(args: argparse.Namespace, task: Any, config: Any, run_dir: Path, runtime: Any,
                banner: str, epochs: int | None = None,
                write: Any = None) -> dict[str, Any] | None:  # fmt: skip
    """Claim the run directory, call `write()` (main process, new runs), then run `task` under
    the engine with logging (`epochs` engine epochs, default run.epochs); None when interrupted
    (printed). The run directory stays locked until the run ends.
    """
    from nas.ownership import claim_run_dir

    lock = None
    if runtime.is_main:  # every input was checked by now: the first write into the folder
        lock = claim_run_dir(run_dir, args.command, config, runtime.world_size, args.resume)
    try:
        if runtime.is_main and write is not None and not args.resume:
            write()
        return _engine_epochs(args, task, config, run_dir, runtime, banner, epochs)
    finally:
        if lock is not None:
            lock.release()


def _engine_epochs(
    args: argparse.Namespace,
    task: Any,
    config: Any,
    run_dir: Path,
    runtime: Any,
    banner: str,
    epochs: int | None,
) -> dict[str, Any] | None:
    from nas.logging import RunLogger
    from nas.runtime import Engine

    epochs = epochs or config.run.epochs
    logger = RunLogger(run_dir, enabled=runtime.is_main)
    engine = Engine(task, runtime, logger, run_dir, epochs)
    start = engine.resume() if args.resume else 0
    if runtime.is_main:
        processes = f", {runtime.world_size} processes" if runtime.is_distributed else ""
        print(f"{banner}, epochs {start + 1}..{epochs}, device {runtime.device}"
              f"{processes}, run dir {run_dir}", file=sys.stderr)  # fmt: skip
    try:
        with runtime.until_done():
            try:
                return engine.run(start)
            finally:
                logger.close()
    except KeyboardInterrupt:
        from nas.ownership import interrupted_message

        message = interrupted_message(args.command, run_dir, engine.checkpoint_path.is_file())
        print(f"\nnas: {message}", file=sys.stderr)
        return None


def _start(config: Any, run_dir: Path, args: argparse.Namespace) -> Any:
    """Runtime and seeds. Writes nothing: the run directory is claimed in `_run_engine`, once
    the task (data, model) was built from the checked inputs.
    """
    from nas.rundir import check_world_size
    from nas.runtime import init_runtime
    from nas.runtime.checkpoint import seed_everything

    runtime = init_runtime(config.run.device, config.run.sync_batchnorm)
    if args.resume:
        check_world_size(run_dir, runtime.world_size)
    seed_everything(config.run.seed)
    return runtime


def _search(args: argparse.Namespace) -> int:
    from nas.config import Config
    from nas.rundir import prepare_run_dir

    config, run_dir = prepare_run_dir(
        args, "search", Config, SEARCH_FLAGS, lambda c: f"{c.strategy.name}-{c.data.name}"
    )
    from nas.search import SearchTask

    runtime = _start(config, run_dir, args)
    task = SearchTask(config, runtime)
    banner = (
        f"nas search: {config.strategy.name} on "
        f"{config.data.name}, space {config.model.space}, {config.model.layers} cells, "
        f"C={config.model.channels}"
    )
    record = _run_engine(args, task, config, run_dir, runtime, banner)
    if record is None:
        return 130
    if not runtime.is_main:  # rank 0 reports
        return 0
    if record:
        print(
            f"epoch {record['epoch']}: train acc {record['train_acc']:.3f}, "
            f"val acc {record['val_acc']:.3f}, {record['epoch_seconds']:.1f} s/epoch"
        )
    print(f"genotype: {task.genotype().to_notation()}")
    print(f"written: {run_dir / 'genotype.json'}")
    print(
        f"train it: nas train --genotype {run_dir / 'genotype.json'} --dataset {config.data.name}"
    )
    print(f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    return 0


def _grow(args: argparse.Namespace) -> int:
    from nas.adanet.config import GrowConfig
    from nas.rundir import prepare_run_dir

    config, run_dir = prepare_run_dir(
        args, "grow", GrowConfig, GROW_FLAGS,
        lambda c: f"{c.adanet.generator}-{c.data.name}",
    )  # fmt: skip
    from nas.adanet.task import check_grow_data
    from nas.data import load_dataset

    data = load_dataset(config.data)  # a bad dataset is refused before the run dir is touched
    check_grow_data(config, data)
    from nas.adanet.task import GrowTask

    runtime = _start(config, run_dir, args)
    task = GrowTask(config, runtime, data)
    ada = config.adanet
    if ada.schedule == "async" and task.shares == 1 and runtime.is_main:
        print("nas grow: note: with one process (or one candidate) the async schedule has one "
              "share: it trains like sync, without forecasting", file=sys.stderr)  # fmt: skip
    banner = (
        f"nas grow: {ada.generator} candidates on {config.data.name}, up to {ada.iterations} "
        f"iterations of {config.run.epochs} candidate epochs + 1 mixture epoch "
        f"({ada.mixture_epochs} passes), "
        f"{ada.schedule} schedule"
    )
    record = _run_engine(args, task, config, run_dir, runtime, banner, task.total_epochs)
    if record is None:
        return 130
    if not runtime.is_main:  # rank 0 reports
        return 0
    members = task.ensemble_dict()["members"]
    for member in members:
        print(f"member {member['iteration'] + 1}: {json.dumps(member['architecture'])[:100]}")
    reason = "no candidate lowered the objective" if task.stopped else "iteration budget reached"
    print(f"{len(members)} members after {len(task.reports)} iterations ({reason})")
    final = task.final_metrics
    if final:
        auc = f", test AUC {final['test_auc']:.4f}" if "test_auc" in final else ""
        print(f"objective {final['objective']:.4f}, val acc {final['val_acc']:.4f}, "
              f"test acc {final['test_acc']:.4f}{auc}")  # fmt: skip
    if ada.schedule == "async" and ada.forecast:
        s = task.stats
        print(f"forecasts: leader guessed right {s['leader_hits']}/{s['leader_guesses']}, "
              f"candidates adopted {s['forecast_adopted']}/{s['forecast_candidates']}, "
              f"steps adopted {s['forecast_steps_adopted']}/{s['forecast_steps']}")  # fmt: skip
    print(f"written: {run_dir / 'ensemble.json'} (weights: checkpoints/ensemble.pt)")
    print(f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    return 0


def _genotype_label(source: str) -> str:
    if source.lstrip().startswith("Genotype("):  # the notation names no file
        return "notation"
    path = Path(source)
    # cut: the label goes into a directory name, which the file system limits
    return (path.parent.name if path.name == "genotype.json" else path.stem)[:60]


def _train(args: argparse.Namespace) -> int:
    from nas.config import TrainConfig
    from nas.published import load_genotype
    from nas.rundir import prepare_run_dir

    if args.summary:
        return _summary(args)
    if args.json or args.image_size is not None:
        raise NasError("--json and --image-size go with --summary")
    config, run_dir = prepare_run_dir(
        args, "train", TrainConfig, TRAIN_FLAGS,
        lambda c: f"{_genotype_label(c.model.genotype or 'none')}-{c.data.name}",
    )  # fmt: skip
    if args.resume:
        from nas.genotype import Genotype

        genotype = Genotype.load(run_dir / "genotype.json")
    elif config.model.genotype is None:
        raise NasError(
            "nas train needs --genotype NAME_OR_FILE: a published name (DARTS_V2, ...), a "
            "genotype.json from nas search, or a search run directory"
        )
    else:
        genotype = load_genotype(config.model.genotype)
    _note_unfinished(genotype)

    from nas.data import load_dataset
    from nas.train import TrainTask, check_training_data

    data = load_dataset(config.data)  # a bad dataset is refused before the run dir is written
    check_training_data(config, data)
    runtime = _start(config, run_dir, args)
    task = TrainTask(config, genotype, runtime, data)
    banner = (
        f"nas train: {config.model.genotype} ({config.model.network} network, "
        f"{config.model.layers} cells, C={config.model.channels}) on {config.data.name}"
    )
    record = _run_engine(
        args, task, config, run_dir, runtime, banner,
        write=lambda: genotype.save(run_dir / "genotype.json"),
    )  # fmt: skip
    if record is None:
        return 130
    if not runtime.is_main:  # rank 0 reports
        return 0
    if record:
        print(
            f"epoch {record['epoch']}: train acc {record['train_acc']:.4f}, test acc "
            f"{record['test_acc']:.4f}; best test acc {task.best_acc:.4f} (epoch {task.best_epoch})"
        )
    print(f"written: {run_dir / 'checkpoints' / 'best.pt'} and last.pt")
    print(f"export it: nas export {run_dir} --format exported")
    print(f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    return 0


# One forward pass of the cifar network at 512x512 peaks near 1 GiB (measured: 0.95 GiB, minutes
# on one core); the memory grows with the square of the side.
_SUMMARY_MAX_IMAGE = 512


def _note_unfinished(genotype: Any) -> None:
    """One stderr note (first process only) when the genotype's search had not finished."""
    import os

    from nas.published import unfinished_note

    note = unfinished_note(genotype)
    if note and os.environ.get("RANK", "0") == "0":
        print(f"nas: {note}", file=sys.stderr)


def _summary(args: argparse.Namespace) -> int:
    """`nas train --summary`: sizes of the network, without data or training."""
    from nas.config import NETWORK_DEFAULTS, TrainConfig
    from nas.models import count_mult_adds, count_parameters
    from nas.published import load_genotype
    from nas.rundir import resolve_config
    from nas.train import build_network, model_spec

    if args.resume:
        raise NasError("--summary does not train, so --resume does not apply")
    config = resolve_config(args, TrainConfig, TRAIN_FLAGS)
    if config.model.genotype is None:
        raise NasError("--summary needs --genotype NAME_OR_FILE")
    genotype = load_genotype(config.model.genotype)
    if args.image_size is not None and not 1 <= args.image_size <= _SUMMARY_MAX_IMAGE:
        raise NasError(
            f"--image-size must be 1 to {_SUMMARY_MAX_IMAGE} pixels (the summary runs one "
            f"forward pass on the CPU), got {args.image_size}"
        )
    image_size = args.image_size or NETWORK_DEFAULTS[config.model.network][2]
    in_channels, num_classes = 3, 1000 if config.model.network == "imagenet" else 10
    named = args.dataset is not None or config.data.name != TrainConfig().data.name
    if named:  # a dataset chosen by flag, --config or --set: its shape
        if config.data.name == "cifar10":  # known without reading the files
            in_channels, num_classes, size = 3, 10, 32
        else:
            from nas.data import load_dataset

            data = load_dataset(config.data)
            in_channels, num_classes, size = data.in_channels, data.num_classes, data.image_size
        image_size = args.image_size or size
    spec = model_spec(config, genotype, in_channels, num_classes, image_size)
    network = build_network(spec)
    params = count_parameters(network)
    summary = {
        "genotype": config.model.genotype,
        "network": config.model.network,
        "layers": config.model.layers,
        "channels": config.model.channels,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "image_size": image_size,
        "params": params,
        "params_auxiliary": count_parameters(network, exclude_auxiliary=False) - params,
        "mult_adds": count_mult_adds(network, (in_channels, image_size, image_size)),
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"{summary['genotype']}: {summary['network']} network, {summary['layers']} cells, "
        f"C={summary['channels']}, input {in_channels}x{image_size}x{image_size}, "
        f"{num_classes} classes\n"
        f"parameters: {params:,} ({params / 1e6:.2f}M; auxiliary head excluded, it adds "
        f"{summary['params_auxiliary']:,})\n"
        f"multiply-adds: {summary['mult_adds']:,} ({summary['mult_adds'] / 1e6:.1f}M; conv and "
        "linear layers, one image)"
    )
    return 0


def _tune(args: argparse.Namespace) -> int:
    from nas.tune.run import tune_main

    return tune_main(args)


def _bench_supernet(args: argparse.Namespace) -> int:
    from nas.bench import bench_supernet, compare_paths

    settings = dict(
        size=args.size, channels=args.channels, layers=args.layers, batch=args.batch,
        order=args.order, device=args.device, amp=args.amp, iterations=args.iterations,
        warmup=args.warmup, channels_last=args.channels_last,
        partial_channels=args.partial_channels, checkpoint_cells=args.checkpoint,
    )  # fmt: skip
    if args.compare:
        result = compare_paths(args.rounds, **settings)
    else:
        result = bench_supernet(path=args.path, **settings).to_dict()
    if args.json:
        print(json.dumps(result))
        return 0
    options = [
        "bf16 autocast" if args.amp else "",
        "channels-last" if args.channels_last else "",
        f"partial channels K={args.partial_channels}" if args.partial_channels > 1 else "",
        "checkpointed cells" if args.checkpoint else "",
    ]
    print(
        f"supernet {args.size}x{args.size}, C={args.channels}, {args.layers} cells, batch "
        f"{args.batch}, order {args.order}, {', '.join([result['device'], *filter(None, options)])}"
    )
    for path in ["reference", "fast"] if args.compare else [args.path]:
        prefix = f"{path}_" if args.compare else ""
        ms, saved = result[f"{prefix}ms_per_iter"], result[f"{prefix}saved_for_backward_mb"]
        print(
            f"  {path} path: {ms:.1f} ms/iter, {1000 * 2 * args.batch / ms:.1f} images/s, "
            f"{saved:.1f} MiB saved for backward"
        )
    if args.compare:
        print(f"  speedup (median of {args.rounds} alternating runs): {result['speedup']:.2f}x")
    print(f"  peak memory (process) {result['peak_mem_mb']:.0f} MiB")
    return 0


def _show(args: argparse.Namespace) -> int:
    from nas.drawing import describe_genotype
    from nas.published import load_genotype

    genotype = load_genotype(args.genotype)
    _note_unfinished(genotype)
    print(describe_genotype(genotype))
    if args.out:
        from nas.drawing import save_genotype_png

        save_genotype_png(genotype, Path(args.out))
        print(f"written: {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from nas.export import export_run

    result = export_run(Path(args.run_dir), args.format, args.checkpoint, args.out)
    print(
        f"exported {result['model_file']} ({args.format}); outputs match the trained network "
        f"(max abs difference {result['max_abs_diff']:.2e})"
    )
    print(f"written: {result['folder']}/ (model, genotype.json, model_card.json)")
    return 0
