"""The search network on (N, C, L) signals: the fast path gives the reference path's outputs and
gradients, PC-DARTS included, and every strategy steps on 1D data."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.config import StrategyConfig
from nas.options import option_names
from nas.spaces import SPACES, get_space
from nas.strategies import STRATEGIES
from nas.supernet import SearchNetwork


def _network(space: str = "darts", prune: bool = False, **options) -> SearchNetwork:
    torch.manual_seed(0)
    network = SearchNetwork(get_space(space), 2, 5, channels=4, layers=3, dims=1, **options)
    with torch.no_grad():
        for parameter in network.arch_parameters():
            parameter.normal_()
    if prune:  # some edges keep several ops, some one
        for kind in ("normal", "reduce"):
            for edge in range(network.space.num_edges):
                for op in range(1, len(network.space.ops)):
                    if (edge + op) % 3 == 0:
                        network.prune(kind, edge, op, step=edge)
    return network


def _logits_and_grads(network: SearchNetwork, signals: torch.Tensor, labels: torch.Tensor):
    logits = network(signals)
    loss = F.cross_entropy(logits, labels)
    return logits, torch.autograd.grad(loss, list(network.parameters()), allow_unused=True)


@pytest.mark.parametrize(
    "space",
    [pytest.param(s, marks=pytest.mark.slow) if s == "darts" else s for s in SPACES.names()],
)
@pytest.mark.parametrize("prune", [False, True])
@pytest.mark.parametrize("partial_channels", [1, 2])
def test_fast_path_matches_reference_in_1d(space: str, prune: bool, partial_channels: int) -> None:
    reference = _network(space, prune, partial_channels=partial_channels)
    fast = copy.deepcopy(reference).use_fast_path()
    assert not [m for m in reference.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    torch.manual_seed(1)
    signals, labels = torch.randn(6, 2, 13), torch.randint(0, 5, (6,))  # odd length: padding
    ref_logits, ref_grads = _logits_and_grads(reference, signals, labels)
    logits, grads = _logits_and_grads(fast, signals, labels)
    assert logits.shape == (6, 5)
    assert torch.allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
    for (name, _), a, b in zip(reference.named_parameters(), ref_grads, grads):
        assert (a is None) == (b is None), name
        assert a is None or torch.allclose(a, b, rtol=1e-3, atol=1e-5), name
    assert all(g is not None and g.abs().sum() > 0 for g in ref_grads[-2:])  # the classifier


def _strategy_cases() -> list:
    cases = []
    for name in STRATEGIES.names():
        options = STRATEGIES.options(name)
        cases.append(pytest.param(name, options(), 1, id=name))
        if "order" in option_names(options):
            cases.append(pytest.param(name, options(order=2), 1, id=f"{name}-order2"))
    cases.append(pytest.param("darts", STRATEGIES.options("darts")(), 2, id="pc-darts"))
    return cases


@pytest.mark.parametrize("name,options,partial_channels", _strategy_cases())
@pytest.mark.parametrize("fast", [False, True])
def test_every_strategy_steps_on_signals(name, options, partial_channels, fast) -> None:
    torch.manual_seed(0)
    network = SearchNetwork(
        get_space("tiny"), 1, 3, channels=4, layers=3, partial_channels=partial_channels, dims=1
    ).use_fast_path(fast)
    strategy = STRATEGIES.get(name)(network, StrategyConfig(name=name, options=options), 4, 1)
    before = [p.detach().clone() for p in network.parameters()]
    for _ in range(2):
        batch = (torch.randn(8, 1, 12), torch.randint(0, 3, (8,)))
        result = strategy.step(batch, batch)
        assert torch.isfinite(result.loss) and result.count == 8
    assert any(not torch.equal(b, p) for b, p in zip(before, network.parameters()))
    assert strategy.genotype().space == "tiny"
