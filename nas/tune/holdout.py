"""Final training evaluated on a held-out part of the training split, for `nas tune`.

Choosing hyperparameters by test accuracy would make the best trial's test accuracy an optimistic
estimate; a trial of `nas train` therefore trains on the rest of the training split and reports
`val_loss` / `val_acc` on the held-out part (`tune.holdout`). The test split is left untouched.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nas.data import load_dataset, split
from nas.train_task import TrainTask


def holdout_train_task(config: Any, genotype: Any, runtime: Any, holdout: float) -> TrainTask:
    """A TrainTask on `1 - holdout` of the training split, validated on the rest."""
    data = load_dataset(config.data)
    train, held_out = split(data.train, 1.0 - holdout)
    return _HoldoutTrainTask(
        config, genotype, runtime, dataclasses.replace(data, train=train, test=held_out)
    )


class _HoldoutTrainTask(TrainTask):
    """TrainTask whose "test" set is the held-out part; its metrics are named val_*."""

    def evaluate(self) -> dict[str, float]:
        result = super().evaluate()
        return {"val_loss": result["test_loss"], "val_acc": result["test_acc"]}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        result = super().end_epoch(epoch)
        result["best_val_acc"] = result.pop("best_test_acc")
        return result
