"""Time per training epoch of an image folder, streamed from disk or held in memory.

    python experiments/folder_vs_memory.py [--epochs 3] [--side 32]

Writes scikit-learn's 1797 digits as grey PNG files by class (upscaled to SIDE x SIDE) into a
temporary folder, loads it as `--dataset folder` in memory and streamed (data.memory_limit_mb=0),
and trains a fixed small convolutional network on its training split (crop augmentation, batch
64) for a few epochs with each loader. Prints a markdown table of the median seconds per epoch
(the first epoch, which starts the worker processes too, included in the range).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas.config import DataConfig
from nas.data import FolderOptions, load_dataset, loader


def write_digits(root: Path, side: int) -> None:
    """The digits as PNG files, one folder per class."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        image = Image.fromarray((pixels * 255 / 16).astype(np.uint8), "L")
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        image.resize((side, side), Image.Resampling.BILINEAR).save(
            root / str(label) / f"{index}.png"
        )


def network() -> nn.Module:
    """A fixed small CNN (two 3x3 convolutions of 16 channels), seeded."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def epoch_seconds(train: torch.utils.data.Dataset, workers: int, epochs: int) -> list[float]:
    """Seconds of each training epoch (loading, forward, backward, step)."""
    model = network()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        for images, labels in loader(train, 64, True, 0, epoch, augment=True, workers=workers):
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--side", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        write_digits(Path(folder), args.side)
        rows = []
        for label, limit, workers in (
            ("in memory", 1024, 0),
            ("streamed", 0, 0),
            ("streamed", 0, 2),
        ):
            start = time.perf_counter()
            options = FolderOptions(data_dir=folder, memory_limit_mb=limit)
            data = load_dataset(DataConfig(name="folder", options=options))
            built = time.perf_counter() - start
            seconds = epoch_seconds(data.train, workers, args.epochs)
            rows.append((label, workers, built, seconds, len(data.train)))
    print(f"digits as {args.side}x{args.side} PNG files, batch 64, {args.epochs} epochs each")
    print("| data | workers | dataset built | epoch time, median (range) |")
    print("| --- | --- | --- | --- |")
    for label, workers, built, seconds, count in rows:
        print(
            f"| {label} ({count} training images) | {workers} | {built:.2f} s "
            f"| {statistics.median(seconds):.2f} s ({min(seconds):.2f} to {max(seconds):.2f} s) |"
        )


if __name__ == "__main__":
    main()
