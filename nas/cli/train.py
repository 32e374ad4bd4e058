"""`nas train`: train the network of a genotype from scratch (final training), or `--summary`:
its sizes, without data or training.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from nas.cli import flags, runner
from nas.cli.flags import Flag
from nas.errors import NasError
from nas.jobs import COMMANDS, run_job
from nas.runs import check_before_launch, resolve_config

FLAGS = (
    Flag(
        "--genotype",
        "model.genotype",
        "DARTS_V1, DARTS_V2, PC_DARTS_cifar, PC_DARTS_image, a genotype.json, or a search run "
        "directory",
        metavar="NAME_OR_FILE",
    ),
    Flag(
        "--model",
        "model.baseline",
        "train a hand-designed network instead of a genotype's: {names}",
        metavar="NAME",
        names_from="nas.models.baselines:BASELINES",
    ),
    Flag(
        "--val-fraction",
        "train.val_fraction",
        "fraction of the training split held out to choose best.pt (default: 0.1; 0: none, "
        "best.pt is the last epoch)",
        float,
        metavar="F",
    ),
    Flag(
        "--network",
        "model.network",
        "network (default: cifar)",
        choices=("cifar", "imagenet"),
    ),
    flags.DATASET,
    flags.DATA_DIR,
    flags.DATA_FILE,
    flags.IMAGE_SIZE.with_help(
        "folder: resize and centre-crop every image to SxS; with --summary: the input side "
        "(default: the dataset's, or the network's)"
    ),
    flags.WORKERS,
    flags.EPOCHS.with_help("training epochs"),
    flags.BATCH_SIZE,
    flags.LAYERS,
    flags.CHANNELS,
    *flags.OUTPUT,
    Flag("--lr", "train.lr", "initial learning rate (default: 0.025)", float),
    Flag("--auxiliary-weight", "model.auxiliary_weight", "0 for no auxiliary head", float),
    Flag("--drop-path", "model.drop_path", "final drop-path probability", float),
    Flag("--cutout", "data.cutout", "cutout side in pixels, 0 for none", int),
    Flag("--label-smoothing", "train.label_smoothing", "label smoothing (default: 0)", float),
)

# One forward pass of the cifar network at 512x512 peaks near 1 GiB (measured: 0.95 GiB, minutes
# on one core); the memory grows with the square of the side.
_SUMMARY_MAX_IMAGE = 512


COMMAND = COMMANDS["train"]


def add_parser(commands: Any) -> None:
    """`nas train` and its options."""
    parser = runner.add_parser(
        commands,
        COMMAND,
        FLAGS,
        run,
        help="train the network of a genotype (final training) or a baseline",
        description="Train a genotype's network (--genotype) or a hand-designed one (--model) "
        "from scratch. Each epoch is validated on a held-out part of the training split; best.pt "
        "is the epoch with the best validation accuracy, and the test split is evaluated only "
        "with its weights and the final ones. Writes a run directory with genotype.json, "
        "metrics.jsonl, config.yaml, checkpoints/last.pt and best.pt, and tb/. Defaults: the "
        "DARTS paper's CIFAR-10 training (600 epochs, batch 96, 20 cells, C=36, SGD 0.025 cosine "
        "to 0, auxiliary 0.4, drop-path 0.2, cutout 16).",
        example="data.batch_size=32",
        pre_launch=_check_before_launch,
    )
    parser.add_argument(
        "--summary",
        action="store_true",
        help="print parameters and multiply-adds of the network, do not train",
    )
    parser.add_argument("--json", action="store_true", help="with --summary: one JSON line")


def _check_before_launch(args: argparse.Namespace) -> None:
    if args.summary:
        raise NasError("--summary runs on one process: drop --nproc-per-node and --nnodes")
    world_size = (args.nproc_per_node or 1) * (args.nnodes or 1)
    config = check_before_launch(runner.request(args, COMMAND, FLAGS), COMMAND, world_size)[0]
    if not args.resume and config.model.baseline is None:
        from nas.genotype import load_genotype

        if config.model.genotype is None:
            raise NasError(
                "nas train needs --genotype NAME_OR_FILE or --model NAME (see nas train --help)"
            )
        load_genotype(config.model.genotype)


def run(args: argparse.Namespace) -> int:
    """Train; print the chosen epoch's validation and test accuracy and how to export it."""

    if args.print_config and args.summary:
        raise NasError("--print-config and --summary both print instead of training; choose one")
    if args.summary:
        return _summary(args)
    if args.json:
        raise NasError("--json goes with --summary")
    if args.print_config:
        return runner.print_config(args, COMMAND, FLAGS)
    job = run_job(runner.request(args, COMMAND, FLAGS))

    def lines() -> list[str]:
        task = job.task
        if task.val_set is not None:
            chosen = (
                f"best.pt: epoch {task.best_epoch} of {job.config.run.epochs}, chosen on "
                f"validation (val acc {task.best_val_acc:.4f})"
            )
        else:
            chosen = "best.pt: the last epoch (no validation: train.val_fraction=0)"
        return [
            f"{chosen}; test acc {task.best_test_acc:.4f} (final weights: "
            f"{task.last_test_acc:.4f})",
            f"written: {job.run_dir / 'checkpoints' / 'best.pt'} and last.pt",
            f"export it: nas export {job.run_dir} --format exported",
        ]

    return runner.finish(job, lines)


