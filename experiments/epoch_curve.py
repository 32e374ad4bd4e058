"""Print a search run's per-epoch curve: ops left, temperature, threshold and epoch time.

    nas search --strategy asap --dataset digits --layers 3 --channels 4 --batch-size 32 \
        --epochs 10 --out runs/asap-digits
    python experiments/epoch_curve.py runs/asap-digits

Prints a markdown table; `epoch time vs epoch 1` is each epoch's seconds over the first epoch's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.run_dir / "metrics.jsonl").read_text().splitlines()]
    first = rows[0]["epoch_seconds"]
    print("| epoch | ops left | T | theta | epoch time | vs epoch 1 | val acc |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['epoch']} | {row.get('ops_remaining', '-')} | {row.get('temperature', 1):.3g} "
            f"| {row.get('threshold', 0):.3g} | {row['epoch_seconds']:.1f} s "
            f"| {row['epoch_seconds'] / first:.2f} | {row['val_acc']:.3f} |"
        )
    total = sum(row["epoch_seconds"] for row in rows)
    print(f"\n{len(rows)} epochs, {total:.0f} s of epochs in all")


if __name__ == "__main__":
    main()
