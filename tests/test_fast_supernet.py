"""The fast supernet path gives the reference path's outputs and gradients; PC-DARTS partial
channels and activation checkpointing change memory and speed, never the gradient they promise."""

import copy
import re
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from nas.config import Config, StrategyConfig
from nas.errors import NasError
from nas.ops import OPS, OpDef, ReLUConvBN
from nas.runtime.dist import Runtime
from nas.spaces import NUM_INPUT_NODES, SPACES, CellSpace, get_space
from nas.strategies.darts import DartsOptions, unrolled_alpha_grads
from nas.supernet import SearchNetwork
from nas.supernet.mixing import one_hot_mix
from nas.supernet.partial import merge_partial


def _network(space: str = "darts", prune: bool = False, **options) -> SearchNetwork:
    torch.manual_seed(0)
    network = SearchNetwork(get_space(space), 3, 5, channels=4, layers=5, **options)
    with torch.no_grad():
        for parameter in network.arch_parameters():
            parameter.normal_()
    if prune:  # a mix: some edges keep several ops, some one, one only `none`
        ops = network.space.ops
        for kind in ("normal", "reduce"):
            for edge in range(network.space.num_edges):
                for op in range(1, len(ops)):
                    if (edge + op) % 3 == 0:
                        network.prune(kind, edge, op, step=edge)
            for op in range(1, len(ops)):
                if network.pruned_masks()[0][2, op] < 0:
                    network.prune(kind, 2, op, step=99)
    return network


def _logits_and_grads(network: SearchNetwork, images, labels):
    logits = network(images)
    loss = F.cross_entropy(logits, labels)
    # allow_unused: under a sampled mix the ops left out have no gradient (None) on both paths
    return logits, torch.autograd.grad(loss, list(network.parameters()), allow_unused=True)


def _assert_same(reference: SearchNetwork, other: SearchNetwork, train: bool = True) -> None:
    torch.manual_seed(1)
    images, labels = torch.randn(6, 3, 12, 12), torch.randint(0, 5, (6,))
    reference.train(train)
    other.train(train)
    ref_logits, ref_grads = _logits_and_grads(reference, images, labels)
    logits, grads = _logits_and_grads(other, images, labels)
    assert torch.allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
    names = [name for name, _ in reference.named_parameters()]
    assert names == [name for name, _ in other.named_parameters()]
    for name, a, b in zip(names, ref_grads, grads):
        assert (a is None) == (b is None), name
        assert a is None or torch.allclose(a, b, rtol=1e-3, atol=1e-5), name


