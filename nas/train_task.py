"""Final training of a genotype's network (DARTS Sec. 3.3 / App. A.2) or of a hand-designed
baseline as an engine Task, with the model chosen on a validation split of the training data.
"""

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
    split,
)
from nas.data.defaults import fit_to_data
from nas.drawing import genotype_picture
from nas.errors import NasError
from nas.genotype import Genotype
from nas.logging import RunLogger
from nas.models import NETWORKS, GenotypeNetwork
from nas.models.baselines import build_baseline
from nas.models.networks import check_signal_length
from nas.runtime.checkpoint import save_checkpoint
from nas.runtime.dist import Runtime
from nas.runtime.engine import StepResult, Task
from nas.spaces import get_space


def model_spec(
    config: TrainConfig,
    genotype: Genotype | None,
    in_channels: int,
    num_classes: int,
    image_size: int,
    data: ImageData | None = None,
    dims: int = 2,
) -> dict[str, Any]:
    """Everything needed to rebuild the network and feed it: stored in every checkpoint.
    `image_size` is the signal length L where `dims` is 1 (taken from `data` when given). A
    baseline's (`model.baseline`, no genotype) names it and the kind of samples it reads."""
    if data is not None:
        dims = data.dims
    if config.model.baseline is not None:
        return {
            "baseline": config.model.baseline,
            "kind": data.kind if data else "image",
            "in_channels": in_channels,
            "num_classes": num_classes,
            "image_size": image_size,
            "dims": dims,
            "dataset": config.data.name,
            **_feeding(data),
        }
    assert genotype is not None
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
        **_feeding(data),
    }


def _feeding(data: ImageData | None) -> dict[str, Any]:
    """How to feed raw inputs x: x / input_scale, then (x - mean) / std per channel."""
    return {
        "input_scale": data.input_scale if data else 1.0,
        "mean": list(data.mean) if data else None,
        "std": list(data.std) if data else None,
        "class_names": list(data.class_names) if data else None,
    }


def build_network(spec: dict[str, Any]) -> nn.Module:
    """The network a model spec describes (random weights)."""
    if spec.get("baseline") is not None:
        size = spec["image_size"]
        return build_baseline(
            spec["baseline"], spec["in_channels"], spec["num_classes"], size, spec["kind"]
        )
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
    if saved.get("baseline") != requested.get("baseline"):
        raise NasError(
            f"{where} holds weights for another network ({saved.get('baseline') or 'a genotype'}"
            f", not {requested.get('baseline') or 'a genotype'})"
        )
    if requested.get("baseline") is not None:
        keys = ("kind", "in_channels", "num_classes", "image_size", "dataset")
        _check_keys(saved, requested, keys, where)
        return
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
    _check_keys(saved, requested, keys, where)


