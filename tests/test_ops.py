"""Conformance of every registered op: shapes at both strides, BN affinity, gradients."""

import pytest
import torch
from torch import nn

from nas.ops import OPS, FactorizedReduce, build_op


@pytest.mark.parametrize("name", OPS.names())
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
def test_op_output_shape(name: str, stride: int, size: int) -> None:
    op = build_op(name, channels=6, stride=stride, affine=False)
    out = op(torch.randn(2, 6, size, size))
    expected = size if stride == 1 else (size + 1) // 2
    assert out.shape == (2, 6, expected, expected)


@pytest.mark.parametrize("name", OPS.names())
def test_affine_flag_controls_bn_parameters(name: str) -> None:
    for affine in (False, True):
        op = build_op(name, channels=4, stride=2, affine=affine)
        for bn in (m for m in op.modules() if isinstance(m, nn.BatchNorm2d)):
            assert bn.affine is affine


@pytest.mark.parametrize("name", OPS.names())
def test_parametric_ops_receive_gradients(name: str) -> None:
    op = build_op(name, channels=4, stride=1, affine=True)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    op(x).pow(2).sum().backward()
    for param in op.parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0
    if name != "none":
        assert x.grad.abs().sum() > 0


def test_none_is_zero_and_skip_is_identity() -> None:
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(build_op("none", 4, 1, False)(x), torch.zeros_like(x))
    assert torch.equal(build_op("skip_connect", 4, 1, False)(x), x)
    assert isinstance(build_op("skip_connect", 4, 2, False), FactorizedReduce)


def test_separable_conv_is_two_relu_dw_pw_bn_stacks() -> None:
    op = build_op("sep_conv_3x3", 4, 2, True)
    layers = [type(m).__name__ for m in op.modules() if not list(m.children())]
    assert layers == ["ReLU", "Conv2d", "Conv2d", "BatchNorm2d"] * 2
    depthwise = [m for m in op.modules() if isinstance(m, nn.Conv2d) and m.groups == 4]
    assert [m.stride for m in depthwise] == [(2, 2), (1, 1)]


def test_dilated_conv_uses_dilation_two() -> None:
    for name in ("dil_conv_3x3", "dil_conv_5x5"):
        convs = [m for m in build_op(name, 4, 1, True).modules() if isinstance(m, nn.Conv2d)]
        assert convs[0].dilation == (2, 2) and convs[1].kernel_size == (1, 1)


def test_factorized_reduce_rejects_odd_channels() -> None:
    with pytest.raises(ValueError, match="even"):
        FactorizedReduce(3, 5)
