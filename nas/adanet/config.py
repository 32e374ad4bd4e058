"""`nas grow`'s configuration: the data and run sections of the other commands plus `adanet`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from nas.config import DATASET, DataConfig, RunConfig, _Sections
from nas.options import Options, PluginSection

SCHEDULES = ("sync", "async")
MIXTURES = ("scalar", "vector")


@dataclass
class AdaNetConfig:
    """AdaNet growth (Cortes et al., ICML 2017); the defaults are explained in docs/adanet.md.

    The objective of an ensemble f = sum_j w_j h_j is the mean cross-entropy of f plus
    sum_j (complexity_weight * r(h_j) + complexity_bias) * |w_j|_1, with r(h) = sqrt(depth).
    """

    generator: str = "mlp"
    # At most this many iterations, each adding at most one subnetwork.
    iterations: int = 3
    # Depth (hidden layers, or cells for cnn) of the shallower candidate of the first iteration;
    # unset: 1 for mlp, the fewest cells the genotype's space allows for cnn (3 for darts).
    initial_depth: int | None = None
    # scalar: one mixture weight per member; vector: one per member and class.
    mixture: str = "scalar"
    # lambda and beta of the objective.
    complexity_weight: float = 0.01
    complexity_bias: float = 0.001
    # Adam on each candidate's own cross-entropy for run.epochs epochs.
    lr: float = 1e-3
    weight_decay: float = 0.0
    # Adam on the mixture weights of every candidate ensemble: mixture_epochs passes over the
    # held-out split (stacking: members fit the training split almost perfectly), all in one
    # engine epoch after the candidate rounds.
    mixture_lr: float = 0.01
    mixture_epochs: int = 20
    # Keep the best candidate even when it does not lower the objective.
    force_grow: bool = False
    # sync: every candidate trains on all processes; async: each on its own share of them.
    schedule: str = "sync"
    # async only: shares left idle train the next iteration's candidates, guessing the leader.
    forecast: bool = True
    # The selected generator's options (nas/options.py); None: its defaults, filled on validation.
    options: Options | None = None


@dataclass
class GrowConfig(_Sections):
    """An AdaNet run's configuration (`nas grow`). `run.epochs` is each candidate's epochs."""

    data: DataConfig = field(default_factory=lambda: DataConfig(train_portion=0.8))
    adanet: AdaNetConfig = field(default_factory=AdaNetConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(epochs=20))

    plugin_sections: ClassVar[dict[str, PluginSection]] = {
        "data": DATASET,
        "adanet": PluginSection("nas.adanet.generators:GENERATORS", selector="generator"),
    }
    # Candidates and mixture weights train on the samples as they are (many are tabular).
    unread: ClassVar[dict[str, str]] = {
        key: "nas grow trains its candidates without augmentation"
        for key in ("data.augment", "data.cutout")
    }

    def checks(self) -> list[tuple[bool, str]]:
        """Range and compatibility checks of the adanet section (the generator's own options
        check themselves)."""
        ada = self.adanet
        reuse_hidden = getattr(ada.options, "reuse_hidden", False)
        return [
            (ada.iterations >= 1, "adanet.iterations must be at least 1"),
            (
                ada.initial_depth is None or ada.initial_depth >= 1,
                "adanet.initial_depth must be at least 1",
            ),
            (ada.mixture in MIXTURES, "adanet.mixture must be scalar or vector"),
            (ada.complexity_weight >= 0, "adanet.complexity_weight must be 0 or positive"),
            (ada.complexity_bias >= 0, "adanet.complexity_bias must be 0 or positive"),
            (ada.lr > 0 and ada.mixture_lr > 0, "adanet.lr and adanet.mixture_lr must be positive"),
            (ada.weight_decay >= 0, "adanet.weight_decay must be 0 or positive"),
            (ada.mixture_epochs >= 1, "adanet.mixture_epochs must be at least 1"),
            (ada.schedule in SCHEDULES, "adanet.schedule (--schedule) must be sync or async"),
            (
                ada.schedule == "async" or ada.forecast,
                "adanet.forecast applies to --schedule async only; remove it or use async",
            ),
            (
                not (ada.schedule == "async" and ada.forecast and reuse_hidden),
                "async forecasting cannot be combined with adanet.reuse_hidden (a forecast "
                "candidate would read a leader that is still training); set "
                "adanet.forecast=false or adanet.reuse_hidden=false",
            ),
            (
                ada.schedule == "sync" or (self.run.epochs or 0) >= 2 or not ada.forecast,
                "async forecasting needs run.epochs >= 2 (the leader is known after epoch 1)",
            ),
        ]