def _check_keys(
    saved: dict[str, Any], requested: dict[str, Any], keys: tuple[str, ...], where: str
) -> None:
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
    cannot be trained on with it: no images (a baseline reads any samples), a training part
    (after the validation split) smaller than one batch, or augmentation that does not fit the
    images (nas/data/defaults.py).
    """
    fit_to_data(config, data)
    config.resolve(fit_data=False)
    check_batch_size(training_split(config, data)[0], config.data.batch_size, "training")


def training_split(config: TrainConfig, data: ImageData) -> tuple[Any, Any]:
    """(train, validation) parts of `data.train`: `train.val_fraction` of it is held out by a
    fixed permutation (nas.data.split), the same on every rank and after a resume; validation is
    None when the fraction is 0. The test split is never part of either.
    """
    fraction = config.train.val_fraction
    if fraction == 0:
        return data.train, None
    size = len(data.train)
    held_out = size - int(round((1 - fraction) * size))
    if held_out < 2 or size - held_out < 2:
        raise NasError(
            f"train.val_fraction={fraction} holds out {held_out} of the {size} training samples, "
            "leaving a part under 2 samples; set train.val_fraction=0 (no validation) or use "
            "more samples"
        )
    return split(data.train, 1 - fraction)


class TrainTask(Task):
    """Trains a network on the training part of the training split and chooses the model on its
    validation part (`train.val_fraction`): best.pt holds the epoch with the best validation
    accuracy (the earlier epoch on a tie), or the last epoch without validation. The test split
    is evaluated only with the weights best.pt holds, when they are chosen, and with the final
    weights after the last epoch, so no choice is ever made on it.

    SGD with momentum, cosine learning rate from `train.lr` to `train.lr_min` over the run,
    gradient-norm clipping, auxiliary loss, and drop-path ramped linearly from 0 to
    `model.drop_path` (as in the DARTS reference: `drop_path * epoch / epochs`).
    """

    divergence_hint = "--set train.lr=..."

    def __init__(
        self,
        config: TrainConfig,
        genotype: Genotype | None,
        runtime: Runtime,
        data: ImageData | None = None,
    ) -> None:
        self.config = config
        self.runtime = runtime
        # None for a baseline (`model.baseline`)
        self.genotype = genotype
        # `data` replaces the configured dataset (the Python API's arrays).
        self.data = data if data is not None else load_dataset(config.data)
        check_training_data(config, self.data)
        data = self.data
        self.train_set, self.val_set = training_split(config, data)
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
        self.best_val_acc = -1.0
        self.best_epoch = 0
        # Test accuracy of the weights in best.pt, and of the final weights (after the last epoch)
        self.best_test_acc: float | None = None
        self.last_test_acc: float | None = None
        self._last_val_acc = 0.0
        self._is_best = False

    def steps_per_epoch(self) -> int:
        world = self.runtime.world_size
        return batches_per_epoch(self.train_set, self.config.data.batch_size, world)

    def batches(self, epoch: int) -> Any:
        self.network.train()  # evaluate() left it in eval mode
        self.network.drop_path_prob = self.config.model.drop_path * epoch / self.config.run.epochs
        data = self.config.data
        return loader(
            self.train_set,
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
        if self.val_set is None:
            return {}
        val_loss, self._last_val_acc = self._loss_and_accuracy(self.val_set)
        return {"val_loss": val_loss, "val_acc": self._last_val_acc}

    @torch.no_grad()
    def _loss_and_accuracy(self, dataset: Any) -> tuple[float, float]:
        """Mean loss and accuracy of the network (in eval mode) on `dataset`, over all ranks."""
        shard = (self.runtime.rank, self.runtime.world_size)
        data = self.config.data
        sums = classifier_sums(
            self.network, dataset, data.batch_size, self.runtime.device, shard, data.workers
        )
        loss_sum, correct = self.runtime.sum(sums)
        return loss_sum / len(dataset), correct / len(dataset)

    def end_epoch(self, epoch: int) -> dict[str, float]:
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        last = epoch + 1 == self.config.run.epochs
        record = {"lr": lr, "drop_path": self.network.drop_path_prob}
        if self.val_set is None:
            self._is_best = True  # no validation: best.pt is the last epoch
        else:
            # strictly better: a tie keeps the earlier epoch
            self._is_best = self._last_val_acc > self.best_val_acc
        if self._is_best:
            self.best_epoch = epoch + 1
            if self.val_set is not None:
                self.best_val_acc = self._last_val_acc
            if self.val_set is not None or last:
                self.best_test_acc = self._loss_and_accuracy(self.data.test)[1]
        if self.val_set is not None:
            record["best_val_acc"] = self.best_val_acc
        record["best_epoch"] = self.best_epoch
        if last:
            self.last_test_acc = (
                self.best_test_acc
                if self.best_epoch == epoch + 1
                else self._loss_and_accuracy(self.data.test)[1]
            )
            # the end of the run: test accuracy of best.pt's weights and of the final weights
            record["test_acc"] = self.best_test_acc
            record["last_test_acc"] = self.last_test_acc
        return record

    def log_epoch(self, epoch: int, record: dict[str, Any], logger: RunLogger) -> None:
        if self._is_best:
            save_checkpoint(logger.run_dir / "checkpoints" / "best.pt", self.model_payload())
        if epoch == 0 and self.genotype is not None:
            logger.text("genotype", f"`{self.genotype.to_notation()}`", 1)
            picture = genotype_picture(self.genotype)
            if picture is not None:
                logger.image("genotype", picture, 1)

    def model_payload(self) -> dict[str, Any]:
        """The trained model alone: spec, weights, and its validation and test accuracy (None
        where not measured: no validation, or best.pt of a run that has not finished without
        validation). best.pt holds this."""
        return {
            "epoch": self.best_epoch,
            "spec": self.spec,
            "network": self.network.state_dict(),
            "val_acc": self.best_val_acc if self.val_set is not None else None,
            "test_acc": self.best_test_acc,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "best_test_acc": self.best_test_acc,
            "last_test_acc": self.last_test_acc,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_spec(saved_spec(state), self.spec, "the checkpoint")
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.best_val_acc = state["best_val_acc"]
        self.best_epoch = state["best_epoch"]
        self.best_test_acc = state["best_test_acc"]
        self.last_test_acc = state["last_test_acc"]


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
