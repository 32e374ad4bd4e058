"""Throughput of `nas search` and `nas train` with 1 and with 2 processes (CPU, gloo).

Each configuration runs for a few epochs; images/s is the images one epoch trains on (all
processes together; a search step reads a weight batch and an alpha batch) over the median
epoch time, which includes the evaluation pass. Scaling efficiency = images/s with N processes
/ (N x images/s with 1 process).

    python experiments/bench_ddp.py --out runs/bench-ddp
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

BATCH = 32
SEARCH = ["search", "--dataset", "digits", "--layers", "5", "--channels", "8", "--epochs", "4"]
TRAIN = [
    "train",
    "--genotype",
    "DARTS_V2",
    "--dataset",
    "digits",
    "--layers",
    "8",
    "--channels",
    "16",
    "--cutout",
    "0",
    "--epochs",
    "4",
]


def measure(args: list[str], nproc: int, out: Path) -> tuple[float, int]:
    """(median epoch seconds over epochs 2.., steps per epoch per process)."""
    command = [sys.executable, "-m", "nas", *args, "--batch-size", str(BATCH), "--out", str(out)]
    if nproc > 1:
        command += ["--nproc-per-node", str(nproc)]
    subprocess.run(command, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(row["epoch_seconds"] for row in rows[1:]), len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-ddp"))
    args = parser.parse_args()
    # Images per epoch, all processes together (drop_last batches of BATCH per process):
    # digits has 1438 training images; a search trains on half of them and reads as many alpha
    # images; final training uses all of them.
    print("| command | processes | median epoch | images/s | scaling efficiency |")
    print("| --- | --- | --- | --- | --- |")
    for name, command, images_of in (
        ("search", SEARCH, lambda n: 2 * (719 // n // BATCH) * BATCH * n),
        ("train", TRAIN, lambda n: (1438 // n // BATCH) * BATCH * n),
    ):
        base = None
        for nproc in (1, 2):
            seconds, _ = measure(command, nproc, args.out / f"{name}-{nproc}")
            rate = images_of(nproc) / seconds
            base = base or rate
            print(
                f"| nas {name} | {nproc} | {seconds:.2f} s | {rate:.0f} | "
                f"{rate / (nproc * base):.2f} |"
            )


if __name__ == "__main__":
    main()
