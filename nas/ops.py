"""Candidate operations of the DARTS cell space, in a registry by name.

Every op maps a (N, C, H, W) image tensor to (N, C, H/stride, W/stride), or with `dims=1` a
(N, C, L) signal tensor to (N, C, L/stride), with ReLU-Conv-BN ordering as in DARTS (Liu et al.,
ICLR 2019, Sec. 3.1 and App. A). One table serves both: a builder picks Conv1d or Conv2d (and the
matching BatchNorm and pooling) by `dims`, so no op has a second copy.

`affine=False` is used inside the supernet, so that BN cannot rescale an op's output and distort
the architecture weights; discrete networks use `affine=True`.

To add an op, decorate a builder `(channels, stride, affine, dims=2) -> nn.Module` with
`@register_op("name")` in this file. The conformance test in tests/test_ops.py then checks it in
2D and 1D. A builder without the `dims` argument builds the 2D op only.

An op may also name a grouped form (`grouped=`, one of GROUPED_FORMS): the supernet's fast path
(nas/supernet/fast.py) then computes it for all the edges that leave a state together, reading
its layers by the attributes the form names. An op that names none runs once per edge there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import NasError
from nas.registry import Registry

OpBuilder = Callable[..., nn.Module]

# The layer classes of each spatial dimensionality: (N, C, L) signals and (N, C, H, W) images.
_LAYERS = {
    "conv": {1: nn.Conv1d, 2: nn.Conv2d},
    "bn": {1: nn.BatchNorm1d, 2: nn.BatchNorm2d},
    "avg_pool": {1: nn.AvgPool1d, 2: nn.AvgPool2d},
    "max_pool": {1: nn.MaxPool1d, 2: nn.MaxPool2d},
}


def spatial_layer(kind: str, dims: int) -> type[nn.Module]:
    """The torch layer class `kind` ("conv", "bn", "avg_pool", "max_pool") for `dims` spatial
    dimensions (1 or 2).
    """
    if dims not in _LAYERS[kind]:
        raise ValueError(f"{kind} layers exist for 1 or 2 spatial dims, not {dims}")
    return _LAYERS[kind][dims]


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
        build: `(channels, stride, affine, dims=2) -> nn.Module`; without `dims`, 2D only.
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

    def make(self, channels: int, stride: int, affine: bool, dims: int = 2) -> nn.Module:
        """Build the op for `dims` spatial dims. Raises NasError if its builder is 2D only."""
        if dims == 2:
            return self.build(channels, stride, affine)
        if "dims" not in inspect.signature(self.build).parameters:
            raise NasError(
                f"op {self.name!r} has no {dims}D form (its builder takes no `dims`); "
                "leave it out of the search space for sequence data"
            )
        return self.build(channels, stride, affine, dims=dims)


OPS: Registry[OpDef] = Registry("op")


def register_op(
    name: str, pooling: bool = False, grouped: str | None = None
) -> Callable[[OpBuilder], OpBuilder]:
    """Decorator registering an op builder `(channels, stride, affine, dims=2) -> nn.Module` as
    `name`,
    with the fast path's grouped form `grouped` (see OpDef).
    """

    def decorate(build: OpBuilder) -> OpBuilder:
        OPS.add(name, OpDef(name, build, pooling, grouped))
        return build

    return decorate


def build_op(name: str, channels: int, stride: int, affine: bool, dims: int = 2) -> nn.Module:
    """Build the op registered as `name` for `dims` spatial dims. Raises NasError for an unknown
    name.
    """
    return OPS.get(name).make(channels, stride, affine, dims)


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
        dims: int = 2,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            spatial_layer("conv", dims)(
                in_channels, out_channels, kernel_size, stride, padding, bias=False
            ),
            spatial_layer("bn", dims)(out_channels, affine=affine),
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
        dims: int = 2,
    ) -> None:
        conv = spatial_layer("conv", dims)
        super().__init__(
            nn.ReLU(inplace=False),
            conv(
                in_channels,
                in_channels,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=in_channels,
                bias=False,
            ),
            conv(in_channels, out_channels, 1, bias=False),
            spatial_layer("bn", dims)(out_channels, affine=affine),
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
        dims: int = 2,
    ) -> None:
        super().__init__(
            DilConv(in_channels, in_channels, kernel_size, stride, padding, 1, affine, dims),
            DilConv(in_channels, out_channels, kernel_size, 1, padding, 1, affine, dims),
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
        return x[subsample(x.dim() - 2, self.stride)].mul(0.0)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C): the mean over every spatial position."""
    pool = F.adaptive_avg_pool1d if x.dim() == 3 else F.adaptive_avg_pool2d
    return pool(x, 1).flatten(1)


