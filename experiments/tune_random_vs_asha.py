"""Random search against ASHA at equal wall time: the final-training lr and weight decay of
DARTS_V2 on digits (the built-in config tune_digits).

Runs the two studies at the same time, one torch thread each (OMP_NUM_THREADS=1), so that both
see the same machine, load from other work included:
  - nas tune --config tune_digits --pruner none --timeout T
  - the same with --pruner asha (same sampler seed: both draw the same sequence of settings)
then, again side by side, nas train --config <study>/best.yaml: each study's best setting on the
whole training split, tested on the test split. Prints a markdown table: trials completed /
pruned / failed, epochs trained, best held-out accuracy and the test accuracy of the best
setting. A study starts no trial after T seconds; the running one finishes.

    python experiments/tune_random_vs_asha.py --seconds 600 --out runs/tune-random-vs-asha
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna

CONFIG = "tune_digits"
ARMS = {"random": ["--pruner", "none"], "ASHA": ["--pruner", "asha"]}


def start(args: list[str], log: Path) -> subprocess.Popen:
    """Start `nas ARGS` with one torch thread, output to `log`."""
    print("$ OMP_NUM_THREADS=1 nas " + " ".join(args), file=sys.stderr, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "nas", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def wait_all(processes: list[subprocess.Popen]) -> list[float]:
    """Wait for every process; each one's wall time in seconds. Raises if one failed."""
    started, seconds = time.perf_counter(), []
    for process in processes:
        if process.wait() != 0:
            raise SystemExit(f"{process.args} failed with status {process.returncode}")
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="wall time of each study")
    parser.add_argument("--out", type=Path, default=Path("runs/tune-random-vs-asha"))
    args = parser.parse_args()
    commands = {
        name: [
            "tune",
            "--config",
            CONFIG,
            *flags,
            "--sampler",
            "random",
            "--trials",
            "1000",
            "--timeout",
            str(args.seconds),
            "--out",
            str(args.out / name.lower()),
        ]
        for name, flags in ARMS.items()
    }
    tunes = [start(command, args.out / f"{name.lower()}.log") for name, command in commands.items()]
    tune_seconds = wait_all(tunes)
    trains = [
        start(
            [
                "train",
                "--config",
                str(args.out / name.lower() / "best.yaml"),
                "--out",
                str(args.out / f"{name.lower()}-best"),
            ],
            args.out / f"{name.lower()}-best.log",
        )
        for name in ARMS
    ]
    wait_all(trains)
    print(
        "| study | wall time | trials completed / pruned / failed | epochs trained | best "
        "held-out acc | best lr, weight decay | test acc of best (retrained) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (name, _), seconds in zip(commands.items(), tune_seconds):
        study_dir = args.out / name.lower()
        study = optuna.load_study(
            study_name="tune_digits", storage=f"sqlite:///{study_dir / 'study.db'}"
        )
        states = [t.state.name for t in study.trials]
        epochs = sum(len(t.intermediate_values) for t in study.trials)
        rows = (args.out / f"{name.lower()}-best" / "metrics.jsonl").read_text().splitlines()
        test_acc = json.loads(rows[-1])["test_acc"]
        params = study.best_params
        print(
            f"| {name} | {seconds:.0f} s | {states.count('COMPLETE')} / {states.count('PRUNED')} "
            f"/ {states.count('FAIL')} | {epochs} | {study.best_value:.4f} (trial "
            f"{study.best_trial.number}) | {params['train.lr']:.3g}, "
            f"{params['train.weight_decay']:.3g} | {test_acc:.4f} |"
        )
    for name, command in commands.items():
        print(f"\n{name}: OMP_NUM_THREADS=1 nas {' '.join(command)}")


if __name__ == "__main__":
    main()
