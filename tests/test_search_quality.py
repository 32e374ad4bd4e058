"""experiments/search_quality.py: records, resumption and the tables."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import nas
from nas.genotype import Genotype

SCRIPT = Path(__file__).parents[1] / "experiments" / "search_quality.py"
TINY = [
    "--datasets",
    "synthetic",
    "--seeds",
    "0",
    "--search-epochs",
    "1",
    "--train-epochs",
    "2",
    "--layers",
    "3",
    "--channels",
    "4",
    "--batch-size",
    "8",
    "--space",
    "tiny",
    "--set",
    "data.synthetic_samples=32",
    "--set",
    "data.synthetic_image_size=8",
]


def _script():
    """A fresh copy of the script's module (a test may replace its functions)."""
    spec = importlib.util.spec_from_file_location("search_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _row(printed: str, label: str) -> list[str]:
    (line,) = [line for line in printed.splitlines() if line.startswith(f"| {label} |")]
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


@pytest.mark.slow
def test_runs_write_records_a_table_and_are_skipped_when_rerun(tmp_path, capsys) -> None:
    script = _script()
    where = ["--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")]
    rows = ["--rows", "random_ws,random", "--random-genotypes", "1"]
    assert script.main([*TINY, *where, *rows]) == 0
    printed = capsys.readouterr().out

    searched = json.loads((tmp_path / "out/synthetic/random_ws/seed0.json").read_text())
    sampled = json.loads((tmp_path / "out/synthetic/random0/seed0.json").read_text())
    for record in (searched, sampled):
        assert 0 <= record["test_acc"] <= 1 and record["params"] > 0
        assert record["train_seconds"] > 0 and record["seed"] == 0
        assert record["budget"]["train_epochs"] == 2
        Genotype.from_dict(record["genotype"])
    search, train = searched["commands"]
    assert search.startswith("nas search --strategy random_ws --space tiny --layers 3")
    assert train.startswith("nas train --genotype ") and "--epochs 2" in train
    assert searched["search_seconds"] > 0 and sampled["search_seconds"] is None
    sample, train = sampled["commands"]
    assert sample.startswith("nas sample --space tiny --count 1 --seed 0 --out ")
    assert Genotype.from_dict(sampled["genotype"]) == nas.sample("tiny", 1, 0)[0]
    for row, record in (("random_ws", searched), ("random0", sampled)):
        best = torch.load(tmp_path / f"runs/synthetic/{row}/seed0/train/checkpoints/best.pt")
        assert record["val_acc"] is not None  # chosen on validation
        assert (record["val_acc"], record["test_acc"]) == (best["val_acc"], best["test_acc"])
    assert Genotype.from_dict(searched["genotype"]) == Genotype.load(
        tmp_path / "runs/synthetic/random_ws/seed0/search/genotype.json"
    )

    accuracy, params, search_time, _ = _row(printed, "random search, weight sharing")
    assert accuracy == f"{100 * searched['test_acc']:.1f} (n=1)"
    assert params == f"{searched['params']:,}" and search_time.endswith(" s")
    assert _row(printed, "random genotypes: mean of 1/1 seed-means")[2] == "n/a"
    assert _row(printed, "DARTS, order 1") == ["-"] * 4

    def refuse(argv):
        raise AssertionError(f"a finished run ran again: {argv}")

    script.run_nas = refuse
    assert script.main([*TINY, *where, *rows]) == 0
    assert capsys.readouterr().out == printed
    with pytest.raises(SystemExit, match="made with another budget"):
        script.main([*TINY, *where, *rows, "--train-epochs", "3"])


def _record(out: Path, row: str, seed: int, test: float, val: float) -> None:
    script = _script()
    path = out / "d" / row / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"test_acc": test, "val_acc": val, "params": 100, "search_seconds": None}
    record.update(train_seconds=2.0, budget={**script.asdict(script.Budget()), "settings": []})
    path.write_text(json.dumps(record))


def test_random_row_is_the_mean_of_genotype_means_and_the_best_by_validation(tmp_path) -> None:
    script = _script()
    # genotype means 0.5, 0.7 and 0.9; the best by validation (random1) is not the best by test
    for seed, (a, b, c) in enumerate([(0.4, 0.8, 0.9), (0.6, 0.6, 0.9)]):
        _record(tmp_path, "random0", seed, a, 0.1)
        _record(tmp_path, "random1", seed, b, 0.9)
        _record(tmp_path, "random2", seed, c, 0.5)
    _record(tmp_path, "darts1", 0, 0.5, 0.5)
    printed = script.table(tmp_path, "d", [0, 1, 2], script.Budget(), 3)
    assert _row(printed, "random genotypes: mean of 3/3 seed-means")[0] == (
        "70.0 ± 20.0 (genotypes=3)"
    )
    assert _row(printed, "random genotype, best by validation (random1)")[0] == "70.0 ± 14.1 (n=2)"
    assert _row(printed, "DARTS, order 1")[:2] == ["50.0 (n=1)", "100"]
    assert _row(printed, "GDAS") == ["-"] * 4
