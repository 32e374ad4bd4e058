"""Pictures of genotype cells (matplotlib, optional) and the text `nas show` prints.

A cell's states are numbered as the genotype notation and `concat` number them: states 0 and 1 are
the cell's inputs c[k-2] and c[k-1] (the outputs of the two previous cells), states 2.. its
intermediate nodes; c[k], the cell's output, concatenates the states in `concat`.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import NasError
from nas.genotype import CELL_KINDS, CellGenotype, Genotype
from nas.optional import optional_import
from nas.spaces import NUM_INPUT_NODES

_warned = False

# The cell's inputs as the DARTS paper names them.
INPUT_NAMES = ("c[k-2]", "c[k-1]")

# Arc diagram geometry, in data units (one unit between neighbouring states, drawn at _UNIT_INCHES).
# An op edge from state s to state t is an arc above the line whose apex, where its label sits, is
# at x = (s + t) / 2 and height _RISE * (t - s): no two edges share an apex, labels of edges of the
# same span are at least one unit apart, and labels of different spans _RISE apart in height.
_RISE = 0.42
_DROP = 0.22  # the grey concat arcs below the line, unlabelled
_RADIUS = 0.25
_UNIT_INCHES = 1.3
_DPI = 100
_FONT = 10  # points: 14 px at _DPI


def state_legend(num_nodes: int) -> str:
    """One line that explains the numbering of a cell's states."""
    last = NUM_INPUT_NODES + num_nodes - 1
    nodes = f"{NUM_INPUT_NODES}..{last}" if num_nodes > 1 else str(last)
    return (
        f"states 0, 1: the cell's inputs {INPUT_NAMES[0]}, {INPUT_NAMES[1]}; "
        f"{nodes}: its intermediate nodes; c[k]: its output, which concatenates the states in "
        "concat"
    )


def _extent(genotype: Genotype) -> tuple[float, float]:
    """(bottom, top) of both cells' drawings: the widest concat arc below the states (and the
    input names), the widest op edge's label above."""
    cells = [genotype.cell(kind) for kind in CELL_KINDS]
    op_span = max(
        NUM_INPUT_NODES + node - edge.input
        for cell in cells
        for node, edges in enumerate(cell.nodes)
        for edge in edges
    )
    output = NUM_INPUT_NODES + len(genotype.normal.nodes)
    concat_span = max(output - state for cell in cells for state in cell.concat)
    return -max(_DROP * concat_span, _RADIUS + 0.3) - 0.1, _RISE * op_span + 0.25


def _draw_cell(ax: object, cell: CellGenotype, title: str, extent: tuple[float, float]) -> None:
    from matplotlib.patches import Circle, FancyArrowPatch

    output = NUM_INPUT_NODES + len(cell.nodes)
    for state in range(output + 1):
        color = "#9ecae1" if state < NUM_INPUT_NODES else "#c7e9c0"
        ax.add_patch(Circle((state, 0), _RADIUS, color="#fdd0a2" if state == output else color))
        name = "c[k]" if state == output else str(state)
        ax.text(state, 0, name, ha="center", va="center", fontsize=_FONT, zorder=4)
    for state, name in enumerate(INPUT_NAMES):
        ax.text(state, -_RADIUS - 0.08, name, ha="center", va="top", fontsize=_FONT - 1)
    labels: dict[tuple[int, int], list[str]] = {}
    for node, edges in enumerate(cell.nodes):
        for edge in edges:
            labels.setdefault((edge.input, NUM_INPUT_NODES + node), []).append(edge.op)
    arcs = [(pair, _RISE, "#333333") for pair in labels]
    arcs += [((state, output), -_DROP, "#bbbbbb") for state in cell.concat]
    for (source, target), rise, color in arcs:
        # arc3 bends by `rad` times the chord, in display units; equal aspect keeps it in data
        # units too, and a quadratic Bezier's apex is half its control point's height.
        ax.add_patch(
            FancyArrowPatch(
                (source, 0),
                (target, 0),
                connectionstyle=f"arc3,rad={-2 * rise}",
                arrowstyle="-|>",
                mutation_scale=14,
                color=color,
                # end at the circles; shrinking by points is far cheaper than clipping to them
                shrinkA=_RADIUS * _UNIT_INCHES * 72,
                shrinkB=_RADIUS * _UNIT_INCHES * 72,
                zorder=2,
            )
        )
    for (source, target), ops in labels.items():
        ax.text(
            (source + target) / 2,
            _RISE * (target - source),
            "\n".join(ops),
            ha="center",
            va="center",
            fontsize=_FONT,
            zorder=3,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.9, "pad": 1.5},
        )
    ax.set_xlim(-1.1, output + 1.1)
    ax.set_ylim(*extent)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=_FONT + 2)
    ax.axis("off")


