"""The Strategy extension point: a small base class and a name registry.

To add a strategy, add one module in nas/strategies/ with a Strategy subclass decorated by
`@STRATEGIES.register("name", options=NameOptions)`, where `NameOptions` is the dataclass of the
settings it reads (nas/options.py; leave `options` out if it reads none). It is found by name
automatically, its settings are `strategy.<field>` keys, and the conformance test in
tests/test_strategies.py runs it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from typing import Any

import torch

from nas.config import StrategyConfig
from nas.genotype import Genotype
from nas.registry import Registry
from nas.runtime.dist import Runtime
from nas.runtime.engine import StepResult
from nas.supernet import SearchNetwork
from nas.supernet.mixing import Mix, dense_mixing

Batch = tuple[torch.Tensor, torch.Tensor]


class Strategy:
    """How the supernet is searched.

    The search task builds the strategy once with the network (already on its device), the
    runtime (its process group) and the budget (`epochs` of `steps_per_epoch` steps), calls
    `step` once per training step, `select` then `end_epoch` after each epoch, and `genotype`
    whenever it needs the current result; the search stops early once `finished()` is true, with
    the note `stop_reason`. `state_dict` must hold everything the strategy owns (optimisers,
    schedules, sampling state), so a resumed search continues exactly. `self.options` is the
    strategy's own options object (`config.options`, or its registered defaults).

    The strategy also decides how the supernet mixes the ops of each edge: the constructor
    installs `mix` as the network's mixing hook, which the network calls at the start of every
    forward pass. A strategy whose mix leaves ops out sets `samples_ops`, so that DDP expects
    parameters without gradients.
    """

    # Why the search stopped before its budget, once `finished()` is true.
    stop_reason = "the search has converged"
    # Keys of `end_epoch`'s record that the one-line epoch summary shows.
    summary_keys: tuple[str, ...] = ()
    # True when a forward pass may leave ops (and so parameters) unused: a sampled mix.
    samples_ops = False

    def __init__(
        self,
        network: SearchNetwork,
        config: StrategyConfig,
        epochs: int,
        steps_per_epoch: int,
        runtime: Runtime | None = None,
    ) -> None:
        self.network = network
        self.config = config
        options = config.options
        self.options = options if options is not None else STRATEGIES.options(config.name)()
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        # The process group: `runtime.wrap` / `runtime.average` synchronise the ranks (no-ops in
        # one process). Every rank must end each step with identical weights and alphas.
        self.runtime = runtime or Runtime(rank=0, world_size=1, device=torch.device("cpu"))
        network.mixing = self.mix
        # The run seed (every rank's, as rank 0 has it): the root of `sampler`'s generators.
        self.seed = int(self.runtime.broadcast_object(torch.initial_seed()))

    def mix(self, alphas: Sequence[torch.Tensor], pruned: Sequence[torch.Tensor]) -> list[Mix]:
        """The op weights of the supernet's next forward pass: one `Mix` per cell kind (normal,
        reduce), from the alphas and pruning records (-1 where an op is alive) of each.

        Called by the network at the start of every forward pass, in training and in evaluation
        (`self.network.training` tells which); every rank must return the same mix. Default:
        softmax(alpha) over the live ops of every edge (DARTS).
        """
        return dense_mixing(alphas, pruned)

    def sampler(self, step: int) -> torch.Generator:
        """A CPU random generator for the samples of step `step`, seeded by the run seed and the
        step: every rank draws the same samples, and a resumed run draws what an uninterrupted
        one would, as long as the step count is in `state_dict`. (The global generator would
        differ between ranks and its state is not checkpointed.)
        """
        return torch.Generator().manual_seed((self.seed * 1_000_003 + step) % 2**63)

    def step(self, train_batch: Batch, val_batch: Batch) -> StepResult:
        """One search step; returns the training loss and accuracy counts of the weight step."""
        raise NotImplementedError

    def select(self, val_accuracy: Callable[[], float]) -> None:
        """Called after each epoch's steps, before the search task evaluates the supernet.
        `val_accuracy()` evaluates the supernet as it is (eval mode, with the mix `mix` gives
        then) on the whole validation split and returns its accuracy, the same on every rank;
        a strategy that keeps the best of several candidates calls it once per candidate.
        Default: nothing.
        """

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Advance schedules after `epoch`; return scalars for the epoch's metrics."""
        return {}

    def finished(self) -> bool:
        """True once the search has converged and further epochs would change nothing."""
        return False

    def genotype(self) -> Genotype:
        """The architecture the search currently points to."""
        return self.network.genotype()

    def progress(self) -> dict[str, str]:
        """Extra progress-bar fields."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Optimiser and schedule state (the network is saved by the search task)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""


def _load_builtin_strategies() -> None:
    import nas.strategies

    for module in pkgutil.iter_modules(nas.strategies.__path__):
        if module.name != "base":
            importlib.import_module(f"nas.strategies.{module.name}")


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", loader=_load_builtin_strategies)
