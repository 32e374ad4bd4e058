"""`nas grow` as an engine Task: AdaNet's iterations as rounds of the one training loop.

Each iteration t is `run.epochs` candidate rounds and one mixture epoch (`adanet.mixture_epochs`
passes over the held-out split), all engine epochs (so checkpoints, and exact resume, fall
inside iterations too):

1. the generator proposes candidates given the current (frozen) ensemble;
2. candidate rounds: each candidate trains on its own cross-entropy, reading the frozen
   members' hidden layers if its architecture says so (sync: all processes; async: its share);
3. mixture epoch: for every candidate ensemble (members + one candidate) its mixture weights
   are trained on the complexity-regularised objective on the held-out split, on all
   processes (as in stacking: the members fit the training split almost perfectly, so weights
   fitted there only learn to sharpen overconfident logits);
4. the candidate ensemble with the lowest objective on the held-out split is kept if it beats
   the current ensemble's (always with `force_grow`); otherwise growth stops.
(Cortes et al., ICML 2017; the candidates' own loss follows the authors' TensorFlow
implementation, so candidates are independent of each other and can train apart.)

Over 400 lines on purpose: one Task whose phases (proposal, candidate rounds, mixture epoch,
selection) share the iteration's state; split apart, each piece would reach into the others.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from nas.adanet.candidates import Candidate, architecture_key
from nas.adanet.config import GrowConfig
from nas.adanet.ensemble import Ensemble, build_ensemble, validate_ensemble
from nas.adanet.generators import GENERATORS, DataShape
from nas.adanet.mixture import Mixtures
from nas.adanet.outputs import IterationLog, candidate_label, evaluate_binary_auc, write_iteration
from nas.adanet.schedule import RoundPlan, assign, num_shares, plan_round
from nas.data import ImageData, check_batch_size, classifier_sums, load_dataset, loader, split
from nas.errors import NasError
from nas.logging import RunLogger
from nas.runtime.dist import Runtime
from nas.runtime.engine import StepResult, Task


def check_grow_data(config: GrowConfig, data: ImageData, world_size: int = 1) -> tuple:
    """(training split, held-out split) of `data`; raises NasError if either cannot fill one
    global batch (`batch_size` samples on each of `world_size` processes), or if it holds
    sequences (the generators read images and tables).
    """
    if data.kind == "sequence":
        raise NasError(
            f"nas grow reads images and tables, and dataset {config.data.name!r} holds sequences; "
            "give the features as a table (--dataset csv)"
        )
    train_set, val_set = split(data.train, config.data.train_portion)
    batch = config.data.batch_size * world_size
    processes = " (all processes together)" if world_size > 1 else ""
    check_batch_size(train_set, batch, f"training{processes}")
    check_batch_size(val_set, batch, f"held-out{processes}")
    return train_set, val_set


class GrowTask(Task):
    """Grows an ensemble on the training set; held-out split for selection, test set reported."""

    divergence_hint = "--set adanet.lr=... / adanet.mixture_lr=..."

    def __init__(self, config: GrowConfig, runtime: Runtime, data: ImageData | None = None) -> None:
        self.config, self.runtime = config, runtime
        ada = config.adanet
        data = data if data is not None else load_dataset(config.data)
        self.data_info = {
            "dataset": config.data.name,
            "in_channels": data.in_channels,
            "image_size": data.image_size,
            "num_classes": data.num_classes,
            "mean": list(data.mean),
            "std": list(data.std),
        }
        self.train_set, self.val_set = check_grow_data(config, data, runtime.world_size)
        self.test_set = data.test
        self.shape = DataShape(data.in_channels, data.image_size, data.num_classes, data.kind)
        self.generator = GENERATORS.get(ada.generator)(ada, self.shape)
        self.global_batch = config.data.batch_size * runtime.world_size
        self.steps_per_round = len(self.train_set) // self.global_batch
        self.rounds = config.run.epochs
        self.epochs_per_iteration = self.rounds + 1
        self.total_epochs = ada.iterations * self.epochs_per_iteration
        self.ensemble = Ensemble(data.num_classes, ada.mixture == "vector").to(runtime.device)
        # The empty ensemble predicts uniformly: its cross-entropy is log(classes).
        self.objective_value = math.log(data.num_classes)
        self.iteration = 0
        self.stopped = False
        self.reports: list[dict] = []
        self.pool: dict[str, Candidate] = {}  # async forecasts: candidates of iteration + 1
        self.stats = {
            "forecast_candidates": 0,
            "forecast_adopted": 0,
            "forecast_steps": 0,
            "forecast_steps_adopted": 0,
            "leader_guesses": 0,
            "leader_hits": 0,
            "train_madds": 0.0,
        }
        self.leader_guess: str | None = None
        self.final_metrics: dict[str, Any] = {}  # the metrics of the last finished iteration
        self.mixtures: Mixtures | None = None  # during the mixture epoch
        self.candidates: list[Candidate] = []
        self.owner: list[int] = []
        self.shares = 1
        self._start_iteration()
        if ada.schedule == "async":
            self.shares = num_shares(runtime.world_size, len(self.candidates))
            self._assign()
        self.share = runtime.split(self.shares)  # a collective: every process calls it
        self.share_index = runtime.rank // self.share.world_size
        self._epoch = 0
        self._plan: RoundPlan | None = None
        self._log: IterationLog | None = None
        self._round_log: dict[str, float] = {}

    # -- iterations ----------------------------------------------------------------------------

    def _phase(self, epoch: int) -> tuple[int, int]:
        return divmod(epoch, self.epochs_per_iteration)

    def _candidate(self, architecture: dict, iteration: int) -> Candidate:
        return Candidate(
            self.generator,
            architecture,
            iteration,
            self.ensemble,
            self.config.run.seed,
            self.config.adanet,
            self.runtime.device,
        )

    def _start_iteration(self) -> None:
        """Propose the iteration's candidates, adopting forecast ones that came true."""
        proposals = self.generator.propose(self.ensemble.architectures, self.reports)
        where = f"generator {self.config.adanet.generator!r}, proposal"
        members = len(self.ensemble.architectures)
        unique = {
            architecture_key(a): self.generator.validate(a, where, members) for a in proposals
        }
        self.candidates = []
        for key, architecture in unique.items():
            adopted = self.pool.pop(key, None)
            if adopted is not None:
                self.stats["forecast_adopted"] += 1
                self.stats["forecast_steps_adopted"] += adopted.steps
            self.candidates.append(adopted or self._candidate(architecture, self.iteration))
        self.pool = {}  # forecasts that did not come true are discarded
        self._assign()

    def _assign(self) -> None:
        """Candidates to shares, balancing the cost of the steps each has left."""
        total = self.rounds * self.steps_per_round
        costs = [c.step_cost * (total - c.steps) for c in self.candidates]
        self.owner = assign(costs, self.shares)

    def _by_name(self, name: str) -> Candidate:
        return next(c for c in [*self.candidates, *self.pool.values()] if c.name == name)

    # -- engine hooks --------------------------------------------------------------------------

    def steps_per_epoch(self) -> int:
        return self.steps_per_round

    def batches(self, epoch: int) -> Any:
        self._epoch = epoch
        _, round_ = self._phase(epoch)
        if round_ < self.rounds:
            return self._candidate_round(round_)
        if self.mixtures is None:
            self.mixtures = Mixtures(self.ensemble, self.candidates, self.config.adanet.mixture_lr)
        seed = self.config.run.seed * 1009 + self.iteration
        shard = (self.runtime.rank, self.runtime.world_size)
        return _Passes(
            [
                loader(
                    self.val_set,
                    self.config.data.batch_size,
                    True,
                    seed,
                    mixture_pass,
                    shard=shard,
                    workers=self.config.data.workers,
                )
                for mixture_pass in range(self.config.adanet.mixture_epochs)
            ]
        )

    def _candidate_round(self, round_: int) -> list[list[Candidate]]:
        target = min((round_ + 1) * self.steps_per_round, self.rounds * self.steps_per_round)
        regular = [
            (c.name, c.step_cost, max(0, target - c.steps), self.owner[i])
            for i, c in enumerate(self.candidates)
        ]
        self._plan = plan_round(regular, self._forecasts(round_), self.shares)
        self.stats["forecast_steps"] += self._plan.forecast_steps
        self.stats["train_madds"] += self.global_batch * sum(
            steps * self._by_name(key).cost for items in self._plan.work for key, steps in items
        )
        work = [(self._by_name(key), steps) for key, steps in self._plan.work[self.share_index]]
        if self.shares == 1:  # sync: every candidate takes its step on each global batch
            longest = max((steps for _, steps in work), default=0)
            return [[c for c, steps in work if steps > i] for i in range(longest)]
        return [[candidate] for candidate, steps in work for _ in range(steps)]

    def _forecasts(self, round_: int) -> list[tuple[str, float, int, int]]:
        """Async: the next iteration's candidates if the current leader is kept (see
        "Forecasting" in docs/adanet.md). The leader is the candidate with the lowest held-out
        loss of its own after the last round, so there is none before the first round ends.
        """
        ada = self.config.adanet
        if self.shares == 1 or not ada.forecast or round_ == 0:
            return []
        if self.iteration + 1 >= ada.iterations:
            return []
        leader = min(self.candidates, key=lambda c: c.val_loss)
        self.leader_guess = leader.key
        members = [*self.ensemble.architectures, leader.architecture]
        wanted = {architecture_key(a): a for a in self.generator.propose(members, self.reports)}
        self.pool = {k: c for k, c in self.pool.items() if k in wanted}
        for key, architecture in wanted.items():
            if key not in self.pool:
                self.pool[key] = self._candidate(architecture, self.iteration + 1)
                self.stats["forecast_candidates"] += 1
        total = self.rounds * self.steps_per_round
        return [(c.name, c.step_cost, c.steps, total - c.steps) for c in self.pool.values()]

    def _extra(self, candidate: Candidate, images: torch.Tensor) -> list[torch.Tensor]:
        reads = candidate.architecture["reads"]
        if not reads:
            return []
        _, hidden = self.ensemble.outputs(images)
        return [hidden[i] for i in reads]

    def step(self, batch: Any) -> StepResult:
        device = self.runtime.device
        if self.mixtures is not None:
            return self.mixtures.step(*(t.to(device) for t in batch), self.runtime)
        loss_sum = correct = torch.zeros((), device=device)
        count = 0
        for candidate in batch:
            images, labels = (
                t.to(device)
                for t in candidate.batch(
                    self.train_set,
                    candidate.steps,
                    self.global_batch,
                    self.share,
                    self.config.data.workers,
                )
            )
            loss, right = candidate.train_step(
                images, labels, self._extra(candidate, images), self.share
            )
            loss_sum, correct = loss_sum + loss * len(labels), correct + right
            count += len(labels)
        return StepResult(loss_sum / max(count, 1), correct, count)

    # -- evaluation and selection --------------------------------------------------------------

    def _sums(self, network: Any, dataset: Any) -> tuple[float, float]:
        shard = (self.runtime.rank, self.runtime.world_size)
        workers = self.config.data.workers
        sums = classifier_sums(network, dataset, 256, self.runtime.device, shard, workers)
        loss_sum, correct = self.runtime.sum(sums)
        return loss_sum / len(dataset), correct / len(dataset)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        _, round_ = self._phase(self._epoch)
        if round_ < self.rounds:
            self._share_states()
            for candidate in self.candidates:
                candidate.module.eval()
                candidate.val_loss, candidate.val_acc = self._sums(
                    lambda x, c=candidate: c.module(x, self._extra(c, x))[0], self.val_set
                )
            self._round_log = {candidate_label(c.architecture): c.val_loss for c in self.candidates}
            best = min(self.candidates, key=lambda c: c.val_loss)
            return {"candidate_val_loss": best.val_loss, "candidate_val_acc": best.val_acc}
        return self._select()

    def _share_states(self) -> None:
        """Async: every process gets the state of every candidate a share trained this round."""
        if self.shares == 1 or self._plan is None:
            return
        for candidate in [*self.candidates, *self.pool.values()]:
            owner = self._plan.owner(candidate.name)
            if owner is None:
                continue
            source = owner * self.share.world_size
            mine = self.runtime.rank == source
            state = self.runtime.broadcast_object(candidate.state_dict() if mine else None, source)
            if not mine:
                candidate.load_state_dict(state)

    def _select(self) -> dict[str, float]:
        """Keep the candidate ensemble with the lowest held-out objective (Cortes et al. 2017,
        the new subnetwork is kept only if it lowers the objective).
        """
        objectives, accuracies = self.mixtures.held_out(
            self.val_set, self.runtime, self.config.data.workers
        )
        best = min(range(len(objectives)), key=lambda i: objectives[i])
        grew = objectives[best] < self.objective_value or self.config.adanet.force_grow
        chosen = self.candidates[best]
        if self.leader_guess is not None:
            self.stats["leader_guesses"] += 1
            self.stats["leader_hits"] += int(grew and self.leader_guess == chosen.key)
            self.leader_guess = None
        reports = [
            {
                **c.report(),
                "val_objective": objectives[i],
                "ensemble_val_acc": accuracies[i],
                "mixture_weights": self.mixtures.weights[i].detach().tolist(),
                "chosen": grew and i == best,
            }
            for i, c in enumerate(self.candidates)
        ]
        self.reports.append({"iteration": self.iteration + 1, "candidates": reports})
        if grew:
            weights = self.mixtures.weights[best]
            self.ensemble.add(
                chosen.module,
                chosen.architecture,
                self.iteration,
                chosen.complexity,
                chosen.gamma,
                weights,
            )
            self.objective_value = objectives[best]
        else:
            self.stopped = True
        val_loss, val_acc = self._sums(self.ensemble, self.val_set)
        test_loss, test_acc = self._sums(self.ensemble, self.test_set)
        record = {
            "iteration": self.iteration + 1,
            "members": len(self.ensemble.members),
            "grew": int(grew),
            "objective": self.objective_value,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            **{k: v for k, v in self.stats.items()},
        }
        if self.shape.num_classes == 2:
            record["test_auc"] = evaluate_binary_auc(self.ensemble, self.test_set, self.runtime)
        self._log = IterationLog(self._epoch + 1, reports, record)
        self.final_metrics = record
        return record

    def end_epoch(self, epoch: int) -> dict[str, float]:
        _, round_ = self._phase(epoch)
        if round_ == self.epochs_per_iteration - 1:
            self.iteration += 1
            self.mixtures = None
            if not self.finished():
                self._start_iteration()
        return {"iteration_round": round_ + 1}

    def finished(self) -> bool:
        return self.stopped or self.iteration >= self.config.adanet.iterations

    def log_epoch(self, epoch: int, record: dict[str, Any], logger: RunLogger) -> None:
        for label, loss in self._round_log.items():
            logger.scalar(
                f"candidate_own_val_loss/iteration{self.iteration + 1}/{label}", loss, epoch + 1
            )
        self._round_log = {}
        if self._log is not None:
            write_iteration(self._log, self, logger)
            self._log = None

    # -- checkpoints ---------------------------------------------------------------------------

    def ensemble_dict(self) -> dict[str, Any]:
        """The ensemble.json object of the current ensemble."""
        ada = self.config.adanet
        objective_info = {
            "loss": "cross_entropy",
            "complexity": "sqrt_depth",
            "complexity_weight": ada.complexity_weight,
            "complexity_bias": ada.complexity_bias,
            "value": self.objective_value,
        }
        return self.ensemble.to_dict(ada.generator, self.data_info, objective_info)

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "stopped": self.stopped,
            "objective": self.objective_value,
            "reports": self.reports,
            "stats": dict(self.stats),
            "leader_guess": self.leader_guess,
            "final_metrics": self.final_metrics,
            "ensemble": {"spec": self.ensemble_dict(), "state": self.ensemble.state_dict()},
            "candidates": [c.state_dict() for c in self.candidates],
            "owner": self.owner,
            "pool": [c.state_dict() for c in self.pool.values()],
            "mixtures": self.mixtures.state_dict() if self.mixtures else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration, self.stopped = state["iteration"], state["stopped"]
        self.objective_value, self.reports = state["objective"], state["reports"]
        self.stats, self.leader_guess = dict(state["stats"]), state["leader_guess"]
        self.final_metrics = state["final_metrics"]
        spec = validate_ensemble(state["ensemble"]["spec"], "checkpoints/last.pt ensemble")
        self.ensemble = build_ensemble(spec, self.generator)
        self.ensemble.load_state_dict(state["ensemble"]["state"])
        self.ensemble.to(self.runtime.device)
        restored = []
        for saved in state["candidates"] + state["pool"]:
            candidate = self._candidate(saved["architecture"], saved["iteration"])
            candidate.load_state_dict(saved)
            restored.append(candidate)
        self.candidates = restored[: len(state["candidates"])]
        self.pool = {c.key: c for c in restored[len(state["candidates"]) :]}
        # As assigned when the iteration started (from the steps left then), not recomputed.
        self.owner = list(state["owner"])
        self.mixtures = None
        if state["mixtures"] is not None:
            self.mixtures = Mixtures(self.ensemble, self.candidates, self.config.adanet.mixture_lr)
            self.mixtures.load_state_dict(state["mixtures"])


class _Passes:
    """Several loaders read one after another, with their total length (the progress bar's)."""

    def __init__(self, loaders: list[Any]) -> None:
        self.loaders = loaders

    def __iter__(self) -> Any:
        return itertools.chain.from_iterable(self.loaders)

    def __len__(self) -> int:
        return sum(len(part) for part in self.loaders)
