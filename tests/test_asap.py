"""ASAP: the schedule math, physical pruning, renormalisation, derivation and exact resume."""

import copy
import math
import signal

import pytest
import torch
import yaml

from nas.cli import main
from nas.config import Config, StrategyConfig, validate
from nas.errors import NasError
from nas.runtime.engine import FAULT_ENV
from nas.strategies.asap import Asap, AsapOptions, AsapSchedule
from tests.conftest import batch, jsonl_rows, run_nas, tiny_network


def _config(**overrides) -> AsapOptions:
    return AsapOptions(**overrides)


def test_temperature_follows_t0_times_beta_to_the_t() -> None:
    schedule = AsapSchedule.from_options(
        _config(temperature=2.0, temperature_decay=0.9), num_ops=4, epochs=3, steps_per_epoch=10
    )
    for step in (0, 1, 7, 29):
        assert schedule.temperature(step) == pytest.approx(2.0 * 0.9**step, rel=1e-12)
    per_epoch = AsapSchedule.from_options(
        _config(temperature=2.0, temperature_decay=0.5, anneal_every="epoch"),
        num_ops=4,
        epochs=3,
        steps_per_epoch=10,
    )
    assert [per_epoch.temperature(s) for s in (0, 9, 10, 19, 20, 29)] == [2, 2, 1, 1, 0.5, 0.5]


@pytest.mark.parametrize("every", ["step", "epoch"])
def test_default_decay_lands_on_the_final_temperature_at_the_last_step(every: str) -> None:
    config = _config(anneal_every=every)
    schedule = AsapSchedule.from_options(config, num_ops=8, epochs=10, steps_per_epoch=22)
    assert schedule.temperature(0) == config.temperature
    assert schedule.temperature(219) == pytest.approx(config.temperature_final, rel=1e-9)
    last = 9 if every == "epoch" else 219
    assert schedule.decay == pytest.approx((0.03 / 1.6) ** (1 / last), rel=1e-12)


def test_threshold_rises_linearly_in_log_temperature() -> None:
    schedule = AsapSchedule.from_options(
        _config(grace_temperature=1.0, temperature_final=0.01, prune_threshold_final=0.5),
        num_ops=8,
        epochs=5,
        steps_per_epoch=4,
    )
    assert schedule.threshold == pytest.approx(0.4 / 8)  # theta_0 = 0.4 / |ops|
    assert schedule.threshold_at(1.0) == pytest.approx(0.05)
    assert schedule.threshold_at(0.1) == pytest.approx(0.05 + 0.45 * 0.5)  # halfway in log T
    assert schedule.threshold_at(0.01) == pytest.approx(0.5)
    assert schedule.threshold_at(0.001) == pytest.approx(0.5)  # clipped at the final value


def test_a_schedule_that_never_reaches_the_grace_temperature_is_refused() -> None:
    with pytest.raises(NasError, match="never below the grace temperature"):
        AsapSchedule.from_options(
            _config(temperature_decay=0.999), num_ops=8, epochs=2, steps_per_epoch=5
        )


def test_asap_settings_are_checked_and_refused_with_other_strategies() -> None:
    config = Config()
    config.set("strategy.temperature", 2.0)
    with pytest.raises(
        NasError, match="strategy.temperature does nothing here: it is an option of strategy 'asap'"
    ):
        validate(config)
    config.set("strategy.name", "asap")
    validate(config)
    assert config.strategy.options.temperature == 2.0
    config.strategy.options.temperature_final = 1.5
    with pytest.raises(NasError, match="temperature_final must be positive and below"):
        validate(config)


def _strategy(epochs: int = 4, steps: int = 2, **overrides) -> Asap:
    torch.manual_seed(0)
    config = StrategyConfig(name="asap", options=_config(**overrides))
    return Asap(tiny_network(), config, epochs, steps)


