"""Search spaces: registered data with the shapes the supernet and genotypes rely on."""

import pytest
import torch

from nas.errors import NasError
from nas.genotype import CELL_KINDS, Genotype
from nas.models import CifarNetwork
from nas.spaces import NUM_INPUT_NODES, SPACES, CellSpace, check_layers, get_space
from nas.supernet import SearchNetwork


def test_darts_space_matches_the_paper() -> None:
    space = get_space("darts")
    assert space.ops == (
        "none",
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
        "sep_conv_3x3",
        "sep_conv_5x5",
        "dil_conv_3x3",
        "dil_conv_5x5",
    )
    assert (space.num_nodes, space.num_edges, space.edges_per_node) == (4, 14, 2)
    assert space.concat == (2, 3, 4, 5)
    assert space.stem_multiplier == 3
    assert space.reduction_layers(8) == [2, 5]
    assert space.reduction_layers(20) == [6, 13]


def _fewest_layers(space: CellSpace) -> int:
    for layers in range(1, 100):
        try:
            check_layers(space, layers)
            return layers
        except NasError:
            continue
    raise AssertionError(f"space {space.name!r}: its reduction cells never fit")


@pytest.mark.parametrize("name", SPACES.names())
def test_every_space_derives_valid_genotypes_that_build(name: str) -> None:
    """Conformance (tests/test_fast_supernet.py runs every space on both supernet paths): the
    supernet's genotype follows the DARTS rule within the space, survives its JSON form, and
    builds a discrete network."""
    space = get_space(name)
    assert space.name == name
    layers = _fewest_layers(space)
    network = SearchNetwork(space, 1, 3, channels=4, layers=layers)
    with torch.no_grad():
        for alpha in network.alphas():
            alpha.normal_()
    genotype = network.genotype()
    assert genotype.space == name
    for kind, alpha in zip(CELL_KINDS, network.alphas()):
        cell = genotype.cell(kind)
        assert len(cell.nodes) == space.num_nodes and cell.concat == space.concat
        for node, edges in enumerate(cell.nodes):
            inputs = [edge.input for edge in edges]
            assert len(set(inputs)) == len(inputs) == space.edges_per_node
            assert all(0 <= i < NUM_INPUT_NODES + node for i in inputs)
            for edge in edges:  # the strongest op other than `none` on the edge
                row = alpha[space.edge_index(node, edge.input)]
                strongest = max(
                    (op for op in space.ops if op != "none"),
                    key=lambda op: row[space.ops.index(op)],
                )
                assert edge.op == strongest
    assert Genotype.from_dict(genotype.to_dict()) == genotype
    discrete = CifarNetwork(genotype, 1, 3, channels=4, layers=layers, auxiliary=False)
    assert discrete(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_unknown_space_is_a_clear_error() -> None:
    with pytest.raises(NasError, match="unknown search space 'dart'.*darts"):
        get_space("dart")


def test_too_few_layers_is_a_clear_error() -> None:
    check_layers(get_space("darts"), 3)
    with pytest.raises(NasError, match="at least 3 layers"):
        check_layers(get_space("darts"), 2)


def test_invalid_space_definitions_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown ops"):
        CellSpace(name="bad", ops=("none", "conv_9x9"))
    with pytest.raises(ValueError, match="other than 'none'"):
        CellSpace(name="bad", ops=("none",))
