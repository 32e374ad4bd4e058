"""Pictures of genotype cells (networkx layout, matplotlib rendering; matplotlib is optional)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from nas.errors import NasError
from nas.genotype import CELL_KINDS, CellGenotype, Genotype
from nas.optional import optional_import
from nas.spaces import NUM_INPUT_NODES

_warned = False


def _state_name(index: int) -> str:
    return ("c[k-2]", "c[k-1]")[index] if index < NUM_INPUT_NODES else str(index - NUM_INPUT_NODES)


def _draw_cell(ax: object, cell: CellGenotype, title: str) -> None:
    import networkx as nx

    graph = nx.DiGraph()
    labels = {}
    for node, edges in enumerate(cell.nodes):
        target = NUM_INPUT_NODES + node
        for edge in edges:
            graph.add_edge(edge.input, target)
            labels[(edge.input, target)] = edge.op
    output = NUM_INPUT_NODES + len(cell.nodes)
    for index in cell.concat:
        graph.add_edge(index, output)
    # States in index order on a half ellipse: an edge is a chord of a convex curve, so it never
    # passes through another node.
    order = sorted(graph.nodes)
    positions = {
        index: (
            -math.cos(math.pi * k / (len(order) - 1)),
            0.8 * math.sin(math.pi * k / (len(order) - 1)),
        )
        for k, index in enumerate(order)
    }
    names = {i: _state_name(i) for i in graph.nodes}
    names[output] = "c[k]"
    colors = [
        "#9ecae1" if i < NUM_INPUT_NODES else "#fdd0a2" if i == output else "#c7e9c0" for i in graph
    ]
    op_edges = list(labels)
    concat_edges = [(index, output) for index in cell.concat]
    nx.draw_networkx_nodes(graph, positions, ax=ax, node_color=colors, node_size=800)
    nx.draw_networkx_labels(graph, positions, labels=names, ax=ax, font_size=8)
    for edges, color in ((op_edges, "#333333"), (concat_edges, "#bbbbbb")):
        nx.draw_networkx_edges(
            graph, positions, edgelist=edges, ax=ax, arrowsize=10, edge_color=color, node_size=800
        )
    nx.draw_networkx_edge_labels(
        graph,
        positions,
        edge_labels=labels,
        ax=ax,
        font_size=7,
        label_pos=0.4,
        bbox={"alpha": 0.85, "color": "white", "pad": 0.1},
    )
    ax.set_title(title)
    ax.axis("off")


def genotype_figure(genotype: Genotype) -> object:
    """A matplotlib Figure (Agg canvas, no pyplot state) with the normal and the reduction cell.

    Raises NasError without matplotlib.
    """
    optional_import("matplotlib", "drawing a genotype")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.5), dpi=80)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    for ax, kind in zip(axes, CELL_KINDS):
        _draw_cell(ax, genotype.cell(kind), f"{kind} cell")
    figure.tight_layout()
    return figure


def genotype_picture(genotype: Genotype) -> np.ndarray | None:
    """The cells as an RGB array (HWC, uint8), or None (with one warning) without matplotlib."""
    global _warned
    try:
        figure = genotype_figure(genotype)
    except NasError as err:
        if not _warned:
            warnings.warn(f"{err}; TensorBoard gets the genotype as text only", stacklevel=2)
            _warned = True
        return None
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def describe_genotype(genotype: Genotype) -> str:
    """A text summary: each node's inputs and ops, the concat, and the CIFAR network's size."""
    lines = [f"genotype (space {genotype.space}): {genotype.to_notation()}"]
    for kind in CELL_KINDS:
        cell = genotype.cell(kind)
        lines.append(f"{kind} cell:")
        for node, edges in enumerate(cell.nodes):
            terms = " + ".join(f"{e.op}({_state_name(e.input)})" for e in edges)
            lines.append(f"  node {node} = {terms}")
        lines.append(f"  output = concat({', '.join(_state_name(i) for i in cell.concat)})")
    from nas.config import NETWORK_DEFAULTS
    from nas.models import CifarNetwork, count_parameters

    layers, channels, _ = NETWORK_DEFAULTS["cifar"]
    params = count_parameters(CifarNetwork(genotype, 3, 10, channels, layers))
    lines.append(
        f"CIFAR network ({layers} cells, C={channels}, 10 classes): {params / 1e6:.2f}M parameters"
    )
    return "\n".join(lines)


def save_genotype_png(genotype: Genotype, path: Path) -> None:
    """Draw both cells into a PNG file. Raises NasError without matplotlib or a writable path."""
    if path.suffix.lower() != ".png":
        raise NasError(f"--out {path}: the drawing is a PNG; name the file *.png")
    if path.is_dir() or (path.exists() and not _drawn_by_nasforge(path)):
        raise NasError(
            f"--out {path} already exists and is not a drawing nasforge made; nasforge does not "
            "replace it: choose another file name"
        )
    figure = genotype_figure(genotype)
    from nas.io import atomic_write

    try:
        atomic_write(
            path, lambda f: figure.savefig(f, format="png", metadata={"Software": _SOFTWARE})
        )
    except OSError as err:
        raise NasError(f"--out {path}: cannot write the drawing ({err})") from None


# The PNG text chunk that marks a drawing as nasforge's, so a later `nas show --out` may replace it.
_SOFTWARE = "nasforge"


def _drawn_by_nasforge(path: Path) -> bool:
    """True when `path` is a PNG whose Software text chunk is nasforge's."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return data.startswith(b"\x89PNG") and b"tEXtSoftware\x00" + _SOFTWARE.encode() in data
