"""Networks built from a genotype: CIFAR-style and ImageNet-style, as in DARTS (Liu et al. 2019,
Sec. 3.3 and the reference `model.py`), for any input channel count and image size. The
CIFAR-style network also reads (N, C, L) signals (`dims=1`): the same stem, cells and head with 1D
layers, each reduction halving L.

Both return logits from `forward`; training calls `forward_with_auxiliary`, which also returns the
auxiliary head's logits (None without a head). The auxiliary head reads the output of the last
reduction cell (at 2/3 of the depth) and is excluded from the published parameter counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import NasError
from nas.genotype import Genotype
from nas.models.cell import Cell
from nas.ops import global_avg_pool, spatial_layer
from nas.spaces import CellSpace, check_layers, get_space


class AuxiliaryHead(nn.Module):
    """ReLU, 5x5 average pool, 1x1 conv to 128, BN, ReLU, 2x2 conv to 768, (BN,) ReLU, linear.

    `pool_stride` is 3 for CIFAR (8x8 -> 2x2) and 2 for ImageNet (7x7 -> 2x2). The reference
    ImageNet head has no BN after the 768-channel conv (its authors left it out of the paper's
    experiments), so `final_bn=False` there. Maps too small for the 5x5 window to leave 2x2 (under
    8x8 for CIFAR, 7x7 for ImageNet: small images such as digits) are average-pooled to 2x2
    instead; larger maps are averaged after the 2x2 conv. With `dims=1` every window is 1D (5,
    then 2), on the same rule.
    """

    def __init__(
        self, channels: int, num_classes: int, pool_stride: int, final_bn: bool, dims: int = 2
    ) -> None:
        super().__init__()
        self.pool_stride = pool_stride
        conv, norm = spatial_layer("conv", dims), spatial_layer("bn", dims)
        self.reduce = nn.Sequential(conv(channels, 128, 1, bias=False), norm(128), nn.ReLU())
        self.expand = nn.Sequential(
            conv(128, 768, 2, bias=False),
            norm(768) if final_bn else nn.Identity(),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        signal = x.dim() == 3
        if min(x.shape[2:]) >= 5 + self.pool_stride:  # the window leaves at least 2x2
            pool = F.avg_pool1d if signal else F.avg_pool2d
            x = pool(x, 5, self.pool_stride, 0, count_include_pad=False)
        else:
            x = (F.adaptive_avg_pool1d if signal else F.adaptive_avg_pool2d)(x, 2)
        x = self.expand(self.reduce(x))
        return self.classifier(global_avg_pool(x))


class CifarStem(nn.Module):
    """A 3x3 conv (3 in 1D) and BN; both inputs of the first cell are its output."""

    def __init__(self, in_channels: int, out_channels: int, dims: int = 2) -> None:
        super().__init__()
        self.conv = spatial_layer("conv", dims)(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = spatial_layer("bn", dims)(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.bn(self.conv(x))
        return out, out


class ImageNetStem(nn.Module):
    """Three stride-2 3x3 convs; the first cell reads the outputs after the second (1/4 of the
    input size) and the third (1/8).
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, channels // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels // 2),
            nn.ReLU(),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


class GenotypeNetwork(nn.Module):
    """A stem, cells built from a genotype, global average pooling and a linear classifier.

    Build one with `CifarNetwork` or `ImageNetNetwork`. `drop_path_prob` is set by the trainer.
    """

    def __init__(
        self,
        genotype: Genotype,
        stem: nn.Module,
        stem_channels: int,
        num_classes: int,
        channels: int,
        layers: int,
        auxiliary: bool,
        imagenet: bool,
        dims: int = 2,
    ) -> None:
        super().__init__()
        space = get_space(genotype.space)
        check_layers(space, layers)
        reductions = set(space.reduction_layers(layers))
        self.auxiliary_layer = max(reductions)
        self.drop_path_prob = 0.0
        self.stem = stem
        prev_prev, prev, current = stem_channels, stem_channels, channels
        # The ImageNet stem's two outputs differ in size, as after a reduction.
        reduction_prev = imagenet
        self.cells = nn.ModuleList()
        self.auxiliary_head: AuxiliaryHead | None = None
        for layer in range(layers):
            reduction = layer in reductions
            if reduction:
                current *= 2
            kind = "reduce" if reduction else "normal"
            cell = Cell(
                genotype.cell(kind), prev_prev, prev, current, reduction, reduction_prev, dims
            )
            self.cells.append(cell)
            reduction_prev = reduction
            prev_prev, prev = prev, cell.out_channels_multiplier * current
            if auxiliary and layer == self.auxiliary_layer:
                stride, final_bn = (2, False) if imagenet else (3, True)
                self.auxiliary_head = AuxiliaryHead(prev, num_classes, stride, final_bn, dims)
        self.classifier = nn.Linear(prev, num_classes)

    def forward_with_auxiliary(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, auxiliary logits); the latter is None in eval mode or without a head."""
        return self._logits(x, auxiliary=self.training and self.auxiliary_head is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits(x, auxiliary=False)[0]

    def _logits(self, x: torch.Tensor, auxiliary: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        s0, s1 = self.stem(x)
        auxiliary_logits = None
        for layer, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if auxiliary and layer == self.auxiliary_layer:
                auxiliary_logits = self.auxiliary_head(s1)
        return self.classifier(global_avg_pool(s1)), auxiliary_logits


def check_signal_length(space: CellSpace, length: int, name: str) -> None:
    """Raise NasError unless signals of `length` keep at least 2 positions through the `space`'s
    reduction cells (each halves L, rounding up), so the cells after the last one still see a
    neighbourhood."""
    reductions = len(space.reductions)
    shortest = 2**reductions + 1
    if length < shortest:
        raise NasError(
            f"{name} holds sequences of length {length}, too short for the {reductions} "
            f"reduction cells of space {space.name!r} (each halves the length); use sequences of "
            f"length {shortest} or more"
        )


def CifarNetwork(  # noqa: N802 - a constructor, named like the class it builds
    genotype: Genotype,
    in_channels: int,
    num_classes: int,
    channels: int = 36,
    layers: int = 20,
    auxiliary: bool = True,
    dims: int = 2,
) -> GenotypeNetwork:
    """DARTS's CIFAR network: a 3x3 stem conv to `stem_multiplier * C` channels (3C in the DARTS
    space), `layers` cells with reductions at 1/3 and 2/3 of the depth, global pooling, linear.
    `dims=1`: the same over (N, C, L) signals, with 1D layers.
    """
    stem_channels = get_space(genotype.space).stem_multiplier * channels
    stem = CifarStem(in_channels, stem_channels, dims)
    return GenotypeNetwork(
        genotype,
        stem,
        stem_channels,
        num_classes,
        channels,
        layers,
        auxiliary,
        imagenet=False,
        dims=dims,
    )


def ImageNetNetwork(  # noqa: N802
    genotype: Genotype,
    in_channels: int,
    num_classes: int,
    channels: int = 48,
    layers: int = 14,
    auxiliary: bool = True,
) -> GenotypeNetwork:
    """DARTS's ImageNet network: the three-conv stem, 14 cells and C=48 by default (224x224)."""
    stem = ImageNetStem(in_channels, channels)
    return GenotypeNetwork(
        genotype, stem, channels, num_classes, channels, layers, auxiliary, imagenet=True
    )
