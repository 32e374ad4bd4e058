"""Conformance of every registered strategy: steps, genotype, exact state round-trip."""

import copy

import pytest
import torch

from nas.config import StrategyConfig
from nas.genotype import Genotype
from nas.options import Options, option_names
from nas.strategies import STRATEGIES
from tests.conftest import batch, tiny_network


def _cases() -> list:
    """Every strategy with its default options, and second order where it has an order."""
    cases = []
    for name in STRATEGIES.names():
        options = STRATEGIES.options(name)
        cases.append(pytest.param(name, options(), id=name))
        if "order" in option_names(options):
            cases.append(pytest.param(name, options(order=2), id=f"{name}-order2"))
    return cases


def val_accuracy(net, images: torch.Tensor, labels: torch.Tensor):
    """What the search task hands `Strategy.select`: the eval-mode accuracy on fixed data."""

    @torch.no_grad()
    def accuracy() -> float:
        net.eval()
        return (net(images).argmax(dim=1) == labels).float().mean().item()

    return accuracy


@pytest.mark.parametrize("name,options", _cases())
def test_strategy_steps_and_resumes_exactly(name: str, options: Options) -> None:
    config = StrategyConfig(name=name, options=options)

    def build():
        torch.manual_seed(0)
        net = tiny_network()
        return net, STRATEGIES.get(name)(net, config, 4, 1)

    batches = [(batch(), batch()) for _ in range(4)]
    probe = batch(32)
    net, strategy = build()
    for i, (train, val) in enumerate(batches):
        result = strategy.step(train, val)
        assert torch.isfinite(result.loss) and result.count == len(train[1])
        if i == 1:
            strategy.end_epoch(0)
            saved = {k: v.clone() for k, v in net.state_dict().items()}
            saved_strategy = copy.deepcopy(strategy.state_dict())  # as on disk
    strategy.select(val_accuracy(net, *probe))  # the budget's last step is done
    assert isinstance(strategy.genotype(), Genotype)
    Genotype.from_dict(strategy.genotype().to_dict())

    resumed_net, resumed = build()
    resumed_net.load_state_dict(saved)
    resumed.load_state_dict(saved_strategy)
    for train, val in batches[2:]:
        resumed.step(train, val)
    for key, value in net.state_dict().items():
        assert torch.equal(value, resumed_net.state_dict()[key]), key
    resumed.select(val_accuracy(resumed_net, *probe))
    assert resumed.genotype() == strategy.genotype()
