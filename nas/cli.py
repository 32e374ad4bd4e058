"""The `nas` command. User errors print one line and exit with status 2."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from nas.errors import NasError

# CLI flag -> config key. Flags override the --config file; --set overrides both.
SEARCH_FLAGS = {
    "strategy": "strategy.name",
    "space": "model.space",
    "dataset": "data.name",
    "data_dir": "data.data_dir",
    "epochs": "run.epochs",
    "batch_size": "data.batch_size",
    "layers": "model.layers",
    "channels": "model.channels",
    "order": "strategy.order",
    "seed": "run.seed",
    "device": "run.device",
    "out": "run.out",
}
# What may differ between a run's saved config and a --resume of it.
# Not run.epochs: the cosine schedule is a function of the epoch budget.
RESUMABLE_CHANGES = {"run.device", "run.out"}


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line, like every other user error (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"nas: error: {message} (see {self.prog} --help)\n")


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
        "genotypes.jsonl, metrics.jsonl, config.yaml, checkpoints/ and tb/ (TensorBoard).",
    )
    search.add_argument("--config", metavar="FILE", help="YAML config (see experiments/configs/)")
    search.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override any config field, e.g. --set strategy.weight_lr=0.05 (repeatable)",
    )
    search.add_argument("--strategy", help="search strategy (default: darts)")
    search.add_argument("--space", help="search space (default: darts)")
    search.add_argument("--dataset", help="digits, synthetic or cifar10 (default: digits)")
    search.add_argument("--data-dir", help="folder holding CIFAR-10 (cifar10 only)")
    search.add_argument("--epochs", type=int, help="search epochs (default: 50)")
    search.add_argument("--batch-size", type=int, help="images per step and split (default: 64)")
    search.add_argument("--layers", type=int, help="cells in the supernet (default: 8)")
    search.add_argument("--channels", type=int, help="initial channels C (default: 16)")
    search.add_argument("--order", type=int, choices=[1, 2], help="1: first order, 2: unrolled")
    search.add_argument("--seed", type=int, help="random seed (default: 0)")
    search.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    search.add_argument("--out", metavar="DIR", help="run directory (default: runs/search-...)")
    search.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out DIR from its last checkpoint",
    )
    search.set_defaults(handler=_search)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `nas` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except NasError as err:
        print(f"nas: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nnas: interrupted; completed epochs are checkpointed: continue with --resume",
            file=sys.stderr,
        )
        return 130


def _resolve_config(args: argparse.Namespace, base: Any = None) -> Any:
    from nas.config import Config, apply_dict, load_yaml, parse_assignment, validate

    config = Config()
    if base is not None:
        apply_dict(config, base, "saved config")
    if args.config:
        apply_dict(config, load_yaml(args.config), args.config)
    for flag, key in SEARCH_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            config.set(key, value)
    for text in args.overrides:
        config.set(*parse_assignment(text))
    validate(config)
    return config


def _changed_keys(saved: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    return [
        f"{section}.{key}"
        for section, values in requested.items()
        for key, value in values.items()
        if saved.get(section, {}).get(key) != value
    ]


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def _prepare_run_dir(args: argparse.Namespace) -> tuple[Any, Path]:
    """Resolve the config and the run directory, refusing to overwrite or misresume a run."""
    from nas.config import load_yaml

    if not args.resume:
        config = _resolve_config(args)
        if config.run.out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            config.run.out = f"runs/search-{config.strategy.name}-{config.data.name}-{stamp}"
        run_dir = Path(config.run.out)
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise NasError(
                f"{run_dir} already holds a run; continue it with --resume or choose another --out"
            )
        # A run that died before its first checkpoint may have left a result; the logger's
        # rewind(0) drops its metrics and TensorBoard events.
        (run_dir / "genotype.json").unlink(missing_ok=True)
        return config, run_dir
    if args.out is None:
        raise NasError("--resume needs --out DIR, the run directory to continue")
    run_dir = Path(args.out)
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise NasError(f"{run_dir} holds no checkpoint to resume (checkpoints/last.pt is missing)")
    saved = load_yaml(run_dir / "config.yaml")
    config = _resolve_config(args, base=saved)
    changed = [k for k in _changed_keys(saved, config.to_dict()) if k not in RESUMABLE_CHANGES]
    if changed:
        raise NasError(
            f"--resume continues the run as saved in {run_dir}/config.yaml, but this command "
            f"changes {', '.join(changed)}; drop those options or start a new run"
        )
    return config, run_dir


def _write_config(config: Any, run_dir: Path, world_size: int) -> None:
    import yaml

    from nas import __version__
    from nas.io import atomic_write_text

    data = config.to_dict()
    data["meta"] = {
        "nasforge_version": __version__,
        "git_commit": _git_commit(),
        "world_size": world_size,
        "command": " ".join(["nas", *sys.argv[1:]]),
    }
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(data, sort_keys=False))


def _search(args: argparse.Namespace) -> int:
    config, run_dir = _prepare_run_dir(args)

    from nas.logging import RunLogger
    from nas.runtime import Engine, init_runtime
    from nas.runtime.checkpoint import seed_everything
    from nas.search import SearchTask

    runtime = init_runtime(config.run.device)
    seed_everything(config.run.seed)
    task = SearchTask(config, runtime)
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not args.resume:
            _write_config(config, run_dir, runtime.world_size)
    logger = RunLogger(run_dir, enabled=runtime.is_main)
    engine = Engine(task, runtime, logger, run_dir, config.run.epochs)
    start = engine.resume() if args.resume else 0
    print(
        f"nas search: {config.strategy.name} (order {config.strategy.order}) on "
        f"{config.data.name}, space {config.model.space}, {config.model.layers} cells, "
        f"C={config.model.channels}, epochs {start + 1}..{config.run.epochs}, "
        f"device {runtime.device}, run dir {run_dir}",
        file=sys.stderr,
    )
    try:
        record = engine.run(start)
    except KeyboardInterrupt:
        print(
            f"\nnas: interrupted; completed epochs are checkpointed. Continue with: "
            f"nas search --out {run_dir} --resume",
            file=sys.stderr,
        )
        return 130
    finally:
        logger.close()
    if record:
        print(
            f"epoch {record['epoch']}: train acc {record['train_acc']:.3f}, "
            f"val acc {record['val_acc']:.3f}, {record['epoch_seconds']:.1f} s/epoch"
        )
    print(f"genotype: {task.genotype().to_notation()}")
    print(f"written: {run_dir / 'genotype.json'}")
    print(f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    return 0