def test_a_pruned_op_is_not_executed_gets_no_gradient_and_leaves_the_optimizer() -> None:
    strategy = _strategy()
    net = strategy.network
    normal_cells = [cell for cell in net.cells if not cell.reduction]
    op_index = net.space.ops.index("sep_conv_3x3")
    victims = [cell.edges[0].ops["sep_conv_3x3"] for cell in normal_cells]
    params = [p for victim in victims for p in victim.parameters()]
    before = [p.detach().clone() for p in params]
    calls = []
    for victim in victims:
        victim.register_forward_hook(lambda *_: calls.append(1))
    net(batch()[0])
    assert calls  # executed while alive

    net.prune("normal", 0, op_index, step=0)
    strategy._drop_pruned_parameters()
    calls.clear()
    for _ in range(2):
        strategy.alpha_step(batch(), batch())
        strategy.weight_step(batch())
    assert calls == []  # never run again
    assert all(p.grad is None for p in params)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    live = {id(p) for p in net.weight_parameters()}
    assert not live & {id(p) for p in params}
    optimised = {id(p) for p in strategy.weight_optimizer.param_groups[0]["params"]}
    assert optimised == live
    assert not {id(p) for p in strategy.weight_optimizer.state} - live
    # The pruned op weighs exactly 0, its alpha gets no gradient, the rest renormalise.
    weights = net.op_weights()[0]
    assert weights[0, op_index] == 0 and torch.allclose(weights.sum(-1), torch.ones(5))
    loss = net(batch()[0]).sum()
    (grad,) = torch.autograd.grad(loss, [net.alpha_normal])
    assert grad[0, op_index] == 0 and grad[0].abs().sum() > 0


def test_pruning_keeps_the_strongest_op_of_every_edge() -> None:
    strategy = _strategy()
    net = strategy.network
    with torch.no_grad():
        net.alpha_normal.normal_()
        net.alpha_reduce.normal_()
        net.alpha_normal[2:5, 1:] += 5.0  # node 3's edges: a non-`none` op is the strongest
    strongest = [w.argmax(-1) for w in net.op_weights()]
    removed = strategy.prune(threshold=1.0)
    assert removed == 2 * 5 * 3  # 4 ops per edge, 5 edges per cell, two cell kinds
    assert net.ops_remaining() == {"normal": 5, "reduce": 5}
    assert strategy.finished()
    for pruned, best in zip(net.pruned_masks(), strongest):
        assert torch.equal((pruned < 0).nonzero()[:, 1], best)
    for cell in net.cells:
        assert all(len(edge.ops) == 1 for edge in cell.edges)
    # One op per edge: every annealed weight is 1, yet the genotype still ranks a node's edges by
    # the alphas (node 3's edges are 2, 3, 4, from inputs 0, 1, 2).
    with torch.no_grad():
        net.alpha_normal[2:5] = 0.0
        for edge, strength in zip((2, 3, 4), (0.0, 2.0, 1.0)):
            net.alpha_normal[edge, strongest[0][edge]] = strength
    assert all(row.max() == 1 for row in net.op_weights()[0])
    node = net.genotype().normal.nodes[1]
    assert [e.input for e in node] == [1, 2]
    assert [e.op for e in node] == [net.space.ops[int(strongest[0][e])] for e in (3, 4)]
    # The pruned network still runs forward and backward, and an edge keeps its last op.
    net(batch()[0]).sum().backward()
    with pytest.raises(ValueError, match="last op"):
        net.prune("normal", 0, int(strongest[0][0]), step=1)


def test_an_edge_left_with_only_none_is_ranked_last_and_named_by_the_last_pruned_op() -> None:
    net = tiny_network()
    ops = net.space.ops  # none, avg_pool_3x3, skip_connect, sep_conv_3x3
    # Node 2 has edges 0 (from input 0) and 1 (from input 1): prune both to `none` only.
    for step, op in enumerate(["sep_conv_3x3", "avg_pool_3x3", "skip_connect"]):
        net.prune("normal", 0, ops.index(op), step)
    for step, op in enumerate(["avg_pool_3x3", "skip_connect", "sep_conv_3x3"]):
        net.prune("normal", 1, ops.index(op), step)
    node = net.genotype().normal.nodes[0]
    assert [(e.op, e.input) for e in node] == [("skip_connect", 0), ("sep_conv_3x3", 1)]
    # Node 3: prune its edge from input 0 to `none`; the two live edges are kept instead.
    for step, op in enumerate(["sep_conv_3x3", "avg_pool_3x3", "skip_connect"]):
        net.prune("normal", 2, ops.index(op), step)
    assert sorted(e.input for e in net.genotype().normal.nodes[1]) == [1, 2]
    out = net(batch()[0])  # an edge with only the zero op still has the right shape
    assert out.shape == (8, 3)


