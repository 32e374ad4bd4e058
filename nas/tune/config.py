"""The `tune:` section of a `nas tune` config: study settings and the declared search space.

A tune config is a command's config (the sections of `nas search` or `nas train`) plus:

    tune:
      command: train
      sampler: random
      pruner: asha
      params:
        train.lr: {type: float, low: 1e-3, high: 1e-1, log: true}
        data.batch_size: {type: categorical, choices: [32, 64]}

Nothing here imports optuna; the declarations are checked before a study is opened.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from nas.config import all_keys
from nas.errors import NasError
from nas.options import option_hint

SAMPLERS = ("random", "grid", "tpe")
PRUNERS = ("none", "asha", "hyperband")
PARAM_TYPES = ("float", "int", "categorical")
# Fields that say where a trial runs, not how it trains: set by nas tune itself.
UNTUNABLE = {"run.out", "run.device"}


@dataclass(frozen=True)
class ParamSpec:
    """One tuned config field: `float`/`int` in [low, high] (log scale or a step), or one of
    `choices` (categorical).
    """

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def grid_size(self) -> int:
        """How many values the grid sampler tries. Raises NasError if not finite."""
        if self.type == "categorical":
            return len(self.choices)
        if self.type == "int":
            return len(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise NasError(
                f"tune.params.{self.key}: the grid sampler needs a finite set of values; give "
                "this float a step, or declare it as categorical with choices"
            )
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1

    def grid_values(self) -> list[Any]:
        """Every value of the parameter, for the grid sampler. Raises NasError if not finite."""
        count = self.grid_size()
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        return [self.low + index * self.step for index in range(count)]


@dataclass
class TuneConfig:
    """Study settings (the `tune:` section).

    `metric` defaults to the command's val_acc (search: the alpha split; train: the `holdout`
    fraction of the training split, or the config's train.val_fraction with holdout 0; never the
    test split); `direction` defaults to minimize
    for a metric ending in `loss`, else maximize. ASHA and Hyperband count epochs: `min_epochs` is
    the first rung, `reduction_factor` the ratio between rungs.
    """

    command: str = "search"
    sampler: str = "tpe"
    pruner: str = "asha"
    trials: int = 20
    metric: str | None = None
    direction: str | None = None
    seed: int = 0
    min_epochs: int = 1
    reduction_factor: int = 3
    study: str | None = None
    holdout: float = 0.2
    # Seconds after which this worker starts no new trial (the running one ends); None: no limit.
    timeout: float | None = None
    params: dict[str, ParamSpec] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """YAML-ready; params as they are declared."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["params"] = {key: _spec_dict(spec) for key, spec in self.params.items()}
        return data


