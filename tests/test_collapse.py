"""Collapse diagnostics and guards (nas/collapse.py): the eigenvalue against the full Hessian,
the skip cap, the watch's warnings and early stops, and a search that stops on them."""

import json

import pytest
import torch
import torch.nn.functional as F

import nas.collapse
import nas.search_task
from nas.collapse import CollapseWatch, cell_counts, dominant_eigenvalue, mean_entropy
from nas.config import CollapseConfig
from nas.genotype import CellGenotype, Edge, Genotype, derive_cell
from nas.spaces import get_space
from nas.supernet.mixing import dense_mixing
from tests.conftest import assert_refused, batch, jsonl_rows, tiny_network

SEARCH = [
    "search",
    "--dataset",
    "synthetic",
    "--set",
    "data.synthetic_samples=64",
    "--set",
    "data.synthetic_image_size=8",
    "--space",
    "tiny",
    "--layers",
    "3",
    "--channels",
    "4",
    "--batch-size",
    "16",
]


def full_hessian(network, images, labels) -> torch.Tensor:
    """The Hessian of the loss w.r.t. both alphas, flattened, by torch.autograd.functional."""
    shapes = [a.shape for a in network.alphas()]
    sizes = [a.numel() for a in network.alphas()]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        normal, reduce = (p.view(s) for p, s in zip(flat.split(sizes), shapes))
        network.mixing = lambda _alphas, pruned: dense_mixing([normal, reduce], pruned)
        return F.cross_entropy(network(images), labels)

    flat = torch.cat([a.detach().flatten() for a in network.alphas()])
    hessian = torch.autograd.functional.hessian(loss, flat)
    network.mixing = dense_mixing
    return hessian


# Alphas at initialisation (near uniform), where the eigenvalue of largest magnitude is negative,
# and spread out, where it is the largest.
@pytest.mark.slow
@pytest.mark.parametrize("spread", [1e-3, 1.0])
def test_eigenvalue_is_the_largest_eigenvalue_of_the_full_hessian(spread: float) -> None:
    torch.manual_seed(3)
    network = tiny_network().double()
    with torch.no_grad():
        for alpha in network.alphas():
            alpha.normal_(0.0, spread)
    images, labels = batch(size=16)
    images = images.double()
    buffers = [b.clone() for b in network.buffers()]
    eigenvalue = dominant_eigenvalue(network, images, labels, iterations=300, tolerance=1e-10)
    exact = torch.linalg.eigvalsh(full_hessian(network, images, labels))
    assert (-exact.min() > exact.max()) == (spread < 0.1)  # both branches of the method
    assert eigenvalue == pytest.approx(exact.max().item(), rel=1e-4)
    # The search is untouched: running statistics and the mixing hook are as they were.
    assert all(torch.equal(a, b) for a, b in zip(buffers, network.buffers()))
    assert network.mixing is dense_mixing


def test_eigenvalue_finds_the_largest_when_the_largest_magnitude_is_negative() -> None:
    def product(vector):
        (v,) = vector
        return [torch.tensor([-5.0, 2.0, 1.0]) * v]

    like = [torch.zeros(3)]
    largest = nas.collapse._power_iteration(product, like, 500, 1e-12)
    assert largest == pytest.approx(-5.0)
    # dominant_eigenvalue's second run: H - lambda I, then shifted back.
    shifted = nas.collapse._power_iteration(
        lambda v: [h - largest * x for h, x in zip(product(v), v)], like, 500, 1e-12
    )
    assert largest + shifted == pytest.approx(2.0, rel=1e-6)


def test_mean_entropy_spans_decided_to_uniform() -> None:
    assert mean_entropy(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])) == 0.0
    uniform = torch.full((2, 4), 0.25)
    assert mean_entropy(uniform) == pytest.approx(torch.log(torch.tensor(4.0)).item())


def cell(*ops_and_inputs) -> CellGenotype:
    edges = [Edge(op, source) for op, source in ops_and_inputs]
    return CellGenotype(nodes=(tuple(edges[:2]), tuple(edges[2:])), concat=(2, 3))


