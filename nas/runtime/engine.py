"""The one training loop. Commands supply a Task; the engine does epochs, progress, metrics,
NaN checks, evaluation, logging, checkpoints and resume.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.errors import NasError, clip, shorten
from nas.logging import RunLogger
from nas.runtime.checkpoint import load_checkpoint, save_checkpoint
from nas.runtime.dist import Runtime, restarted

# Test hooks: the process kills itself (SIGKILL, no cleanup) after this many steps of the run,
# only on rank NASFORGE_FAULT_RANK if set, and never in a worker torchrun restarted. With
# NASFORGE_FAULT_KIND=raise it raises an exception instead (a crashing rank).
FAULT_ENV = "NASFORGE_FAULT_STEP"
FAULT_RANK_ENV = "NASFORGE_FAULT_RANK"
FAULT_KIND_ENV = "NASFORGE_FAULT_KIND"


@dataclass
class StepResult:
    """What one training step reports: the (detached) mean loss, correct predictions, batch size."""

    loss: torch.Tensor
    correct: torch.Tensor
    count: int


class Task:
    """Base class of what the engine trains (a search, a final training).

    The engine calls, in order, for each epoch (until `finished()`): `batches(epoch)` once,
    `step(batch)` for each batch, then `evaluate()`, then `end_epoch(epoch)`, then (main process
    only) `log_epoch`. It checkpoints `state_dict()` after every epoch and calls
    `load_state_dict` on resume.
    """

    # How a user lowers the learning rates, named in the error when training diverges.
    divergence_hint = "--set strategy.weight_lr=... / strategy.alpha_lr=..."
    # Why the run stopped before its budget, once `finished()` is true.
    stop_reason = "the run has converged"
    # Keys of `end_epoch`'s record that the one-line epoch summary shows.
    summary_keys: tuple[str, ...] = ()

    def batches(self, epoch: int) -> Iterable[Any]:
        """The batches of one epoch; must be a deterministic function of the epoch."""
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        """How many batches `batches` yields (for the progress bar; an epoch whose batches
        have a length shows that instead)."""
        raise NotImplementedError

    def step(self, batch: Any) -> StepResult:
        """One training step on `batch`."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics after the epoch's training, e.g. {"val_loss": .., "val_acc": ..}."""
        return {}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Advance per-epoch schedules; return scalars to add to the epoch's metrics."""
        return {}

    def log_epoch(self, epoch: int, record: dict[str, Any], logger: RunLogger) -> None:
        """Write epoch artifacts (genotypes, pictures) through `logger`. Main process only."""

    def progress(self) -> dict[str, str]:
        """Extra fields for the progress bar."""
        return {}

    def finished(self) -> bool:
        """True when further epochs would change nothing (the engine then stops early)."""
        return False

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: modules, optimizers, schedules."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        raise NotImplementedError


# Called on every process with the epoch's metrics record, after its checkpoint; it may raise to
# stop the run there (`nas tune` reports to the trial and raises when the pruner says so).
EpochHook = Callable[[dict[str, Any]], None]


