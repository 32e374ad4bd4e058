"""ASAP: DARTS with an annealed softmax and pruning during the search (Noy et al., AISTATS 2020).

Op weights are softmax(alpha / T) over the ops alive on each edge, with T_t = T0 * beta^t (t counts
steps or epochs). Weights train every step. Once T < tau (the grace temperature) the alphas train
too, and after each alpha step every op whose weight is below the threshold theta(T) is removed
from the supernet for good; an edge always keeps its strongest op. theta rises from theta_0 at tau
to theta_final at T_final, linearly in log T, so with the defaults every edge is down to one op by
the end of the budget. The search ends early once every edge has one op.

Defaults: T0 = 1.6, tau = 1.0 and theta_0 = 0.4 / |ops| are the values of UniNAS's ASAP
(Laube and Zell), which anneals per epoch with beta = 0.95. A fixed beta cannot suit every epoch
budget (0.95 per epoch takes 10 epochs just to reach tau), so by default beta is derived from the
budget: T lands on T_final = 0.03 at the last step. See docs/strategies.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nas.config import StrategyConfig
from nas.errors import NasError
from nas.genotype import CELL_KINDS
from nas.runtime.dist import Runtime
from nas.runtime.engine import StepResult
from nas.strategies.base import STRATEGIES, Batch
from nas.strategies.darts import Darts, DartsOptions
from nas.supernet import SearchNetwork
from nas.supernet.mixing import Mix, live_softmax


@dataclass
class AsapOptions(DartsOptions):
    """ASAP's schedule (Noy et al. 2020), explained in docs/strategies.md, on DARTS's options."""

    # T0: op weights are softmax(alpha / T), and T = T0 * decay^t.
    temperature: float = 1.6
    # T at the last step of the budget; it sets the default decay and ends the threshold ramp.
    temperature_final: float = 0.03
    # beta; unset: (temperature_final / temperature) ^ (1 / (t_last)), so T lands on T_final.
    temperature_decay: float | None = None
    # t counts steps ("step") or epochs ("epoch").
    anneal_every: str = "step"
    # tau: alphas train, and ops are pruned, only once T < tau (weights train from the start).
    grace_temperature: float = 1.0
    # theta at tau; unset: 0.4 / number of ops. It rises linearly in log T to the final value.
    prune_threshold: float | None = None
    # theta at temperature_final; above 0.5 no edge can keep two ops.
    prune_threshold_final: float = 0.5

    def checks(self) -> list[tuple[bool, str]]:
        threshold, decay = self.prune_threshold, self.temperature_decay
        return super().checks() + [
            (self.temperature > 0, "strategy.temperature must be positive"),
            (
                0 < self.temperature_final < self.grace_temperature,
                "strategy.temperature_final must be positive and below strategy.grace_temperature",
            ),
            (decay is None or 0 < decay <= 1, "strategy.temperature_decay must be in (0, 1]"),
            (self.anneal_every in ("step", "epoch"), "strategy.anneal_every must be step or epoch"),
            (
                threshold is None or 0 <= threshold <= self.prune_threshold_final,
                "strategy.prune_threshold must be between 0 and strategy.prune_threshold_final",
            ),
            (
                0 <= self.prune_threshold_final <= 1,
                "strategy.prune_threshold_final must be between 0 and 1",
            ),
        ]


# theta_0 = THRESHOLD_SHARE / number of ops unless configured (UniNAS: 0.4 divided by the choices).
THRESHOLD_SHARE = 0.4


@dataclass(frozen=True)
class AsapSchedule:
    """The temperature and threshold schedules, as pure functions of the step.

    T(t) = t0 * decay^t, with t = step (`per_epoch` False) or step // steps_per_epoch.
    theta(T) = threshold + (threshold_final - threshold) * clip(ln(tau / T) / ln(tau / t_final)).
    """

    t0: float
    decay: float
    grace: float
    t_final: float
    threshold: float
    threshold_final: float
    steps_per_epoch: int
    per_epoch: bool

    @classmethod
    def from_options(
        cls, config: AsapOptions, num_ops: int, epochs: int, steps_per_epoch: int
    ) -> AsapSchedule:
        """The schedule of `config` for a budget of `epochs` x `steps_per_epoch` steps."""
        per_epoch = config.anneal_every == "epoch"
        last = (epochs - 1) if per_epoch else (epochs * steps_per_epoch - 1)
        decay = config.temperature_decay
        if decay is None:
            decay = (config.temperature_final / config.temperature) ** (1 / last) if last else 1.0
        threshold = config.prune_threshold
        if threshold is None:
            threshold = THRESHOLD_SHARE / num_ops
        schedule = cls(
            t0=config.temperature,
            decay=decay,
            grace=config.grace_temperature,
            t_final=config.temperature_final,
            threshold=threshold,
            threshold_final=config.prune_threshold_final,
            steps_per_epoch=steps_per_epoch,
            per_epoch=per_epoch,
        )
        final = schedule.temperature(epochs * steps_per_epoch - 1)
        if final >= schedule.grace:
            raise NasError(
                f"ASAP: the temperature only falls from {config.temperature:g} to {final:.3g} in "
                f"{epochs} epochs, never below the grace temperature {schedule.grace:g}, so the "
                "architecture would never train. Use more epochs, a smaller "
                "strategy.temperature_decay, or leave it unset to fit the budget"
            )
        return schedule

    def temperature(self, step: int) -> float:
        """T at global step `step` (0-based)."""
        t = step // self.steps_per_epoch if self.per_epoch else step
        return self.t0 * self.decay**t

    def threshold_at(self, temperature: float) -> float:
        """theta for temperature T (only used once T < tau)."""
        progress = math.log(self.grace / temperature) / math.log(self.grace / self.t_final)
        progress = min(max(progress, 0.0), 1.0)
        return self.threshold + (self.threshold_final - self.threshold) * progress


@STRATEGIES.register("asap", options=AsapOptions)
class Asap(Darts):
    """ASAP on the DARTS bilevel step (first or second order), with physical pruning."""

    stop_reason = "every edge is down to one op"
    summary_keys = ("temperature", "threshold", "ops_remaining")

    def __init__(
        self,
        network: SearchNetwork,
        config: StrategyConfig,
        epochs: int,
        steps_per_epoch: int,
        runtime: Runtime | None = None,
    ) -> None:
        super().__init__(network, config, epochs, steps_per_epoch, runtime)
        self.schedule = AsapSchedule.from_options(
            self.options, len(network.space.ops), epochs, steps_per_epoch
        )
        self.steps = 0  # steps taken so far
        # T of the step in progress, else of the last step taken (of the first step before any).
        self.temperature = self.schedule.temperature(0)

    def mix(self, alphas: Sequence[torch.Tensor], pruned: Sequence[torch.Tensor]) -> list[Mix]:
        """softmax(alpha / T) over the live ops of every edge."""
        return [
            Mix(live_softmax(alpha, mask, self.temperature)) for alpha, mask in zip(alphas, pruned)
        ]

    def _annealed_weights(self) -> list[torch.Tensor]:
        """The annealed weights the supernet mixes with, (normal, reduce)."""
        return [mix.weights for mix in self.mix(self.network.alphas(), self.network.pruned_masks())]

    def step(self, train_batch: Batch, val_batch: Batch) -> StepResult:
        temperature = self.temperature = self.schedule.temperature(self.steps)
        self.network.train()
        if temperature < self.schedule.grace:
            self.alpha_step(train_batch, val_batch)
            self.prune(self.schedule.threshold_at(temperature))
        self.steps += 1
        return self.weight_step(train_batch)

    def alpha_step(self, train_batch: Batch, val_batch: Batch) -> None:
        """The DARTS alpha step; a pruned op's alpha stays at the value it was pruned with (Adam's
        momentum and weight decay would otherwise keep moving it), so the genotype can still
        rank edges by it.
        """
        frozen = [alpha.detach().clone() for alpha in self.network.alphas()]
        super().alpha_step(train_batch, val_batch)
        with torch.no_grad():
            for alpha, before, pruned in zip(
                self.network.alphas(), frozen, self.network.pruned_masks()
            ):
                alpha.copy_(torch.where(pruned >= 0, before, alpha))

    @torch.no_grad()
    def prune(self, threshold: float) -> int:
        """Remove every op weighing less than `threshold`, keeping each edge's strongest op.

        Returns how many ops were removed. Their parameters leave the weight optimiser.
        """
        removed = 0
        for kind, weights, pruned in zip(
            CELL_KINDS, self._annealed_weights(), self.network.pruned_masks()
        ):
            alive = pruned < 0
            strongest = weights.argmax(dim=-1, keepdim=True)
            doomed = alive & (weights < threshold)
            doomed.scatter_(-1, strongest, False)
            for edge, op in doomed.nonzero().tolist():
                self.network.prune(kind, edge, op, self.steps)
                removed += 1
        if removed:
            self._drop_pruned_parameters()
        return removed

    def _drop_pruned_parameters(self) -> None:
        """Keep only the network's live weights in the weight optimiser (and its state), and
        rebuild the DDP wrapper around the smaller parameter set. Every rank prunes the same ops:
        the decision is a function of the alphas, which are identical on every rank.
        """
        self.model = self._wrap()
        live = {id(p) for p in self.network.weight_parameters()}
        for group in self.weight_optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) in live]
        for param in list(self.weight_optimizer.state):
            if id(param) not in live:
                del self.weight_optimizer.state[param]

    def finished(self) -> bool:
        remaining = self.network.ops_remaining()
        return sum(remaining.values()) == len(CELL_KINDS) * self.network.space.num_edges

    def end_epoch(self, epoch: int) -> dict[str, float]:
        record = super().end_epoch(epoch)
        temperature = self.temperature
        remaining = self.network.ops_remaining()
        record["temperature"] = temperature
        record["threshold"] = (
            self.schedule.threshold_at(temperature) if temperature < self.schedule.grace else 0.0
        )
        record["ops_remaining"] = sum(remaining.values())
        for kind, count in remaining.items():
            record[f"ops_remaining_{kind}"] = count
        return record

    def progress(self) -> dict[str, str]:
        return {
            **super().progress(),
            "T": f"{self.temperature:.3g}",
            "ops": str(sum(self.network.ops_remaining().values())),
        }

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The network (loaded first) is already pruned; the optimiser must hold the same params.
        self._drop_pruned_parameters()
        super().load_state_dict(state)
        self.steps = state["steps"]
        self.temperature = self.schedule.temperature(max(self.steps - 1, 0))
