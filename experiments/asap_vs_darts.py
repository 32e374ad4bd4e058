"""ASAP against DARTS on digits: search wall time, then each genotype's final training.

Runs, one after another (so they do not share the CPU):
  1. nas search --config darts_digits
  2. nas search --config asap_digits
  3. the same ASAP search with strategy.alpha_lr=3e-3 (extra rows: `--extra`)
  4. nas train --config train_digits on each genotype (same budget)
and prints a markdown table: search wall time, epochs run, mean epoch time of the first and last
three epochs, final ops, then params, test accuracy and training wall time of each genotype.

    python experiments/asap_vs_darts.py --out runs/asap-vs-darts [--extra]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SEARCHES = {
    "darts": ["--config", "darts_digits"],
    "asap": ["--config", "asap_digits"],
}
EXTRA = {
    "asap, alpha_lr 3e-3": [
        "--config",
        "asap_digits",
        "--set",
        "strategy.alpha_lr=3e-3",
    ],
}
TRAIN = ["--config", "train_digits"]


def run(args: list[str]) -> float:
    """Run `nas ARGS`; return its wall time in seconds."""
    print("$ nas " + " ".join(args), file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nas", *args], check=True)
    return time.perf_counter() - started


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/asap-vs-darts"))
    parser.add_argument("--extra", action="store_true", help="also ASAP with alpha_lr 3e-3")
    args = parser.parse_args()
    searches = {**SEARCHES, **(EXTRA if args.extra else {})}
    rows = []
    for index, (name, flags) in enumerate(searches.items()):
        search_dir = args.out / f"search-{index}"
        train_dir = args.out / f"train-{index}"
        search_seconds = run(["search", *flags, "--out", str(search_dir)])
        train_seconds = run(
            [
                "train",
                "--genotype",
                str(search_dir / "genotype.json"),
                *TRAIN,
                "--out",
                str(train_dir),
            ]
        )
        searched, trained = metrics(search_dir), metrics(train_dir)
        epoch_seconds = [row["epoch_seconds"] for row in searched]
        card = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "nas",
                    "train",
                    "--genotype",
                    str(search_dir / "genotype.json"),
                    *TRAIN,
                    "--summary",
                    "--json",
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        rows.append(
            [
                name,
                f"{search_seconds:.0f} s",
                str(len(searched)),
                f"{sum(epoch_seconds[:3]) / 3:.1f} s",
                f"{sum(epoch_seconds[-3:]) / 3:.1f} s",
                str(searched[-1].get("ops_remaining", "224 (no pruning)")),
                f"{card['params']:,}",
                f"{trained[-1]['last_test_acc']:.4f}",
                f"{trained[-1]['test_acc']:.4f}",
                f"{train_seconds:.0f} s",
            ]
        )
    header = [
        "strategy",
        "search wall time",
        "epochs run",
        "first 3 epochs (mean)",
        "last 3 epochs (mean)",
        "ops left",
        "params (train net)",
        "test acc, last epoch",
        "test acc, best.pt (chosen on validation)",
        "train wall time",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