def test_cell_counts_count_parameter_free_ops_and_skips() -> None:
    sep = "sep_conv_3x3"
    normal = cell(("skip_connect", 0), ("max_pool_3x3", 1), (sep, 0), ("skip_connect", 2))
    reduce = cell((sep, 0), (sep, 1), ("avg_pool_3x3", 0), (sep, 2))
    counts = cell_counts(Genotype("tiny", normal, reduce))
    assert counts == {
        "param_free_normal": 3,
        "skips_normal": 2,
        "param_free_reduce": 1,
        "skips_reduce": 0,
    }


def test_skip_cap_keeps_the_strongest_skips_and_rederives_the_rest() -> None:
    space = get_space("tiny")
    skip, sep = space.ops.index("skip_connect"), space.ops.index("sep_conv_3x3")
    weights = torch.full((space.num_edges, len(space.ops)), 0.1)
    for edge, strength in enumerate([0.9, 0.8, 0.7, 0.6, 0.5]):
        weights[edge, skip] = strength  # skip wins every edge, strongest on edge 0
        weights[edge, sep] = 0.2
    free = derive_cell(space, weights)
    assert sum(e.op == "skip_connect" for node in free.nodes for e in node) == 4
    capped = derive_cell(space, weights, max_skips=1)
    ops = [(e.op, e.input) for node in capped.nodes for e in node]
    assert [op for op, _ in ops].count("skip_connect") == 1
    assert ("skip_connect", 0) in ops  # the strongest skip (edge 0: node 2 <- state 0) stays
    assert derive_cell(space, weights, max_skips=4) == free
    none = derive_cell(space, weights, max_skips=0)
    assert all(e.op != "skip_connect" for node in none.nodes for e in node)


def genotype_with(param_free: int) -> Genotype:
    ops = ["skip_connect"] * param_free + ["sep_conv_3x3"] * (4 - param_free)
    normal = cell(*[(op, 0) for op in ops[:2]], *[(op, 1) for op in ops[2:]])
    reduce = cell(*[("sep_conv_3x3", 0)] * 4)
    return Genotype("tiny", normal, reduce)


@pytest.mark.parametrize("early_stop", ["none", "param_free"])
def test_watch_stops_on_a_rise_of_parameter_free_ops_and_keeps_the_earlier_genotype(
    early_stop: str,
) -> None:
    watch = CollapseWatch(CollapseConfig(early_stop=early_stop, param_free_limit=2))
    # Early cells full of parameter-free ops are no collapse; the climb after the fall is.
    counts = [4, 3, 1, 1, 2]
    warnings = [watch.observe(e, genotype_with(n), n, None) for e, n in enumerate(counts, 1)]
    assert warnings[:4] == [[], [], [], []]
    assert len(warnings[4]) == 1 and "rose from 1 (epoch 4) to 2 of 4" in warnings[4][0]
    if early_stop == "none":
        assert watch.stopped_at is None and watch.kept_genotype() is None
    else:
        assert (watch.stopped_at, watch.kept_epoch) == (5, 4)
        assert watch.kept_genotype() == genotype_with(1)
        assert "epoch 4" in watch.reason


def test_watch_stops_when_the_eigenvalue_grows_and_keeps_the_genotype_k_epochs_back() -> None:
    config = CollapseConfig(hessian_every=1, early_stop="eigenvalue", eigenvalue_epochs=2)
    watch = CollapseWatch(config)
    eigenvalues = [1.0, 1.0, 1.0, 1.1, 1.2, 2.0]  # windows of 2: 1.05/1.6 < 0.75 at epoch 6
    for epoch, value in enumerate(eigenvalues, 1):
        warnings = watch.observe(epoch, genotype_with(epoch % 2), epoch % 2, value)
        assert bool(warnings) == (epoch == 6)
    assert (watch.stopped_at, watch.kept_epoch) == (6, 4)
    assert watch.kept_genotype() == genotype_with(0)


