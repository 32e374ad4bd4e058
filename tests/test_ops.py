"""Conformance of every registered op: shapes at both strides, BN affinity, gradients, and the
grouped form it declares for the fast path."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import NasError
from nas.ops import GROUPED_FORMS, OPS, FactorizedReduce, OpDef, build_op


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


def _dilated(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The dilated form, computed from the layers it names."""
    depthwise = block.depthwise
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels
    assert 2 * depthwise.padding[0] == depthwise.dilation[0] * (depthwise.kernel_size[0] - 1)
    assert block.pointwise.kernel_size == (1, 1)
    return block.bn(block.pointwise(depthwise(F.relu(x))))


def _grouped_form(form: str, op: nn.Module, x: torch.Tensor, stride: int) -> torch.Tensor:
    """What the fast path computes for `op` of `form`, from the layers the form names."""
    if form == "zero":
        return torch.zeros_like(x[:, :, ::stride, ::stride])
    if form == "shared":
        assert next(op.parameters(), None) is None
        return op(x)  # parameter-free: any edge's module gives every edge's output
    if form == "skip" and stride == 1:
        return x
    if form == "skip":
        relu = F.relu(x)  # x has an even size: no padding of the shifted half
        return op.bn(torch.cat([op.conv_even(relu), op.conv_odd(relu[:, :, 1:, 1:])], dim=1))
    if form == "dilated":
        return _dilated(op, x)
    assert form == "separable" and op.second.depthwise.stride == (1, 1)
    return _dilated(op.second, _dilated(op.first, x))


@pytest.mark.parametrize("name", OPS.names())
@pytest.mark.parametrize("stride", [1, 2])
def test_an_op_is_the_grouped_form_it_declares(name: str, stride: int) -> None:
    """The fast path computes an op from the layers its form names (nas/ops.py GROUPED_FORMS),
    so those layers, in that order, must be what the op's own forward computes."""
    form = OPS.get(name).grouped
    if form is None:
        pytest.skip(f"{name} declares no grouped form: the fast path runs its own forward")
    assert form in GROUPED_FORMS
    op = build_op(name, channels=4, stride=stride, affine=True).train()
    x = torch.randn(3, 4, 8, 8)
    assert torch.allclose(op(x), _grouped_form(form, op, x, stride), atol=1e-6)


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


@pytest.mark.parametrize("name", OPS.names())
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("length", [8, 7])
def test_op_in_1d_maps_signals_and_passes_gradients(name: str, stride: int, length: int) -> None:
    """Every op has a 1D form: (N, C, L) -> (N, C, ceil(L / stride)), 1D layers only, gradients
    reaching its parameters and its input."""
    op = build_op(name, channels=6, stride=stride, affine=True, dims=1)
    assert not [m for m in op.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    x = torch.randn(3, 6, length, requires_grad=True)
    out = op(x)
    assert out.shape == (3, 6, length if stride == 1 else (length + 1) // 2)
    out.pow(2).sum().backward()
    for param in op.parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0
    if name != "none":
        assert x.grad.abs().sum() > 0


def test_factorized_reduce_in_1d_reads_both_offsets() -> None:
    """The odd half reads the signal shifted by one: a spike at an odd position reaches only it."""
    op = FactorizedReduce(2, 4, affine=False, dims=1)
    op.bn = nn.Identity()
    nn.init.ones_(op.conv_even.weight)
    nn.init.ones_(op.conv_odd.weight)
    x = torch.zeros(1, 2, 7)
    x[:, :, 3] = 1.0
    out = op(x)
    assert out.shape == (1, 4, 4)
    assert out[:, :2].abs().sum() == 0 and out[:, 2:, 1].abs().sum() > 0


def test_a_2d_only_builder_is_refused_in_1d(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(OPS._items, "conv_2d_only", OpDef("conv_2d_only", lambda c, s, a: None))
    with pytest.raises(NasError, match="no 1D form"):
        build_op("conv_2d_only", 4, 1, True, dims=1)
