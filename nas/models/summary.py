"""Parameter and multiply-add counts of a network.

Conventions: parameters are counted as the DARTS reference counts them, every parameter except the
auxiliary head's. Multiply-adds count convolutions and linear layers only, for one image or signal:
`output elements * (input channels / groups) * kernel elements` per convolution (2D or 1D) and
`inputs * outputs` per linear layer. BatchNorm, ReLU, pooling, additions and concatenation are not
counted, and neither is the auxiliary head (it is not run at inference).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def count_parameters(module: nn.Module, exclude_auxiliary: bool = True) -> int:
    """Number of parameters, leaving out those whose name contains "auxiliary" by default."""
    return sum(
        p.numel()
        for name, p in module.named_parameters()
        if not (exclude_auxiliary and "auxiliary" in name)
    )


@torch.no_grad()
def count_mult_adds(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of convs and linear layers for one input of `input_shape`: (C, H, W) for an
    image, (C, L) for a signal.

    Runs one eval-mode forward pass with hooks; the module's train/eval mode is restored.
    """
    total = 0

    def conv_hook(layer: nn.Conv1d | nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = math.prod(layer.kernel_size)
        total += output[0].numel() * (layer.in_channels // layer.groups) * kernel

    def linear_hook(layer: nn.Linear, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += layer.in_features * layer.out_features

    handles = []
    for layer in module.modules():
        if isinstance(layer, nn.Conv1d | nn.Conv2d):
            handles.append(layer.register_forward_hook(conv_hook))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_hook(linear_hook))
    was_training = module.training
    module.eval()
    try:
        device = next(module.parameters()).device
        module(torch.zeros(1, *input_shape, device=device))
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return total
