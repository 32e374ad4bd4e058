"""Final training of a genotype's network as an engine Task (DARTS Sec. 3.3 / App. A.2)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nas.config import TrainConfig
from nas.data import (
    ImageData,
    batches_per_epoch,
    check_batch_size,
    classifier_sums,
    load_dataset,
    loader,
)
from nas.data.defaults import fit_to_data
from nas.drawing import genotype_picture
from nas.errors import NasError
from nas.genotype import Genotype
from nas.logging import RunLogger
from nas.models import NETWORKS, GenotypeNetwork
from nas.models.networks import check_signal_length
from nas.runtime.checkpoint import save_checkpoint
from nas.runtime.dist import Runtime
from nas.runtime.engine import StepResult, Task
from nas.spaces import get_space


def model_spec(
    config: TrainConfig,
    genotype: Genotype,
    in_channels: int,
    num_classes: int,
    image_size: int,
    data: ImageData | None = None,
    dims: int = 2,
) -> dict[str, Any]:
    """Everything needed to rebuild the network and feed it: stored in every checkpoint.
    `image_size` is the signal length L where `dims` is 1 (taken from `data` when given).
    """
    if data is not None:
        dims = data.dims
    return {
        "genotype": genotype.to_dict(),
        "network": config.model.network,
        "layers": config.model.layers,
        "channels": config.model.channels,
        "auxiliary": config.model.auxiliary_weight > 0,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "image_size": image_size,
        "dims": dims,
        "dataset": config.data.name,
        # How to feed raw inputs x: x / input_scale, then (x - mean) / std per channel.
        "input_scale": data.input_scale if data else 1.0,
        "mean": list(data.mean) if data else None,
        "std": list(data.std) if data else None,
        "class_names": list(data.class_names) if data else None,
    }


def build_network(spec: dict[str, Any]) -> GenotypeNetwork:
    """The network a model spec describes (random weights)."""
    builder = NETWORKS[spec["network"]]
    genotype = Genotype.from_dict(spec["genotype"], where="checkpoint genotype")
    dims = spec.get("dims", 2)  # specs without the key describe images
    if dims != 2 and spec["network"] != "cifar":
        raise NasError(
            f"model.network={spec['network']} reads images; use model.network=cifar for 1D signals"
        )
    options = {}
    if dims != 2:
        check_signal_length(get_space(genotype.space), spec["image_size"], spec["dataset"])
        options["dims"] = dims
    return builder(
        genotype,
        spec["in_channels"],
        spec["num_classes"],
        channels=spec["channels"],
        layers=spec["layers"],
        auxiliary=spec["auxiliary"],
        **options,
    )


def check_spec(saved: dict[str, Any], requested: dict[str, Any], where: str) -> None:
    """Raise NasError if a checkpoint's model spec differs from the requested network's."""
    if saved.get("genotype") != requested["genotype"]:
        raise NasError(
            f"{where} holds weights for another genotype: "
            f"{Genotype.from_dict(saved['genotype']).to_notation()}; the requested network uses "
            f"{Genotype.from_dict(requested['genotype']).to_notation()}"
        )
    keys = (
        "network",
        "layers",
        "channels",
        "auxiliary",
        "in_channels",
        "num_classes",
        "image_size",
        "dataset",
    )
    different = [
        f"{k} {saved.get(k)} vs {requested[k]}" for k in keys if saved.get(k) != requested[k]
    ]
    if saved.get("dims", 2) != requested.get("dims", 2):
        different.append(f"dims {saved.get('dims', 2)} vs {requested.get('dims', 2)}")
    if different:
        raise NasError(
            f"{where} does not fit the requested network ({', '.join(different)}, "
            "checkpoint vs requested)"
        )


def check_training_data(config: TrainConfig, data: ImageData) -> None:
    """Fill `config`'s unset data-dependent fields from `data` and raise NasError if `data`
    cannot be trained on with it: no images, fewer training images than one batch, or
    augmentation that does not fit the images (nas/data/defaults.py).
    """
    fit_to_data(config, data)
    config.resolve(fit_data=False)
    check_batch_size(data.train, config.data.batch_size, "training")


class TrainTask(Task):
    """Trains a genotype's network on the training set, evaluating on the test set each epoch.

    SGD with momentum, cosine learning rate from `train.lr` to `train.lr_min` over the run,
    gradient-norm clipping, auxiliary loss, and drop-path ramped linearly from 0 to
    `model.drop_path` (as in the DARTS reference: `drop_path * epoch / epochs`).
    """

    divergence_hint = "--set train.lr=..."

    def __init__(
        self,
        config: TrainConfig,
        genotype: Genotype,
        runtime: Runtime,
        data: ImageData | None = None,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.genotype = genotype
        # `data` replaces the configured dataset (nas tune: a training split with a held-out part).
        self.data = data if data is not None else load_dataset(config.data)
        check_training_data(config, self.data)
        data = self.data
        self.spec = model_spec(
            config, genotype, data.in_channels, data.num_classes, data.image_size, data
        )
        self.network = runtime.prepare(build_network(self.spec).to(runtime.device))
        self.model = runtime.wrap(_WithAuxiliary(self.network))
        train = config.train
        self.optimizer = torch.optim.SGD(
            self.network.parameters(),
            lr=train.lr,
            momentum=train.momentum,
            weight_decay=train.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=config.run.epochs, eta_min=train.lr_min
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)
        self.best_acc = -1.0
        self.best_epoch = 0
        self._last_test_acc = 0.0
        self._is_best = False

    def steps_per_epoch(self) -> int:
        world = self.runtime.world_size
        return batches_per_epoch(self.data.train, self.config.data.batch_size, world)

    def batches(self, epoch: int) -> Any:
        self.network.train()  # evaluate() left it in eval mode
        self.network.drop_path_prob = self.config.model.drop_path * epoch / self.config.run.epochs
        data = self.config.data
        return loader(
            self.data.train,
            data.batch_size,
            True,
            self.config.run.seed,
            epoch,
            data.augment,
            data.cutout,
            (self.runtime.rank, self.runtime.world_size),
            workers=data.workers,
            flips=self.data.flips,
        )

    def step(self, batch: Any) -> StepResult:
        images, labels = (t.to(self.runtime.device) for t in batch)
        logits, auxiliary_logits = self.model(images)
        loss = self.criterion(logits, labels)
        objective = loss
        if auxiliary_logits is not None:
            objective = loss + self.config.model.auxiliary_weight * self.criterion(
                auxiliary_logits, labels
            )
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        nn.utils.clip_grad_norm_(self.network.parameters(), self.config.train.grad_clip)
        self.optimizer.step()
        correct = (logits.detach().argmax(dim=1) == labels).sum()
        return StepResult(loss.detach(), correct, labels.shape[0])

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.network.eval()
        # BN running statistics are per rank; every rank evaluates with rank 0's, which are the
        # ones its checkpoint saves.
        self.runtime.broadcast(list(self.network.buffers()))
        test = self.data.test
        shard = (self.runtime.rank, self.runtime.world_size)
        data = self.config.data
        sums = classifier_sums(
            self.network, test, data.batch_size, self.runtime.device, shard, data.workers
        )
        loss_sum, correct = self.runtime.sum(sums)
        self._last_test_acc = correct / len(test)
        return {"test_loss": loss_sum / len(test), "test_acc": self._last_test_acc}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self._is_best = self._last_test_acc > self.best_acc
        if self._is_best:
            self.best_acc, self.best_epoch = self._last_test_acc, epoch + 1
        return {"lr": lr, "drop_path": self.network.drop_path_prob, "best_test_acc": self.best_acc}

    def log_epoch(self, epoch: int, record: dict[str, Any], logger: RunLogger) -> None:
        if self._is_best:
            save_checkpoint(logger.run_dir / "checkpoints" / "best.pt", self.model_payload())
        if epoch == 0:
            logger.text("genotype", f"`{self.genotype.to_notation()}`", 1)
            picture = genotype_picture(self.genotype)
            if picture is not None:
                logger.image("genotype", picture, 1)

    def model_payload(self) -> dict[str, Any]:
        """The trained model alone: spec, weights and its test accuracy (best.pt holds this)."""
        return {
            "epoch": self.best_epoch,
            "spec": self.spec,
            "network": self.network.state_dict(),
            "test_acc": self._last_test_acc,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_acc": self.best_acc,
            "best_epoch": self.best_epoch,
            "test_acc": self._last_test_acc,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_spec(saved_spec(state), self.spec, "the checkpoint")
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.best_acc = state["best_acc"]
        self.best_epoch = state["best_epoch"]
        self._last_test_acc = state["test_acc"]


class _WithAuxiliary(nn.Module):
    """`forward` = the network's `forward_with_auxiliary`, so DDP (which wraps `forward`) sees
    the training forward pass, auxiliary head included.
    """

    def __init__(self, network: GenotypeNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.network.forward_with_auxiliary(x)


def saved_spec(state: dict[str, Any]) -> Any:
    """The network spec of a nas train checkpoint's state (None if it has none). Checkpoints
    written before the key was named "spec" hold it as "model".
    """
    return state.get("spec", state.get("model"))
