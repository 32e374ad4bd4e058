"""Hand-designed networks to compare searched cells against, by name (`nas train --model NAME`).

Each is built for the data's shape: images (C, H, W), sequences (C, L) or tables (F, 1, 1). The
sizes are those of the MNIST-1D paper's baselines (Greydanus 2020, "Scaling down deep learning"):
a three-layer CNN, a two-hidden-layer MLP and logistic regression.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nas.errors import NasError
from nas.registry import Registry

# The paper's CNN: (kernel, stride, padding) of its three conv layers, and their channels.
CNN_LAYERS = ((5, 2, 1), (3, 2, 1), (3, 2, 1))
CNN_CHANNELS = 25
MLP_HIDDEN = 100


class Baseline(nn.Module):
    """A plain network: logits from `forward`. It has no auxiliary head and no drop path, so
    `forward_with_auxiliary` returns no auxiliary logits; the training loop calls it as it calls a
    genotype's network.
    """

    # Set by the training loop every epoch; a plain network has no paths to drop.
    drop_path_prob = 0.0

    def forward_with_auxiliary(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """The logits and None (no auxiliary head)."""
        return self(x), None


# name -> builder(in_channels, num_classes, size, kind); `size` is the image side or sequence
# length (1 for a table).
BASELINES: Registry = Registry("baseline model")


def build_baseline(name: str, in_channels: int, num_classes: int, size: int, kind: str) -> Baseline:
    """The baseline `name` for inputs of `kind` ("image", "sequence", "table"). Raises NasError
    for an unknown name or data it cannot read."""
    return BASELINES.get(name)(in_channels, num_classes, size, kind)


def input_shape(in_channels: int, size: int, kind: str) -> tuple[int, ...]:
    """The shape of one sample: (C, L) for a sequence, else (C, H, W) (a table is (F, 1, 1))."""
    return (in_channels, size) if kind == "sequence" else (in_channels, size, size)


class _Flat(Baseline):
    """Flatten, then `layers`."""

    def __init__(self, layers: nn.Module) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


@BASELINES.register("logistic")
def logistic(in_channels: int, num_classes: int, size: int, kind: str) -> Baseline:
    """Logistic regression: one linear layer over the flattened input."""
    features = math.prod(input_shape(in_channels, size, kind))
    return _Flat(nn.Linear(features, num_classes))


@BASELINES.register("mlp")
def mlp(in_channels: int, num_classes: int, size: int, kind: str) -> Baseline:
    """The paper's MLP: two hidden layers of 100 units with ReLU, then a linear layer."""
    features = math.prod(input_shape(in_channels, size, kind))
    return _Flat(
        nn.Sequential(
            nn.Linear(features, MLP_HIDDEN),
            nn.ReLU(),
            nn.Linear(MLP_HIDDEN, MLP_HIDDEN),
            nn.ReLU(),
            nn.Linear(MLP_HIDDEN, num_classes),
        )
    )


class _ConvNet(Baseline):
    """Conv layers with ReLU, then a linear layer over the flattened feature map."""

    def __init__(self, convs: nn.Sequential, features: int, num_classes: int) -> None:
        super().__init__()
        self.convs = convs
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.convs(x).flatten(1))


@BASELINES.register("cnn")
def cnn(in_channels: int, num_classes: int, size: int, kind: str) -> Baseline:
    """The paper's CNN: three conv layers of 25 channels (kernels 5, 3, 3; stride 2; padding 1)
    with ReLU, then a linear layer; 1D convs for sequences, 2D for images. On MNIST-1D (L=40)
    the lengths are 40 -> 19 -> 10 -> 5, and it has 5,210 parameters.
    """
    if kind == "table":
        raise NasError(
            "the cnn baseline convolves images or sequences, and this dataset is a table; "
            "use --model mlp or --model logistic"
        )
    conv = nn.Conv1d if kind == "sequence" else nn.Conv2d
    layers: list[nn.Module] = []
    channels, side = in_channels, size
    for kernel, stride, padding in CNN_LAYERS:
        side = (side + 2 * padding - kernel) // stride + 1
        if side < 1:
            raise NasError(
                f"the cnn baseline needs inputs of side or length at least 3, got {size}; "
                "use --model mlp or --model logistic"
            )
        layers += [conv(channels, CNN_CHANNELS, kernel, stride, padding), nn.ReLU()]
        channels = CNN_CHANNELS
    spatial = side if kind == "sequence" else side * side
    return _ConvNet(nn.Sequential(*layers), CNN_CHANNELS * spatial, num_classes)
