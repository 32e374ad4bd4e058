"""DARTS second order: the finite-difference hypergradient against autograd's exact one."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from nas.config import StrategyConfig
from nas.strategies.darts import Darts, DartsOptions, unrolled_alpha_grads, virtual_step
from tests.conftest import batch, tiny_network


def _smooth(module: nn.Module) -> None:
    """ReLU -> SiLU. Central differences are only exact to O(eps^2) on a smooth loss; ReLU kinks
    crossed by the eps-perturbation would make any finite-difference scheme disagree."""
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.SiLU())
        else:
            _smooth(child)


def _exact_hypergradient(net, strategy, train, val, xi) -> list[torch.Tensor]:
    """d/d alpha of L_val(w - xi * (momentum * buffer + grad_w L_train + wd * w), alpha)."""
    names, weights = zip(*net.named_weight_parameters())
    train_loss = F.cross_entropy(net(train[0]), train[1])
    grads = torch.autograd.grad(train_loss, weights, create_graph=True)
    unrolled = virtual_step(weights, grads, strategy.weight_optimizer, xi)
    logits = functional_call(net, dict(zip(names, unrolled)), (val[0],))
    return list(torch.autograd.grad(F.cross_entropy(logits, val[1]), net.arch_parameters()))


def _relative_error(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    return max(((g - w).norm() / w.norm()).item() for g, w in zip(got, want))


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_second_order_matches_exact_hypergradient(float64) -> None:
    net = tiny_network()
    _smooth(net)
    with torch.no_grad():  # spread the alphas so the hypergradient is not tiny
        for alpha in net.arch_parameters():
            alpha.normal_()
    strategy = Darts(
        net,
        StrategyConfig(weight_momentum=0.9, options=DartsOptions(order=2)),
        epochs=5,
        steps_per_epoch=1,
    )
    train, val, xi = batch(), batch(), 0.05
    net.train()
    strategy.weight_step(batch())  # non-zero momentum buffers enter the virtual step
    buffers = [b.clone() for b in net.buffers()]
    got = unrolled_alpha_grads(net, train, val, strategy.weight_optimizer, xi)
    with torch.no_grad():
        for buffer, saved in zip(net.buffers(), buffers):
            buffer.copy_(saved)
    exact = _exact_hypergradient(net, strategy, train, val, xi)
    assert _relative_error(got, exact) < 1e-2
    # The check can fail: dropping the second-order term is far off.
    first_order_at_unrolled = got[0] - exact[0]
    assert first_order_at_unrolled.norm() < 0.01 * exact[0].norm()
    naive = torch.autograd.grad(F.cross_entropy(net(val[0]), val[1]), net.arch_parameters())
    assert _relative_error(list(naive), exact) > 5e-2


def test_orders_give_different_alpha_updates() -> None:
    results = []
    for order in (1, 2):
        torch.manual_seed(0)
        net = tiny_network()
        strategy = Darts(
            net, StrategyConfig(options=DartsOptions(order=order)), epochs=3, steps_per_epoch=1
        )
        torch.manual_seed(1)
        strategy.step(batch(), batch())
        results.append(net.alpha_normal.detach().clone())
    assert not torch.equal(*results)


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_learning_rate_follows_cosine_to_minimum() -> None:
    strategy = Darts(tiny_network(), StrategyConfig(), epochs=4, steps_per_epoch=1)
    lrs = [strategy.end_epoch(epoch)["lr"] for epoch in range(4)]
    assert lrs[0] == 0.025 and lrs == sorted(lrs, reverse=True)
    assert strategy.weight_lr == pytest.approx(0.001)