def genotype_figure(genotype: Genotype) -> object:
    """A matplotlib Figure (Agg canvas, no pyplot state): the normal cell above the reduction
    cell, each as an arc diagram of its states, and the numbering's legend.

    Raises NasError without matplotlib.
    """
    optional_import("matplotlib", "drawing a genotype")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    num_nodes = len(genotype.normal.nodes)
    bottom, top = extent = _extent(genotype)
    # Inches; a fixed layout, as matplotlib's automatic ones take a second or more to compute.
    cell_width = _UNIT_INCHES * (NUM_INPUT_NODES + num_nodes + 2.2)
    cell_height, title, legend = _UNIT_INCHES * (top - bottom), 0.4, 0.6
    width, height = cell_width, 2 * (title + cell_height) + legend
    figure = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(figure)
    for index, kind in enumerate(CELL_KINDS):
        y = 1 - (index + 1) * (title + cell_height) / height
        ax = figure.add_axes((0, y, 1, cell_height / height))
        _draw_cell(ax, genotype.cell(kind), f"{kind} cell", extent)
    figure.text(
        0.5,
        0.15 / height,
        textwrap.fill(state_legend(num_nodes), 70),
        ha="center",
        va="bottom",
        fontsize=_FONT - 1,
        color="#444444",
    )
    return figure


def genotype_picture(genotype: Genotype) -> np.ndarray | None:
    """The cells as an RGB array (HWC, uint8), or None (with one warning) without matplotlib."""
    figure = figure_or_none(lambda: genotype_figure(genotype), "the genotype as text only")
    return None if figure is None else figure_pixels(figure)


def figure_or_none(make_figure: Callable[[], Any], instead: str) -> Any | None:
    """`make_figure()`, or None without matplotlib, with one warning per process that TensorBoard
    gets `instead`."""
    global _warned
    try:
        return make_figure()
    except NasError as err:
        if not _warned:
            warnings.warn(f"{err}; TensorBoard gets {instead}", stacklevel=3)
            _warned = True
        return None


def figure_pixels(figure: Any) -> np.ndarray:
    """A Figure with an Agg canvas rendered to an RGB array (HWC, uint8)."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def describe_genotype(genotype: Genotype) -> str:
    """A text summary: each node's inputs and ops, the concat, and the CIFAR network's size."""
    lines = [f"genotype (space {genotype.space}): {genotype.to_notation()}"]
    lines.append(state_legend(len(genotype.normal.nodes)))
    for kind in CELL_KINDS:
        cell = genotype.cell(kind)
        lines.append(f"{kind} cell:")
        for node, edges in enumerate(cell.nodes):
            terms = " + ".join(f"{edge.op}({edge.input})" for edge in edges)
            lines.append(f"  state {NUM_INPUT_NODES + node} = {terms}")
        lines.append(f"  c[k] = concat({', '.join(str(state) for state in cell.concat)})")
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
    try:
        save_png(figure_pixels(genotype_figure(genotype)), path)
    except OSError as err:
        raise NasError(f"--out {path}: cannot write the drawing ({err})") from None


def save_png(pixels: np.ndarray, path: Path) -> None:
    """Write a rendered picture (`figure_pixels`) to a PNG file atomically, marked as nasforge's
    drawing. Needs matplotlib."""
    from matplotlib.image import imsave

    from nas.io import atomic_write

    atomic_write(path, lambda f: imsave(f, pixels, format="png", metadata={"Software": _SOFTWARE}))


# The PNG text chunk that marks a drawing as nasforge's, so a later `nas show --out` may replace it.
_SOFTWARE = "nasforge"


def _drawn_by_nasforge(path: Path) -> bool:
    """True when `path` is a PNG whose Software text chunk is nasforge's."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return data.startswith(b"\x89PNG") and b"tEXtSoftware\x00" + _SOFTWARE.encode() in data
