"""Candidate operations of the DARTS cell space, in a registry by name.

Every op maps a (N, C, H, W) tensor to (N, C, H/stride, W/stride), with ReLU-Conv-BN ordering as in
DARTS (Liu et al., ICLR 2019, Sec. 3.1 and App. A). `affine=False` is used inside the supernet, so
that BN cannot rescale an op's output and distort the architecture weights; discrete networks use
`affine=True`.

To add an op, decorate a builder `(channels, stride, affine) -> nn.Module` with
`@register_op("name")` in this file. The conformance test in tests/test_ops.py then checks it.

An op may also name a grouped form (`grouped=`, one of GROUPED_FORMS): the supernet's fast path
(nas/supernet/fast.py) then computes it for all the edges that leave a state together, reading
its layers by the attributes the form names. An op that names none runs once per edge there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nas.registry import Registry

OpBuilder = Callable[[int, int, bool], nn.Module]

# The grouped forms the fast path knows, and what the module of an op that names one must be:
GROUPED_FORMS = {
    "zero": "zeros of the output shape: its edges add nothing to a node",
    "shared": "parameter-free and deterministic: every edge leaving a state gives one output",
    "skip": "the identity at stride 1; at stride 2 ReLU, then `conv_even` and `conv_odd` (1x1, "
    "stride 2, the second on the input shifted by one pixel), concatenated, then `bn`",
    "dilated": "ReLU, then `depthwise` (k x k, any dilation, 'same' padding), `pointwise` "
    "(1x1), `bn`",
    "separable": "`first` and `second`, each of the dilated form; only `first` may stride",
}


@dataclass(frozen=True)
class OpDef:
    """A registered op.

    Attributes:
        name: registry name, as written in genotypes.
        build: `(channels, stride, affine) -> nn.Module`.
        pooling: True for parameter-free pooling; the supernet appends an affine-free BN to these
            (DARTS `model_search.py`), because pooled outputs are not normalised otherwise.
        grouped: the fast path's grouped form of the op (a key of GROUPED_FORMS), or None: it
            runs once per edge.
    """

    name: str
    build: OpBuilder
    pooling: bool = False
    grouped: str | None = None

    def __post_init__(self) -> None:
        if self.grouped is not None and self.grouped not in GROUPED_FORMS:
            raise ValueError(
                f"op {self.name!r}: unknown grouped form {self.grouped!r}; "
                f"choose one of {sorted(GROUPED_FORMS)} or None"
            )


OPS: Registry[OpDef] = Registry("op")


def register_op(
    name: str, pooling: bool = False, grouped: str | None = None
) -> Callable[[OpBuilder], OpBuilder]:
    """Decorator registering an op builder `(channels, stride, affine) -> nn.Module` as `name`,
    with the fast path's grouped form `grouped` (see OpDef).
    """

    def decorate(build: OpBuilder) -> OpBuilder:
        OPS.add(name, OpDef(name, build, pooling, grouped))
        return build

    return decorate


def build_op(name: str, channels: int, stride: int, affine: bool) -> nn.Module:
    """Build the op registered as `name`. Raises NasError for an unknown name."""
    return OPS.get(name).build(channels, stride, affine)


class ReLUConvBN(nn.Sequential):
    """ReLU, conv (no bias), BN: the DARTS building block and cell preprocessing."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(out_channels, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU, depthwise conv (dilated), pointwise conv, BN; the last three are also `depthwise`,
    `pointwise` and `bn` (the fast path reads them by these names).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=in_channels,
                bias=False,
            ),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels, affine=affine),
        )

    # Properties, not renamed children: the parameter names in checkpoints stay as they are.
    @property
    def depthwise(self) -> nn.Conv2d:
        return self[1]

    @property
    def pointwise(self) -> nn.Conv2d:
        return self[2]

    @property
    def bn(self) -> nn.BatchNorm2d:
        return self[3]


class SepConv(nn.Sequential):
    """Separable conv: (ReLU, depthwise, pointwise, BN) twice, the DilConvs `first` and `second`;
    only the first may stride.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
    ) -> None:
        super().__init__(
            DilConv(in_channels, in_channels, kernel_size, stride, padding, 1, affine),
            DilConv(in_channels, out_channels, kernel_size, 1, padding, 1, affine),
        )

    @property
    def first(self) -> DilConv:
        return self[0]

    @property
    def second(self) -> DilConv:
        return self[1]


class Zero(nn.Module):
    """The `none` op: zeros of the output shape (keeps the graph, so shapes stay checked)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halves H and W with two offset 1x1 stride-2 convs, concatenated (skip at stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, affine: bool = True) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {out_channels}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_even = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.conv_odd = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = x[:, :, 1:, 1:]
        # Odd sizes: pad the shifted view so both halves round up alike (even: no-op, as DARTS).
        pad_w, pad_h = x.shape[3] % 2, x.shape[2] % 2
        if pad_w or pad_h:
            shifted = F.pad(shifted, (0, pad_w, 0, pad_h))
        out = torch.cat([self.conv_even(x), self.conv_odd(shifted)], dim=1)
        return self.bn(out)


def cell_preprocessing(
    prev_prev_channels: int, prev_channels: int, channels: int, reduction_prev: bool, affine: bool
) -> tuple[nn.Module, nn.Module]:
    """The two input adapters of a cell, mapping both previous outputs to `channels`.

    The previous-previous output is twice as large when the previous cell reduced, so it is
    factorized-reduced; otherwise both take a 1x1 ReLU-conv-BN.
    """
    if reduction_prev:
        first: nn.Module = FactorizedReduce(prev_prev_channels, channels, affine)
    else:
        first = ReLUConvBN(prev_prev_channels, channels, 1, 1, 0, affine)
    return first, ReLUConvBN(prev_channels, channels, 1, 1, 0, affine)


@register_op("none", grouped="zero")
def _none(channels: int, stride: int, affine: bool) -> nn.Module:
    return Zero(stride)


@register_op("avg_pool_3x3", pooling=True, grouped="shared")
def _avg_pool_3x3(channels: int, stride: int, affine: bool) -> nn.Module:
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


@register_op("max_pool_3x3", pooling=True, grouped="shared")
def _max_pool_3x3(channels: int, stride: int, affine: bool) -> nn.Module:
    return nn.MaxPool2d(3, stride=stride, padding=1)


@register_op("skip_connect", grouped="skip")
def _skip_connect(channels: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine)


@register_op("sep_conv_3x3", grouped="separable")
def _sep_conv_3x3(channels: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(channels, channels, 3, stride, 1, affine)


@register_op("sep_conv_5x5", grouped="separable")
def _sep_conv_5x5(channels: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(channels, channels, 5, stride, 2, affine)


@register_op("dil_conv_3x3", grouped="dilated")
def _dil_conv_3x3(channels: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(channels, channels, 3, stride, 2, 2, affine)


@register_op("dil_conv_5x5", grouped="dilated")
def _dil_conv_5x5(channels: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(channels, channels, 5, stride, 4, 2, affine)
