"""Run configuration: nested dataclasses with defaults, filled from YAML and `--set key=value`.

`Config` configures `nas search`; its defaults are the DARTS paper's CIFAR-10 search settings (Liu
et al. 2019, Sec. 3.1.1 and App. A.1). `TrainConfig` configures `nas train`; its defaults are the
paper's CIFAR-10 final training (Sec. 3.3 and App. A.2). Every field can be overridden by dotted
key, for example `strategy.weight_lr=0.05` or `train.lr=0.05`. The settings of one strategy,
dataset or AdaNet generator are declared beside it (nas/options.py) and set the same way
(`strategy.temperature=0.5`); they reach the plugin as `section.options`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from nas.errors import NasError, shorten
from nas.options import (
    Options,
    PluginSection,
    does_nothing,
    option_names,
    plugin_owners,
    resolve_options,
)
from nas.yamlfile import load_yaml as load_yaml
from nas.yamlfile import parse_yaml

# Integers go to torch as int64 (seeds, sizes, epochs).
INT64_MAX = 2**63 - 1
EARLY_STOPS = ("none", "param_free", "eigenvalue")  # collapse.early_stop


@dataclass
class DataConfig:
    """Dataset and batching; `options` holds the dataset's own settings (its keys are flat in this
    section: `data.synthetic_samples`, `data.data_dir`).

    `batch_size` is per process and per split: a search step uses `batch_size` training images for
    the weight step and `batch_size` validation images for the alpha step.
    """

    name: str = "digits"
    # None: fitted to the dataset (nas train; nas/data/defaults.py).
    batch_size: int | None = 64
    # Fraction of the training set that trains the weights; the rest trains the alphas (DARTS: 0.5).
    train_portion: float = 0.5
    # Random crop (padding side / 8) and, where the dataset flips, horizontal flip of training
    # images. None: on where it changes the images (nas/data/defaults.py).
    augment: bool | None = None
    # Cutout (DeVries and Taylor 2017): zero one random square of this side per training image.
    # None: fitted to the image side (nas/data/defaults.py).
    cutout: int | None = None
    # Loader processes that read and augment the samples (0: the main process). A dataset streamed
    # from disk (a large image folder) needs them to keep up; batches are the same for any number.
    workers: int = 0
    # The selected dataset's options (nas/options.py); None: its defaults, filled on validation.
    options: Options | None = None


@dataclass
class ModelConfig:
    """The supernet: search space, number of cells, initial channels, and how it is computed."""

    space: str = "darts"
    layers: int = 8
    channels: int = 16
    # "fast": the edges leaving a state run as grouped calls (nas/supernet/fast.py); "reference":
    # one call per op per edge. Both give the same result up to float summation order.
    path: str = "fast"
    # PC-DARTS K (Xu et al. 2020): mixed ops see 1/K of the channels, plus edge normalisation.
    partial_channels: int = 1
    # Activation checkpointing per cell: recompute activations in the backward pass (less memory).
    checkpoint_cells: bool = False


@dataclass
class StrategyConfig:
    """Search strategy and its optimisers (DARTS defaults); `options` holds the strategy's own
    settings (its keys are flat in this section: `strategy.order`, `strategy.temperature`)."""

    name: str = "darts"
    weight_lr: float = 0.025
    weight_lr_min: float = 0.001
    weight_momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    alpha_lr: float = 3e-4
    alpha_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    alpha_weight_decay: float = 1e-3
    # The selected strategy's options (nas/options.py); None: its defaults, filled on validation.
    options: Options | None = None


@dataclass
class CollapseConfig:
    """The `collapse:` section of a search: diagnostics and guards against a search collapsing to
    parameter-free ops (nas/collapse.py, docs/collapse.md)."""

    # Every this many epochs, the dominant Hessian eigenvalue of the validation loss w.r.t. the
    # alphas (R-DARTS). 0: never; it costs about `hessian_iterations` backward passes over
    # `hessian_samples` validation samples (the record's hessian_seconds says how long).
    hessian_every: int = 0
    # The fixed validation subset it is computed on: the first N samples of the validation split.
    hessian_samples: int = 256
    # Power-iteration steps (it stops earlier once the estimate changes by less than 1e-4).
    hessian_iterations: int = 20
    # P-DARTS (Chen et al. 2019, Sec. 3.3): at most this many skip connections in the derived
    # normal cell, the weakest others replaced by their edge's next-best op. None: no cap.
    max_skips: int | None = None
    # Stop the search when collapse is under way and keep the genotype from before it:
    # "param_free" (DARTS+), "eigenvalue" (R-DARTS) or "none" (warn only).
    early_stop: str = "none"
    # Collapse by the ops: the normal cell's parameter-free ops rise to at least this many
    # (DARTS+ stops at two skip connections).
    param_free_limit: int = 2
    # Collapse by the eigenvalue: its mean over the last `eigenvalue_epochs` epochs exceeds the
    # mean over the `eigenvalue_epochs` before them by more than 1 / `eigenvalue_ratio`
    # (R-DARTS: k = 5 epochs, ratio 0.75).
    eigenvalue_epochs: int = 5
    eigenvalue_ratio: float = 0.75

    def checks(self) -> list[tuple[bool, str]]:
        """Range checks, each naming its key."""
        return [
            (self.hessian_every >= 0, "collapse.hessian_every must be 0 (off) or more epochs"),
            (self.hessian_samples >= 1, "collapse.hessian_samples must be at least 1"),
            (self.hessian_iterations >= 1, "collapse.hessian_iterations must be at least 1"),
            (
                self.max_skips is None or self.max_skips >= 0,
                "collapse.max_skips must be 0 or more (null: no cap)",
            ),
            (
                self.early_stop in EARLY_STOPS,
                f"collapse.early_stop must be one of {', '.join(EARLY_STOPS)}",
            ),
            (self.param_free_limit >= 1, "collapse.param_free_limit must be at least 1"),
            (self.eigenvalue_epochs >= 1, "collapse.eigenvalue_epochs must be at least 1"),
            (
                0 < self.eigenvalue_ratio < 1,
                "collapse.eigenvalue_ratio must be between 0 and 1 (R-DARTS: 0.75)",
            ),
            (
                self.early_stop != "eigenvalue"
                or 1 <= self.hessian_every <= self.eigenvalue_epochs,
                "collapse.early_stop=eigenvalue needs the eigenvalue in every window of "
                "collapse.eigenvalue_epochs epochs: set collapse.hessian_every to 1 or up to "
                "collapse.eigenvalue_epochs",
            ),
        ]


@dataclass
class RunConfig:
    """Epochs, seed, device and the run directory."""

    # None: fitted to the dataset (nas train; nas/data/defaults.py).
    epochs: int | None = 50
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    # Several CUDA processes: BatchNorm normalises with the statistics of the global batch
    # (SyncBatchNorm) instead of each process's own; see docs/distributed.md.
    sync_batchnorm: bool = False


class _Sections:
    """A configuration made of section dataclasses, addressed by dotted keys."""

    # section -> the plugin registry whose selected plugin owns the section's other keys
    plugin_sections: ClassVar[dict[str, PluginSection]] = {}
    # dotted key -> why this command does not read it; setting it is refused
    unread: ClassVar[dict[str, str]] = {}

    def resolve(self, fit_data: bool = True) -> None:
        """Fill values that default to "depends on other fields" (after validation): with
        `fit_data`, the data-dependent ones from the dataset, which is loaded for it (raises
        NasError for data the command cannot use, see nas/data/defaults.py); then the rest.
        """
        if fit_data:
            from nas.data.defaults import fit_to_data

            fit_to_data(self)

    def checks(self) -> list[tuple[bool, str]] | None:
        """(ok, message) range checks of a configuration class defined outside this module
        (`nas grow`'s, in nas/adanet/config.py); None for the classes `validate` knows.
        """
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-ready), with the selected plugins' options flat in their
        sections and without the keys this command does not read. Raises NasError (see
        nas.options.resolve_options)."""
        if self.__dict__.get("_plugin_values") or any(
            getattr(self, name).options is None for name in self.plugin_sections
        ):
            resolve_options(self)
        data: dict[str, Any] = {}
        for section in dataclasses.fields(self):
            values = getattr(self, section.name)
            row = {
                f.name: copy.deepcopy(getattr(values, f.name))
                for f in dataclasses.fields(values)
                if f.name != "options" and f"{section.name}.{f.name}" not in self.unread
            }
            if section.name in self.plugin_sections:
                row.update(dataclasses.asdict(values.options))
            data[section.name] = row
        return data

    def set(self, key: str, value: Any) -> None:
        """Set the dotted `key` to `value`, checking the name and type. A key of a plugin's
        options is kept until `validate` knows the plugin. Raises NasError."""
        section_name, _, name = key.partition(".")
        sections = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if section_name not in sections or not name:
            raise NasError(f"unknown config key {shorten(key)}{_suggest(key, all_keys(self))}")
        if key in self.unread:
            raise does_nothing(key, self.unread[key], "remove it")
        section = sections[section_name]
        hints = typing.get_type_hints(type(section))
        hints.pop("options", None)
        plugin = self.plugin_sections.get(section_name)
        if name in hints:
            value = _coerce(value, hints[name], key)
            if plugin is not None and name == plugin.selector and value != getattr(section, name):
                section.options = None  # another plugin: its own defaults
            setattr(section, name, value)
        elif plugin is not None and plugin_owners(plugin, name):
            self.__dict__.setdefault("_plugin_values", {}).setdefault(section_name, {})[name] = (
                value
            )
        else:
            raise NasError(f"unknown config key {shorten(key)}{_suggest(key, all_keys(self))}")


# The data section's other keys belong to the selected dataset.
DATASET = PluginSection("nas.data:DATASETS")


@dataclass
class Config(_Sections):
    """A search run's configuration (`nas search`), as written to the run's config.yaml."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    run: RunConfig = field(default_factory=RunConfig)

    plugin_sections: ClassVar[dict[str, PluginSection]] = {
        "data": DATASET,
        "strategy": PluginSection("nas.strategies:STRATEGIES"),
    }

    def resolve(self, fit_data: bool = True) -> None:
        """Unset augmentation takes the DARTS search's on CIFAR-10 (crop and flip, no cutout)
        where the dataset does not decide it."""
        super().resolve(fit_data)
        if self.data.augment is None:
            self.data.augment = True
        if self.data.cutout is None:
            self.data.cutout = 0


# network -> (paper layers, paper channels C, standard input side): DARTS Sec. 3.3.
NETWORK_DEFAULTS = {"cifar": (20, 36, 32), "imagenet": (14, 48, 224)}


@dataclass
class NetworkConfig:
    """The discrete network trained from a genotype.

    `layers` and `channels` left unset take the network's paper values: 20 cells and C=36 for
    `cifar`, 14 cells and C=48 for `imagenet`.
    """

    genotype: str | None = None
    # A hand-designed network (nas/models/baselines.py) trained instead of a genotype's.
    baseline: str | None = None
    network: str = "cifar"
    layers: int | None = None
    channels: int | None = None
    # Weight of the auxiliary head's loss; 0 builds no auxiliary head. None: 0.4 (DARTS), 0 for
    # a baseline (it has no head).
    auxiliary_weight: float | None = None
    # Final drop-path probability; it ramps linearly from 0 over training. None: 0.2 (DARTS), 0
    # for a baseline (it has no paths to drop).
    drop_path: float | None = None


@dataclass
class OptimizerConfig:
    """The `train:` section: SGD with a cosine learning rate, as in the DARTS paper's final
    training."""

    lr: float = 0.025
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    label_smoothing: float = 0.0
    # Fraction of the training split held out as validation: best.pt is the epoch with the best
    # validation accuracy; the test split is evaluated only on the chosen and the final weights.
    # 0: no validation, best.pt is the last epoch.
    val_fraction: float = 0.1


@dataclass
class TrainConfig(_Sections):
    """A final training run's configuration (`nas train`); defaults: DARTS on CIFAR-10."""

    data: DataConfig = field(default_factory=lambda: DataConfig(name="cifar10", batch_size=None))
    model: NetworkConfig = field(default_factory=NetworkConfig)
    train: OptimizerConfig = field(default_factory=OptimizerConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(epochs=None))

    plugin_sections: ClassVar[dict[str, PluginSection]] = {"data": DATASET}
    unread: ClassVar[dict[str, str]] = {
        "data.train_portion": "nas train holds out train.val_fraction of the training split for "
        "validation (nas search splits off the alphas' share)",
    }

    def resolve(self, fit_data: bool = True) -> None:
        """Values the dataset leaves unset take the paper's CIFAR-10 training: 600 epochs, batch
        96, crop, flip and cutout 16, and the network's layers and channels, auxiliary weight 0.4
        and drop path 0.2 (a baseline: no cells, auxiliary weight and drop path 0)."""
        super().resolve(fit_data)
        layers, channels, _ = NETWORK_DEFAULTS[self.model.network]
        cells = self.model.baseline is None  # a baseline has no cells, head or drop path
        paper = {
            ("model", "layers"): layers if cells else None,
            ("model", "channels"): channels if cells else None,
            ("model", "auxiliary_weight"): 0.4 if cells else 0.0,
            ("model", "drop_path"): 0.2 if cells else 0.0,
            ("run", "epochs"): 600,
            ("data", "batch_size"): 96,
            ("data", "augment"): True,
            ("data", "cutout"): 16,
        }
        for (section, name), value in paper.items():
            if getattr(getattr(self, section), name) is None:
                setattr(getattr(self, section), name, value)


def all_keys(config_class: Any = Config) -> list[str]:
    """Every dotted key of `config_class` (or of a config's class; search by default), the options
    of every registered plugin included, without the keys the command does not read."""
    config = config_class() if isinstance(config_class, type) else config_class
    keys = [
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(config)
        for f in dataclasses.fields(getattr(config, section.name))
        if f.name != "options"
    ]
    for section_name, plugin in config.plugin_sections.items():
        registry = plugin.load()
        for name in registry.names():
            keys += [f"{section_name}.{key}" for key in option_names(registry.options(name))]
    return [key for key in dict.fromkeys(keys) if key not in config.unread]


def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key[:100], choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(choices)}"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the type `hint`, converting where YAML is loose (1e-3 -> float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except NasError:
                pass
        raise NasError(f"config key {key!r}: expected {_type_name(hint)}, got {shorten(value)}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise NasError(f"config key {key!r}: expected a list, got {shorten(value)}")
        return [_coerce(v, item, key) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > INT64_MAX:
                raise NasError(
                    f"config key {key!r}: {shorten(value)} does not fit a 64-bit integer "
                    f"(at most {INT64_MAX})"
                )
            return value
    elif hint is float:
        number = _float(value)
        if number is not None:
            if not math.isfinite(number):
                raise NasError(f"config key {key!r}: expected a finite number, got {number}")
            return number
    elif hint is str and isinstance(value, str):
        return value
    raise NasError(f"config key {key!r}: expected {_type_name(hint)}, got {shorten(value)}")


def _float(value: Any) -> float | None:
    """`value` as a float, or None when it is no number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an int beyond float range
            return math.inf
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def parse_assignment(text: str) -> tuple[str, Any]:
    """Split `key=value` (the value read as YAML). Raises NasError if there is no '='."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise NasError(f"--set expects key=value, got {shorten(text)}")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError):  # not YAML (or a number too long): the text itself
        value = raw
    return key.strip(), value


def apply_dict(config: _Sections, data: Any, where: str) -> None:
    """Apply a nested mapping {section: {field: value}} onto `config`. Raises NasError."""
    if data is None:
        return
    if not isinstance(data, dict):
        raise NasError(f"{where}: expected a mapping of sections, got {type(data).__name__}")
    for section, values in data.items():
        if section == "meta":  # written by nasforge into run directories; informational
            continue
        if not isinstance(values, dict):
            raise NasError(
                f"{where}: section {shorten(section)} must be a mapping of keys to values"
            )
        for name, value in values.items():
            try:
                config.set(f"{section}.{name}", value)
            except NasError as err:
                raise NasError(f"{where}: {err}") from None


def validate(config: _Sections) -> None:
    """Range checks a type check cannot express (nas/config_checks.py). Raises NasError naming
    the key."""
    from nas.config_checks import check_config

    check_config(config)