@pytest.mark.parametrize("space", SPACES.names())
@pytest.mark.parametrize("prune", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_fast_path_matches_reference(space: str, prune: bool, train: bool) -> None:
    reference = _network(space, prune)
    _assert_same(reference, copy.deepcopy(reference).use_fast_path(), train)


def _sample(network: SearchNetwork) -> list[list[int | None]]:
    """Per cell kind, one op index per edge or None (the edge is left out), every op drawn."""
    generator = torch.Generator().manual_seed(3)
    num_ops, num_edges = len(network.space.ops), network.space.num_edges
    draws = torch.randint(-1, num_ops, (2, num_edges), generator=generator).tolist()
    return [[None if op < 0 else op for op in row] for row in draws]


@pytest.mark.parametrize("space", ["darts", "tiny"])
def test_a_sampled_mix_runs_only_its_ops_on_both_paths(space: str) -> None:
    reference = _network(space)
    choices = _sample(reference)
    reference.mixing = lambda alphas, pruned: [
        one_hot_mix(row, alpha.shape[1], alpha.device, F.softmax(alpha, dim=-1))
        for row, alpha in zip(choices, alphas)
    ]
    fast = copy.deepcopy(reference).use_fast_path()
    _assert_same(reference, fast)
    images, labels = torch.randn(6, 3, 12, 12), torch.randint(0, 5, (6,))
    for network in (reference, fast):
        loss = F.cross_entropy(network(images), labels)
        params, chosen = [], []  # every op parameter, and whether its op was drawn
        for cell in network.cells:
            row = choices[1 if cell.reduction else 0]
            for edge, op_index in zip(cell.edges, row):
                for name, op in edge.ops.items():
                    params.extend(op.parameters())
                    chosen.extend(edge.index[name] == op_index for _ in op.parameters())
        grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        assert [grad is not None for grad in grads] == chosen and any(chosen)
        # Straight through: every alpha of an edge that ran a non-`none` op gets a gradient.
        (grad,) = torch.autograd.grad(loss, [network.alpha_normal])
        for edge, op_index in enumerate(choices[0]):
            ran = op_index is not None and network.space.ops[op_index] != "none"
            assert bool((grad[edge] != 0).all()) == ran, edge


def _one_op_space(op: str) -> CellSpace:
    ops = ("none", op) if op == "skip_connect" else ("none", op, "skip_connect")
    return CellSpace(name=f"only_{op}", ops=ops, num_nodes=2)


def _op_calls(network: SearchNetwork, images: torch.Tensor) -> Counter:
    """How often the op modules of each name ran their own forward in one network forward."""
    calls: Counter = Counter()
    handles = [
        op.register_forward_hook(lambda *_, name=name: calls.update([name]))
        for cell in network.cells
        for edge in cell.edges
        for name, op in edge.ops.items()
    ]
    try:
        with torch.no_grad():
            network(images)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _assert_grouped_forms_ran(reference: SearchNetwork, fast: SearchNetwork) -> None:
    """On the fast path an op runs as the grouped form it declares, not as its own module: a
    "shared" op once per source state, one without a form once per edge, any other never.
    """
    images = torch.randn(2, 3, 8, 8)
    per_edge, grouped = _op_calls(reference, images), _op_calls(fast, images)
    space = fast.space
    states = len(fast.cells) * (NUM_INPUT_NODES + space.num_nodes - 1)
    for name in space.ops:
        form = OPS.get(name).grouped
        expected = {None: per_edge[name], "shared": states}.get(form, 0)
        assert grouped[name] == expected, (name, form, grouped[name], per_edge[name])


@pytest.mark.parametrize("op", [name for name in OPS.names() if name != "none"])
def test_fast_path_matches_reference_for_every_op(op: str) -> None:
    """Conformance: every registered op computes the same on both paths (a new op included), and
    the fast path runs it as the grouped form it declares."""
    torch.manual_seed(0)
    reference = SearchNetwork(_one_op_space(op), 3, 5, channels=4, layers=3)
    fast = copy.deepcopy(reference).use_fast_path()
    _assert_same(reference, fast)
    _assert_grouped_forms_ran(reference, fast)


def test_an_op_without_a_grouped_form_runs_per_edge(monkeypatch) -> None:
    monkeypatch.setitem(
        OPS._items, "conv_3x3", OpDef("conv_3x3", lambda c, s, a: ReLUConvBN(c, c, 3, s, 1, a))
    )
    torch.manual_seed(0)
    reference = SearchNetwork(_one_op_space("conv_3x3"), 3, 5, channels=4, layers=3)
    fast = copy.deepcopy(reference).use_fast_path()
    _assert_same(reference, fast)
    _assert_grouped_forms_ran(reference, fast)


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_the_search_task_computes_cells_on_the_selected_path(path: str) -> None:
    from nas.search_task import SearchTask

    config = Config()
    settings = {"model.space": "tiny", "model.layers": 3, "model.channels": 4, "model.path": path}
    for key, value in settings.items():
        config.set(key, value)
    task = SearchTask(config, Runtime(rank=0, world_size=1, device=torch.device("cpu")))
    calls = _op_calls(task.network, torch.randn(2, 1, 8, 8))
    # the separable convs run as grouped kernels on the fast path, never as their own modules
    assert (calls["sep_conv_3x3"] == 0) == (path == "fast")


@pytest.mark.parametrize("prune", [False, True])
def test_fast_path_matches_reference_with_partial_channels(prune: bool) -> None:
    reference = _network(prune=prune, partial_channels=2)
    depthwise = reference.cells[0].edges[0].ops["sep_conv_3x3"].first.depthwise
    assert depthwise.weight.shape[0] == 2  # C/K
    _assert_same(reference, copy.deepcopy(reference).use_fast_path())


@pytest.mark.parametrize("fast", [False, True])
def test_checkpointed_cells_give_the_same_gradients(fast: bool) -> None:
    reference = _network(partial_channels=2).use_fast_path(fast)
    checkpointed = copy.deepcopy(reference)
    checkpointed.checkpoint_cells = True
    _assert_same(reference, checkpointed)


def test_second_order_alpha_gradient_is_the_same_on_every_path() -> None:
    """The unrolled step runs forwards under functional_call; the fast path and the checkpointed
    cells (recomputed after functional_call returns) must still see the virtual weights."""
    torch.manual_seed(2)
    batches = [(torch.randn(4, 3, 8, 8).double(), torch.randint(0, 5, (4,))) for _ in range(2)]
    results = []
    for fast, checkpointed in [(False, False), (True, False), (True, True)]:
        network = _network("tiny", prune=True).use_fast_path(fast).double()
        network.checkpoint_cells = checkpointed
        optimizer = torch.optim.SGD(network.weight_parameters(), lr=0.1, momentum=0.9)
        results.append(unrolled_alpha_grads(network, *batches, optimizer, xi=0.1))
    # Float64: the finite-difference Hessian term divides by 2 epsilon (~1e-4 here), which
    # amplifies float32 rounding differences between the paths to ~1e-3 of the gradient.
    for grads in results[1:]:
        for a, b in zip(results[0], grads):
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


def test_partial_channels_edge_normalisation_and_genotype() -> None:
    network = _network("tiny", partial_channels=2)
    assert len(network.arch_parameters()) == 4
    normal, _ = network.edge_weights()
    # softmax over each node's incoming edges: node 0 has edges 0-1, node 1 edges 2-4
    assert torch.allclose(normal[:2].sum(), torch.tensor(1.0))
    assert torch.allclose(normal[2:].sum(), torch.tensor(1.0))
    logits = network(torch.randn(4, 3, 8, 8))
    grads = torch.autograd.grad(logits.square().sum(), [network.beta_normal, network.beta_reduce])
    assert all(g.abs().sum() > 0 for g in grads)
    # the same op weights on every edge: the betas alone decide which edges node 1 keeps
    with torch.no_grad():
        network.alpha_normal.zero_()
        network.beta_normal.copy_(torch.tensor([0.0, 0.0, 5.0, -5.0, 4.0]))
    node = network.genotype().normal.nodes[1]
    assert sorted(edge.input for edge in node) == [0, 2]


def test_merge_partial_shuffles_searched_and_bypassed_channels() -> None:
    out = torch.full((1, 1, 2, 2, 2), -1.0)  # 2 searched channels of 1 edge
    bypass = torch.arange(6.0).view(1, 6, 1, 1).expand(1, 6, 2, 2)  # the other 6 of C=8
    merged = merge_partial(out, bypass, 4)[0, 0, :, 0, 0]
    # K=4 groups of 2 channels ([-1,-1], [0,1], [2,3], [4,5]) interleaved
    assert merged.tolist() == [-1.0, 0.0, 2.0, 4.0, -1.0, 1.0, 3.0, 5.0]
    strided = merge_partial(out[..., :1, :1], bypass, 4)  # stride-2 edge: bypass max-pooled
    assert strided.shape == (1, 1, 8, 1, 1)


@pytest.mark.parametrize(
    ("channels", "partial", "message"),
    [
        (6, 4, "must divide model.channels=6"),
        (6, 6, "= 1 must be even"),
        (4, 0, "must be 1 (off) or more"),
    ],
)
def test_bad_partial_channels_are_clear_errors(channels: int, partial: int, message: str) -> None:
    with pytest.raises(NasError, match=re.escape(message)):
        SearchNetwork(get_space("darts"), 3, 5, channels, 5, partial_channels=partial)


def test_search_strategy_step_runs_on_partial_channels() -> None:
    from nas.strategies import STRATEGIES

    network = _network("tiny", partial_channels=2, checkpoint_cells=True).use_fast_path()
    runtime = Runtime(rank=0, world_size=1, device=torch.device("cpu"))
    strategy = STRATEGIES.get("darts")(
        network, StrategyConfig(options=DartsOptions(order=2)), 1, 1, runtime
    )
    before = [p.detach().clone() for p in network.arch_parameters()]
    batch = (torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,)))
    strategy.step(batch, batch)
    assert all(not torch.equal(b, p) for b, p in zip(before, network.arch_parameters()))
