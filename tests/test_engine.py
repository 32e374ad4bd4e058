"""The engine: a diverging loss stops the run with a clear error and keeps the last checkpoint."""

import json

import pytest
import torch

from nas.errors import NasError
from nas.logging import RunLogger
from nas.runtime import Engine, StepResult, Task
from nas.runtime.checkpoint import load_checkpoint
from nas.runtime.dist import Runtime


class _Diverging(Task):
    """Loss 1.0 until the given epoch, then NaN."""

    def __init__(self, bad_epoch: int) -> None:
        self.bad_epoch = bad_epoch
        self.epoch = 0
        self.weight = torch.zeros(1)

    def steps_per_epoch(self) -> int:
        return 3

    def batches(self, epoch: int):
        self.epoch = epoch
        return range(3)

    def step(self, batch) -> StepResult:
        self.weight += 1
        loss = torch.tensor(float("nan") if self.epoch == self.bad_epoch else 1.0)
        return StepResult(loss=loss, correct=torch.tensor(1), count=2)

    def state_dict(self):
        return {"weight": self.weight.clone()}

    def load_state_dict(self, state) -> None:
        self.weight = state["weight"]


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path) -> None:
    runtime = Runtime(rank=0, world_size=1, device=torch.device("cpu"))
    engine = Engine(_Diverging(bad_epoch=2), runtime, RunLogger(tmp_path), tmp_path, epochs=4)
    with pytest.raises(NasError, match=r"loss became nan at epoch 3, step 1.*last good checkpoint"):
        engine.run()
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert checkpoint["epoch"] == 2 and checkpoint["task"]["weight"].item() == 6
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[0]["train_acc"] == 0.5


def test_nan_in_first_epoch_says_there_is_no_checkpoint(tmp_path) -> None:
    runtime = Runtime(rank=0, world_size=1, device=torch.device("cpu"))
    engine = Engine(_Diverging(bad_epoch=0), runtime, RunLogger(tmp_path), tmp_path, epochs=2)
    with pytest.raises(NasError, match="no epoch had completed"):
        engine.run()