def test_watch_state_round_trips() -> None:
    watch = CollapseWatch(CollapseConfig(early_stop="param_free"))
    for epoch, count in enumerate([1, 2], 1):
        watch.observe(epoch, genotype_with(count), count, None)
    again = CollapseWatch(CollapseConfig(early_stop="param_free"))
    again.load_state_dict(json.loads(json.dumps(watch.state_dict())))
    assert again.state_dict() == watch.state_dict()
    assert again.kept_genotype() == watch.kept_genotype() == genotype_with(1)


def test_search_stops_early_on_collapse_and_writes_the_kept_genotype(tmp_path, monkeypatch) -> None:
    from nas.cli import main

    # The counts the watch reads, scripted: the normal cell's parameter-free ops fall, then rise.
    script = iter([3, 1, 2, 4, 4])
    real = nas.collapse.cell_counts
    monkeypatch.setattr(
        nas.search_task,
        "cell_counts",
        lambda genotype: {**real(genotype), "param_free_normal": next(script)},
    )
    out = tmp_path / "run"
    args = [*SEARCH, "--epochs", "5", "--out", str(out), "--set", "collapse.early_stop=param_free"]
    assert main(args) == 0
    rows = jsonl_rows(out, "genotypes.jsonl")
    assert [row["epoch"] for row in rows] == [1, 2, 3]  # stopped after epoch 3 of 5
    kept = Genotype.load(out / "genotype.json")
    assert kept.to_dict()["normal"] == rows[1]["genotype"]["normal"]  # epoch 2's, the fewest
    assert kept.search.complete


@pytest.mark.slow
def test_diagnostics_are_recorded_and_leave_the_search_unchanged(tmp_path) -> None:
    from nas.cli import main

    plain, watched = tmp_path / "plain", tmp_path / "watched"
    assert main([*SEARCH, "--epochs", "2", "--out", str(plain)]) == 0
    args = [*SEARCH, "--epochs", "2", "--out", str(watched), "--set", "collapse.hessian_every=1"]
    assert main(args) == 0
    rows = jsonl_rows(watched)
    for key in ("param_free_normal", "skips_normal", "entropy_reduce", "hessian_eigenvalue"):
        assert all(isinstance(row[key], int | float) for row in rows), key
    # The eigenvalue's forward and backward passes change no weight, statistic or random stream.
    assert [{k: row[k] for k in ("train_loss", "val_loss")} for row in rows] == [
        {k: row[k] for k in ("train_loss", "val_loss")} for row in jsonl_rows(plain)
    ]
    assert jsonl_rows(plain, "genotypes.jsonl") == jsonl_rows(watched, "genotypes.jsonl")
    states = [
        torch.load(run / "checkpoints" / "last.pt")["task"]["network"] for run in (plain, watched)
    ]
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])


def test_search_caps_the_normal_cells_skips(tmp_path) -> None:
    from nas.cli import main

    out = tmp_path / "run"
    args = [*SEARCH, "--epochs", "1", "--out", str(out), "--set", "collapse.max_skips=0"]
    assert main(args) == 0
    assert jsonl_rows(out)[0]["skips_normal"] == 0
    normal = Genotype.load(out / "genotype.json").normal
    assert all(edge.op != "skip_connect" for node in normal.nodes for edge in node)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("collapse.early_stop=eigenvalue", "needs the eigenvalue"),
        ("collapse.early_stop=sometimes", "collapse.early_stop must be one of"),
        ("collapse.max_skips=-1", "collapse.max_skips must be 0 or more"),
        ("collapse.eigenvalue_ratio=1.5", "between 0 and 1"),
    ],
)
def test_bad_collapse_settings_are_refused_in_one_line(tmp_path, setting, message) -> None:
    args = [*SEARCH, "--epochs", "1", "--out", str(tmp_path / "r"), "--set", setting]
    assert_refused(*args, cwd=tmp_path, contains=message)


def test_skip_cap_is_refused_for_a_strategy_that_does_not_derive_from_op_weights(tmp_path) -> None:
    args = [*SEARCH, "--strategy", "random_ws", "--epochs", "1", "--out", str(tmp_path / "r")]
    assert_refused(*args, "--set", "collapse.max_skips=2", cwd=tmp_path, contains="drop collapse")
