"""Bad datasets, ensemble files and tuning inputs are refused at load time, on one line, and
leave every file in the folder as it was.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from nas.errors import NasError
from nas.ownership import write_marker
from tests.conftest import assert_refused

# --- CSV tables (nas grow --dataset csv) -----------------------------------------------------

GROW_CSV = [
    "grow",
    "--dataset",
    "csv",
    "--data-file",
    "t.csv",
    "--target",
    "label",
    "--out",
    "run",
    "--epochs",
    "1",
    "--batch-size",
    "2",
]


def _rows(count: int, label=lambda i: "ab"[i % 2]) -> str:
    return "".join(f"{i},{i * 0.5},{label(i)}\n" for i in range(count))


CSV_CASES = {
    "not_utf8": (b"a,b,label\n1,2,\xff\xfe\n" + _rows(8).encode(), "not UTF-8"),
    "nul_byte": (b"a,b,label\n1,2\x00,x\n" + _rows(8).encode(), "row 2"),
    "field_over_limit": (f"a,b,label\n1,2,{'x' * 200_000}\n{_rows(8)}".encode(), "row 2"),
    "ragged_row": (f"a,b,label\n{_rows(4)}1,2\n{_rows(4)}".encode(), "row 6"),
    "non_numeric": (f"a,b,label\n{_rows(4)}1,four,a\n".encode(), "column 'b'"),
    "long_non_numeric": (f"a,b,label\n1,{'y' * 5000},a\n{_rows(8)}".encode(), "column 'b'"),
    "nan": (f"a,b,label\n{_rows(4)}nan,1,a\n".encode(), "row 6"),
    "inf": (f"a,b,label\n{_rows(4)}1,-inf,a\n".encode(), "row 6"),
    "empty": (b"", "empty"),
    "blank_lines_only": (b"\n\n\n", "empty"),
    "header_only": (b"a,b,label\n", "no data rows"),
    "missing_target": (f"a,b,klass\n{_rows(8)}".encode(), "no column 'label'"),
    "missing_target_wide_header": (
        (",".join(f"column{i}" for i in range(5000)) + "\n").encode(),
        "no column 'label'",
    ),
    "duplicate_target": (f"a,label,label\n{_rows(8)}".encode(), "2 columns named 'label'"),
    "target_only": (b"label\na\nb\na\nb\n", "no feature columns"),
    "single_class": (f"a,b,label\n{_rows(8, lambda i: 'a')}".encode(), "1 class"),
    "label_per_row": (f"a,b,label\n{_rows(40, lambda i: str(i * 1.5))}".encode(), "40 labels"),
    "too_few_rows": (f"a,b,label\n{_rows(6)}".encode(), "too small"),
}


@pytest.mark.parametrize("content,contains", CSV_CASES.values(), ids=CSV_CASES.keys())
def test_bad_csv_is_refused(tmp_path, content: bytes, contains: str) -> None:
    (tmp_path / "t.csv").write_bytes(content)
    line = assert_refused(*GROW_CSV, cwd=tmp_path, contains=contains)
    assert "t.csv" in line


@pytest.mark.parametrize("kind", ["directory", "missing"])
def test_csv_path_that_is_no_file_is_refused(tmp_path, kind: str) -> None:
    if kind == "directory":
        (tmp_path / "t.csv").mkdir()
        (tmp_path / "t.csv" / "inside.txt").write_text("kept")
    line = assert_refused(*GROW_CSV, cwd=tmp_path, contains="t.csv")
    assert ("is a directory" in line) == (kind == "directory")


def test_good_csv_still_loads(tmp_path) -> None:
    from nas.config import DataConfig
    from nas.data import CsvOptions, load_dataset

    (tmp_path / "t.csv").write_text("a,b,label\n" + _rows(20))
    config = DataConfig(
        name="csv", options=CsvOptions(data_file=str(tmp_path / "t.csv"), target="label")
    )
    data = load_dataset(config)
    assert (data.in_channels, data.num_classes, len(data.train) + len(data.test)) == (2, 2, 20)


# --- CIFAR-10 batches (--data-dir) -----------------------------------------------------------

TRAIN_CIFAR = [
    "train",
    "--genotype",
    "DARTS_V2",
    "--dataset",
    "cifar10",
    "--data-dir",
    "cifar",
    "--layers",
    "2",
    "--channels",
    "4",
    "--epochs",
    "1",
    "--batch-size",
    "2",
    "--out",
    "run",
]
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _cifar_batch(images: int = 4, labels=None, width: int = 3072, dtype=np.uint8) -> dict:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (images, width)).astype(dtype)
    return {b"data": data, b"labels": list(range(images)) if labels is None else labels}


class _Payload:
    """Unpickling it would create the file `marker` in the working folder."""

    def __reduce__(self):
        import os

        return (os.system, ("touch marker",))


CIFAR_CASES = {
    "more_labels_than_images": (_cifar_batch(labels=[0, 1, 2, 3, 4]), "5 labels for 4 images"),
    "fewer_labels_than_images": (_cifar_batch(labels=[0]), "1 labels for 4 images"),
    "label_above_9": (_cifar_batch(labels=[0, 1, 10, 3]), "label 10 is out of range"),
    "negative_label": (_cifar_batch(labels=[0, -1, 2, 3]), "label -1 is out of range"),
    "float_labels": (_cifar_batch(labels=[0.5, 1, 2, 3]), "labels must be a list of integers"),
    # 4 rows of 16x16 images reshape to one 32x32 image: the sizes must be checked, not reshaped
    "images_16x16": (_cifar_batch(width=768), "images of 768 bytes"),
    "images_not_bytes": (_cifar_batch(dtype=np.float64), "uint8"),
    "not_a_dict": ([1, 2, 3], "not a CIFAR-10 python batch"),
    "code_payload": ({b"data": _Payload(), b"labels": [0]}, "refusing to load"),
}


def _write_cifar(folder: Path) -> None:
    folder.mkdir()
    for name in CIFAR_FILES:
        (folder / name).write_bytes(pickle.dumps(_cifar_batch()))


@pytest.mark.parametrize("batch,contains", CIFAR_CASES.values(), ids=CIFAR_CASES.keys())
def test_bad_cifar_batch_is_refused_at_load(tmp_path, batch, contains: str) -> None:
    _write_cifar(tmp_path / "cifar")
    (tmp_path / "cifar" / "data_batch_3").write_bytes(pickle.dumps(batch))
    line = assert_refused(*TRAIN_CIFAR, cwd=tmp_path, contains=contains)
    assert "data_batch_3" in line
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("fault", ["missing", "truncated", "empty"])
def test_missing_or_truncated_cifar_batch_is_refused(tmp_path, fault: str) -> None:
    _write_cifar(tmp_path / "cifar")
    path = tmp_path / "cifar" / "data_batch_1"
    if fault == "missing":
        path.unlink()  # with the others there: reported, not downloaded again
    else:
        path.write_bytes(path.read_bytes()[: 100 if fault == "truncated" else 0])
    assert_refused(*TRAIN_CIFAR, cwd=tmp_path, contains="data_batch_1")


def test_good_cifar_batches_load(tmp_path) -> None:
    from nas.config import DataConfig
    from nas.data import Cifar10Options, load_dataset

    _write_cifar(tmp_path / "cifar")
    data = load_dataset(
        DataConfig(name="cifar10", options=Cifar10Options(data_dir=str(tmp_path / "cifar")))
    )
    assert data.train.tensors[0].shape == (20, 3, 32, 32) and len(data.test) == 4


# --- nas tune inputs -------------------------------------------------------------------------

TUNE_BASE = {
    "data": {
        "name": "synthetic",
        "batch_size": 8,
        "augment": False,
        "cutout": 0,
        "synthetic_samples": 32,
        "synthetic_image_size": 8,
        "synthetic_channels": 1,
        "synthetic_classes": 3,
    },
    "model": {"genotype": "DARTS_V2", "layers": 3, "channels": 2, "auxiliary_weight": 0.0},
    "run": {"epochs": 1, "device": "cpu"},
}
LR = {"type": "float", "low": 1e-3, "high": 0.3, "log": True}


def _tune_folder(tmp_path: Path, params: dict | None = None, **tune) -> None:
    """tune.yaml in `tmp_path` and a study folder `study/` holding a file of the user's."""
    import yaml

    settings = {"command": "train", "sampler": "random", "trials": 2, **tune}
    settings["params"] = params or {"train.lr": LR}
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump({**TUNE_BASE, "tune": settings}))
    write_marker(tmp_path / "study", "tune")  # a study folder nasforge made, with the user's notes
    (tmp_path / "study" / "notes.txt").write_text("the user's own notes")


