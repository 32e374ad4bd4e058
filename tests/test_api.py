"""The Python API (nas/api.py) and data given from Python (nas/data/python.py): settings checked
as the CLI checks them, arrays and Datasets as ImageData, results, N processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import Dataset, TensorDataset

import nas
from nas.cli import main
from nas.data import labels_of
from nas.data.python import Normalised, as_image_data
from nas.errors import NasError

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"epochs": 1, "layers": 3, "channels": 4, "batch_size": 4}
TINY = {**SIZES, "space": "tiny"}


def _arrays(count: int = 32, shape: tuple[int, ...] = (1, 8, 8)) -> tuple[torch.Tensor, list]:
    """Inputs and string labels: "up" where the input's mean is positive."""
    inputs = torch.randn(count, *shape, generator=torch.Generator().manual_seed(0)) * 3 + 5
    means = inputs.flatten(1).mean(1)
    return inputs, ["up" if m > means.median() else "down" for m in means]


class Counting(Dataset):
    """A Dataset read sample by sample (no tensors attribute), with integer labels 3 and 7."""

    def __init__(self, count: int, seed: int = 0) -> None:
        self.inputs = torch.randn(count, 2, 4, 4, generator=torch.Generator().manual_seed(seed))
        self.reads = 0

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        self.reads += 1
        image = self.inputs[index]
        return image, 7 if image.mean() > 0 else 3