def _summary(args: argparse.Namespace) -> int:
    """`nas train --summary`: sizes of the network, without data or training."""
    from nas.config import NETWORK_DEFAULTS, TrainConfig
    from nas.genotype import load_genotype
    from nas.models import count_mult_adds, count_parameters
    from nas.train_task import build_network, model_spec

    if args.resume:
        raise NasError("--summary does not train, so --resume does not apply")
    summary_size, args.image_size = args.image_size, None  # the input side, for any dataset
    # Without a dataset named, or for cifar10 (known without reading its files): the paper's
    # network; another dataset's defaults follow what it states, so it is loaded.
    config = resolve_config(runner.request(args, COMMAND, FLAGS), COMMAND, fit_data=False)
    named = args.dataset is not None or config.data.name != TrainConfig().data.name
    if named and config.data.name != "cifar10":
        if config.data.name == "folder":  # the folder's images are read at the summary's side
            args.image_size = summary_size
        config = resolve_config(runner.request(args, COMMAND, FLAGS), COMMAND)
    if summary_size is not None and config.data.name == "folder":
        config.data.options.image_size = summary_size
    args.image_size = summary_size
    baseline = config.model.baseline
    if config.model.genotype is None and baseline is None:
        raise NasError("--summary needs --genotype NAME_OR_FILE or --model NAME")
    genotype = None if baseline else load_genotype(config.model.genotype)
    if args.image_size is not None and not 1 <= args.image_size <= _SUMMARY_MAX_IMAGE:
        raise NasError(
            f"--image-size must be 1 to {_SUMMARY_MAX_IMAGE} pixels (the summary runs one "
            f"forward pass on the CPU), got {args.image_size}"
        )
    image_size = args.image_size or NETWORK_DEFAULTS[config.model.network][2]
    in_channels, num_classes = 3, 1000 if config.model.network == "imagenet" else 10
    data = None
    dims = 2
    if named:  # a dataset chosen by flag, --config or --set: its shape
        if config.data.name == "cifar10":  # known without reading the files
            in_channels, num_classes, size = 3, 10, 32
        else:
            from nas.data import load_dataset

            data = load_dataset(config.data)
            in_channels, num_classes, size = data.in_channels, data.num_classes, data.image_size
            dims = data.dims
        image_size = args.image_size or size
    spec = model_spec(config, genotype, in_channels, num_classes, image_size, data, dims=dims)
    input_shape = (in_channels, image_size) if dims == 1 else (in_channels, image_size, image_size)
    network = build_network(spec)
    params = count_parameters(network)
    if baseline is not None:
        return _baseline_summary(args, spec, params)
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
        "dims": dims,
        "mult_adds": count_mult_adds(network, input_shape),
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"{summary['genotype']}: {summary['network']} network, {summary['layers']} cells, "
        f"C={summary['channels']}, input {'x'.join(map(str, input_shape))}, "
        f"{num_classes} classes\n"
        f"parameters: {params:,} ({params / 1e6:.2f}M; auxiliary head excluded, it adds "
        f"{summary['params_auxiliary']:,})\n"
        f"multiply-adds: {summary['mult_adds']:,} ({summary['mult_adds'] / 1e6:.1f}M; conv and "
        f"linear layers, one {'signal' if dims == 1 else 'image'})"
    )
    return 0


def _baseline_summary(args: argparse.Namespace, spec: dict[str, Any], params: int) -> int:
    """`nas train --model NAME --summary`: the baseline's input shape and parameters."""
    from nas.models.baselines import input_shape

    shape = input_shape(spec["in_channels"], spec["image_size"], spec["kind"])
    summary = {
        "model": spec["baseline"],
        "input_shape": list(shape),
        "num_classes": spec["num_classes"],
        "params": params,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"{spec['baseline']} baseline, input {'x'.join(map(str, shape))}, "
        f"{spec['num_classes']} classes\nparameters: {params:,}"
    )
    return 0