TUNE = ["tune", "--config", "tune.yaml", "--out", "study"]

STORAGE_CASES = {
    "unknown_scheme": ("foo://somewhere/db", "foo"),
    "sqlite_in_missing_folder": ("sqlite:///missing/study.db", "missing"),
    "journal_in_missing_folder": ("missing/journal.log", "missing"),
    "journal_under_a_file": ("study/notes.txt/journal.log", "notes.txt"),
    "journal_is_a_folder": ("study", "folder"),
    "journal_unwritable": ("/proc/nas-journal.log", "nas-journal.log"),
    "journal_is_text": ("study/notes.txt", "not an optuna journal"),
    "journal_is_binary": ("study/blob.bin", "not an optuna journal"),
    "journal_is_one_unfinished_line": ("study/line.txt", "not an optuna journal"),
}


@pytest.mark.parametrize("storage,contains", STORAGE_CASES.values(), ids=STORAGE_CASES.keys())
def test_bad_tune_storage_is_refused(tmp_path, storage: str, contains: str) -> None:
    pytest.importorskip("optuna")
    _tune_folder(tmp_path)
    (tmp_path / "study" / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "study" / "line.txt").write_text("no newline at the end")
    assert_refused(*TUNE, "--storage", storage, cwd=tmp_path, contains=contains)