def test_nas_exports_the_api_without_importing_torch() -> None:
    code = (
        "import sys, nas; nas.search, nas.train, nas.grow, nas.create_model, nas.load_model; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    import nas.search_task
    import nas.train_task  # noqa: F401 - importing the engine tasks leaves the functions in place

    assert nas.search is nas.api.search and nas.train is nas.api.train


def _cli_error(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert main(["search", *args]) == 2
    return capsys.readouterr().err.strip().removeprefix("nas: error: ")


def test_settings_are_checked_by_the_cli_code(capsys, tmp_path: Path) -> None:
    out = str(tmp_path / "never")
    for settings, cli in [
        ({"strategy.nope": 1}, ["--set", "strategy.nope=1"]),
        ({"epochs": 0}, ["--epochs", "0"]),
        ({"batch_size": "many"}, ["--set", "data.batch_size=many"]),
    ]:
        with pytest.raises(NasError) as raised:
            nas.search("digits", run_dir=out, **settings)
        assert str(raised.value) == _cli_error(capsys, *cli, "--out", out)
    refusals = [
        ({"epoch": 2}, "unknown setting 'epoch' of nas.search; .*did you mean 'epochs'"),
        ({"order": 3}, r"order=3: choose one of 1, 2"),
        ({"out": "x"}, "give 'out' as the argument run_dir="),
        ({"nproc_per_node": 0}, "nproc_per_node must be at least 1"),
        ({"resume": True, "run_dir": None}, "resume=True needs run_dir="),
        ({"test": ([], [])}, "test= goes with data given as a Dataset or arrays"),
    ]
    for settings, message in refusals:
        with pytest.raises(NasError, match=message):
            nas.search("digits", **{"run_dir": out, **settings})
    assert not Path(out).exists()


def test_arrays_become_normalised_in_memory_data_with_class_names() -> None:
    inputs, labels = _arrays(40, (3, 6, 6))
    data = as_image_data((inputs.numpy(), labels))
    assert (data.kind, data.in_channels, data.image_size) == ("image", 3, 6)
    assert data.class_names == ("down", "up") and data.num_classes == 2
    assert isinstance(data.train, TensorDataset) and len(data.test) == 8
    train = data.train.tensors[0]
    assert torch.allclose(train.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(train.std((0, 2, 3)), torch.ones(3), atol=1e-2)
    expected = torch.tensor([["down", "up"].index(label) for label in labels])
    assert set(data.train.tensors[1].tolist()) == {0, 1}
    assert data.train.tensors[1].sum() + data.test.tensors[1].sum() == expected.sum()


@pytest.mark.parametrize(
    "shape, kind, channels, size",
    [((2, 10), "sequence", 2, 10), ((10,), "sequence", 1, 10), ((1, 5, 5), "image", 1, 5)],
)
def test_the_sample_shape_says_what_the_data_is(shape, kind, channels, size) -> None:
    data = as_image_data(_arrays(20, shape))
    assert (data.kind, data.in_channels, data.image_size) == (kind, channels, size)
    assert data.flips == (kind == "image")
    assert tuple(data.train.tensors[0].shape[1:]) == (
        (channels, size, size) if kind == "image" else (channels, size)
    )


def test_unusable_python_data_is_refused() -> None:
    inputs, labels = _arrays(20, (1, 4, 6))
    with pytest.raises(NasError, match=r"shape \(1, 4, 6\) is neither a square"):
        as_image_data((inputs, labels))
    inputs, labels = _arrays(20)
    with pytest.raises(NasError, match="x has 20 samples and y 19 labels"):
        as_image_data((inputs, labels[:19]))
    with pytest.raises(NasError, match="test has labels the training data does not: side"):
        as_image_data((inputs, labels), test=(inputs[:2], ["up", "side"]))
    with pytest.raises(NasError, match="data must be a dataset name, an ImageData"):
        as_image_data(42)


def test_a_dataset_is_read_sample_by_sample_and_normalised_on_the_fly() -> None:
    dataset = Counting(30)
    data = as_image_data(dataset, test=Counting(10, seed=1))
    assert isinstance(data.train, Normalised) and data.class_names == ("3", "7")
    assert len(data.train) == 30 and len(data.test) == 10
    image, label = data.train[4]
    raw, raw_label = dataset[4]
    mean, std = torch.tensor(data.mean).view(2, 1, 1), torch.tensor(data.std).view(2, 1, 1)
    assert torch.allclose(image, (raw - mean) / std)
    assert int(label) == ("3", "7").index(str(raw_label))
    assert torch.equal(labels_of(data.train), data.train.labels)
    held_out = as_image_data(Counting(30))  # no test data: a fixed 20% of it
    assert (len(held_out.train), len(held_out.test)) == (24, 6)


@pytest.mark.slow
def test_search_train_and_build_from_python(tmp_path: Path) -> None:
    inputs, labels = _arrays()
    result = nas.search((inputs, labels), run_dir=tmp_path / "search", **TINY)
    assert result.genotype.space == "tiny" and [r["epoch"] for r in result.metrics] == [1]
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["data"]["name"] == "python" and saved["meta"]["command"].startswith("python")
    trained = nas.train(
        result.run_dir, (inputs, labels), run_dir=tmp_path / "train", cutout=0, **SIZES
    )
    assert not trained.model.training and trained.metrics[-1]["epoch"] == 1
    batch = torch.randn(3, 1, 8, 8)
    loaded = nas.load_model(trained.run_dir)
    assert torch.equal(loaded(batch), trained.model(batch)) and loaded(batch).shape == (3, 2)
    built = nas.create_model(
        result.genotype, num_classes=2, in_channels=1, layers=3, channels=4, auxiliary=True
    )
    shapes = {key: value.shape for key, value in built.state_dict().items()}
    assert shapes == {key: value.shape for key, value in trained.model.state_dict().items()}
    with pytest.raises(NasError, match="model.layers must be at least 1"):
        nas.create_model(result.genotype, num_classes=2, layers=0)


@pytest.mark.slow
def test_grow_on_a_dataset_read_sample_by_sample(tmp_path: Path) -> None:
    result = nas.grow(
        Counting(40),
        run_dir=tmp_path / "grow",
        iterations=1,
        epochs=1,
        batch_size=4,
        **{"adanet.widths": [8]},
    )
    assert result.architecture["members"] and result.metrics
    assert not result.model.training
    assert nas.load_model(result.run_dir).state_dict().keys() == result.model.state_dict().keys()


@pytest.mark.parametrize("guarded", [True, False])
def test_a_worker_imports_the_launching_script_first(
    guarded: bool, tmp_path: Path, monkeypatch, capsys
) -> None:
    from nas.data import DATASETS
    from nas.runtime.launch import MAIN_MODULE_ENV

    call = 'main(["show", "DARTS_V2"])'
    script = tmp_path / "launcher_script.py"
    script.write_text(
        "from nas.cli import main\n"
        "from nas.data import DATASETS\n"
        "DATASETS.add('from_script', print)\n"
        + (f"if __name__ == '__main__':\n    {call}\n" if guarded else f"{call}\n")
    )
    monkeypatch.setattr(sys, "path", list(sys.path))  # the import puts the script's folder first
    monkeypatch.setenv("WORLD_SIZE", "2")  # as in a worker of nas ... --nproc-per-node 2
    monkeypatch.setenv(MAIN_MODULE_ENV, f"path:{script}")
    try:
        status = main(["show", "DARTS_V2"])
        assert "from_script" in DATASETS
    finally:
        DATASETS.discard("from_script")
    printed = capsys.readouterr()
    if guarded:
        assert status == 0 and printed.out.count("normal cell") == 1
    else:
        assert status == 2
        assert 'put that call under `if __name__ == "__main__":`' in printed.err


_SCRIPT = """
    import sys

    import torch
    from torch.utils.data import Dataset

    import nas
    from nas.cli import main
    from nas.data import DATASETS, from_arrays


    class Signs(Dataset):  # defined in the script: the workers import it to unpickle the data
        def __init__(self):
            self.inputs = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))

        def __len__(self):
            return len(self.inputs)

        def __getitem__(self, index):
            return self.inputs[index], int(self.inputs[index].mean() > 0)


    @DATASETS.register("mine")
    def mine(config):
        inputs = Signs().inputs
        return from_arrays(inputs, (inputs.mean((1, 2, 3)) > 0).long(), 0.2, 2)


    TINY = ["--epochs", "1", "--layers", "3", "--channels", "4", "--space", "tiny"]
    if __name__ == "__main__":
        if sys.argv[1] == "api":
            result = nas.search(Signs(), run_dir="run", nproc_per_node=2, **{TINY_API})
            print("searched", result.genotype.space, len(result.metrics))
        else:
            sys.exit(main(["search", "--dataset", "mine", "--nproc-per-node", "2", *TINY,
                           "--batch-size", "4", "--out", "run"]))
"""


def _run_script(tmp_path: Path, how: str) -> dict:
    script = textwrap.dedent(_SCRIPT).replace("{TINY_API}", repr(TINY))
    (tmp_path / "user_script.py").write_text(script)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "user_script.py", how],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())


@pytest.mark.slow
@pytest.mark.distributed
def test_a_dataset_object_reaches_every_spawned_worker(tmp_path: Path) -> None:
    saved = _run_script(tmp_path, "api")
    assert saved["meta"]["world_size"] == 2 and saved["data"]["name"] == "python"
    assert (tmp_path / "run" / "genotype.json").is_file()


@pytest.mark.slow
@pytest.mark.distributed
def test_a_dataset_registered_in_a_script_reaches_the_cli_workers(tmp_path: Path) -> None:
    saved = _run_script(tmp_path, "cli")
    assert saved["meta"]["world_size"] == 2 and saved["data"]["name"] == "mine"
