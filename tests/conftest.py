"""Shared fixtures: tiny supernets and batches that run in milliseconds on a CPU."""

from __future__ import annotations

import pytest
import torch

from nas.spaces import get_space
from nas.supernet import SearchNetwork


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_network(space: str = "tiny", in_channels: int = 1, classes: int = 3) -> SearchNetwork:
    """A 3-cell supernet with C=2 (normal, reduce, reduce) over 8x8 images."""
    return SearchNetwork(get_space(space), in_channels, classes, channels=2, layers=3)


def batch(size: int = 8, channels: int = 1, image: int = 8, classes: int = 3) -> tuple:
    """A random (images, labels) batch."""
    return torch.randn(size, channels, image, image), torch.randint(0, classes, (size,))
