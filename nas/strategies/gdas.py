"""GDAS: a differentiable architecture sampler (Dong and Yang, CVPR 2019, "Searching for a robust
neural architecture in four GPU hours").

Every training forward pass samples one op per edge by the Gumbel-max trick on the alphas, and
only that op runs (Sec. 3.2). Its weight is 1 in the forward pass, while the gradient reaches the
alphas through the Gumbel-softmax probabilities softmax((alpha + g) / tau), a straight-through
estimator (Eq. 5). tau falls linearly from tau_max = 10 to tau_min = 0.1 over the budget, the
paper's values (Sec. 4.1). Weights and alphas are updated alternately, the alphas by the
first-order DARTS step (Alg. 1). In evaluation every edge runs its most likely op. The genotype is
the DARTS rule on softmax(alpha).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nas.config import StrategyConfig
from nas.options import Options
from nas.runtime.dist import Runtime
from nas.runtime.engine import StepResult
from nas.strategies.base import STRATEGIES, Batch
from nas.strategies.darts import Darts
from nas.supernet import SearchNetwork
from nas.supernet.mixing import Mix, live_softmax, one_hot_mix


@dataclass
class GdasOptions(Options):
    """GDAS's Gumbel-softmax temperature schedule (Dong and Yang 2019, Sec. 4.1)."""

    # tau at the first step; it falls linearly to tau_min at the last step of the budget.
    tau_max: float = 10.0
    # tau at the last step: the lower, the closer the gradient is to the one-hot sample's.
    tau_min: float = 0.1

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (
                0 < self.tau_min <= self.tau_max,
                "strategy.tau_min must be positive and at most strategy.tau_max",
            )
        ]


@STRATEGIES.register("gdas", options=GdasOptions)
class Gdas(Darts):
    """GDAS on DARTS's optimisers, with a first-order alpha step."""

    samples_ops = True
    summary_keys = ("tau",)
    order = 1  # the alphas take the first-order DARTS step (Alg. 1)

    def __init__(
        self,
        network: SearchNetwork,
        config: StrategyConfig,
        epochs: int,
        steps_per_epoch: int,
        runtime: Runtime | None = None,
    ) -> None:
        super().__init__(network, config, epochs, steps_per_epoch, runtime)
        self.steps = 0  # steps taken so far
        self.tau = self.tau_at(0)  # of the step in progress, else of the last step taken
        self.generator = self.sampler(0)

    def tau_at(self, step: int) -> float:
        """tau at global step `step` (0-based): linear from tau_max to tau_min over the budget."""
        last = self.epochs * self.steps_per_epoch - 1
        progress = min(step / last, 1.0) if last > 0 else 1.0
        return self.options.tau_max * (1 - progress) + self.options.tau_min * progress

    def mix(self, alphas: Sequence[torch.Tensor], pruned: Sequence[torch.Tensor]) -> list[Mix]:
        """A Gumbel-max sample of one op per edge in training (straight-through), each edge's
        most likely op in evaluation.
        """
        num_ops = alphas[0].shape[1]
        if self.network.training:
            # Gumbel(0, 1) noise g = -log(E), E ~ Exp(1), from the step's generator (same on
            # every rank); the argmax of alpha + g is a sample of softmax(alpha) (Eq. 3).
            soft = [
                live_softmax(alpha + self._gumbel(alpha), mask, self.tau)
                for alpha, mask in zip(alphas, pruned)
            ]
        else:
            soft = [live_softmax(alpha, mask) for alpha, mask in zip(alphas, pruned)]
        # One read of the device per forward pass: the sampled op of every edge of both kinds.
        choices = torch.stack([weights.argmax(dim=-1) for weights in soft]).tolist()
        if not self.network.training:
            return [one_hot_mix(row, num_ops, alpha.device) for row, alpha in zip(choices, alphas)]
        return [
            one_hot_mix(row, num_ops, alpha.device, weights)
            for row, alpha, weights in zip(choices, alphas, soft)
        ]

    def _gumbel(self, alpha: torch.Tensor) -> torch.Tensor:
        # Float64 and clamped: an exponential draw of exactly 0 would make g infinite.
        draws = torch.empty(alpha.shape, dtype=torch.float64).exponential_(generator=self.generator)
        return -draws.clamp_min(1e-300).log().to(alpha.device, alpha.dtype)

    def step(self, train_batch: Batch, val_batch: Batch) -> StepResult:
        self.generator = self.sampler(self.steps)
        self.tau = self.tau_at(self.steps)
        self.steps += 1
        return super().step(train_batch, val_batch)

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return {**super().end_epoch(epoch), "tau": self.tau}

    def progress(self) -> dict[str, str]:
        return {**super().progress(), "tau": f"{self.tau:.3g}"}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps": self.steps, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps, self.seed = state["steps"], state["seed"]
        self.tau = self.tau_at(max(self.steps - 1, 0))
