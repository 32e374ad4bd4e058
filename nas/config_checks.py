"""Range checks of the configuration classes, run when a configuration is read.

Each check names its key, so that a setting torch would reject (a negative momentum, Adam betas
outside [0, 1)) or a size that cannot work is refused before a run directory is written.
"""

from __future__ import annotations

import importlib

from nas.config import (
    NETWORK_DEFAULTS,
    Config,
    ModelConfig,
    NetworkConfig,
    TrainConfig,
    _Sections,
)
from nas.errors import NasError
from nas.options import options_checks, resolve_options


def check_config(config: _Sections) -> None:
    """Range checks of every field a type check cannot express. Raises NasError naming the key."""
    resolve_options(config)
    fitted = isinstance(config, TrainConfig)  # its batch size and epochs may follow the data
    checks = [
        (
            (fitted and config.data.batch_size is None) or (config.data.batch_size or 0) >= 2,
            "data.batch_size must be at least 2 (BatchNorm needs it)",
        ),
        (0 < config.data.train_portion < 1, "data.train_portion must be between 0 and 1"),
        (
            config.data.cutout is None or config.data.cutout >= 0,
            "data.cutout must be 0 (off) or a positive side length",
        ),
        (config.data.workers >= 0, "data.workers must be 0 (the main process) or more"),
        (
            (fitted and config.run.epochs is None) or (config.run.epochs or 0) >= 1,
            "run.epochs must be at least 1",
        ),
        (
            not (config.run.sync_batchnorm and config.run.device == "cpu"),
            "run.sync_batchnorm needs CUDA devices (SyncBatchNorm has no CPU implementation)",
        ),
    ]
    checks += options_checks(config)
    own_checks = config.checks()
    if own_checks is not None:
        _raise_first(checks + own_checks)
        _check_registered("nas.data", "DATASETS", config.data.name)
        return
    model = config.model
    checks += [
        (model.layers is None or model.layers >= 1, "model.layers must be at least 1"),
        (model.channels is None or model.channels >= 1, "model.channels must be at least 1"),
    ]
    if isinstance(config, TrainConfig):
        train = config.train
        checks += [
            (model.network in NETWORK_DEFAULTS, "model.network must be cifar or imagenet"),
            (
                model.network != "imagenet" or (model.channels or 0) % 2 == 0,
                "model.channels must be even for the imagenet network (its stem halves it)",
            ),
            (
                model.auxiliary_weight is None or model.auxiliary_weight >= 0,
                "model.auxiliary_weight must be 0 (off) or positive",
            ),
            (
                model.drop_path is None or 0 <= model.drop_path < 1,
                "model.drop_path must be in [0, 1)",
            ),
            *_baseline_checks(model),
            (train.lr > 0, "train.lr must be positive"),
            (0 <= train.lr_min <= train.lr, "train.lr_min must be between 0 and train.lr"),
            (train.momentum >= 0, "train.momentum must be 0 or positive"),
            (train.weight_decay >= 0, "train.weight_decay must be 0 or positive"),
            (train.grad_clip > 0, "train.grad_clip must be positive"),
            (0 <= train.label_smoothing < 1, "train.label_smoothing must be in [0, 1)"),
            (
                0 <= train.val_fraction < 1,
                "train.val_fraction must be in [0, 1) (0: no validation)",
            ),
        ]
    else:
        strategy = config.strategy
        checks += [
            (model.path in ("fast", "reference"), "model.path must be fast or reference"),
            (model.partial_channels >= 1, "model.partial_channels must be 1 (off) or more"),
            (strategy.weight_lr > 0, "strategy.weight_lr must be positive"),
            (
                0 <= strategy.weight_lr_min <= strategy.weight_lr,
                "strategy.weight_lr_min must be between 0 and strategy.weight_lr",
            ),
            (strategy.weight_momentum >= 0, "strategy.weight_momentum must be 0 or positive"),
            (strategy.weight_decay >= 0, "strategy.weight_decay must be 0 or positive"),
            (strategy.grad_clip > 0, "strategy.grad_clip must be positive"),
            (strategy.alpha_lr > 0, "strategy.alpha_lr must be positive"),
            (
                len(strategy.alpha_betas) == 2 and all(0 <= b < 1 for b in strategy.alpha_betas),
                "strategy.alpha_betas must be two numbers in [0, 1) (Adam's beta1, beta2)",
            ),
            (
                strategy.alpha_weight_decay >= 0,
                "strategy.alpha_weight_decay must be 0 or positive",
            ),
            *config.collapse.checks(),
        ]
    _raise_first(checks)
    _check_registered("nas.data", "DATASETS", config.data.name)
    if isinstance(config, TrainConfig) and config.model.baseline is not None:
        _check_registered("nas.models.baselines", "BASELINES", config.model.baseline)
    if isinstance(config, Config):
        _check_registered("nas.strategies", "STRATEGIES", config.strategy.name)
        _check_supernet(config.model)
        _check_skip_cap(config)


def _check_registered(module: str, registry: str, name: str) -> None:
    """`name` is registered in `module.registry` (imported only now: it needs torch). Raises
    NasError naming the kind ("unknown dataset ...") and the choices."""
    getattr(importlib.import_module(module), registry).get(name)


def _check_supernet(model: ModelConfig) -> None:
    """The space exists, its reduction cells fit `layers`, and K divides the channels."""
    from nas.spaces import check_layers, get_space
    from nas.supernet.network import check_partial_channels

    space = get_space(model.space)
    check_layers(space, model.layers)
    check_partial_channels(space, model.channels, model.partial_channels)


def _check_skip_cap(config: Config) -> None:
    """collapse.max_skips caps a genotype derived from op weights (the base Strategy.genotype)."""
    from nas.strategies import STRATEGIES, Strategy

    name = config.strategy.name
    if config.collapse.max_skips is not None and STRATEGIES.get(name).genotype is not (
        Strategy.genotype
    ):
        raise NasError(
            "collapse.max_skips caps the skip connections of a cell derived from op weights; "
            f"strategy {name} picks its genotype another way: drop collapse.max_skips"
        )


def _raise_first(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise NasError(message)


def _baseline_checks(model: NetworkConfig) -> list[tuple[bool, str]]:
    """`nas train --model NAME` trains a plain network: the cell network's settings do not apply."""
    if model.baseline is None:
        return []
    name = model.baseline
    return [
        (
            model.genotype is None,
            f"--genotype and --model {name} both choose the network to train; give one of them",
        ),
        (
            model.network == "cifar" and model.layers is None and model.channels is None,
            f"--model {name} is a hand-designed network: --network, --layers and --channels "
            "shape cell networks only; drop them",
        ),
        (
            not model.auxiliary_weight and not model.drop_path,
            f"--model {name} has no auxiliary head and no paths to drop: drop "
            "--auxiliary-weight and --drop-path (or set them to 0)",
        ),
    ]
