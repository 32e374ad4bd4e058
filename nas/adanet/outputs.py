"""What a `nas grow` iteration writes: ensemble.json, checkpoints/ensemble.pt, candidates.jsonl
and TensorBoard scalars (main process only, through the run logger).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from nas.io import atomic_write_text
from nas.logging import RunLogger
from nas.runtime.checkpoint import save_checkpoint
from nas.runtime.dist import Runtime


@dataclass
class IterationLog:
    """The end of an iteration: its engine epoch (1-based), candidate reports, metrics row."""

    epoch: int
    reports: list[dict]
    record: dict[str, Any]


def candidate_label(architecture: dict) -> str:
    """A short name of an architecture from its integer fields: "mlp_depth2_width128"."""
    numbers = [f"{k}{v}" for k, v in architecture.items() if type(v) is int]
    return "_".join([architecture.get("kind", "net"), *numbers])


@torch.no_grad()
def evaluate_binary_auc(ensemble: Any, dataset: Dataset, runtime: Runtime) -> float:
    """ROC AUC of the positive class (1) on the whole of `dataset` (every process computes it)."""
    from sklearn.metrics import roc_auc_score

    from nas.data import loader

    scores, labels = [], []
    for images, batch_labels in loader(dataset, 256, False, 0, 0):  # in memory or streamed
        scores.append(torch.softmax(ensemble(images.to(runtime.device)), dim=1)[:, 1].cpu())
        labels.append(batch_labels)
    return float(roc_auc_score(torch.cat(labels).numpy(), torch.cat(scores).numpy()))


def write_iteration(log: IterationLog, task: Any, logger: RunLogger) -> None:
    """ensemble.json and its weights, the candidates' reports and TensorBoard scalars."""
    run_dir = logger.run_dir
    data = task.ensemble_dict()
    atomic_write_text(run_dir / "ensemble.json", json.dumps(data, indent=2) + "\n")
    save_checkpoint(
        run_dir / "checkpoints" / "ensemble.pt",
        {"ensemble": data, "state": task.ensemble.state_dict()},
    )
    step = log.record["iteration"]
    for report in log.reports:
        logger.append_jsonl("candidates.jsonl", {"epoch": log.epoch, **report})
        label = candidate_label(report["architecture"])
        logger.scalar(f"candidate_objective/iteration{step}/{label}", report["val_objective"], step)
    logger.scalar("adanet/objective", log.record["objective"], step)
    logger.scalar("adanet/members", log.record["members"], step)
    for index, member in enumerate(data["members"]):
        weight = member["mixture_weight"]
        value = weight if isinstance(weight, float) else sum(map(abs, weight)) / len(weight)
        logger.scalar(f"mixture_weight/member{index}", value, step)
