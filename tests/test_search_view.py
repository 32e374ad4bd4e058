"""What a search shows of its op weights: tags, the custom-scalars layout, op_weights.jsonl and
its heat map, across a resume."""

import math
import re
import sys
import warnings
from functools import partial

import numpy as np
import pytest
import torch

from nas.cli import main
from nas.genotype import CELL_KINDS
from nas.logging import RunLogger
from nas.runtime.engine import FAULT_ENV, FAULT_KIND_ENV
from nas.search_view import (
    DIAGNOSTIC_CHARTS,
    OP_WEIGHTS_LOG,
    cell_edges,
    op_weight_history,
    op_weights_figure,
    op_weights_row,
    scalar_layout,
)
from nas.spaces import get_space
from tests.conftest import jsonl_rows, tensorboard_runs

TINY = get_space("tiny")  # 2 nodes: edges 2 <- 0, 2 <- 1, 3 <- 0, 3 <- 1, 3 <- 2; 4 ops
SEARCH = ["search", "--space", "tiny", "--layers", "3", "--channels", "4", "--batch-size", "8"]
SEARCH += ["--dataset", "synthetic", "--set", "data.synthetic_samples=32"]
SEARCH += ["--set", "data.synthetic_image_size=8", "--epochs", "2"]


def _rows(epochs: int) -> list[dict]:
    """op_weights.jsonl rows with distinct weights; op 1 of edge 3 <- 1 (normal) pruned at 2."""
    rows = []
    for epoch in range(1, epochs + 1):
        weights = [
            torch.arange(TINY.num_edges * 4, dtype=torch.float).reshape(-1, 4) / 100 + epoch + k
            for k in range(2)
        ]
        pruned = [torch.full((TINY.num_edges, 4), -1) for _ in range(2)]
        if epoch >= 2:
            pruned[0][3, 1] = 2
        rows.append(op_weights_row(epoch, weights, pruned))
    return rows


