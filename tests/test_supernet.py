"""The supernet: shapes, parameter split, and which parameters each DARTS step moves."""

import pytest
import torch

from nas.config import StrategyConfig
from nas.spaces import get_space
from nas.strategies.darts import Darts, DartsOptions
from nas.supernet import SearchCell, SearchNetwork
from tests.conftest import batch, tiny_network


@pytest.mark.parametrize(("in_channels", "size"), [(1, 8), (3, 16)])
def test_network_output_shape_for_any_input_channels(in_channels: int, size: int) -> None:
    net = SearchNetwork(get_space("darts"), in_channels, 10, channels=4, layers=3)
    assert net(torch.randn(2, in_channels, size, size)).shape == (2, 10)


def test_cell_output_concatenates_intermediate_nodes() -> None:
    space = get_space("darts")
    cell = SearchCell(space, 12, 12, 4, reduction=True, reduction_prev=False)
    weights = torch.softmax(torch.randn(space.num_edges, len(space.ops)), -1)
    out = cell(torch.randn(2, 12, 8, 8), torch.randn(2, 12, 8, 8), weights)
    assert out.shape == (2, 4 * 4, 4, 4)


def test_reduction_cells_double_channels_at_one_and_two_thirds() -> None:
    net = SearchNetwork(get_space("darts"), 3, 10, channels=4, layers=8)
    assert [cell.reduction for cell in net.cells] == [False, False, True] + [False] * 2 + [True] + [
        False
    ] * 2
    assert net.classifier.in_features == 4 * 16  # 4 nodes x (4 * 2 * 2) channels
    assert net.stem[0].out_channels == 12  # stem multiplier 3


def test_arch_and_weight_parameters_partition_the_parameters() -> None:
    net = tiny_network()
    arch, weights = net.arch_parameters(), net.weight_parameters()
    ids = [id(p) for p in arch + weights]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    space = get_space("tiny")
    for alpha in arch:
        assert alpha.shape == (space.num_edges, len(space.ops))
        assert alpha.abs().max() < 1e-2  # 1e-3 * randn
    state = net.state_dict()
    assert torch.equal(state["alpha_normal"], net.alpha_normal)
    assert torch.equal(state["alpha_reduce"], net.alpha_reduce)


def _snapshot(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach().clone() for t in tensors]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_supernet_bn_uses_batch_statistics_in_eval() -> None:
    net = tiny_network()
    # No BN running statistics: the only buffers are the pruning records.
    assert [name for name, _ in net.named_buffers()] == ["pruned_normal", "pruned_reduce"]
    images, _ = batch()
    net.eval()
    with torch.no_grad():
        alone = net(images[:4])
        together = net(images)[:4]
    assert not torch.allclose(alone, together)  # normalised by the batch it is in


@pytest.mark.parametrize("order", [1, 2])
def test_alpha_step_moves_only_alphas(order: int) -> None:
    net = tiny_network()
    # A layer with running statistics, like a user op could have: the alpha step must not move it.
    net.stem[1] = torch.nn.BatchNorm2d(net.stem[1].num_features)
    strategy = Darts(
        net, StrategyConfig(options=DartsOptions(order=order)), epochs=3, steps_per_epoch=1
    )
    net.train()
    strategy.weight_step(batch())  # fills the momentum buffers
    strategy.weight_optimizer.zero_grad(set_to_none=True)
    weights, buffers = _snapshot(net.weight_parameters()), _snapshot(list(net.buffers()))
    alphas = _snapshot(net.arch_parameters())
    momentum = _snapshot(
        [strategy.weight_optimizer.state[p]["momentum_buffer"] for p in net.weight_parameters()]
    )
    strategy.alpha_step(batch(), batch())
    assert not _same(alphas, net.arch_parameters())
    assert _same(weights, net.weight_parameters())
    assert _same(buffers, list(net.buffers()))
    assert _same(
        momentum,
        [strategy.weight_optimizer.state[p]["momentum_buffer"] for p in net.weight_parameters()],
    )
    assert all(p.grad is None for p in net.weight_parameters())
    strategy.weight_step(batch())
    assert not _same(buffers, list(net.buffers()))  # the weight step does move them


def test_weight_step_moves_only_weights() -> None:
    net = tiny_network()
    strategy = Darts(net, StrategyConfig(), epochs=3, steps_per_epoch=1)
    net.train()
    weights, alphas = _snapshot(net.weight_parameters()), _snapshot(net.arch_parameters())
    result = strategy.weight_step(batch())
    assert _same(alphas, net.arch_parameters())
    assert all(alpha.grad is None for alpha in net.arch_parameters())
    changed = [not torch.equal(a, b) for a, b in zip(weights, net.weight_parameters())]
    assert all(changed)
    assert result.count == 8 and 0 <= result.correct <= 8


def test_gradients_reach_every_alpha_entry() -> None:
    net = tiny_network()
    images, labels = batch()
    loss = torch.nn.functional.cross_entropy(net(images), labels)
    grads = torch.autograd.grad(loss, net.arch_parameters())
    for grad in grads:
        assert (grad != 0).all()
