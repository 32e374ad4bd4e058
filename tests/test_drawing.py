"""Pictures and text of genotypes: one numbering of a cell's states, labels that do not overlap."""

import itertools

import pytest

from nas.drawing import describe_genotype, state_legend
from nas.genotype import load_genotype, parse_notation

# Every intermediate state reads from a different pair of states, with the longest op names: the
# most crowded cell the DARTS space derives.
CROWDED = parse_notation(
    "Genotype(normal=[('sep_conv_5x5', 0), ('dil_conv_5x5', 1), ('sep_conv_3x3', 1), "
    "('dil_conv_3x3', 2), ('max_pool_3x3', 0), ('skip_connect', 3), ('avg_pool_3x3', 2), "
    "('sep_conv_5x5', 4)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('dil_conv_5x5', 1), ('skip_connect', 0), ('max_pool_3x3', 2), ('dil_conv_5x5', 1), "
    "('skip_connect', 3), ('avg_pool_3x3', 0), ('sep_conv_5x5', 1)], reduce_concat=[2, 3, 4, 5])"
)


def test_describe_genotype_numbers_states_as_the_notation_does() -> None:
    lines = describe_genotype(load_genotype("DARTS_V2")).splitlines()
    assert lines[1] == state_legend(4) and "states 0, 1: the cell's inputs c[k-2]" in lines[1]
    normal = lines[lines.index("normal cell:") + 1 : lines.index("reduce cell:")]
    assert normal == [
        "  state 2 = sep_conv_3x3(0) + sep_conv_3x3(1)",
        "  state 3 = sep_conv_3x3(0) + sep_conv_3x3(1)",
        "  state 4 = sep_conv_3x3(1) + skip_connect(0)",
        "  state 5 = skip_connect(0) + dil_conv_3x3(2)",
        "  c[k] = concat(2, 3, 4, 5)",
    ]


def test_picture_draws_states_at_their_numbers_and_op_labels_over_their_edges() -> None:
    pytest.importorskip("matplotlib")
    from nas.drawing import _RISE, genotype_figure

    figure = genotype_figure(load_genotype("DARTS_V2"))
    normal, reduce = figure.axes
    at = {text.get_text(): text.get_position() for text in normal.texts}
    assert {str(state): at[str(state)] for state in range(6)} == {
        str(state): (state, 0) for state in range(6)
    }
    assert at["c[k]"] == (6, 0) and at["c[k-2]"][0] == 0 and at["c[k-1]"][0] == 1
    # state 5 = skip_connect(0) + dil_conv_3x3(2): each label at the apex of its edge's arc
    assert at["dil_conv_3x3"] == pytest.approx(((2 + 5) / 2, _RISE * 3))
    assert reduce.get_title() == "reduce cell"
    assert "states 0, 1" in figure.texts[0].get_text()  # the legend


def test_crowded_cell_labels_are_legible_and_do_not_overlap() -> None:
    pytest.importorskip("matplotlib")
    from nas.drawing import genotype_figure

    figure = genotype_figure(CROWDED)
    renderer = figure.canvas.get_renderer()
    for ax in figure.axes:
        labels = [text for text in ax.texts if "_" in text.get_text()]  # the op labels
        assert len(labels) == 8
        for text in labels:
            assert text.get_fontsize() * figure.dpi / 72 >= 13  # pixels
        boxes = [text.get_window_extent(renderer) for text in labels]
        for (i, first), (j, second) in itertools.combinations(enumerate(boxes), 2):
            assert not first.overlaps(second), (labels[i].get_text(), labels[j].get_text())
