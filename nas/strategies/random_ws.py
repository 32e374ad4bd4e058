"""Random search with weight sharing (Li and Talwalkar, UAI 2019, "Random search and
reproducibility for neural architecture search", Sec. 4).

Every step trains the shared weights on one architecture drawn uniformly at random: each node
picks `edges_per_node` of its inputs and one non-`none` op on each, as a genotype would; every
other op weighs exactly 0 and does not run. The alphas are not trained.

After the shared training (the last epoch's steps), `pool_size` random architectures, drawn once
before the first step, are ranked with the final shared weights by their accuracy on the whole
validation split; the genotype is the best of them (the first on a tie), and evaluation runs it.
Until then the genotype is the pool's first member, unranked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nas.config import StrategyConfig
from nas.errors import NasError
from nas.genotype import CELL_KINDS, Genotype, derive_genotype
from nas.options import Options
from nas.runtime.dist import Runtime
from nas.runtime.engine import StepResult
from nas.spaces import NUM_INPUT_NODES
from nas.strategies.base import STRATEGIES, Batch
from nas.strategies.darts import Darts
from nas.supernet import SearchNetwork
from nas.supernet.mixing import Mix, one_hot_mix

# A cell: per edge, the index of the op it runs, or None when the edge is left out.
Cell = list[int | None]


@dataclass
class RandomWsOptions(Options):
    """Random search with weight sharing's settings."""

    # K: random architectures ranked after the shared training; the genotype is the best.
    pool_size: int = 20

    def checks(self) -> list[tuple[bool, str]]:
        return [(self.pool_size >= 1, "strategy.pool_size must be at least 1")]


@STRATEGIES.register("random_ws", options=RandomWsOptions)
class RandomWeightSharing(Darts):
    """Random search with weight sharing, on DARTS's weight optimiser and schedule."""

    samples_ops = True
    summary_keys = ("pool_best_acc",)

    def __init__(
        self,
        network: SearchNetwork,
        config: StrategyConfig,
        epochs: int,
        steps_per_epoch: int,
        runtime: Runtime | None = None,
    ) -> None:
        if network.partial_channels > 1:
            raise NasError(
                "strategy random_ws trains discrete cells, so PC-DARTS edge normalisation has "
                "nothing to learn: remove model.partial_channels, or use strategy darts"
            )
        super().__init__(network, config, epochs, steps_per_epoch, runtime)
        self.steps = 0
        # Drawn before the first step (sampler step -1), identically on every rank.
        generator = self.sampler(-1)
        self.pool = [self._sample(generator) for _ in range(self.options.pool_size)]
        self.architecture = self.pool[0]  # the one the training forward passes run
        self.scores: list[float | None] = [None] * len(self.pool)
        self.ranking: int | None = None  # the pool member an evaluation runs while ranking

    def _sample(self, generator: torch.Generator) -> list[Cell]:
        """A uniformly random architecture: a (normal, reduce) pair of cells."""
        space = self.network.space
        ops = [k for k, name in enumerate(space.ops) if name != "none"]
        cells = []
        for _ in CELL_KINDS:
            cell: Cell = [None] * space.num_edges
            for node in range(space.num_nodes):
                inputs = torch.randperm(NUM_INPUT_NODES + node, generator=generator)
                for source in inputs[: space.edges_per_node].tolist():
                    pick = int(torch.randint(len(ops), (1,), generator=generator))
                    cell[space.edge_index(node, source)] = ops[pick]
            cells.append(cell)
        return cells

    def best(self) -> int:
        """The index of the best-scored pool member (0 before any score)."""
        scored = [(score, -k) for k, score in enumerate(self.scores) if score is not None]
        return -max(scored)[1] if scored else 0

    def mix(self, alphas: Sequence[torch.Tensor], pruned: Sequence[torch.Tensor]) -> list[Mix]:
        """The sampled architecture in training; in evaluation the member being ranked, else
        the best pool member."""
        if self.network.training:
            cells = self.architecture
        else:
            cells = self.pool[self.best() if self.ranking is None else self.ranking]
        num_ops = len(self.network.space.ops)
        return [one_hot_mix(cell, num_ops, alpha.device) for cell, alpha in zip(cells, alphas)]

    def step(self, train_batch: Batch, val_batch: Batch) -> StepResult:
        """One weight step on a fresh random architecture (the validation batch is not used)."""
        self.network.train()
        self.architecture = self._sample(self.sampler(self.steps))
        self.steps += 1
        return self.weight_step(train_batch)

    def select(self, val_accuracy: Callable[[], float]) -> None:
        """Once the shared training is over, score every pool member with the final weights."""
        if self.steps < self.epochs * self.steps_per_epoch:
            return
        try:
            for member in range(len(self.pool)):
                self.ranking = member
                self.scores[member] = val_accuracy()
        finally:
            self.ranking = None

    def end_epoch(self, epoch: int) -> dict[str, float]:
        record = super().end_epoch(epoch)
        if self.scores[self.best()] is not None:
            record["pool_best_acc"] = self.scores[self.best()]
        return record

    def genotype(self) -> Genotype:
        """The best-scored pool member (the DARTS rule on its one-hot weights is that cell)."""
        num_ops = len(self.network.space.ops)
        weights = [
            one_hot_mix(cell, num_ops, torch.device("cpu")).weights
            for cell in self.pool[self.best()]
        ]
        return derive_genotype(self.network.space, weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "steps": self.steps,
            "seed": self.seed,
            "pool": self.pool,
            "scores": self.scores,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps, self.seed = state["steps"], state["seed"]
        self.pool, self.scores = state["pool"], state["scores"]
