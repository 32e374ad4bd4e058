"""A supernet search as an engine Task: data, supernet and strategy wired together."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from typing import Any

import torch

from nas.collapse import CollapseWatch, cell_counts, dominant_eigenvalue, mean_entropy
from nas.config import Config
from nas.data import (
    batches_per_epoch,
    check_batch_size,
    classifier_sums,
    cycle,
    load_dataset,
    loader,
    split,
)
from nas.data.defaults import fit_to_data
from nas.drawing import figure_or_none, figure_pixels, genotype_picture, save_png
from nas.genotype import CELL_KINDS, Genotype, SearchProgress
from nas.logging import RunLogger, announce
from nas.models.networks import check_signal_length
from nas.runtime.dist import Runtime
from nas.runtime.engine import StepResult, Task
from nas.search_view import (
    OP_WEIGHTS_LOG,
    alpha_tag,
    cell_edges,
    op_weights_figure,
    op_weights_row,
    scalar_layout,
)
from nas.spaces import get_space
from nas.strategies import STRATEGIES
from nas.supernet import SearchNetwork

# Drawing a heat map takes about a second on a CPU, as long as a short epoch: TensorBoard gets them
# at a process's first epoch, at the last, and in between at most once this many seconds.
HEAT_MAP_INTERVAL_S = 60.0


class SearchTask(Task):
    """Searches `config.model.space` on the training set, split into weight and alpha halves."""

    def __init__(self, config: Config, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        announce(f"loading dataset {config.data.name}")
        data = load_dataset(config.data)
        fit_to_data(config, data)  # refuses data a cell search cannot use
        config.resolve(fit_data=False)
        if data.kind == "sequence":  # before the batch checks: no batch size makes it fit
            check_signal_length(get_space(config.model.space), data.image_size, config.data.name)
        self.flips = data.flips
        self.train_set, self.val_set = split(data.train, config.data.train_portion)
        check_batch_size(self.train_set, config.data.batch_size, "weight-training")
        check_batch_size(self.val_set, config.data.batch_size, "alpha-training (validation)")
        self.space = get_space(config.model.space)
        announce("building the supernet")
        self.network = SearchNetwork(
            self.space,
            data.in_channels,
            data.num_classes,
            config.model.channels,
            config.model.layers,
            partial_channels=config.model.partial_channels,
            checkpoint_cells=config.model.checkpoint_cells,
            dims=data.dims,
        ).to(runtime.device)
        self.network.use_fast_path(config.model.path == "fast")
        runtime.prepare(self.network)  # SyncBatchNorm in place, if asked for
        strategy_class = STRATEGIES.get(config.strategy.name)
        self.network.max_skips = config.collapse.max_skips
        self.strategy = strategy_class(
            self.network, config.strategy, config.run.epochs, self.steps_per_epoch(), runtime
        )
        self.collapse = CollapseWatch(config.collapse)
        self.warnings: list[str] = []  # the last epoch's collapse warnings, printed by log_epoch
        self._pictured: Genotype | None = None  # the genotype whose picture TensorBoard has
        self._heat_maps_at: float | None = None  # time.monotonic() of the last heat maps

    def steps_per_epoch(self) -> int:
        world = self.runtime.world_size
        return batches_per_epoch(self.train_set, self.config.data.batch_size, world)

    def batches(self, epoch: int) -> Iterator[Any]:
        data, seed = self.config.data, self.config.run.seed
        shard = (self.runtime.rank, self.runtime.world_size)
        train = loader(
            self.train_set,
            data.batch_size,
            True,
            seed,
            epoch,
            data.augment,
            data.cutout,
            shard,
            workers=data.workers,
            flips=self.flips,
        )
        # The validation stream restarts as often as needed when it is the shorter split.
        val = cycle(
            lambda round_: loader(
                self.val_set,
                data.batch_size,
                True,
                seed + 1,
                epoch * 1000 + round_,
                data.augment,
                data.cutout,
                shard,
                workers=data.workers,
                flips=self.flips,
            )
        )
        return zip(train, val)

    def step(self, batch: Any) -> StepResult:
        (train_images, train_labels), (val_images, val_labels) = batch
        device = self.runtime.device
        return self.strategy.step(
            (train_images.to(device), train_labels.to(device)),
            (val_images.to(device), val_labels.to(device)),
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.strategy.select(lambda: self._val_sums()[1] / len(self.val_set))
        loss_sum, correct = self._val_sums()
        return {"val_loss": loss_sum / len(self.val_set), "val_acc": correct / len(self.val_set)}

    def _val_sums(self) -> list[float]:
        """[summed loss, correct predictions] of the eval-mode supernet on the validation split,
        over every rank."""
        self.network.eval()
        shard = (self.runtime.rank, self.runtime.world_size)
        data = self.config.data
        sums = classifier_sums(
            self.network, self.val_set, data.batch_size, self.runtime.device, shard, data.workers
        )
        return self.runtime.sum(sums)

    def end_epoch(self, epoch: int) -> dict[str, float]:
        record = self.strategy.end_epoch(epoch)
        record.update(self._diagnostics(epoch + 1))
        return record

    def _diagnostics(self, step: int) -> dict[str, float]:
        """The collapse indicators after epoch `step` (nas/collapse.py), fed to the watch."""
        current = self.strategy.genotype()
        record: dict[str, float] = dict(cell_counts(current))
        for kind, weights in zip(CELL_KINDS, self.network.op_weights()):
            record[f"entropy_{kind}"] = mean_entropy(weights)
        settings, eigenvalue = self.config.collapse, None
        if settings.hessian_every and step % settings.hessian_every == 0:
            started = time.perf_counter()
            images, labels = self._hessian_samples()
            eigenvalue = dominant_eigenvalue(
                self.network, images, labels, settings.hessian_iterations
            )
            # Every process computes it on the same samples; rank 0's decides for all.
            eigenvalue = float(self.runtime.broadcast_object(eigenvalue))
            record["hessian_eigenvalue"] = eigenvalue
            record["hessian_seconds"] = time.perf_counter() - started
        param_free = int(record["param_free_normal"])
        self.warnings = self.collapse.observe(step, current, param_free, eigenvalue)
        return record

    def _hessian_samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed validation subset of the eigenvalue: the split's first samples."""
        count = min(self.config.collapse.hessian_samples, len(self.val_set))
        items = [self.val_set[i] for i in range(count)]
        images = torch.stack([torch.as_tensor(image) for image, _ in items])
        labels = torch.as_tensor([int(label) for _, label in items], dtype=torch.long)
        return images.to(self.runtime.device), labels.to(self.runtime.device)

    def genotype(self) -> Genotype:
        """The genotype the search currently points to; after an early stop on collapse, the one
        it kept from before the collapse."""
        kept = self.collapse.kept_genotype()
        return kept if kept is not None else self.strategy.genotype()

    def log_epoch(self, epoch: int, record: dict[str, Any], logger: RunLogger) -> None:
        step = epoch + 1
        for warning in self.warnings:
            logger.note(warning)
        epochs = self.config.run.epochs
        # finished(): converged before the budget, so no later epoch will change it
        progress = SearchProgress(step, epochs, step >= epochs or self.finished())
        replace(self.genotype(), search=progress).save(logger.run_dir / "genotype.json")
        genotype = self.strategy.genotype()  # this epoch's, even after an early stop
        logger.append_jsonl("genotypes.jsonl", {"epoch": step, "genotype": genotype.to_dict()})
        weights = op_weights_row(step, self.network.op_weights(), self.network.pruned_masks())
        logger.append_jsonl(OP_WEIGHTS_LOG, weights)
        for kind in CELL_KINDS:
            for (target, source), edge in zip(cell_edges(self.space), weights[kind]):
                for op, weight in zip(self.space.ops, edge):
                    if weight is not None:  # a pruned op's curve ends where it was pruned
                        logger.scalar(alpha_tag(kind, target, source), weight, step, series=op)
        metric_keys = {key for row in logger.read_jsonl("metrics.jsonl") for key in row}
        logger.layout(scalar_layout(self.space, metric_keys))
        logger.text("genotype", f"`{genotype.to_notation()}`", step)
        if genotype != self._pictured:  # drawn when it changes
            self._pictured = genotype
            picture = genotype_picture(genotype)
            if picture is not None:
                logger.image("genotype", picture, step)
        now = time.monotonic()
        since = None if self._heat_maps_at is None else now - self._heat_maps_at
        if not progress.complete and since is not None and since < HEAT_MAP_INTERVAL_S:
            return
        self._heat_maps_at = now
        history = logger.read_jsonl(OP_WEIGHTS_LOG)  # every epoch so far, resumed runs included
        for kind in CELL_KINDS:
            draw = partial(op_weights_figure, self.space, kind, history)
            figure = figure_or_none(draw, "the op weights as scalars")
            if figure is None:
                break
            pixels = figure_pixels(figure)
            logger.image(f"op_weights/{kind}", pixels, step)
            if progress.complete:
                save_png(pixels, logger.run_dir / f"op_weights_{kind}.png")

    def progress(self) -> dict[str, str]:
        return self.strategy.progress()

    def finished(self) -> bool:
        return self.collapse.stopped_at is not None or self.strategy.finished()

    @property
    def stop_reason(self) -> str:
        return self.collapse.reason or self.strategy.stop_reason

    @property
    def summary_keys(self) -> tuple[str, ...]:
        eigenvalue = ("hessian_eigenvalue",) if self.config.collapse.hessian_every else ()
        return (*self.strategy.summary_keys, "param_free_normal", *eigenvalue)

    def state_dict(self) -> dict[str, Any]:
        return {
            "network": self.network.state_dict(),
            "strategy": self.strategy.state_dict(),
            "collapse": self.collapse.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.strategy.load_state_dict(state["strategy"])
        if "collapse" in state:  # checkpoints written before the collapse watch have none
            self.collapse.load_state_dict(state["collapse"])
