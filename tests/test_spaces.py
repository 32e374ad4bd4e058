"""Search spaces: registered data with the shapes the supernet and genotypes rely on."""

import pytest

from nas.errors import NasError
from nas.spaces import SPACES, CellSpace, check_layers, get_space


def test_darts_space_matches_the_paper() -> None:
    space = get_space("darts")
    assert space.ops == (
        "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
        "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
    )  # fmt: skip
    assert (space.num_nodes, space.num_edges, space.edges_per_node) == (4, 14, 2)
    assert space.concat == (2, 3, 4, 5)
    assert space.stem_multiplier == 3
    assert space.reduction_layers(8) == [2, 5]
    assert space.reduction_layers(20) == [6, 13]


@pytest.mark.parametrize("name", SPACES.names())
def test_every_space_indexes_its_edges_densely(name: str) -> None:
    space = get_space(name)
    rows = [space.edge_index(n, s) for n in range(space.num_nodes) for s in range(n + 2)]
    assert rows == list(range(space.num_edges))


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
