"""Synthetic images labelled by a fixed random teacher, for tests and smoke runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nas.config import DataConfig
from nas.data import DATASETS, ImageData, from_arrays
from nas.options import Options


@dataclass
class SyntheticOptions(Options):
    """The size of the synthetic dataset (`data.synthetic_samples=...`)."""

    # Samples in all (train and test together).
    synthetic_samples: int = 1024
    # Side of the square images.
    synthetic_image_size: int = 32
    synthetic_channels: int = 3
    synthetic_classes: int = 10

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (self.synthetic_samples >= 4, "data.synthetic_samples must be at least 4"),
            (self.synthetic_classes >= 2, "data.synthetic_classes must be at least 2"),
            (self.synthetic_image_size >= 1, "data.synthetic_image_size must be at least 1"),
            (self.synthetic_channels >= 1, "data.synthetic_channels must be at least 1"),
        ]


@DATASETS.register("synthetic", options=SyntheticOptions)
def synthetic(config: DataConfig) -> ImageData:
    """Random images labelled by a fixed random linear teacher on pooled pixels (learnable)."""
    options = config.options
    generator = torch.Generator().manual_seed(1234)
    size, channels = options.synthetic_image_size, options.synthetic_channels
    images = torch.randn(options.synthetic_samples, channels, size, size, generator=generator)
    pooled = torch.nn.functional.adaptive_avg_pool2d(images, 2).flatten(1)
    teacher = torch.randn(pooled.shape[1], options.synthetic_classes, generator=generator)
    labels = (pooled @ teacher).argmax(dim=1)
    return from_arrays(images, labels, 0.2, options.synthetic_classes)
