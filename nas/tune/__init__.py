"""Hyperparameter search over a nas command (`nas tune`) with optuna, the `hpo` extra.

Importing this package does not import optuna; opening a study does.
"""

from nas.tune.commands import TUNABLE_COMMANDS, TunableCommand
from nas.tune.config import ParamSpec, TuneConfig, parse_params, parse_tune_section

__all__ = [
    "TUNABLE_COMMANDS",
    "ParamSpec",
    "TuneConfig",
    "TunableCommand",
    "parse_params",
    "parse_tune_section",
]
