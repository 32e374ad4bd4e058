"""Genotypes: the discrete architecture a search produces.

A genotype names its search space and, for the normal and the reduction cell, the edges each
intermediate node keeps (`{"op": name, "input": state index}`) and the states concatenated into the
cell output. State 0 and 1 are the cell inputs; state i + 2 is intermediate node i. See
docs/genotype-format.md for the JSON format.

One module over 400 lines on purpose: the format, its validation, the notation parser, the DARTS
derivation rule and `load_genotype` (a genotype by published name, notation or file) are the one
definition of what a genotype is.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas.errors import NasError, clip, shorten
from nas.spaces import NUM_INPUT_NODES, CellSpace, get_space

FORMAT = "nasforge.genotype"
VERSION = 1
CELL_KINDS = ("normal", "reduce")
SKIP_CONNECT = "skip_connect"  # the op P-DARTS caps (derive_cell's max_skips)
# A notation's range(a, b) is expanded only up to this length (a cell has a handful of states).
MAX_CONCAT = 1000


@dataclass(frozen=True)
class Edge:
    """One kept edge: `op` applied to state `input`."""

    op: str
    input: int


@dataclass(frozen=True)
class CellGenotype:
    """One cell: `nodes[i]` holds the edges summed into intermediate node i."""

    nodes: tuple[tuple[Edge, ...], ...]
    concat: tuple[int, ...]


@dataclass(frozen=True)
class SearchProgress:
    """Where the search that derived a genotype stood: after `epoch` of `epochs` epochs, and
    whether it had finished (its budget done, or converged early).
    """

    epoch: int
    epochs: int
    complete: bool

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form."""
        return {"epoch": self.epoch, "epochs": self.epochs, "complete": self.complete}


