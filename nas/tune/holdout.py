"""Final training evaluated on a held-out part of the training split, for `nas tune`.

Choosing hyperparameters by test accuracy would make the best trial's test accuracy an optimistic
estimate; a trial of `nas train` therefore holds out `tune.holdout` of the training split as its
validation split (`train.val_fraction`) and reports `val_loss` / `val_acc` on it. No choice is
made on the test split.
"""

from __future__ import annotations

from typing import Any

from nas.train_task import TrainTask


def holdout_train_task(config: Any, genotype: Any, runtime: Any, holdout: float) -> TrainTask:
    """A TrainTask on `1 - holdout` of the training split, validated on the rest."""
    config.train.val_fraction = holdout
    return TrainTask(config, genotype, runtime)