TUNE_CASES = {
    "timeout_nan": (["--timeout", "nan"], None, {}, "tune.timeout"),
    "timeout_inf": (["--timeout", "inf"], None, {}, "tune.timeout"),
    "timeout_negative": (["--timeout", "-5"], None, {}, "tune.timeout"),
    "trials_zero": (["--trials", "0"], None, {}, "tune.trials"),
    "grid_of_10e12_points": (
        [],
        {
            "model.layers": {"type": "int", "low": 1, "high": 1_000_000},
            "run.epochs": {"type": "int", "low": 1, "high": 1_000_000},
        },
        {"sampler": "grid"},
        "points",
    ),
    "grid_one_huge_axis": (
        [],
        {"run.epochs": {"type": "int", "low": 1, "high": 10**12}},
        {"sampler": "grid"},
        "points",
    ),
    "grid_huge_float_axis": (
        [],
        {"train.lr": {"type": "float", "low": 0.001, "high": 0.5, "step": 1e-15}},
        {"sampler": "grid"},
        "points",
    ),
    "low_above_high": ([], {"train.lr": {"type": "float", "low": 0.3, "high": 0.1}}, {}, "low"),
    "log_with_zero_low": (
        [],
        {"train.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
        {},
        "log",
    ),
    "empty_choices": (
        [],
        {"data.batch_size": {"type": "categorical", "choices": []}},
        {},
        "choices",
    ),
    "unknown_field": ([], {"train.learning_rate": LR}, {}, "unknown config field"),
    "infinite_bound": (
        [],
        {"train.lr": {"type": "float", "low": 0.1, "high": float("inf")}},
        {},
        "finite",
    ),
}


@pytest.mark.parametrize(
    "flags,params,settings,contains", TUNE_CASES.values(), ids=TUNE_CASES.keys()
)
def test_bad_tune_settings_are_refused(tmp_path, flags, params, settings, contains) -> None:
    pytest.importorskip("optuna")
    _tune_folder(tmp_path, params, **settings)
    assert_refused(*TUNE, *flags, cwd=tmp_path, contains=contains)


STUDY_FOLDER_CASES = {
    "user_folder": ("mine", "nasforge did not create it"),
    "a_file": ("mine/notes.txt", "is a file"),
    "empty_name": (" ", "--out is empty"),
    "a_search_run": ("search-run", "not a nas tune run"),
}


@pytest.mark.parametrize("out,contains", STUDY_FOLDER_CASES.values(), ids=STUDY_FOLDER_CASES.keys())
def test_tune_writes_only_into_its_own_study_folder(tmp_path, out: str, contains: str) -> None:
    pytest.importorskip("optuna")
    _tune_folder(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")
    (tmp_path / "mine" / "best.yaml").write_text("my own best settings")
    write_marker(tmp_path / "search-run", "search")
    argv = ["tune", "--config", "tune.yaml", "--out", out]
    assert_refused(*argv, cwd=tmp_path, contains=contains)


# --- ensemble.json and checkpoints/ensemble.pt (nas.load_ensemble) ---------------------------


def _grown_run(folder: Path) -> dict:
    """A one-member MLP ensemble's run directory, written as nas grow writes it."""
    import torch

    from nas.adanet.config import AdaNetConfig
    from nas.adanet.ensemble import Ensemble
    from nas.adanet.generators import GENERATORS, DataShape
    from nas.runtime.checkpoint import save_checkpoint

    generator = GENERATORS.get("mlp")(AdaNetConfig(), DataShape(4, 1, 2))
    architecture = generator.propose([], [])[0]
    ensemble = Ensemble(2, vector=False)
    complexity = generator.complexity(architecture)
    ensemble.add(
        generator.build(architecture, []), architecture, 0, complexity, 0.01, torch.tensor([0.5])
    )
    info = {
        "dataset": "csv",
        "in_channels": 4,
        "image_size": 1,
        "num_classes": 2,
        "mean": [0.0] * 4,
        "std": [1.0] * 4,
    }
    objective = {
        "loss": "cross_entropy",
        "complexity": "sqrt_depth",
        "complexity_weight": 0.01,
        "complexity_bias": 0.0,
        "value": 0.5,
    }
    data = ensemble.to_dict("mlp", info, objective)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "ensemble.json").write_text(json.dumps(data))
    save_checkpoint(
        folder / "checkpoints" / "ensemble.pt", {"ensemble": data, "state": ensemble.state_dict()}
    )
    return data


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


ENSEMBLE_JSON_CASES = {
    "not_utf8": lambda data: b'{"format": "\xff\xfe"}',
    "nested_100000_deep": lambda data: _nested(100_000).encode(),
    "nested_inside_a_field": lambda data: (
        json.dumps(data)
        .replace('"members": [', f'"extra": {_nested(50_000)}, "members": [')
        .encode()
    ),
    "not_json": lambda data: b"ensemble",
    "a_list": lambda data: b"[1, 2, 3]",
    "members_a_string": lambda data: json.dumps({**data, "members": "m" * 10_000}).encode(),
    "generator_a_list": lambda data: json.dumps({**data, "generator": ["mlp"]}).encode(),
    "format_huge": lambda data: json.dumps({**data, "format": "f" * 100_000}).encode(),
    "classes_a_string": lambda data: json.dumps(
        {**data, "data": {**data["data"], "num_classes": "2"}}
    ).encode(),
    "no_classes": lambda data: json.dumps(
        {**data, "data": {**data["data"], "num_classes": 0}}
    ).encode(),
    "reads_a_huge_list": lambda data: json.dumps(
        {
            **data,
            "members": [
                {
                    **data["members"][0],
                    "architecture": {
                        **data["members"][0]["architecture"],
                        "reads": list(range(50_000)),
                    },
                }
            ],
        }
    ).encode(),
    "width_a_float": lambda data: json.dumps(
        {
            **data,
            "members": [
                {
                    **data["members"][0],
                    "architecture": {**data["members"][0]["architecture"], "width": 1.5},
                }
            ],
        }
    ).encode(),
}


def _assert_one_line_refusal(run: Path, name: str) -> str:
    from nas.adanet import load_ensemble

    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(NasError) as refusal:
        load_ensemble(run)
    line = str(refusal.value)
    assert "\n" not in line and len(line) <= 600 and name in line, line[:1000]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    return line


@pytest.mark.parametrize("content", ENSEMBLE_JSON_CASES.values(), ids=ENSEMBLE_JSON_CASES.keys())
def test_bad_ensemble_json_is_refused(tmp_path, content) -> None:
    data = _grown_run(tmp_path)
    (tmp_path / "ensemble.json").write_bytes(content(data))
    _assert_one_line_refusal(tmp_path, "ensemble.json")


ENSEMBLE_PT_CASES = {
    "not_a_checkpoint": lambda data, state: b"weights",
    "truncated": None,
    "no_ensemble": lambda data, state: {"state": state},
    "ensemble_a_string": lambda data, state: {"ensemble": "x", "state": state},
    "state_a_list": lambda data, state: {"ensemble": data, "state": [1, 2]},
    "state_of_another_shape": lambda data, state: {
        "ensemble": data,
        "state": {k: v[..., :1] if v.dim() else v for k, v in state.items()},
    },
    "other_iteration": lambda data, state: {"ensemble": {**data, "members": []}, "state": state},
}


@pytest.mark.parametrize("make", ENSEMBLE_PT_CASES.values(), ids=ENSEMBLE_PT_CASES.keys())
def test_bad_ensemble_weights_are_refused(tmp_path, make) -> None:
    from nas.runtime.checkpoint import load_checkpoint, save_checkpoint

    data = _grown_run(tmp_path)
    path = tmp_path / "checkpoints" / "ensemble.pt"
    state = load_checkpoint(path, restore_rng=False)["state"]
    if make is None:
        path.write_bytes(path.read_bytes()[:200])
    elif isinstance(payload := make(data, state), bytes):
        path.write_bytes(payload)
    else:
        save_checkpoint(path, payload)
    _assert_one_line_refusal(tmp_path, "ensemble.pt")


def test_good_ensemble_loads(tmp_path) -> None:
    from nas.adanet import load_ensemble

    data = _grown_run(tmp_path)
    ensemble, loaded = load_ensemble(tmp_path)
    assert loaded == data and len(ensemble.members) == 1


# --- splits that leave too little, and network sizes -----------------------------------------

TINY_DATA = [
    "--dataset",
    "synthetic",
    "--set",
    "data.synthetic_samples=32",
    "--set",
    "data.synthetic_image_size=8",
    "--set",
    "data.synthetic_channels=1",
    "--epochs",
    "1",
    "--out",
    "run",
]
TRAIN_TINY = [
    "train",
    "--genotype",
    "DARTS_V2",
    "--layers",
    "2",
    "--channels",
    "2",
    "--cutout",
    "0",
    "--batch-size",
    "8",
    *TINY_DATA,
]
GROW_TINY = ["grow", *TINY_DATA]

SPLIT_CASES = {
    "train_batch_above_split": ([*TRAIN_TINY, "--batch-size", "64"], "lower --batch-size"),
    "grow_batch_above_held_out": ([*GROW_TINY, "--batch-size", "8"], "held-out split"),
    "grow_train_portion_0": ([*GROW_TINY, "--set", "data.train_portion=0"], "train_portion"),
    "grow_train_portion_1": ([*GROW_TINY, "--set", "data.train_portion=1"], "train_portion"),
    "grow_train_portion_0.99": ([*GROW_TINY, "--set", "data.train_portion=0.99"], "too small"),
    "four_samples": ([*TRAIN_TINY, "--set", "data.synthetic_samples=4"], "too small"),
    "digits_batch_above_split": (
        ["grow", "--dataset", "digits", "--batch-size", "1000", "--out", "run"],
        "held-out",
    ),
    "cutout_whole_image": ([*TRAIN_TINY, "--cutout", "8"], "--cutout"),
}


@pytest.mark.parametrize("argv,contains", SPLIT_CASES.values(), ids=SPLIT_CASES.keys())
def test_settings_that_leave_a_split_empty_are_refused(tmp_path, argv, contains: str) -> None:
    (tmp_path / "notes.txt").write_text("kept")
    assert_refused(*argv, cwd=tmp_path, contains=contains)
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


SUMMARY = ["train", "--summary", "--genotype", "DARTS_V2", "--network", "imagenet"]


@pytest.mark.parametrize("size", ["0", "-3", "100000"])
def test_summary_image_size_out_of_range_is_refused(tmp_path, size: str) -> None:
    assert_refused(*SUMMARY, "--image-size", size, cwd=tmp_path, contains="--image-size must be")


@pytest.mark.parametrize("size", ["1", "2"])
def test_summary_of_tiny_images_works(tmp_path, capsys, size: str) -> None:
    from nas.cli import main

    # Every reduction pads, so a 1x1 image stays 1x1 through the stem and cells.
    assert main([*SUMMARY, "--layers", "3", "--channels", "8", "--image-size", size]) == 0
    assert f"input 3x{size}x{size}" in capsys.readouterr().out


@pytest.mark.parametrize("members", ["m" * 10_000, [{"iteration": "0"}], [[[]]]])
def test_resumed_grow_refuses_an_ensemble_of_wrong_types(members) -> None:
    import torch

    from nas.adanet.config import GrowConfig
    from nas.adanet.task import GrowTask
    from nas.runtime.dist import Runtime

    config = GrowConfig()
    config.set("data.name", "breast_cancer")
    config.set("data.batch_size", 16)
    task = GrowTask(config, Runtime(rank=0, world_size=1, device=torch.device("cpu")))
    state = task.state_dict()
    state["ensemble"]["spec"]["members"] = members
    with pytest.raises(NasError, match="checkpoints/last.pt ensemble.members") as refusal:
        task.load_state_dict(state)
    assert len(str(refusal.value)) <= 600
