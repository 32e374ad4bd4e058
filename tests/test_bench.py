"""`nas bench supernet`: one JSON line with the measured numbers; bad sizes are one-line errors."""

import json

from nas.cli import main


def test_bench_supernet_prints_one_json_line(capsys) -> None:
    args = ["bench", "supernet", "--size", "8", "--channels", "2", "--layers", "3",
            "--batch", "4", "--iterations", "2", "--warmup", "1", "--json"]  # fmt: skip
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["ms_per_iter"] > 0 and result["peak_mem_mb"] > 0
    # images/s counts the train and the val batch of every iteration
    assert abs(result["images_per_s"] - 2 * 4 * 1000 / result["ms_per_iter"]) < 1e-6
    assert (result["size"], result["order"], result["device"]) == (8, 1, "cpu")


def test_bench_supernet_second_order_and_amp_run(capsys) -> None:
    args = ["bench", "supernet", "--size", "8", "--channels", "2", "--layers", "3",
            "--batch", "4", "--iterations", "1", "--warmup", "0", "--order", "2", "--amp",
            "--device", "cpu", "--path", "fast", "--channels-last"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "order 2" in out and "bf16 autocast" in out and "images/s" in out
    assert "channels-last" in out and "fast path" in out


def test_bench_supernet_rejects_a_batch_of_one(capsys) -> None:
    assert main(["bench", "supernet", "--batch", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nas: error: --batch must be at least 2 (BatchNorm needs it)"]
