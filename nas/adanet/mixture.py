"""The mixture weights of one iteration's candidate ensembles (the current members plus one
candidate each), fitted under the complexity-regularised objective and scored on held-out data.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from nas.adanet.candidates import Candidate
from nas.adanet.ensemble import Ensemble, mix, objective, penalty
from nas.data import loader
from nas.runtime.dist import Runtime
from nas.runtime.engine import StepResult


class Mixtures:
    """One weight tensor per candidate ensemble and one Adam over all of them (their losses are
    summed, and no weight appears in two of them, so each is fitted as if alone).

    They start from the average of the current ensemble and the candidate: the members' weights
    times m / (m + 1) and, for the candidate, their mean over m + 1 (1 for the first member).
    """

    def __init__(self, ensemble: Ensemble, candidates: list[Candidate], lr: float) -> None:
        self.ensemble = ensemble
        self.candidates = candidates
        members = len(ensemble.members)
        device = ensemble.mixture.device
        shape = (ensemble.num_classes,) if ensemble.vector else ()
        old = ensemble.mixture * members / (members + 1)
        if members:
            new = ensemble.mixture.mean(dim=0, keepdim=True) / (members + 1)
        else:
            new = torch.ones((1, *shape), device=device)
        self.weights = [torch.nn.Parameter(torch.cat([old, new])) for _ in candidates]
        self.gammas = [
            torch.cat([ensemble.gammas, ensemble.gammas.new_tensor([c.gamma])]) for c in candidates
        ]
        self.optimizer = torch.optim.Adam(self.weights, lr=lr)

    @torch.no_grad()
    def stacked_logits(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(members + 1, N, classes) logits of every candidate ensemble on `images`."""
        members, hidden = self.ensemble.outputs(images)
        stacks = []
        for candidate in self.candidates:
            candidate.module.eval()
            reads = candidate.architecture["reads"]
            logits, _ = candidate.module(images, [hidden[i] for i in reads])
            stacks.append(torch.stack([*members, logits]))
        return stacks

    def step(self, images: torch.Tensor, labels: torch.Tensor, runtime: Runtime) -> StepResult:
        """One Adam step of every candidate ensemble's weights on this process's batch; the
        gradients are averaged over all processes (the ensemble step uses every worker).
        """
        stacks = self.stacked_logits(images)
        losses = torch.stack(
            [objective(s, labels, w, g) for s, w, g in zip(stacks, self.weights, self.gammas)]
        )
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        runtime.average([w.grad for w in self.weights])
        self.optimizer.step()
        correct = sum(
            (mix(s, w.detach()).argmax(1) == labels).sum() for s, w in zip(stacks, self.weights)
        )
        return StepResult(losses.detach().mean(), correct / len(stacks), len(labels))

    @torch.no_grad()
    def held_out(
        self, dataset: TensorDataset, runtime: Runtime, workers: int = 0
    ) -> tuple[list, list]:
        """(objective, accuracy) of every candidate ensemble on `dataset`, all processes (read by
        `workers` loader processes)."""
        sums = [0.0, 0.0] * len(self.candidates)  # (cross-entropy sum, correct) per candidate
        device = self.ensemble.mixture.device
        shard = (runtime.rank, runtime.world_size)
        for images, labels in loader(dataset, 256, False, 0, 0, shard=shard, workers=workers):
            images, labels = images.to(device), labels.to(device)
            for index, stack in enumerate(self.stacked_logits(images)):
                logits = mix(stack, self.weights[index].detach())
                sums[2 * index] += F.cross_entropy(logits, labels, reduction="sum").item()
                sums[2 * index + 1] += (logits.argmax(1) == labels).sum().item()
        sums = runtime.sum(sums)
        objectives = [
            sums[2 * i] / len(dataset) + float(penalty(w.detach(), g))
            for i, (w, g) in enumerate(zip(self.weights, self.gammas))
        ]
        return objectives, [sums[2 * i + 1] / len(dataset) for i in range(len(self.candidates))]

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": [w.detach().clone() for w in self.weights],
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for weights, saved in zip(self.weights, state["weights"]):
                weights.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])
