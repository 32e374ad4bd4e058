"""Random search against ASHA at equal wall time: the final-training lr and weight decay of
DARTS_V2 on digits (experiments/configs/tune_digits.yaml).

Runs, one after another (so they do not share the CPU):
  1. nas tune --config experiments/configs/tune_digits.yaml --pruner none --timeout T
  2. the same with --pruner asha (same sampler seed: both draw the same sequence of settings)
  3. nas train --config <each study>/best.yaml: the best setting on the whole training split,
     tested on the test split
and prints a markdown table: trials completed / pruned / failed, best held-out accuracy, and the
test accuracy of each study's best setting. Each study starts no trial after T seconds; the
running one finishes, so the wall time of each arm is T plus at most one trial.

    python experiments/tune_random_vs_asha.py --seconds 300 --out runs/tune-random-vs-asha
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import optuna

CONFIG = "experiments/configs/tune_digits.yaml"
ARMS = {"random": ["--pruner", "none"], "ASHA": ["--pruner", "asha"]}


def run(args: list[str]) -> float:
    """Run `nas ARGS`; return its wall time in seconds."""
    print("$ nas " + " ".join(args), file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nas", *args], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300, help="wall time of each study")
    parser.add_argument("--out", type=Path, default=Path("runs/tune-random-vs-asha"))
    args = parser.parse_args()
    rows = []
    for name, flags in ARMS.items():
        study_dir = args.out / name.lower()
        tune = ["tune", "--config", CONFIG, *flags, "--sampler", "random", "--trials", "1000",
                "--timeout", str(args.seconds), "--out", str(study_dir)]  # fmt: skip
        seconds = run(tune)
        study = optuna.load_study(study_name="tune_digits",
                                  storage=f"sqlite:///{study_dir / 'study.db'}")  # fmt: skip
        states = [t.state.name for t in study.trials]
        epochs = sum(len(t.intermediate_values) for t in study.trials)
        train_dir = args.out / f"{name.lower()}-best"
        run(["train", "--config", str(study_dir / "best.yaml"), "--out", str(train_dir)])
        last = json.loads((train_dir / "metrics.jsonl").read_text().splitlines()[-1])
        rows.append((name, seconds, states, epochs, study, last["test_acc"], " ".join(tune)))
    print("| study | wall time | trials completed / pruned / failed | epochs trained | best "
          "held-out acc | best lr, weight decay | test acc of best (retrained) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, seconds, states, epochs, study, test_acc, _ in rows:
        params = study.best_params
        print(
            f"| {name} | {seconds:.0f} s | {states.count('COMPLETE')} / {states.count('PRUNED')} "
            f"/ {states.count('FAIL')} | {epochs} | {study.best_value:.4f} (trial "
            f"{study.best_trial.number}) | {params['train.lr']:.3g}, "
            f"{params['train.weight_decay']:.3g} | {test_acc:.4f} |"
        )
    for name, *_, command in rows:
        print(f"\n{name}: nas {command}")


if __name__ == "__main__":
    main()
