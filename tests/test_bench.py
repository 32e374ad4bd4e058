"""`nas bench supernet`: one JSON line with the measured numbers; bad sizes are one-line errors."""

import json

import pytest

from nas.cli import main


def test_bench_supernet_prints_one_json_line(capsys) -> None:
    args = [
        "bench",
        "supernet",
        "--size",
        "8",
        "--channels",
        "2",
        "--layers",
        "3",
        "--batch",
        "4",
        "--iterations",
        "2",
        "--warmup",
        "1",
        "--json",
    ]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["ms_per_iter"] > 0 and result["peak_mem_mb"] > 0
    # images/s counts the train and the val batch of every iteration
    assert abs(result["images_per_s"] - 2 * 4 * 1000 / result["ms_per_iter"]) < 1e-6
    assert (result["size"], result["order"], result["device"]) == (8, 1, "cpu")


def test_bench_supernet_second_order_and_amp_run(capsys) -> None:
    args = [
        "bench",
        "supernet",
        "--size",
        "8",
        "--channels",
        "2",
        "--layers",
        "3",
        "--batch",
        "4",
        "--iterations",
        "1",
        "--warmup",
        "0",
        "--order",
        "2",
        "--amp",
        "--device",
        "cpu",
        "--path",
        "reference",
        "--channels-last",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "order 2" in out and "bf16 autocast" in out and "images/s" in out
    assert "channels-last" in out and "reference path" in out


def test_bench_supernet_rejects_a_batch_of_one(capsys) -> None:
    assert main(["bench", "supernet", "--batch", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nas: error: --batch must be at least 2 (BatchNorm needs it)"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--channels-last applies to --path reference only"),
        (["--path", "fast"], "--channels-last applies to --path reference only"),
        (["--compare"], "--channels-last does not go with --compare"),
    ],
)
def test_bench_supernet_refuses_channels_last_where_it_does_nothing(capsys, extra, message) -> None:
    assert main(["bench", "supernet", "--channels-last", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"nas: error: {message}")


def _bench_json(capsys, *extra: str) -> dict:
    args = [
        "bench",
        "supernet",
        "--size",
        "8",
        "--channels",
        "4",
        "--layers",
        "3",
        "--batch",
        "4",
        "--iterations",
        "1",
        "--warmup",
        "0",
        "--json",
        *extra,
    ]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_supernet_compare_reports_both_paths_and_the_speedup(capsys) -> None:
    result = _bench_json(capsys, "--compare", "--rounds", "1")
    assert len(result["reference_runs_ms"]) == len(result["fast_runs_ms"]) == 1
    speedup = result["reference_ms_per_iter"] / result["fast_ms_per_iter"]
    assert result["speedup"] == speedup and result["ms_per_iter"] == result["fast_ms_per_iter"]


def test_bench_memory_options_cut_what_is_saved_for_backward(capsys) -> None:
    plain = _bench_json(capsys)["saved_for_backward_mb"]
    partial = _bench_json(capsys, "--partial-channels", "2")
    checkpointed = _bench_json(capsys, "--checkpoint")
    assert partial["partial_channels"] == 2 and checkpointed["checkpoint_cells"]
    assert partial["saved_for_backward_mb"] < 0.75 * plain
    assert checkpointed["saved_for_backward_mb"] < 0.5 * plain