@dataclass(frozen=True)
class Genotype:
    """A derived architecture of a cell space; build with `from_dict`, `load`, `parse_notation`.

    `search` (optional, not compared) says how far the search that derived it had come.
    """

    space: str
    normal: CellGenotype
    reduce: CellGenotype
    search: SearchProgress | None = field(default=None, compare=False)

    def cell(self, kind: str) -> CellGenotype:
        """The cell of `kind` ("normal" or "reduce"). Raises ValueError for another kind."""
        if kind not in CELL_KINDS:
            raise ValueError(f"cell kind must be one of {CELL_KINDS}, got {kind!r}")
        return self.normal if kind == "normal" else self.reduce

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON-ready form."""
        cells = {
            kind: {
                "nodes": [
                    [{"op": e.op, "input": e.input} for e in node] for node in self.cell(kind).nodes
                ],
                "concat": list(self.cell(kind).concat),
            }
            for kind in CELL_KINDS
        }
        data = {"format": FORMAT, "version": VERSION, "space": self.space, **cells}
        if self.search is not None:
            data["search"] = self.search.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "genotype") -> Genotype:
        """Validate `data` and build a Genotype. Raises NasError naming the offending field."""
        if not isinstance(data, dict):
            raise NasError(f"{where}: expected a JSON object, got {type(data).__name__}")
        allowed = {"format", "version", "space", "normal", "reduce", "search"}
        extra = sorted(set(data) - allowed)
        if extra:
            raise NasError(
                f"{where}: unexpected field(s) {_names(extra)}; allowed: {sorted(allowed)}"
            )
        if data.get("format") != FORMAT:
            raise NasError(
                f"{where}.format: expected {FORMAT!r}, got {shorten(data.get('format'))}"
            )
        version = data.get("version")
        if type(version) is not int or version != VERSION:
            raise NasError(
                f"{where}.version: unknown version {shorten(version)}; this nasforge reads "
                f"version {VERSION} (a newer file needs a newer nasforge)"
            )
        space_name = data.get("space")
        if not isinstance(space_name, str):
            raise NasError(
                f"{where}.space: expected a search space name, got {shorten(space_name)}"
            )
        try:
            space = get_space(space_name)
        except NasError as err:
            raise NasError(f"{where}.space: {err}") from None
        cells = {
            kind: _cell_from_dict(data.get(kind), space, f"{where}.{kind}") for kind in CELL_KINDS
        }
        inputs = [i for i in cells["reduce"].concat if i < NUM_INPUT_NODES]
        if inputs:
            # A reduction cell's nodes have half the inputs' height and width: no concatenation.
            raise NasError(
                f"{where}.reduce.concat: states {inputs} are the cell inputs, which are twice the "
                "size of a reduction cell's nodes and cannot be concatenated with them"
            )
        search = _search_from_dict(data["search"], f"{where}.search") if "search" in data else None
        return cls(space=space_name, search=search, **cells)

    def to_json(self, indent: int | None = 2) -> str:
        """The JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> None:
        """Write the JSON file (atomically: temp file, then rename)."""
        from nas.io import atomic_write_text

        atomic_write_text(Path(path), self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        """Read and validate a genotype JSON file. Raises NasError for a missing, unreadable or
        bad file."""
        from nas.io import read_json

        data = read_json(Path(path), f"genotype file {shorten(str(path))}")
        return cls.from_dict(data, where=str(path)[:200])

    def to_notation(self) -> str:
        """The published DARTS notation, `Genotype(normal=[('op', input), ...], ...)`."""

        def edges(cell: CellGenotype) -> str:
            return (
                "[" + ", ".join(f"({e.op!r}, {e.input})" for node in cell.nodes for e in node) + "]"
            )

        return (
            f"Genotype(normal={edges(self.normal)}, normal_concat={list(self.normal.concat)}, "
            f"reduce={edges(self.reduce)}, reduce_concat={list(self.reduce.concat)})"
        )


def _search_from_dict(data: Any, where: str) -> SearchProgress:
    fields = {"epoch", "epochs", "complete"}
    valid = (
        isinstance(data, dict)
        and set(data) == fields
        and all(type(data[k]) is int and data[k] >= 1 for k in ("epoch", "epochs"))
        and type(data["complete"]) is bool
        and data["epoch"] <= data["epochs"]
    )
    if not valid:
        shown = repr(data)
        shown = shown if len(shown) <= 100 else shown[:97] + "..."
        raise NasError(
            f'{where}: expected {{"epoch": E, "epochs": N, "complete": true|false}} with '
            f"1 <= E <= N, got {shown}"
        )
    return SearchProgress(data["epoch"], data["epochs"], data["complete"])


def _cell_from_dict(data: Any, space: CellSpace, where: str) -> CellGenotype:
    if not isinstance(data, dict):
        raise NasError(f"{where}: expected an object with 'nodes' and 'concat'")
    extra = sorted(set(data) - {"nodes", "concat"})
    if extra:
        raise NasError(
            f"{where}: unexpected field(s) {_names(extra)}; allowed: ['concat', 'nodes']"
        )
    nodes = data.get("nodes")
    if not isinstance(nodes, list):
        raise NasError(f"{where}.nodes: expected a list of {space.num_nodes} nodes")
    if len(nodes) != space.num_nodes:
        raise NasError(
            f"{where}.nodes: space {space.name!r} has {space.num_nodes} intermediate nodes, "
            f"got {len(nodes)}"
        )
    parsed = []
    for i, node in enumerate(nodes):
        if not isinstance(node, list) or len(node) != space.edges_per_node:
            count = len(node) if isinstance(node, list) else "not a list"
            raise NasError(
                f"{where}.nodes[{i}]: wrong edge count: space {space.name!r} keeps "
                f"{space.edges_per_node} edges per node, got {count}"
            )
        parsed.append(
            tuple(
                _edge_from_dict(e, space, i, f"{where}.nodes[{i}][{k}]") for k, e in enumerate(node)
            )
        )
    concat = _check_concat(data.get("concat"), space, f"{where}.concat")
    return CellGenotype(nodes=tuple(parsed), concat=concat)


def _edge_from_dict(data: Any, space: CellSpace, node: int, where: str) -> Edge:
    if not isinstance(data, dict) or set(data) != {"op", "input"}:
        raise NasError(f'{where}: expected {{"op": name, "input": index}}, got {shorten(data)}')
    op, index = data["op"], data["input"]
    if op == "none":
        raise NasError(f"{where}.op: 'none' (the zero op) cannot be a kept edge; pick another op")
    if not isinstance(op, str) or op not in space.ops:
        choices = ", ".join(o for o in space.ops if o != "none")
        raise NasError(
            f"{where}.op: unknown op {shorten(op)} for space {space.name!r}; choose one of: "
            f"{choices}"
        )
    num_states = NUM_INPUT_NODES + node
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < num_states:
        raise NasError(
            f"{where}.input: input index {shorten(index)} out of range; node {node} reads states "
            f"0..{num_states - 1}"
        )
    return Edge(op, index)


def _check_concat(concat: Any, space: CellSpace, where: str) -> tuple[int, ...]:
    num_states = NUM_INPUT_NODES + space.num_nodes
    if not isinstance(concat, list) or not concat:
        raise NasError(f"{where}: expected a non-empty list of state indices")
    for index in concat:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < num_states:
            raise NasError(
                f"{where}: state index {shorten(index)} out of range 0..{num_states - 1}"
            )
    if len(set(concat)) != len(concat):
        raise NasError(f"{where}: repeated state index in {shorten(concat)}")
    return tuple(concat)


def parse_notation(text: str, space: str = "darts") -> Genotype:
    """Parse the published DARTS notation without evaluating it.

    Accepts `Genotype(normal=[('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5], reduce=[...],
    reduce_concat=range(2, 6))`: keyword arguments only, literals only. Edges are grouped into nodes
    by the space's `edges_per_node`. Raises NasError for anything else.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as err:
        raise NasError(f"genotype notation: not parseable ({err.msg[:120]})") from None
    except (RecursionError, MemoryError):
        raise NasError("genotype notation: nested too deeply to parse") from None
    if not (
        isinstance(tree, ast.Call)
        and isinstance(tree.func, ast.Name)
        and tree.func.id == "Genotype"
    ):
        raise NasError("genotype notation: expected Genotype(normal=..., normal_concat=..., ...)")
    if tree.args:
        raise NasError("genotype notation: use keyword arguments (normal=..., reduce=...)")
    names = [kw.arg for kw in tree.keywords]
    if len(set(names)) != len(names):
        raise NasError(f"genotype notation: a field is given twice in {_names(names)}")
    fields = {kw.arg: kw.value for kw in tree.keywords}
    expected = {"normal", "normal_concat", "reduce", "reduce_concat"}
    if set(fields) != expected:
        raise NasError(
            f"genotype notation: expected fields {sorted(expected)}, got "
            f"{_names(sorted(map(str, fields)))}"
        )
    try:
        cell_space = get_space(space)
    except NasError as err:
        raise NasError(f"genotype notation: {err}") from None
    data: dict[str, Any] = {"format": FORMAT, "version": VERSION, "space": space}
    for kind in CELL_KINDS:
        edges = _literal_edges(fields[kind], kind)
        per = cell_space.edges_per_node
        data[kind] = {
            "nodes": [edges[i : i + per] for i in range(0, len(edges), per)],
            "concat": _literal_concat(fields[f"{kind}_concat"], f"{kind}_concat"),
        }
        if len(edges) != per * cell_space.num_nodes:
            raise NasError(
                f"genotype notation: {kind}: wrong edge count: space {space!r} needs "
                f"{per * cell_space.num_nodes} edges, got {len(edges)}"
            )
    return Genotype.from_dict(data, where="genotype notation")


def _literal_edges(node: ast.expr, name: str) -> list[dict[str, Any]]:
    if not isinstance(node, ast.List | ast.Tuple):
        raise NasError(f"genotype notation: {name} must be a list of (op, input) pairs")
    edges = []
    for item in node.elts:
        ok = (
            isinstance(item, ast.Tuple)
            and len(item.elts) == 2
            and isinstance(item.elts[0], ast.Constant)
            and isinstance(item.elts[0].value, str)
            and isinstance(item.elts[1], ast.Constant)
            and type(item.elts[1].value) is int
        )
        if not ok:
            raise NasError(
                f"genotype notation: {name}: expected ('op', input) pairs, got "
                f"{clip(ast.unparse(item))}"
            )
        edges.append({"op": item.elts[0].value, "input": item.elts[1].value})
    return edges


def _literal_concat(node: ast.expr, name: str) -> list[int]:
    def const_int(n: ast.expr) -> int:
        if isinstance(n, ast.Constant) and type(n.value) is int:
            return n.value
        raise NasError(f"genotype notation: {name}: expected integers, got {clip(ast.unparse(n))}")

    if isinstance(node, ast.List | ast.Tuple):
        return [const_int(n) for n in node.elts]
    is_range = (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
    )
    if is_range and not node.keywords and len(node.args) in (1, 2):
        bounds = [const_int(n) for n in node.args]
        if bounds[-1] - (bounds[0] if len(bounds) == 2 else 0) > MAX_CONCAT:
            raise NasError(
                f"genotype notation: {name}: {clip(ast.unparse(node))} spans more states than "
                "a cell has"
            )
        return list(range(*bounds))
    raise NasError(f"genotype notation: {name} must be a list of integers or range(a, b)")


def _names(names: list[Any]) -> str:
    """A list of names a user wrote, each shortened."""
    return "[" + ", ".join(shorten(name) for name in names[:10]) + (", ...]" if names[10:] else "]")


def derive_cell(
    space: CellSpace, weights: torch.Tensor, max_skips: int | None = None
) -> CellGenotype:
    """The DARTS rule (Liu et al. 2019, Sec. 2.4) on one cell's op weights (num_edges x num_ops).

    For each intermediate node keep the `edges_per_node` incoming edges whose strongest non-`none`
    op weighs most, and on each kept edge the strongest non-`none` op. Ties go to the lower index.

    With `max_skips` (P-DARTS, Chen et al. 2019, Sec. 3.3), while the cell has more skip
    connections than that, the weakest kept skip connection is struck out and the cell derived
    again: its edge takes its next-best op, or its node another edge.
    """
    if tuple(weights.shape) != (space.num_edges, len(space.ops)):
        raise ValueError(f"weights of shape {tuple(weights.shape)} do not fit space {space.name!r}")
    candidates = [k for k, op in enumerate(space.ops) if op != "none"]
    strengths = weights.detach().double().cpu()[:, candidates].clone()
    skip = candidates.index(space.ops.index(SKIP_CONNECT)) if SKIP_CONNECT in space.ops else None
    while True:
        cell = _derive_cell(space, strengths, candidates)
        if max_skips is None or skip is None:
            return cell
        skip_edges = [
            space.edge_index(node, edge.input)
            for node, edges in enumerate(cell.nodes)
            for edge in edges
            if edge.op == SKIP_CONNECT
        ]
        # An edge with no other op left keeps its struck skip connection.
        strikable = [e for e in skip_edges if strengths[e, skip] > -math.inf]
        if len(skip_edges) <= max_skips or not strikable:
            return cell
        weakest = min(strikable, key=lambda e: strengths[e, skip].item())  # ties: first edge
        strengths[weakest, skip] = -math.inf


def _derive_cell(space: CellSpace, strengths: torch.Tensor, candidates: list[int]) -> CellGenotype:
    """`derive_cell` on the strengths of the non-`none` ops (`candidates`)."""
    nodes = []
    for node in range(space.num_nodes):
        sources = range(NUM_INPUT_NODES + node)
        best = {j: strengths[space.edge_index(node, j)].max().item() for j in sources}
        # Stable sort: ties go to the lower input index.
        kept = sorted(sources, key=lambda j: -best[j])[: space.edges_per_node]
        edges = []
        for j in kept:
            k = candidates[int(strengths[space.edge_index(node, j)].argmax())]
            edges.append(Edge(space.ops[k], j))
        nodes.append(tuple(edges))
    return CellGenotype(nodes=tuple(nodes), concat=space.concat)


def derive_genotype(
    space: CellSpace, weights: Sequence[torch.Tensor], max_skips: int | None = None
) -> Genotype:
    """Genotype from the (normal, reduce) op-weight matrices, by `derive_cell`; `max_skips` caps
    the normal cell's skip connections (P-DARTS caps the normal cell only)."""
    normal, reduce = weights
    return Genotype(space.name, derive_cell(space, normal, max_skips), derive_cell(space, reduce))


def load_genotype(name_or_path: str) -> Genotype:
    """A published genotype by name, the DARTS notation `Genotype(normal=[...], ...)`, a genotype
    JSON file, or a run directory's genotype.json.

    Raises NasError when it is none of these or the file is invalid.
    """
    from nas.published import PUBLISHED_GENOTYPES  # published cells are data in this format

    if name_or_path in PUBLISHED_GENOTYPES:
        return PUBLISHED_GENOTYPES[name_or_path]
    if name_or_path.lstrip().startswith("Genotype("):
        return parse_notation(name_or_path)
    path = Path(name_or_path)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as err:  # a name too long for the file system
        raise NasError(
            f"genotype {shorten(name_or_path)} cannot be a file ({err.strerror}); give a "
            f"published name ({', '.join(PUBLISHED_GENOTYPES)}), a genotype.json or the "
            "notation Genotype(normal=[...], ...)"
        ) from None
    if is_dir:
        path = path / "genotype.json"
        if not path.exists():
            raise NasError(f"{shorten(name_or_path)} is a directory without a genotype.json")
    elif not is_file:
        names = ", ".join(PUBLISHED_GENOTYPES)
        raise NasError(
            f"genotype {shorten(name_or_path)} is neither a published name ({names}) nor an "
            "existing file; pass a genotype.json written by nas search, or its run directory"
        )
    return Genotype.load(path)


def unfinished_note(genotype: Genotype) -> str | None:
    """A one-line note when `genotype` comes from a search that had not finished; else None."""
    progress = genotype.search
    if progress is None or progress.complete:
        return None
    return (
        f"note: this genotype comes from an unfinished search, epoch {progress.epoch} of "
        f"{progress.epochs}; its architecture may still have changed"
    )