def test_step_trains_alphas_only_below_the_grace_temperature() -> None:
    strategy = _strategy(epochs=2, steps=3, grace_temperature=1.0)  # T < 1 from step 1
    net = strategy.network
    start = net.alpha_normal.detach().clone()
    temperatures = []
    for _ in range(6):
        before = net.alpha_normal.detach().clone()
        strategy.step(batch(), batch())
        temperatures.append(strategy.temperature)
        moved = not torch.equal(before, net.alpha_normal)
        assert moved == (strategy.temperature < 1.0)
    assert temperatures == [strategy.schedule.temperature(s) for s in range(6)]
    assert not torch.equal(start, net.alpha_normal)
    # A pruned op's alpha stays where it was when the op was pruned.
    for alpha, pruned in zip(net.arch_parameters(), net.pruned_masks()):
        dead = pruned >= 0
        frozen = alpha.detach().clone()
        strategy.alpha_step(batch(), batch())
        assert torch.equal(alpha[dead], frozen[dead]) and dead.any()
    # The last step is at T_final, where theta = 0.5: one op per edge is left.
    assert strategy.finished()


def test_state_round_trip_after_pruning_resumes_exactly() -> None:
    batches = [(batch(), batch()) for _ in range(8)]
    strategy = _strategy(epochs=4, steps=2)
    for train, val in batches[:5]:
        strategy.step(train, val)
    assert sum(strategy.network.ops_remaining().values()) < 2 * 5 * 4  # something was pruned
    saved_net = copy.deepcopy(strategy.network.state_dict())
    saved = copy.deepcopy(strategy.state_dict())

    resumed = _strategy(epochs=4, steps=2)
    resumed.network.load_state_dict(saved_net)
    resumed.load_state_dict(saved)
    assert resumed.network.ops_remaining() == strategy.network.ops_remaining()
    assert resumed.temperature == strategy.temperature
    for train, val in batches[5:]:
        strategy.step(train, val)
        resumed.step(train, val)
    a, b = strategy.network.state_dict(), resumed.network.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


ARGS = [
    "search",
    "--strategy",
    "asap",
    "--dataset",
    "digits",
    "--space",
    "tiny",
    "--layers",
    "3",
    "--channels",
    "4",
    "--batch-size",
    "32",
    "--epochs",
    "3",
    "--seed",
    "3",
]


@pytest.mark.slow
def test_killed_after_pruning_and_resumed_matches_uninterrupted(tmp_path, capsys) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([*ARGS, "--out", str(whole)]) == 0  # in-process: the killed run is the subprocess
    progress = capsys.readouterr().err
    rows = jsonl_rows(whole, "metrics.jsonl")
    # Pruning is under way at the epoch-2 checkpoint and done (one op per edge) at the end.
    assert rows[0]["ops_remaining"] > rows[1]["ops_remaining"] > rows[2]["ops_remaining"] == 10
    assert rows[2]["temperature"] == pytest.approx(0.03)
    assert rows[2]["threshold"] == pytest.approx(0.5)
    assert all(math.isfinite(row["temperature"]) for row in rows)
    assert "T=" in progress and "ops=" in progress  # the progress bar shows T and ops

    # 22 steps per epoch: step 50 is in epoch 3, after the (pruned) epoch-2 checkpoint.
    crashed = run_nas(*ARGS, "--out", str(killed), env={FAULT_ENV: "50"})
    assert crashed.returncode == -signal.SIGKILL
    assert len(jsonl_rows(killed, "metrics.jsonl")) == 2
    resumed = run_nas("search", "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr

    assert (whole / "genotype.json").read_text() == (killed / "genotype.json").read_text()
    assert jsonl_rows(whole, "metrics.jsonl") == jsonl_rows(killed, "metrics.jsonl")
    states = [
        torch.load(run / "checkpoints" / "last.pt", weights_only=True)["task"]["network"]
        for run in (whole, killed)
    ]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_plugin_options_are_saved_in_config_yaml_and_read_back_on_resume(tmp_path, capsys):
    run = str(tmp_path / "run")
    tiny = ["--dataset", "synthetic", "--space", "tiny", "--layers", "3", "--channels", "4"]
    tiny += ["--batch-size", "4", "--epochs", "1", "--set", "data.synthetic_samples=32"]
    tiny += ["--set", "data.synthetic_image_size=8"]
    options = ["--set", "strategy.temperature=1.2", "--set", "strategy.temperature_decay=0.5"]
    assert main(["search", "--strategy", "asap", *tiny, *options, "--out", run]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["strategy"]
    assert (saved["temperature"], saved["temperature_decay"], saved["order"]) == (1.2, 0.5, 1)
    data = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert (data["synthetic_samples"], data["synthetic_image_size"]) == (32, 8)
    # The resumed config is the saved one: a default temperature would count as a change.
    assert main(["search", "--out", run, "--resume"]) == 0
    changed = ["--set", "strategy.temperature=1.3"]
    assert main(["search", "--out", run, "--resume", *changed]) == 2
    assert "changes strategy.temperature" in capsys.readouterr().err
