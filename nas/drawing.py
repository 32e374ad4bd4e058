"""Pictures of genotype cells (networkx layout, matplotlib rendering; matplotlib is optional)."""

from __future__ import annotations

import warnings

import numpy as np

from nas.genotype import CELL_KINDS, CellGenotype, Genotype
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
    # Layered left-to-right layout: a node sits one column after its deepest input.
    depth = {0: 0, 1: 0}
    for node, edges in enumerate(cell.nodes):
        depth[NUM_INPUT_NODES + node] = 1 + max(depth[e.input] for e in edges)
    depth[output] = 1 + max(depth[i] for i in cell.concat)
    for index, layer in depth.items():
        graph.nodes[index]["layer"] = layer
    positions = nx.multipartite_layout(graph, subset_key="layer")
    names = {i: _state_name(i) for i in graph.nodes}
    names[output] = "c[k]"
    colors = [
        "#9ecae1" if i < NUM_INPUT_NODES else "#fdd0a2" if i == output else "#c7e9c0" for i in graph
    ]
    nx.draw_networkx(
        graph,
        positions,
        ax=ax,
        labels=names,
        node_color=colors,
        node_size=900,
        font_size=8,
        arrowsize=12,
    )
    nx.draw_networkx_edge_labels(graph, positions, edge_labels=labels, ax=ax, font_size=7)
    ax.set_title(title)
    ax.axis("off")


def genotype_figure(genotype: Genotype) -> object:
    """A matplotlib Figure (Agg canvas, no pyplot state) with the normal and the reduction cell.

    Raises ImportError without matplotlib.
    """
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
        import matplotlib  # noqa: F401
    except ImportError:
        if not _warned:
            warnings.warn(
                "matplotlib is not installed, so TensorBoard gets the genotype as text only; "
                "pip install 'nasforge[plot]' for pictures",
                stacklevel=2,
            )
            _warned = True
        return None
    figure = genotype_figure(genotype)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