def parse_tune_section(raw: Any, config_class: type) -> TuneConfig:
    """Read the `tune:` mapping for a command whose config is `config_class`. Raises NasError
    naming the field for an unknown setting, an unknown config field or a bad declaration.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise NasError("tune: expected a mapping (command, sampler, pruner, trials, params, ...)")
    tune = TuneConfig()
    names = [f.name for f in dataclasses.fields(TuneConfig)]
    for name, value in raw.items():
        if name not in names:
            raise NasError(f"unknown setting tune.{name}{_suggest(name, names, 'tune.')}")
        if name != "params":
            set_tune_value(tune, name, value)
    tune.params = parse_params(raw.get("params"), config_class)
    return tune


def set_tune_value(tune: TuneConfig, name: str, value: Any) -> None:
    """Set one study setting (not params), checking it. Raises NasError."""
    ints = ("trials", "seed", "min_epochs", "reduction_factor")
    if name in ints:
        if not isinstance(value, int) or isinstance(value, bool):
            raise NasError(f"tune.{name} must be an integer, got {value!r}")
        minimum = {"trials": 1, "seed": 0, "min_epochs": 1, "reduction_factor": 2}[name]
        if value < minimum:
            raise NasError(f"tune.{name} must be at least {minimum}, got {value}")
    elif name == "holdout":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise NasError(f"tune.holdout must be a fraction in [0, 1), got {value!r}")
        value = float(value)
    elif name == "timeout":
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = value is None or (number and math.isfinite(value) and value > 0)
        if not ok:
            raise NasError(f"tune.timeout must be a positive number of seconds, got {value!r}")
    elif name == "params" or name.startswith("params."):
        raise NasError("tune.params is declared in the --config file, not with --set")
    elif value is not None and not isinstance(value, str):
        raise NasError(f"tune.{name} must be a name, got {value!r}")
    allowed = {"sampler": SAMPLERS, "pruner": PRUNERS, "direction": ("minimize", "maximize")}
    if name in allowed and value not in allowed[name] and not (name == "direction" and not value):
        raise NasError(f"tune.{name} must be one of {', '.join(allowed[name])}; got {value!r}")
    if not hasattr(tune, name):
        names = [f.name for f in dataclasses.fields(TuneConfig)]
        raise NasError(f"unknown setting tune.{name}{_suggest(name, names, 'tune.')}")
    setattr(tune, name, value)


def parse_params(raw: Any, config_class: type) -> dict[str, ParamSpec]:
    """The declared search space, checked against the fields of `config_class`."""
    if raw is None or raw == {}:
        raise NasError(
            "tune.params is empty: declare the search space in the --config file, e.g. "
            "tune: {params: {train.lr: {type: float, low: 0.001, high: 0.1, log: true}}}"
        )
    if not isinstance(raw, dict):
        raise NasError("tune.params must map config fields to declarations")
    return {key: _parse_param(str(key), decl, config_class) for key, decl in raw.items()}


def _parse_param(key: str, decl: Any, config_class: type) -> ParamSpec:
    where = f"tune.params.{key}"
    keys = all_keys(config_class)
    if key not in keys:
        raise NasError(f"{where}: unknown config field {key!r}{_suggest(key, keys, '')}")
    if key in UNTUNABLE:
        raise NasError(f"{where}: {key} is set by nas tune itself and cannot be tuned")
    if not isinstance(decl, dict):
        raise NasError(f"{where}: expected a mapping such as {{type: float, low: .., high: ..}}")
    kind = decl.get("type")
    if kind not in PARAM_TYPES:
        raise NasError(f"{where}: type must be one of {', '.join(PARAM_TYPES)}, got {kind!r}")
    numeric = {"type", "low", "high", "log", "step"}
    allowed = {"type", "choices"} if kind == "categorical" else numeric
    extra = sorted(set(decl) - allowed)
    if extra:
        raise NasError(f"{where}: {kind} takes {', '.join(sorted(allowed))}, not {extra[0]!r}")
    spec = _categorical(where, decl) if kind == "categorical" else _numeric(where, kind, decl)
    spec = dataclasses.replace(spec, key=key)
    _check_against_field(spec, config_class, where)
    return spec


def _categorical(where: str, decl: dict[str, Any]) -> ParamSpec:
    choices = decl.get("choices")
    if not isinstance(choices, list) or not choices:
        raise NasError(f"{where}: categorical needs a non-empty list of choices")
    for choice in choices:
        # optuna stores choices as JSON scalars.
        if choice is not None and not isinstance(choice, bool | int | float | str):
            raise NasError(f"{where}: choice {choice!r} is not a number, string, bool or null")
    if len(set(map(repr, choices))) != len(choices):
        raise NasError(f"{where}: choices must be different from each other")
    return ParamSpec("", "categorical", choices=tuple(choices))


def _numeric(where: str, kind: str, decl: dict[str, Any]) -> ParamSpec:
    def number(name: str, required: bool) -> float | int | None:
        value = decl.get(name)
        if value is None:
            if required:
                raise NasError(f"{where}: {kind} needs {name}")
            return None
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise NasError(f"{where}: {name} must be a number, got {value!r}")
        if kind == "int":
            if float(value) != int(value):
                raise NasError(f"{where}: {name} of an int parameter must be whole, got {value!r}")
            return int(value)
        return float(value)

    low, high, step = number("low", True), number("high", True), number("step", False)
    log = decl.get("log", False)
    if not isinstance(log, bool):
        raise NasError(f"{where}: log must be true or false, got {log!r}")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise NasError(f"{where}: low and high must be finite numbers, got {low} and {high}")
    if not low < high:
        raise NasError(f"{where}: low ({low}) must be below high ({high})")
    if step is not None and step <= 0:
        raise NasError(f"{where}: step must be positive, got {step}")
    if log and step is not None and not (kind == "int" and step == 1):
        raise NasError(f"{where}: log and step cannot be used together")
    if log and low <= 0:
        raise NasError(f"{where}: a log-scale range needs low > 0, got {low}")
    return ParamSpec("", kind, low=low, high=high, log=log, step=step)


def _check_against_field(spec: ParamSpec, config_class: type, where: str) -> None:
    """Every value the declaration can produce must be accepted by the config field."""
    section, _, name = spec.key.partition(".")
    hints = typing.get_type_hints(type(getattr(config_class(), section)))
    hint = hints[name] if name in hints else option_hint(config_class, section, name)
    options = set(typing.get_args(hint)) or {hint}
    if spec.type == "float" and float not in options:
        raise NasError(f"{where}: {spec.key} is not a float field; declare it as int/categorical")
    if spec.type == "int" and not options & {int, float}:
        raise NasError(f"{where}: {spec.key} is not a number field; declare it as categorical")
    values = spec.choices if spec.type == "categorical" else (spec.low, spec.high)
    probe = config_class()
    for value in values:
        try:
            copy.deepcopy(probe).set(spec.key, value)
        except NasError as err:
            raise NasError(f"{where}: {err}") from None


def _spec_dict(spec: ParamSpec) -> dict[str, Any]:
    if spec.type == "categorical":
        return {"type": "categorical", "choices": list(spec.choices)}
    data: dict[str, Any] = {"type": spec.type, "low": spec.low, "high": spec.high}
    if spec.log:
        data["log"] = True
    if spec.step is not None:
        data["step"] = spec.step
    return data


def _suggest(name: str, choices: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f"; did you mean {prefix + close[0]!r}?" if close else ""