def test_edges_are_named_by_the_states_they_join() -> None:
    assert cell_edges(TINY) == [(2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    assert len(cell_edges(get_space("darts"))) == 14


def test_op_weight_history_holds_each_weight_and_nan_where_pruned() -> None:
    rows = _rows(3)
    first, pruned, *rest = rows[1]["normal"][3]  # edge 3 <- 1 at epoch 2
    assert pruned is None and [first, *rest] == pytest.approx([2.12, 2.14, 2.15])
    history = op_weight_history(rows, "normal")
    assert history.shape == (5, 4, 3)  # edges, ops, epochs
    assert history[3, 0, 2] == pytest.approx(3 + 0.12)
    assert math.isnan(history[3, 1, 1]) and history[3, 1, 0] == pytest.approx(1.13)
    assert op_weight_history(rows, "reduce")[4, 3, 0] == pytest.approx(1 + 1 + 0.19)


def test_heat_map_draws_every_edge_on_one_colour_scale() -> None:
    pytest.importorskip("matplotlib")
    rows = _rows(3)
    figure = op_weights_figure(TINY, "normal", rows)
    ax = figure.axes[0]
    assert len(ax.images) == TINY.num_edges + 1  # the panels, then the colour scale
    titles = [text.get_text() for text in ax.texts]
    assert [title for title in titles if "<-" in title and "cell" not in title] == [
        "2 <- 0",
        "2 <- 1",
        "3 <- 0",
        "3 <- 1",
        "3 <- 2",
    ]
    assert set(TINY.ops) <= set(titles) and "states 0, 1" in titles[-1]
    panel = ax.images[3].get_array()  # edge 3 <- 1: ops x epochs
    assert panel.shape == (4, 3) and panel[2, 1] == pytest.approx(2 + 0.14)
    assert np.ma.is_masked(panel[1, 2])  # pruned
    assert len({id(image.norm) for image in ax.images}) == 1  # one colour scale
    assert ax.images[-1].get_array().max() == pytest.approx(
        np.nanmax(op_weight_history(rows, "normal"))
    )
    pixels = figure.canvas.draw() or np.asarray(figure.canvas.buffer_rgba())
    assert pixels.shape[0] > 200 and pixels.shape[1] > 400


def test_resume_rewinds_op_weight_rows_of_epochs_it_redoes(tmp_path) -> None:
    logger = RunLogger(tmp_path)
    for row in _rows(3):
        logger.append_jsonl(OP_WEIGHTS_LOG, row)
    RunLogger(tmp_path).rewind(1)  # a resume from the checkpoint of epoch 1
    assert [row["epoch"] for row in logger.read_jsonl(OP_WEIGHTS_LOG)] == [1]


def test_heat_map_without_matplotlib_is_left_out_quietly(monkeypatch) -> None:
    from nas import drawing

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(drawing, "_warned", True)  # the genotype picture warned already
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        draw = partial(op_weights_figure, TINY, "normal", _rows(1))
        assert drawing.figure_or_none(draw, "the op weights as scalars") is None


def test_layout_charts_the_record_keys_it_finds() -> None:
    layout = scalar_layout(TINY, ["epoch", "train_loss", "val_loss", "param_free_normal"])
    assert layout["search"] == {"loss": ["loss"]}  # series train and val
    assert layout["collapse"] == {"parameter-free ops in the derived cells": ["run/param_free"]}
    assert list(layout["op weights, normal cell"])[3] == "normal: state 3 <- state 1"
    assert "collapse" not in scalar_layout(TINY, ["train_loss"])


def _events(run):
    """The TensorBoard runs of `run`, the custom-scalars charts {(category, title): tag regexes},
    and how many layouts were written."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    runs = tensorboard_runs(run / "tb", tensors=0)
    layouts = runs[""].Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(layouts[-1].tensor_proto.string_val[0])
    charts = {
        (category.title, chart.title): list(chart.multiline.tag)
        for category in layout.category
        for chart in category.chart
    }
    return runs, charts, len(layouts)


def _curves(runs, regexes: list[str]) -> set[tuple[str, str]]:
    """The (series, tag) curves a chart shows: TensorBoard draws every run's tags that one of its
    regexes `re.match`es."""
    return {
        (series, tag)
        for series, events in runs.items()
        for tag in events.Tags()["scalars"]
        if any(re.match(regex, tag) for regex in regexes)
    }


def test_layout_names_exactly_the_diagnostic_tags_log_metrics_writes(tmp_path) -> None:
    logger = RunLogger(tmp_path)
    keys = [key for chart in DIAGNOSTIC_CHARTS.values() for key in chart]
    for epoch in (1, 2):
        record = {"epoch": epoch, "train_loss": 1.0, **{key: 0.5 * epoch for key in keys}}
        logger.log_metrics(record)
        logger.layout(scalar_layout(TINY, record))
    logger.close()
    runs, charts, written = _events(tmp_path)
    assert written == 1  # the same layout is not written twice
    for title, chart_keys in DIAGNOSTIC_CHARTS.items():
        shown = _curves(runs, charts[("collapse", title)])
        expected = {(key.rsplit("_", 1)[1], f"run/{key.rsplit('_', 1)[0]}") for key in chart_keys}
        if chart_keys == ("hessian_eigenvalue",):
            expected = {("", "run/hessian_eigenvalue")}
        assert shown == expected, title
    assert len(runs["normal"].Scalars("run/param_free")) == 2
    assert {("train", "loss")} == _curves(runs, charts[("search", "loss")])


@pytest.mark.slow
def test_search_charts_op_weights_and_keeps_their_history_across_a_resume(
    tmp_path, monkeypatch
) -> None:
    pytest.importorskip("matplotlib")
    import nas.search_task

    drawn = []  # the epochs each heat map is drawn from

    def spy(space, kind, rows):
        drawn.append([row["epoch"] for row in rows])
        return op_weights_figure(space, kind, rows)

    monkeypatch.setattr(nas.search_task, "op_weights_figure", spy)
    run = tmp_path / "run"
    # 1 step per epoch: step 2 fails in epoch 2, after epoch 1's checkpoint and logs
    monkeypatch.setenv(FAULT_ENV, "2")
    monkeypatch.setenv(FAULT_KIND_ENV, "raise")
    with pytest.raises(RuntimeError, match="injected fault"):
        main([*SEARCH, "--out", str(run)])
    assert [row["epoch"] for row in jsonl_rows(run, OP_WEIGHTS_LOG)] == [1]
    assert not (run / "op_weights_normal.png").exists()  # written when the search ends
    monkeypatch.delenv(FAULT_ENV)
    assert main(["search", "--out", str(run), "--resume"]) == 0

    rows = jsonl_rows(run, OP_WEIGHTS_LOG)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert drawn == [[1], [1], [1, 2], [1, 2]]  # normal and reduce; epoch 1 kept by the resume
    runs, charts, _ = _events(run)
    for op in TINY.ops:  # one series per op, one tag per edge: 5 edges per cell kind
        assert len(runs[op].Tags()["scalars"]) == 2 * 5
    for kind in CELL_KINDS:
        for (target, source), edge in zip(cell_edges(TINY), rows[-1][kind]):
            title = (f"op weights, {kind} cell", f"{kind}: state {target} <- state {source}")
            tag = f"alphas_{kind}/state{target}_from{source}"
            assert _curves(runs, charts[title]) == {(op, tag) for op in TINY.ops}
            curve = runs[TINY.ops[-1]].Scalars(tag)
            assert [point.step for point in curve] == [1, 2]  # epoch 2 once, not twice
            assert curve[-1].value == pytest.approx(edge[-1])


@pytest.mark.parametrize("interval, epochs_drawn", [(1e9, [1, 3]), (0.0, [1, 2, 3])])
def test_pictures_are_drawn_when_they_change_or_are_due(
    tmp_path, monkeypatch, interval, epochs_drawn
) -> None:
    pytest.importorskip("matplotlib")
    import nas.search_task
    from nas.drawing import genotype_picture

    heat_maps, pictures = [], []

    def heat_map(space, kind, rows):
        heat_maps.append(rows[-1]["epoch"])
        return op_weights_figure(space, kind, rows)

    def picture(genotype):
        pictures.append(genotype)
        return genotype_picture(genotype)

    monkeypatch.setattr(nas.search_task, "op_weights_figure", heat_map)
    monkeypatch.setattr(nas.search_task, "genotype_picture", picture)
    monkeypatch.setattr(nas.search_task, "HEAT_MAP_INTERVAL_S", interval)
    run = tmp_path / "run"
    # alphas that hardly move: the genotype of epoch 1 stays
    args = [*SEARCH, "--epochs", "3", "--set", "strategy.alpha_lr=1e-9", "--out", str(run)]
    assert main(args) == 0
    assert heat_maps == [epoch for epoch in epochs_drawn for _ in CELL_KINDS]
    genotypes = [row["genotype"] for row in jsonl_rows(run, "genotypes.jsonl")]
    changes = [g for i, g in enumerate(genotypes) if i == 0 or g != genotypes[i - 1]]
    assert [g.to_dict() for g in pictures] == changes and len(changes) == 1