def subsample(dims: int, stride: int) -> tuple[slice, ...]:
    """The index that keeps every `stride`-th element along each of `dims` spatial dims."""
    return (slice(None), slice(None)) + (slice(None, None, stride),) * dims


def shift_and_pad(x: torch.Tensor) -> torch.Tensor:
    """x shifted by one along every spatial dim, zero-padded at the end where a size is odd, so
    that a stride-2 conv of it gives as many outputs as one of x (even sizes: no padding, as
    DARTS).
    """
    dims = x.dim() - 2
    shifted = x[(slice(None), slice(None)) + (slice(1, None),) * dims]
    pad = [amount for size in reversed(x.shape[2:]) for amount in (0, size % 2)]
    return F.pad(shifted, pad) if any(pad) else shifted


class FactorizedReduce(nn.Module):
    """Halves every spatial size with two offset 1x1 stride-2 convs, concatenated (skip at
    stride 2).
    """

    def __init__(
        self, in_channels: int, out_channels: int, affine: bool = True, dims: int = 2
    ) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {out_channels}")
        self.relu = nn.ReLU(inplace=False)
        conv = spatial_layer("conv", dims)
        self.conv_even = conv(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.conv_odd = conv(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.bn = spatial_layer("bn", dims)(out_channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        out = torch.cat([self.conv_even(x), self.conv_odd(shift_and_pad(x))], dim=1)
        return self.bn(out)


def cell_preprocessing(
    prev_prev_channels: int,
    prev_channels: int,
    channels: int,
    reduction_prev: bool,
    affine: bool,
    dims: int = 2,
) -> tuple[nn.Module, nn.Module]:
    """The two input adapters of a cell, mapping both previous outputs to `channels`.

    The previous-previous output is twice as large when the previous cell reduced, so it is
    factorized-reduced; otherwise both take a 1x1 ReLU-conv-BN.
    """
    if reduction_prev:
        first: nn.Module = FactorizedReduce(prev_prev_channels, channels, affine, dims)
    else:
        first = ReLUConvBN(prev_prev_channels, channels, 1, 1, 0, affine, dims)
    return first, ReLUConvBN(prev_channels, channels, 1, 1, 0, affine, dims)


@register_op("none", grouped="zero")
def _none(channels: int, stride: int, affine: bool, dims: int = 2) -> nn.Module:
    return Zero(stride)


@register_op("avg_pool_3x3", pooling=True, grouped="shared")
def _avg_pool_3x3(channels: int, stride: int, affine: bool, dims: int = 2) -> nn.Module:
    return spatial_layer("avg_pool", dims)(3, stride=stride, padding=1, count_include_pad=False)


@register_op("max_pool_3x3", pooling=True, grouped="shared")
def _max_pool_3x3(channels: int, stride: int, affine: bool, dims: int = 2) -> nn.Module:
    return spatial_layer("max_pool", dims)(3, stride=stride, padding=1)


@register_op("skip_connect", grouped="skip")
def _skip_connect(channels: int, stride: int, affine: bool, dims: int = 2) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine, dims)


@register_op("sep_conv_3x3", grouped="separable")
def _sep_conv_3x3(channels: int, stride: int, affine: bool, dims: int = 2) -> nn.Module:
    return SepConv(channels, channels, 3, stride, 1, affine, dims)


@register_op("sep_conv_5x5", grouped="separable")
def _sep_conv_5x5(channels: int, stride: int, affine: bool, dims: int = 2) -> nn.Module:
    return SepConv(channels, channels, 5, stride, 2, affine, dims)


@register_op("dil_conv_3x3", grouped="dilated")
def _dil_conv_3x3(channels: int, stride: int, affine: bool, dims: int = 2) -> nn.Module:
    return DilConv(channels, channels, 3, stride, 2, 2, affine, dims)


@register_op("dil_conv_5x5", grouped="dilated")
def _dil_conv_5x5(channels: int, stride: int, affine: bool, dims: int = 2) -> nn.Module:
    return DilConv(channels, channels, 5, stride, 4, 2, affine, dims)
