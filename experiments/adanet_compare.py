"""AdaNet against three baselines on digits and breast_cancer (the table in experiments/README.md).

    python experiments/adanet_compare.py [--repeats 3] [--json results.json]

Per dataset (config: the built-in adanet_<dataset>) it runs, on the same splits:

- logistic regression (scikit-learn, lbfgs) fitted on the training split;
- a hand-set MLP: one hidden layer of the config's width, trained like an AdaNet candidate
  (Adam, run.epochs epochs, the global batch of the two-process runs);
- random search over MLPs (depth 1-3, width 16-512, lr 3e-4-3e-3) trained the same way until
  their forward multiply-adds reach those AdaNet sync spent on candidates; the best on the
  held-out split is tested;
- AdaNet sync, async without forecasting and async, each `nas grow ... --nproc-per-node 2`.

Baselines run in this process on one thread; the nas runs get OMP_NUM_THREADS=1 per process.
Wall times are medians of --repeats runs (nas runs: the whole command, start-up included).
It prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from nas.adanet.candidates import Candidate
from nas.adanet.config import AdaNetConfig, GrowConfig
from nas.adanet.ensemble import Ensemble
from nas.adanet.generators import GENERATORS, DataShape
from nas.config import apply_dict, load_yaml
from nas.configs import config_path
from nas.data import load_dataset, split
from nas.runtime.dist import Runtime

CPU = Runtime(0, 1, torch.device("cpu"))
PROCESSES = 2


def _scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    result = {"test_acc": (logits.argmax(1) == labels).float().mean().item()}
    if logits.shape[1] == 2:
        result["test_auc"] = roc_auc_score(labels.numpy(), logits.softmax(1)[:, 1].numpy())
    return result


def _train_mlp(config: GrowConfig, data, depth: int, width: int, lr: float, seed: int):
    """An MLP trained like an AdaNet candidate; (candidate, forward multiply-adds spent)."""
    shape = DataShape(data["shape"].in_channels, data["shape"].image_size, data["classes"])
    ada = AdaNetConfig(widths=[width], lr=lr)
    generator = GENERATORS.get("mlp")(ada, shape)
    architecture = {"kind": "mlp", "depth": depth, "width": width, "reads": []}
    candidate = Candidate(
        generator, architecture, 0, Ensemble(data["classes"], False), seed, ada, torch.device("cpu")
    )
    batch = config.data.batch_size * PROCESSES
    steps = config.run.epochs * (len(data["train"]) // batch)
    for step in range(steps):
        candidate.train_step(*candidate.batch(data["train"], step, batch, CPU), [], CPU)
    return candidate, candidate.cost * steps * batch


@torch.no_grad()
def _logits(candidate: Candidate, dataset) -> torch.Tensor:
    candidate.module.eval()
    return candidate.module(dataset.tensors[0], [])[0]


def _baselines(config: GrowConfig, budget: float) -> list[dict]:
    full = load_dataset(config.data)
    train, val = split(full.train, config.data.train_portion)
    data = {
        "train": train,
        "val": val,
        "test": full.test,
        "classes": full.num_classes,
        "shape": full,
    }
    test_x, test_y = full.test.tensors
    rows = []

    started = time.perf_counter()
    logistic = LogisticRegression(max_iter=5000).fit(train.tensors[0].flatten(1), train.tensors[1])
    logits = torch.tensor(logistic.predict_log_proba(test_x.flatten(1)), dtype=torch.float32)
    rows.append(
        {
            "method": "logistic regression",
            "processes": 1,
            "wall_s": time.perf_counter() - started,
            **_scores(logits, test_y),
        }
    )

    width = config.adanet.widths[0]
    started = time.perf_counter()
    mlp, madds = _train_mlp(config, data, 1, width, config.adanet.lr, 0)
    rows.append(
        {
            "method": f"hand-set MLP (1 x {width})",
            "processes": 1,
            "wall_s": time.perf_counter() - started,
            "madds": madds,
            **_scores(_logits(mlp, full.test), test_y),
        }
    )

    rng = random.Random(0)
    spent, tried, best = 0.0, 0, None
    started = time.perf_counter()
    for _ in range(200):  # draws; one that no longer fits the remaining budget is skipped
        depth, width = rng.choice([1, 2, 3]), rng.choice([16, 32, 64, 128, 256, 512])
        lr = rng.choice([3e-4, 1e-3, 3e-3])
        shape = DataShape(full.in_channels, full.image_size, full.num_classes)
        cost = GENERATORS.get("mlp")(AdaNetConfig(), shape).cost(
            {"kind": "mlp", "depth": depth, "width": width, "reads": []}, []
        )
        batch = config.data.batch_size * PROCESSES
        if spent + cost * config.run.epochs * (len(train) // batch) * batch > budget:
            continue
        candidate, madds = _train_mlp(config, data, depth, width, lr, tried)
        spent, tried = spent + madds, tried + 1
        val_loss = torch.nn.functional.cross_entropy(_logits(candidate, val), val.tensors[1])
        if best is None or val_loss < best[0]:
            best = (val_loss.item(), candidate, (depth, width, lr))
    rows.append(
        {
            "method": f"random search ({tried} MLPs, best {best[2]})",
            "processes": 1,
            "wall_s": time.perf_counter() - started,
            "madds": spent,
            **_scores(_logits(best[1], full.test), test_y),
        }
    )
    return rows


def _grow(config_file: Path, schedule: list[str], out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "nas",
        "grow",
        "--config",
        str(config_file),
        "--nproc-per-node",
        str(PROCESSES),
        *schedule,
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    end = [row for row in rows if "test_acc" in row][-1]
    return {"wall_s": wall, "train_s": sum(r["epoch_seconds"] for r in rows), **end}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per AdaNet row (median)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = []
    schedules = {
        "AdaNet sync": ["--schedule", "sync"],
        "AdaNet async, no forecasting": ["--schedule", "async", "--set", "adanet.forecast=false"],
        "AdaNet async": ["--schedule", "async"],
    }
    for dataset in ("digits", "breast_cancer"):
        config_file = config_path(f"adanet_{dataset}")
        config = GrowConfig()
        apply_dict(config, load_yaml(config_file), str(config_file))
        grown = {}
        with tempfile.TemporaryDirectory() as folder:
            for repeat in range(args.repeats):
                for name, flags in schedules.items():
                    out = Path(folder) / f"{name.replace(' ', '_')}_{repeat}"
                    grown.setdefault(name, []).append(_grow(config_file, flags, out))
        rows = _baselines(config, budget=grown["AdaNet sync"][0]["train_madds"])
        for name, runs in grown.items():
            last = runs[-1]  # the runs are deterministic; only their times differ
            rows.append(
                {
                    "method": f"{name} ({last['members']} members)",
                    "processes": PROCESSES,
                    "wall_s": statistics.median(r["wall_s"] for r in runs),
                    "train_s": statistics.median(r["train_s"] for r in runs),
                    "madds": last["train_madds"],
                    "test_acc": last["test_acc"],
                    "test_auc": last.get("test_auc"),
                    "forecast": f"{last['forecast_steps_adopted']}/{last['forecast_steps']} steps, "
                    f"leader {last['leader_hits']}/{last['leader_guesses']}"
                    if name[-5:] == "async"
                    else None,
                }
            )
        table += [{"dataset": dataset, **row} for row in rows]
    print(
        "| dataset | method | processes | test acc | test AUC | wall s | epochs s | "
        "candidate madds | forecasts adopted |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in table:
        auc = f"{row['test_auc']:.4f}" if row.get("test_auc") is not None else "-"
        madds = f"{row['madds'] / 1e9:.2f} G" if row.get("madds") else "-"
        train = f"{row['train_s']:.1f}" if row.get("train_s") is not None else "-"
        print(
            f"| {row['dataset']} | {row['method']} | {row['processes']} | "
            f"{row['test_acc']:.4f} | {auc} | {row['wall_s']:.1f} | {train} | {madds} | "
            f"{row.get('forecast') or '-'} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
