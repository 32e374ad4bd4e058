"""Genotypes: derivation, JSON round-trip, every validation error, the notation parser."""

import copy
import json

import pytest
import torch

from nas.errors import NasError
from nas.genotype import CellGenotype, Edge, Genotype, derive_cell, derive_genotype, parse_notation
from nas.spaces import get_space

# DARTS_V2 as published in the DARTS paper's code release (a fact, written as data).
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
    "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)


def _valid() -> dict:
    return parse_notation(DARTS_V2).to_dict()


def test_derivation_keeps_two_strongest_edges_and_ignores_none() -> None:
    space = get_space("darts")
    weights = torch.full((space.num_edges, len(space.ops)), 0.01)
    ops = space.ops
    # Node 0 (edges 0, 1): edge 1 is strongest; edge 0's best non-none op is dil_conv_5x5.
    weights[0, ops.index("none")] = 0.99
    weights[0, ops.index("dil_conv_5x5")] = 0.2
    weights[1, ops.index("sep_conv_3x3")] = 0.6
    # Node 1 (edges 2, 3, 4): the two strongest are from states 2 and 0.
    weights[space.edge_index(1, 2), ops.index("skip_connect")] = 0.9
    weights[space.edge_index(1, 0), ops.index("max_pool_3x3")] = 0.5
    weights[space.edge_index(1, 1), ops.index("avg_pool_3x3")] = 0.4
    cell = derive_cell(space, weights)
    assert cell.nodes[0] == (Edge("sep_conv_3x3", 1), Edge("dil_conv_5x5", 0))
    assert cell.nodes[1] == (Edge("skip_connect", 2), Edge("max_pool_3x3", 0))
    assert cell.concat == (2, 3, 4, 5)
    assert all(edge.op != "none" for node in cell.nodes for edge in node)


def test_derivation_from_network_is_valid_and_round_trips() -> None:
    space = get_space("darts")
    weights = [torch.softmax(torch.randn(14, 8), -1) for _ in range(2)]
    genotype = derive_genotype(space, weights)
    again = Genotype.from_dict(json.loads(genotype.to_json()))
    assert again == genotype
    assert parse_notation(genotype.to_notation()) == genotype


def test_save_and_load(tmp_path) -> None:
    genotype = parse_notation(DARTS_V2)
    genotype.save(tmp_path / "g.json")
    assert Genotype.load(tmp_path / "g.json") == genotype


def _set(data: dict, path: list, value: object) -> dict:
    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ["normal", "nodes", 1, 0, "op"],
            "conv_9x9",
            r"genotype\.normal\.nodes\[1\]\[0\]\.op: unknown op 'conv_9x9'",
        ),
        (
            ["reduce", "nodes", 0, 1, "op"],
            "none",
            r"reduce\.nodes\[0\]\[1\]\.op: 'none' \(the zero op\) cannot be a kept edge",
        ),
        (
            ["normal", "nodes", 0, 0, "input"],
            2,
            r"normal\.nodes\[0\]\[0\]\.input: input index 2 out of range",
        ),
        (
            ["normal", "nodes", 3, 0, "input"],
            -1,
            r"nodes\[3\]\[0\]\.input: input index -1 out of range",
        ),
        (["normal", "nodes", 2, 0, "input"], True, r"nodes\[2\]\[0\]\.input: input index True"),
        (
            ["normal", "nodes", 2],
            [{"op": "skip_connect", "input": 0}],
            r"normal\.nodes\[2\]: wrong edge count",
        ),
        (["reduce", "nodes"], [], r"reduce\.nodes: space 'darts' has 4 intermediate nodes, got 0"),
        (["version"], 2, r"genotype\.version: unknown version 2"),
        (["version"], 1.0, r"genotype\.version: unknown version 1\.0"),
        (["format"], "darts", r"genotype\.format: expected 'nasforge.genotype'"),
        (["space"], "nope", r"genotype\.space: unknown search space 'nope'"),
        (["normal", "concat"], [2, 3, 9], r"normal\.concat: state index 9 out of range"),
        (["normal", "concat"], [2, 2], r"normal\.concat: repeated state index"),
        (["reduce"], _DELETE, r"genotype\.reduce: expected an object"),
        (["extra"], 1, r"genotype: unexpected field\(s\) \['extra'\]"),
        (["normal", "nodes", 0, 0], {"op": "skip_connect"}, r"nodes\[0\]\[0\]: expected"),
    ],
)
def test_validation_errors_name_the_field(path: list, value: object, message: str) -> None:
    with pytest.raises(NasError, match=message):
        Genotype.from_dict(_set(_valid(), path, value))


def test_load_reports_missing_and_malformed_files(tmp_path) -> None:
    with pytest.raises(NasError, match="does not exist"):
        Genotype.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(NasError, match="not valid JSON"):
        Genotype.load(tmp_path / "bad.json")


def test_notation_parser_reads_published_genotypes() -> None:
    genotype = parse_notation(DARTS_V2)
    assert genotype.normal.nodes[3] == (Edge("skip_connect", 0), Edge("dil_conv_3x3", 2))
    assert genotype.reduce.concat == (2, 3, 4, 5)
    with_range = DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2, 6)")
    assert parse_notation(with_range) == genotype
    assert parse_notation(genotype.to_notation()) == genotype


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('echo hacked')", "expected Genotype"),
        (
            DARTS_V2.replace("('sep_conv_3x3', 0)", "(__import__('os'), 0)", 1),
            "expected \\('op', input\\)",
        ),
        (
            DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=list(range(2, 6))"),
            "normal_concat must be",
        ),
        (DARTS_V2.replace(", reduce_concat=[2, 3, 4, 5]", ""), "expected fields"),
        (DARTS_V2.replace("('dil_conv_3x3', 2)], normal", "], normal"), "normal: wrong edge count"),
        ("Genotype(normal=[", "not parseable"),
        (DARTS_V2.replace("reduce=", "normal=", 1), "a field is given twice"),
        (
            DARTS_V2.replace("('sep_conv_3x3', 0)", "('sep_conv_9x9', 0)", 1),
            "unknown op 'sep_conv_9x9'",
        ),
    ],
)
def test_notation_parser_is_strict(text: str, message: str) -> None:
    with pytest.raises(NasError, match=message):
        parse_notation(text)


def test_cell_accessor() -> None:
    genotype = parse_notation(DARTS_V2)
    assert isinstance(genotype.cell("reduce"), CellGenotype)
    assert genotype.cell("reduce") is genotype.reduce
