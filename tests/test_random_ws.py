"""Random search with weight sharing: the pool is ranked on validation after the shared training."""

import json

import pytest
import torch

from nas.cli import main
from nas.config import StrategyConfig
from nas.genotype import derive_genotype
from nas.strategies import STRATEGIES
from tests.conftest import batch, tiny_network


def _strategy(pool_size: int, epochs: int, steps_per_epoch: int):
    net = tiny_network()
    options = STRATEGIES.options("random_ws")(pool_size=pool_size)
    config = StrategyConfig(name="random_ws", options=options)
    return net, STRATEGIES.get("random_ws")(net, config, epochs, steps_per_epoch)


def _mixed_genotype(strategy):
    """The genotype of the mix the strategy gives the network now."""
    net = strategy.network
    weights = [mix.weights for mix in strategy.mix(net.alphas(), net.pruned_masks())]
    return derive_genotype(net.space, weights)


def test_the_pool_is_ranked_with_the_final_weights_and_the_best_kept() -> None:
    net, strategy = _strategy(pool_size=4, epochs=2, steps_per_epoch=2)
    scores = iter([0.2, 0.7, 0.7, 0.1])  # members 1 and 2 tie: the first wins
    ranked, weights_seen = [], []

    def val_accuracy() -> float:
        net.eval()  # as the search task evaluates
        ranked.append(_mixed_genotype(strategy))
        weights_seen.append([w.detach().clone() for w in net.weight_parameters()])
        return next(scores)

    for step in range(4):
        strategy.step(batch(), batch())
        strategy.select(val_accuracy)
        if step < 3:  # the shared training is not over
            assert ranked == []
    assert len(ranked) == 4
    final = list(net.weight_parameters())
    for seen in weights_seen:  # every member ranked with the final shared weights
        assert all(torch.equal(a, b) for a, b in zip(seen, final))
    assert strategy.genotype() == ranked[1]
    net.eval()
    assert _mixed_genotype(strategy) == ranked[1]  # evaluation runs the kept member
    assert strategy.end_epoch(1)["pool_best_acc"] == 0.7

    # The ranking is kept in the state, and a ranked pool is what a resumed run keeps.
    resumed_net, resumed = _strategy(pool_size=4, epochs=2, steps_per_epoch=2)
    resumed_net.load_state_dict(net.state_dict())
    resumed.load_state_dict(strategy.state_dict())
    assert resumed.genotype() == ranked[1]


@pytest.mark.slow
def test_a_search_ranks_the_pool_in_its_last_epoch_and_evaluates_the_kept_member(tmp_path) -> None:
    run = tmp_path / "run"
    tiny = ["--dataset", "synthetic", "--set", "data.synthetic_samples=64"]
    tiny += ["--set", "data.synthetic_image_size=8", "--layers", "3", "--channels", "4"]
    tiny += ["--batch-size", "8", "--space", "tiny", "--epochs", "2"]
    assert main(["search", "--strategy", "random_ws", *tiny, "--out", str(run)]) == 0
    first, last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "pool_best_acc" not in first  # not ranked before the shared training ends
    # the epoch's evaluation runs the kept member, on the same split as the ranking
    assert last["val_acc"] == last["pool_best_acc"]
