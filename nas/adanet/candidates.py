"""A candidate subnetwork under training: its module, optimiser, step count and data stream.

A candidate is a deterministic function of (run seed, iteration, architecture) and of the number
of steps it trained, wherever it trained: its initial weights and its batches are drawn from a
seed derived from those three. That is what lets the async schedule train a forecast candidate
early and hand it over to the next iteration unchanged.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from nas.adanet.config import AdaNetConfig
from nas.adanet.ensemble import Ensemble
from nas.adanet.generators import SubnetworkGenerator
from nas.adanet.schedule import step_cost
from nas.data import loader
from nas.runtime.dist import Runtime


def architecture_key(architecture: dict) -> str:
    """A canonical text of an architecture: equal architectures, equal keys."""
    return json.dumps(architecture, sort_keys=True)


class Candidate:
    """One candidate h of iteration `iteration`, trained on its own cross-entropy with Adam.

    Its batches are global batches of `global_batch` training samples; a process of a share of
    P processes takes every P-th sample of each, and gradients are averaged over the share.
    """

    def __init__(
        self,
        generator: SubnetworkGenerator,
        architecture: dict,
        iteration: int,
        ensemble: Ensemble,
        run_seed: int,
        config: AdaNetConfig,
        device: torch.device,
    ) -> None:
        self.architecture = architecture
        self.key = architecture_key(architecture)
        self.iteration = iteration
        # Unique among the candidates of this and the next iteration (a forecast may share
        # its architecture with a candidate of the current iteration).
        self.name = f"{iteration}/{self.key}"
        self.seed = zlib.crc32(f"{run_seed}/{iteration}/{self.key}".encode())
        reads = [ensemble.members[i].hidden_size for i in architecture["reads"]]
        with torch.random.fork_rng(devices=[]):  # the run's own RNG stream is left untouched
            torch.manual_seed(self.seed)
            self.module = generator.build(architecture, reads).to(device)
        self.optimizer = torch.optim.Adam(
            self.module.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.complexity = generator.complexity(architecture)
        self.gamma = config.complexity_weight * self.complexity + config.complexity_bias
        self.cost = generator.cost(architecture, reads)
        self.step_cost = step_cost(self.cost, architecture["depth"])  # for the async plan
        self.steps = 0
        self.val_loss = float("inf")  # own held-out loss after the last round
        self.val_acc = 0.0
        self._stream: tuple[tuple, Iterator, int] | None = None

    def batch(
        self,
        dataset: TensorDataset,
        step: int,
        global_batch: int,
        share: Runtime,
        workers: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's part of the candidate's global batch number `step` (read by `workers`
        loader processes)."""
        per_epoch = len(dataset) // global_batch
        epoch, index = divmod(step, per_epoch)
        local = global_batch // share.world_size
        stream_id = (epoch, local, share.rank, share.world_size)
        if self._stream is None or self._stream[0] != stream_id or self._stream[2] != index:
            batches = loader(
                dataset,
                local,
                True,
                self.seed,
                epoch,
                shard=(share.rank, share.world_size),
                workers=workers,
            )
            self._stream = (stream_id, itertools.islice(iter(batches), index, None), index)
        stream_id, batches, _ = self._stream
        images, labels = next(batches)
        self._stream = (stream_id, batches, index + 1)
        return images, labels

    def train_step(
        self, images: torch.Tensor, labels: torch.Tensor, extra: list[torch.Tensor], share: Runtime
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step on this process's part of a batch; (loss, correct) of that part."""
        self.module.train()
        logits, _ = self.module(images, extra)
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The share is this candidate's data-parallel group: mean gradient of its global batch.
        share.average([p.grad for p in self.module.parameters() if p.grad is not None])
        self.optimizer.step()
        self.steps += 1
        return loss.detach(), (logits.detach().argmax(dim=1) == labels).sum()

    def report(self) -> dict[str, Any]:
        """What candidates.jsonl records of this candidate."""
        return {
            "iteration": self.iteration + 1,
            "architecture": self.architecture,
            "complexity": self.complexity,
            "cost_madds": self.cost,
            "steps": self.steps,
            "own_val_loss": self.val_loss,
            "own_val_acc": self.val_acc,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "iteration": self.iteration,
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "steps": self.steps,
            "val": [self.val_loss, self.val_acc],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
        self.val_loss, self.val_acc = (float(v) for v in state["val"])
        self._stream = None
