"""What a search shows of its op weights: TensorBoard tags and the custom-scalars layout, one
`op_weights.jsonl` row per epoch, and a heat map of every edge's op weights over the epochs.

An edge is named by the states it joins, numbered as in the genotype notation
(`nas.drawing.state_legend`): "2 <- 0" feeds state 2, the first intermediate node, from state 0,
the cell input c[k-2].
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from nas.drawing import state_legend
from nas.genotype import CELL_KINDS
from nas.logging import metric_tag
from nas.optional import optional_import
from nas.spaces import NUM_INPUT_NODES, CellSpace

# One row per epoch: {"epoch": e, "normal": [[weight per op] per edge], "reduce": ...}, edges in
# the space's order (`cell_edges`), ops in the space's order, null for an op already pruned.
OP_WEIGHTS_LOG = "op_weights.jsonl"

# The collapse diagnostics of the epoch record (nas/collapse.py), grouped into charts.
DIAGNOSTIC_CHARTS = {
    "parameter-free ops in the derived cells": ("param_free_normal", "param_free_reduce"),
    "skip connections in the derived cells": ("skips_normal", "skips_reduce"),
    "entropy of the op weights": ("entropy_normal", "entropy_reduce"),
    "dominant Hessian eigenvalue (validation loss, alphas)": ("hessian_eigenvalue",),
}
_LEARNING_CHARTS = {"loss": ("train_loss", "val_loss"), "accuracy": ("train_acc", "val_acc")}

_DPI = 100
_FONT = 10  # points: 14 px at _DPI


def cell_edges(space: CellSpace) -> list[tuple[int, int]]:
    """(state fed, state read) of each supernet edge, in the order of `space.edge_index`."""
    edges = [
        (NUM_INPUT_NODES + node, source)
        for node in range(space.num_nodes)
        for source in range(NUM_INPUT_NODES + node)
    ]
    return sorted(edges, key=lambda edge: space.edge_index(edge[0] - NUM_INPUT_NODES, edge[1]))


def alpha_tag(kind: str, target: int, source: int) -> str:
    """The TensorBoard tag of the op weights on the edge from state `source` to state `target`;
    each op is its own series (`RunLogger.scalar`), named by the op."""
    return f"alphas_{kind}/state{target}_from{source}"


def op_weights_row(
    epoch: int, weights: Sequence[torch.Tensor], pruned: Sequence[torch.Tensor]
) -> dict[str, Any]:
    """The `op_weights.jsonl` row of one epoch from the (normal, reduce) op weights and pruned
    masks (-1 where an op is alive), as `SearchNetwork.op_weights()` and `pruned_masks()` give."""
    row: dict[str, Any] = {"epoch": epoch}
    for kind, kind_weights, kind_pruned in zip(CELL_KINDS, weights, pruned):
        row[kind] = [
            [weight if live else None for weight, live in zip(edge, alive)]
            for edge, alive in zip(kind_weights.tolist(), (kind_pruned < 0).tolist())
        ]
    return row


def scalar_layout(space: CellSpace, metric_keys: Iterable[str]) -> dict[str, dict[str, list[str]]]:
    """The custom-scalars layout of a search (see `RunLogger.layout`): losses and accuracies, the
    collapse diagnostics among `metric_keys` (the epoch record's keys), and per cell kind one chart
    per edge with the curves of all its ops. A chart lists tags; each tag's series (train and val,
    normal and reduce, the ops) are its curves."""
    keys = set(metric_keys)
    layout = {}
    for category, charts in (("search", _LEARNING_CHARTS), ("collapse", DIAGNOSTIC_CHARTS)):
        tags = {
            title: list(dict.fromkeys(metric_tag(key)[0] for key in chart_keys if key in keys))
            for title, chart_keys in charts.items()
        }
        if any(tags.values()):
            layout[category] = {title: chart for title, chart in tags.items() if chart}
    for kind in CELL_KINDS:
        layout[f"op weights, {kind} cell"] = {
            f"{kind}: state {target} <- state {source}": [alpha_tag(kind, target, source)]
            for target, source in cell_edges(space)
        }
    return layout


def op_weight_history(rows: Sequence[dict[str, Any]], kind: str) -> np.ndarray:
    """The op weights of `kind` in `op_weights.jsonl` rows as an (edges, ops, epochs) array, NaN
    where an op was pruned."""
    weights = [
        [[np.nan if weight is None else weight for weight in edge] for edge in row[kind]]
        for row in rows
    ]
    return np.asarray(weights, dtype=float).transpose(1, 2, 0)


def op_weights_figure(space: CellSpace, kind: str, rows: Sequence[dict[str, Any]]) -> Any:
    """A matplotlib Figure (Agg canvas) of the op weights of `kind` over the epochs of `rows`:
    one heat map per edge (ops x epochs), laid out by the state fed (rows) and the state read
    (columns), on one colour scale. Raises NasError without matplotlib."""
    optional_import("matplotlib", "drawing the op weights")
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    history = op_weight_history(rows, kind)
    epochs = [row["epoch"] for row in rows]
    num_ops, num_sources = len(space.ops), NUM_INPUT_NODES + space.num_nodes - 1
    # All panels share one axes in inches from the top left: an axes per panel would take
    # seconds to draw (tick layout), which every epoch of every search would pay.
    left, panel_width, gap, right = 1.25, 1.3, 0.15, 1.1
    top, panel_height, row_gap, bottom = 0.7, 0.2 * num_ops, 0.4, 1.0  # 20 px per op label
    width = left + num_sources * (panel_width + gap) - gap + right
    height = top + space.num_nodes * (panel_height + row_gap) - row_gap + bottom
    figure = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    # One scale for every panel, white at the uniform weight a search starts from: red ops gain,
    # blue ones lose, before the differences are large.
    uniform = 1 / num_ops
    peak = np.nanmax(history) if np.isfinite(history).any() else 1.0
    norm = TwoSlopeNorm(uniform, vmin=0.0, vmax=max(peak, 2 * uniform))
    colors = colormaps["RdBu_r"].with_extremes(bad="#888888")  # grey: pruned
    text = {"fontsize": _FONT - 1}
    for edge, (target, source) in enumerate(cell_edges(space)):
        row = target - NUM_INPUT_NODES
        x, y = left + source * (panel_width + gap), top + row * (panel_height + row_gap)
        extent = (x, x + panel_width, y + panel_height, y)
        ax.imshow(
            history[edge],
            extent=extent,
            aspect="auto",
            interpolation="nearest",
            cmap=colors,
            norm=norm,
        )
        ax.text(x + panel_width / 2, y - 0.05, f"{target} <- {source}", ha="center", fontsize=_FONT)
        if source == 0:
            for index, op in enumerate(space.ops):
                middle = y + (index + 0.5) * panel_height / num_ops
                ax.text(x - 0.06, middle, op, ha="right", va="center", **text)
        if row == space.num_nodes - 1:
            below = y + panel_height + 0.05
            ax.text(x, below, str(epochs[0]), ha="left", va="top", **text)
            ax.text(x + panel_width, below, str(epochs[-1]), ha="right", va="top", **text)
            ax.text(x + panel_width / 2, below, "epoch", ha="center", va="top", **text)
    # The colour scale, drawn in the same axes: a colorbar's own axes would double the time.
    x, y_top, y_bottom = width - right + 0.2, top, height - bottom
    shares = np.linspace(1.0, 0.0, 256)  # positions along the bar, top to bottom
    ax.imshow(
        norm.inverse(shares)[:, None],
        extent=(x, x + 0.15, y_bottom, y_top),
        aspect="auto",
        cmap=colors,
        norm=norm,
    )
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        value = float(norm.inverse(share))
        ax.text(x + 0.2, y_bottom - share * (y_bottom - y_top), f"{value:.3g}", va="center", **text)
    ax.text(
        x + 0.65,
        (y_top + y_bottom) / 2,
        f"op weight (white: 1/{num_ops}, uniform)",
        rotation=90,
        ha="center",
        va="center",
        fontsize=_FONT,
    )
    ax.text(
        width / 2,
        0.15,
        f"{kind} cell: op weights on each edge (state fed <- state read), epochs "
        f"{epochs[0]}..{epochs[-1]}",
        ha="center",
        va="top",
        fontsize=_FONT + 2,
    )
    legend = state_legend(space.num_nodes) + "; grey: an op pruned"
    ax.text(
        width / 2,
        height - 0.1,
        textwrap.fill(legend, int(width * 10)),
        ha="center",
        va="bottom",
        color="#444444",
        **text,
    )
    return figure