class Engine:
    """Runs a Task for `epochs` epochs with checkpoints in `run_dir/checkpoints/last.pt`.

    `epoch_hooks` are called in order after each epoch (see `EpochHook`).
    """

    def __init__(
        self,
        task: Task,
        runtime: Runtime,
        logger: RunLogger,
        run_dir: Path,
        epochs: int,
        epoch_hooks: Sequence[EpochHook] = (),
    ) -> None:
        self.task = task
        self.epoch_hooks = list(epoch_hooks)
        self.runtime = runtime
        self.logger = logger
        self.checkpoint_path = run_dir / "checkpoints" / "last.pt"
        self.epochs = epochs
        fault = os.environ.get(FAULT_ENV)
        fault_rank = os.environ.get(FAULT_RANK_ENV)
        armed = not restarted() and (fault_rank is None or int(fault_rank) == runtime.rank)
        self._fault_step = int(fault) if fault and armed else None

    def resume(self) -> int:
        """Load the last checkpoint; return the number of epochs it completed.

        Raises NasError when the checkpoint is of another command or does not fit this run.
        """
        path = self.checkpoint_path
        payload = load_checkpoint(path)
        kind, epoch = payload.get("kind"), payload.get("epoch")
        if kind is not None and kind != type(self.task).__name__:
            raise NasError(
                f"checkpoint {path} was written by another command ({shorten(kind)}, not "
                f"{type(self.task).__name__}); resume it with that command or start a new run"
            )
        if type(epoch) is not int or not 0 <= epoch <= self.epochs:
            raise NasError(
                f"checkpoint {path}: completed epochs {shorten(epoch)} is not a count within "
                f"run.epochs={self.epochs}; the file is damaged: restore it or start a new run"
            )
        try:
            self.task.load_state_dict(payload["task"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as err:
            # Another command's state, or weights of another shape (a copied file).
            raise NasError(
                f"checkpoint {path} does not fit this run ({_first_line(err)}); it was written "
                "by another command or configuration: restore this run's own checkpoint or "
                "start a new run"
            ) from None
        self.logger.rewind(epoch)  # here, so that damaged logs are refused before anything runs
        return epoch

    def run(self, start_epoch: int = 0) -> dict[str, Any]:
        """Train epochs `start_epoch`..`epochs - 1`; return the last epoch's metrics record."""
        self.logger.rewind(start_epoch)
        record: dict[str, Any] = {}
        steps = self.task.steps_per_epoch()
        for epoch in range(start_epoch, self.epochs):
            if self.task.finished():
                if self.runtime.is_main:
                    self.logger.note(
                        f"stopping after epoch {epoch} of {self.epochs}: {self.task.stop_reason}"
                    )
                break
            started = time.perf_counter()
            self.runtime.reset_peak_memory()
            loss_sum = correct = count = 0.0
            batches = self.task.batches(epoch)
            # epochs of different lengths (AdaNet's mixture epochs) give their own length
            total = len(batches) if isinstance(batches, Sized) else steps
            bar = self.logger.progress(
                batches, total=total, desc=f"epoch {epoch + 1}/{self.epochs}"
            )
            for index, batch in enumerate(bar):
                result = self.task.step(batch)
                loss = result.loss.item()
                self._check_finite(loss, epoch, index)
                loss_sum += loss * result.count
                correct += result.correct.item()
                count += result.count
                bar.set_postfix(
                    loss=f"{loss_sum / count:.3f}",
                    acc=f"{correct / count:.3f}",
                    **self.task.progress(),
                )
                self._maybe_fault(epoch * steps + index + 1)
            bar.close()
            loss_sum, correct, count = self.runtime.sum([loss_sum, correct, count])
            record = {"epoch": epoch + 1, "train_loss": loss_sum / max(count, 1)}
            record["train_acc"] = correct / max(count, 1)
            evaluated = self.task.evaluate()
            for key, value in evaluated.items():
                if key.endswith("loss"):
                    self._check_finite(value, epoch, None)
            record.update(evaluated)
            record.update(self.task.end_epoch(epoch))
            record["epoch_seconds"] = time.perf_counter() - started
            record["peak_mem_mb"] = self.runtime.peak_memory_mb()
            if self.runtime.is_main:
                self.logger.summary(record, self.epochs, self.task.summary_keys)
                self.logger.log_metrics(record)
                self.task.log_epoch(epoch, record, self.logger)
                state = {"kind": type(self.task).__name__, "task": self.task.state_dict()}
                save_checkpoint(self.checkpoint_path, {"epoch": epoch + 1, **state})
            for hook in self.epoch_hooks:
                hook(record)
        return record

    def _check_finite(self, loss: float, epoch: int, step: int | None) -> None:
        if math.isfinite(loss):
            return
        where = f"epoch {epoch + 1}, step {step + 1}" if step is not None else f"epoch {epoch + 1}"
        kept = (
            f"the last good checkpoint ({self.checkpoint_path}) is kept"
            if self.checkpoint_path.is_file()
            else "no epoch had completed, so there is no checkpoint"
        )
        raise NasError(
            f"the loss became {loss} at {where}: training diverged; {kept}. Start a new run "
            f"with lower learning rates ({self.task.divergence_hint})"
        )

    def _maybe_fault(self, global_step: int) -> None:
        if self._fault_step is not None and global_step == self._fault_step:
            if os.environ.get(FAULT_KIND_ENV) == "raise":
                raise RuntimeError(f"injected fault at step {global_step} ({FAULT_KIND_ENV})")
            os.kill(os.getpid(), signal.SIGKILL)


def _first_line(err: BaseException) -> str:
    """What an error says, on one short line (state-dict errors list every key)."""
    text = " ".join(str(err).split())
    return clip(text, 160) if text else type(err).__name__
