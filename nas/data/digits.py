"""scikit-learn's handwritten digits: 1797 real 8x8 grey images, 10 classes."""

from __future__ import annotations

import torch

from nas.config import DataConfig
from nas.data import DATASETS, ImageData, from_arrays


@DATASETS.register("digits")
def digits(config: DataConfig) -> ImageData:
    """The digits with 20% held out for testing; pixels are 0..16 (input scale 16). A flipped
    digit is another symbol, so no flips."""
    from sklearn.datasets import load_digits

    loaded = load_digits()
    images = torch.tensor(loaded.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(loaded.target, dtype=torch.long)
    return from_arrays(images, labels, 0.2, 10, input_scale=16.0, flips=False)
