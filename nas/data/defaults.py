"""Defaults that follow what a dataset states, and refusals of data a command cannot use.

A config leaves its data-dependent fields unset (None). Once the dataset is known, `fit_to_data`
fills them from what the dataset states (kind, image side, flips, size) and checks the values the
user gave; config.yaml and `--print-config` show the result. The rules:

- `nas search` and `nas train` read images and sequences (1D cell networks); a table is refused
  (`nas grow` with the mlp generator reads any sample flattened).
- `data.augment`: random crop with padding side / 8 (4 on CIFAR-10's 32x32) and, where the dataset
  flips, a horizontal flip; on in search and training (the DARTS code augments both on CIFAR-10)
  wherever it changes the images. Sequences: off by default (flips and crops are image ideas);
  `data.augment=true` crops along L with padding L / 8 and never flips.
- `data.cutout`: half the image side in final training (DARTS: 16 on 32x32) for images of side 16
  or more, else 0; 0 in search (the DARTS search uses none). Sequences take none.
- final training of data smaller than CIFAR-10 (side under 32 or under 10,000 training samples):
  8 cells, C=16, batch 64, 30 epochs (digits: 0.994 test accuracy for the genotype that
  `make search` finds); otherwise the DARTS paper's 20 cells, C=36, batch 96, 600 epochs.
  MNIST-1D (and its shuffled variant): 8 cells, C=16, batch 100, 50 epochs. The batch is at most
  half the training split.
"""

from __future__ import annotations

from typing import Any

from nas.data import ImageData, load_dataset
from nas.data.loading import crop_padding
from nas.errors import NasError

# The DARTS paper's final-training settings are for CIFAR-10: 50,000 32x32 images (Sec. 3.3).
_PAPER_SIDE = 32
_PAPER_SAMPLES = 10_000
# Final training of smaller data: (section, key) -> value.
SMALL_TRAINING = {
    ("model", "layers"): 8,
    ("model", "channels"): 16,
    ("data", "batch_size"): 64,
    ("run", "epochs"): 30,
}
# Final training fitted to a dataset by name, over SMALL_TRAINING: (section, key) -> value.
# MNIST-1D: the batch of 100 of the paper's training script (Greydanus 2020) and 50 epochs, 2,000
# steps, a quarter of its 8,000. A DARTS_V2 epoch on one CPU thread measured 10 s at 3 cells and
# 18 s at 5 cells (C=16, batch 100): about 30 s at 8 cells, 25 minutes for the 50 epochs.
MNIST1D_TRAINING = {
    ("model", "layers"): 8,
    ("model", "channels"): 16,
    ("data", "batch_size"): 100,
    ("run", "epochs"): 50,
}
DATASET_TRAINING = {"mnist1d": MNIST1D_TRAINING, "mnist1d_shuffle": MNIST1D_TRAINING}
# Cutout is on for images of at least this side (a square of half of it).
_CUTOUT_MIN_SIDE = 16


def fit_to_data(config: Any, data: ImageData | None = None) -> ImageData | None:
    """Fill `config`'s unset data-dependent fields from `data` (loaded from `config.data` when
    None) and check the set ones; the dataset (None for a command that fits nothing). Raises
    NasError for data the command cannot use and for values that cannot work on it.
    """
    from nas.config import Config, TrainConfig

    if not isinstance(config, Config | TrainConfig):
        return None
    if data is None:
        data = load_dataset(config.data)
    command = "nas search" if isinstance(config, Config) else "nas train"
    baseline = isinstance(config, TrainConfig) and config.model.baseline is not None
    if not baseline:  # a baseline reads any samples (nas/models/baselines.py)
        refuse_non_images(command, config.data.name, data)
    settings = config.data
    fitted_batch = settings.batch_size is None
    side = data.image_size
    sequence = data.kind == "sequence"
    changes_images = data.kind == "image" and (crop_padding(side) > 0 or data.flips)
    if data.kind == "table" and (settings.augment or settings.cutout):
        raise NasError(
            f"data.augment and data.cutout crop, flip and cut images, and {config.data.name} "
            "holds tables; set data.augment=false and data.cutout=0"
        )
    if sequence:
        _fit_sequence(config, data)
    elif settings.augment is None:
        settings.augment = changes_images
    elif settings.augment and not changes_images:
        raise NasError(
            f"data.augment does nothing on {config.data.name}: its {side}x{side} images are too "
            "small to crop (under 8 pixels) and do not flip; set data.augment=false"
        )
    if settings.cutout is None:
        final = isinstance(config, TrainConfig) and changes_images and side >= _CUTOUT_MIN_SIDE
        settings.cutout = side // 2 if final else 0
    elif settings.cutout >= side:
        raise NasError(
            f"data.cutout={settings.cutout} covers the whole {side}x{side} images of "
            f"{config.data.name}; use --cutout 0 (off) or a side below {side}"
        )
    if isinstance(config, TrainConfig):
        small = side < _PAPER_SIDE or len(data.train) < _PAPER_SAMPLES
        fitted = {**(SMALL_TRAINING if small else {}), **DATASET_TRAINING.get(config.data.name, {})}
        for (section, name), value in fitted.items():
            if baseline and section == "model":  # no cells to size
                continue
            if getattr(getattr(config, section), name) is None:
                setattr(getattr(config, section), name, value)
    if settings.batch_size is None:  # still unset: CIFAR-sized data, the paper's batch
        settings.batch_size = 96
    if isinstance(config, TrainConfig) and fitted_batch:
        # A few dozen samples: at least 2 batches an epoch (and 2 samples a batch, for BatchNorm).
        settings.batch_size = max(2, min(settings.batch_size, len(data.train) // 2))
    return data


def _fit_sequence(config: Any, data: ImageData) -> None:
    """Augmentation of (C, L) sequences: none by default; a crop along L where asked for; no
    cutout (a square of an image)."""
    settings, length = config.data, data.image_size
    if settings.augment is None:
        settings.augment = False
    elif settings.augment and crop_padding(length) == 0:
        raise NasError(
            f"data.augment does nothing on {settings.name}: its sequences of length {length} are "
            "too short to crop (under 8) and sequences never flip; set data.augment=false"
        )
    if settings.cutout is None:
        settings.cutout = 0
    elif settings.cutout:
        raise NasError(
            f"data.cutout zeroes a square of an image and {settings.name} holds sequences; "
            "set data.cutout=0"
        )


def refuse_non_images(command: str, name: str, data: ImageData) -> None:
    """Raise NasError unless `data` holds images or sequences (the cell networks of `command`
    read (C, H, W) or (C, L) samples)."""
    if data.kind == "table":
        raise NasError(
            f"{command} builds cell networks over images and sequences, and {name} is a table of "
            f"{data.in_channels} features; grow an ensemble of dense networks on it with "
            f"nas grow --dataset {name}"
        )
