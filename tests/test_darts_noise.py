"""SDARTS-RS: noise on the op weights of the DARTS weight step (`strategy.alpha_noise`)."""

import io
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nas.config import Config, StrategyConfig, validate
from nas.errors import NasError
from nas.runtime.dist import Runtime
from nas.spaces import get_space
from nas.strategies import STRATEGIES
from nas.strategies.darts import Darts, DartsOptions
from nas.supernet import SearchNetwork
from tests.conftest import batch, tiny_network
from tests.test_distributed import _batches, _free_port, _without_batchnorm

NOISE = 0.3  # large, so that a leak into the alpha step could not hide in rounding


def _strategy(net: SearchNetwork, noise: float, order: int = 1, name: str = "darts") -> Darts:
    options = STRATEGIES.options(name)(order=order, alpha_noise=noise)
    return STRATEGIES.get(name)(net, StrategyConfig(name=name, options=options), 2, 2)


def _recorded(net: SearchNetwork) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(op weights, edge weights) that the first (normal) cell gets, one entry per forward."""
    seen = []

    def record(cell, args) -> None:
        edge_weights = None if args[3] is None else args[3].detach().clone()
        seen.append((args[2].detach().clone(), edge_weights))

    net.cells[0].register_forward_pre_hook(record)
    return seen


# Every supernet path the mix reaches: reference and fast, PC-DARTS, signals; and ASAP's mix.
NETWORKS = {
    "reference": lambda: tiny_network().use_fast_path(False),
    "fast": lambda: tiny_network().use_fast_path(True),
    "pc-darts": lambda: SearchNetwork(get_space("tiny"), 1, 3, 4, 3, partial_channels=2),
    "1d": lambda: SearchNetwork(get_space("tiny"), 1, 3, 2, 3, dims=1).use_fast_path(True),
}


@pytest.mark.parametrize("noise", [0.0, NOISE])
@pytest.mark.parametrize(("network", "name"), [*((n, "darts") for n in NETWORKS), ("fast", "asap")])
def test_weight_step_mixes_with_noise_within_epsilon(network: str, name: str, noise: float):
    net = NETWORKS[network]()
    strategy = _strategy(net, noise, name=name)
    seen = _recorded(net)
    images, labels = batch()
    images = images[..., 0] if net.dims == 1 else images
    net.train()
    strategy.weight_step((images, labels))
    net.eval()
    net(images)
    exact = strategy.mix(net.alphas(), net.pruned_masks())[0].weights.detach()
    (trained, trained_edges), (evaluated, evaluated_edges) = seen
    assert torch.equal(evaluated, exact)  # evaluation is never perturbed
    if noise == 0:
        assert torch.equal(trained, exact)  # off: exactly the unperturbed mix
        return
    delta = trained - exact
    assert delta.abs().max() <= noise + 1e-6 and delta.abs().max() > noise / 2
    if trained_edges is not None:  # PC-DARTS edge normalisation weights are not perturbed
        assert torch.equal(trained_edges, evaluated_edges)


def test_noise_changes_the_weight_step_result() -> None:
    results = []
    for noise in (0.0, NOISE):
        torch.manual_seed(0)
        net = tiny_network()
        strategy = _strategy(net, noise)
        torch.manual_seed(1)
        loss = strategy.weight_step(batch()).loss
        results.append((loss, net.cells[0].state_dict()))
    (loss_off, state_off), (loss_on, state_on) = results
    assert loss_off != loss_on
    assert any(not torch.equal(state_off[key], state_on[key]) for key in state_off)


def test_noise_is_fresh_each_step_the_same_for_a_step_and_spares_pruned_ops() -> None:
    net = tiny_network()
    net.prune("normal", 0, 1, step=0)
    strategy = _strategy(net, NOISE)
    alphas, pruned = net.alphas(), net.pruned_masks()
    exact = strategy.mix(alphas, pruned)
    first, again, later = (strategy.noisy_mixing(step)(alphas, pruned) for step in (0, 0, 1))
    for kind in range(2):
        delta = first[kind].weights - exact[kind].weights
        live = pruned[kind] < 0
        assert delta.abs().max() <= NOISE + 1e-6
        assert delta[live].min() < -NOISE / 2 and delta[live].max() > NOISE / 2  # spread over it
        assert torch.equal(delta[~live], torch.zeros_like(delta[~live]))
        assert torch.equal(first[kind].weights, again[kind].weights)
        assert not torch.equal(first[kind].weights, later[kind].weights)
    assert first[0].weights[0, 1] == 0  # the pruned op still weighs exactly 0
    normal, reduce = (first[kind].weights - exact[kind].weights for kind in range(2))
    assert not torch.equal(normal, reduce)  # each cell kind draws its own


def _first_step(noise: float, order: int) -> tuple[list[torch.Tensor], dict]:
    """One step from a fixed state: (the alpha gradients it applies, the first cell's weights)."""
    torch.manual_seed(0)
    net = tiny_network()
    strategy = _strategy(net, noise, order)
    adam_step, seen = strategy.alpha_optimizer.step, []

    def record() -> None:
        seen.append([alpha.grad.clone() for alpha in net.arch_parameters()])
        adam_step()

    strategy.alpha_optimizer.step = record
    torch.manual_seed(1)
    strategy.step(batch(), batch())
    return seen[0], net.cells[0].state_dict()


@pytest.mark.parametrize("order", [1, 2])
def test_alpha_step_is_not_perturbed(order: int) -> None:
    (grads_off, weights_off), (grads_on, weights_on) = (_first_step(n, order) for n in (0, NOISE))
    for off, on in zip(grads_off, grads_on):
        assert torch.equal(off, on)
    assert any(not torch.equal(weights_off[key], weights_on[key]) for key in weights_off)


def test_saved_and_loaded_state_continues_the_noise() -> None:
    batches = [(batch(), batch()) for _ in range(4)]

    def fresh() -> tuple[SearchNetwork, Darts]:
        torch.manual_seed(0)  # the run seed, as a resumed process sets it again
        net = tiny_network()
        return net, _strategy(net, NOISE)

    whole, strategy = fresh()
    for step, pair in enumerate(batches):
        strategy.step(*pair)
        if step == 1:
            strategy.end_epoch(0)
    first, strategy = fresh()
    for pair in batches[:2]:
        strategy.step(*pair)
    strategy.end_epoch(0)
    saved = io.BytesIO()
    torch.save({"network": first.state_dict(), "strategy": strategy.state_dict()}, saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    resumed, strategy = fresh()
    resumed.load_state_dict(state["network"])
    strategy.load_state_dict(state["strategy"])
    for pair in batches[2:]:
        strategy.step(*pair)
    expected = whole.state_dict()
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_alpha_noise_is_checked_and_refused_where_it_would_do_nothing() -> None:
    config = Config()
    config.set("strategy.alpha_noise", -0.1)
    with pytest.raises(NasError, match="strategy.alpha_noise must be a number >= 0"):
        validate(config)
    config.set("strategy.alpha_noise", 0.03)
    validate(config)
    assert config.strategy.options.alpha_noise == 0.03
    config = Config()
    config.set("strategy.name", "gdas")
    config.set("strategy.alpha_noise", 0.03)
    with pytest.raises(NasError, match="strategy.alpha_noise does nothing here"):
        validate(config)


def _noisy_search(rank: int, world: int, noise: float) -> dict[str, torch.Tensor]:
    """3 steps with `noise` on this rank's share of fixed global batches, without BatchNorm."""
    torch.manual_seed(rank)  # different on each rank: the broadcasts at start must fix it
    net = tiny_network()
    _without_batchnorm(net)
    runtime = Runtime(rank=rank, world_size=world, device=torch.device("cpu"))
    options = DartsOptions(alpha_noise=noise)
    strategy = Darts(net, StrategyConfig(options=options), 2, 3, runtime)
    for train, val in _batches(3, 8):
        strategy.step(*[(x[rank::world], y[rank::world]) for x, y in (train, val)])
    return {key: value.detach().clone() for key, value in net.state_dict().items()}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(_noisy_search(rank, world, NOISE), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not dist.is_gloo_available(), reason="needs the gloo backend")
def test_two_processes_draw_the_noise_of_one_process(tmp_path) -> None:
    out = str(tmp_path / "state")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    rank0, rank1 = (torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2))
    single, quiet = (_noisy_search(0, 1, noise) for noise in (NOISE, 0.0))
    for key, value in single.items():
        assert torch.equal(rank0[key], rank1[key]), key
        assert torch.allclose(rank0[key], value, rtol=1e-4, atol=1e-6), key
    assert not torch.allclose(single["alpha_normal"], quiet["alpha_normal"])  # the noise acted
