"""`nas sample` and `nas.sample`: random genotypes that are valid, seeded and written safely."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

import nas
from nas.cli import main
from nas.errors import NasError
from nas.genotype import Genotype
from nas.sampling import sample_genotypes
from nas.spaces import NUM_INPUT_NODES, SPACES, get_space
from tests.conftest import assert_refused


@pytest.mark.parametrize("space", SPACES.names())
def test_every_sampled_genotype_is_valid_and_builds_a_network(space: str) -> None:
    cell_space = get_space(space)
    genotypes = nas.sample(space, count=6, seed=3)
    assert len(genotypes) == 6
    for genotype in genotypes:
        assert Genotype.from_dict(genotype.to_dict()) == genotype  # the file's validation
        for kind in ("normal", "reduce"):
            cell = genotype.cell(kind)
            assert cell.concat == cell_space.concat
            for node, edges in enumerate(cell.nodes):
                inputs = [edge.input for edge in edges]
                assert len(inputs) == cell_space.edges_per_node == len(set(inputs))
                assert all(0 <= i < NUM_INPUT_NODES + node for i in inputs)
                assert all(edge.op in cell_space.ops and edge.op != "none" for edge in edges)
    model = nas.create_model(genotypes[0], num_classes=3, in_channels=1, layers=3, channels=4)
    assert model.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_the_same_seed_gives_the_same_genotypes_and_another_seed_others() -> None:
    first = sample_genotypes("darts", 8, 0)
    assert sample_genotypes("darts", 8, 0) == first
    assert sample_genotypes("darts", 3, 0) == first[:3]  # a smaller count: the beginning
    other = sample_genotypes("darts", 8, 1)
    assert all(a != b for a, b in zip(first, other))
    assert len(set(first)) == 8


def test_ops_and_inputs_are_drawn_uniformly() -> None:
    space = get_space("tiny")  # 3 ops other than none; node 1 reads states 0, 1 and 2
    genotypes = sample_genotypes("tiny", 600, 0)
    ops = Counter(e.op for g in genotypes for node in g.normal.nodes for e in node)
    assert set(ops) == set(space.ops) - {"none"}
    expected = sum(ops.values()) / 3
    assert all(abs(count - expected) < 0.1 * expected for count in ops.values())
    pairs = Counter(tuple(e.input for e in g.reduce.nodes[1]) for g in genotypes)
    assert set(pairs) == {(0, 1), (0, 2), (1, 2)}  # two distinct inputs, in order
    assert all(abs(count - 200) < 40 for count in pairs.values())


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("darts", 0, 0), "count must be at least 1, got 0"),
        (("darts", 2, -1), "seed must be from 0 to"),
        (("darts", 2.0, 0), "count must be an integer, got 2.0"),
        (("darts", True, 0), "count must be an integer"),
        (("nope", 2, 0), "unknown search space 'nope'"),
    ],
)
def test_bad_arguments_are_one_clear_error(arguments, message) -> None:
    with pytest.raises(NasError, match=message):
        nas.sample(*arguments)


def test_the_command_writes_count_genotype_files_and_says_how_to_train_one(
    tmp_path, capsys
) -> None:
    out = tmp_path / "baseline"
    assert (
        main(["sample", "--space", "tiny", "--count", "11", "--seed", "5", "--out", str(out)]) == 0
    )
    written = sorted(out.glob("genotype_*.json"))
    assert [path.name for path in written] == [f"genotype_{i:02d}.json" for i in range(11)]
    assert [Genotype.load(path) for path in written] == sample_genotypes("tiny", 11, 5)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:11] == [f"written: {path}" for path in written]
    assert lines[11].endswith(
        f"train one with: nas train --genotype {written[0]} --dataset DATASET"
    )


def test_the_default_folder_names_the_space_and_seed(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--space", "tiny", "--count", "2", "--seed", "4"]) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("sample-tiny-seed4-")
    assert sorted(p.name for p in folder.glob("*.json")) == ["genotype_0.json", "genotype_1.json"]


def test_the_command_never_replaces_files(tmp_path) -> None:
    sampled = tmp_path / "sampled"
    assert main(["sample", "--count", "2", "--out", str(sampled)]) == 0
    before = {path: path.read_bytes() for path in sampled.iterdir()}
    again = ("sample", "--count", "2", "--seed", "1", "--out", "sampled")
    assert_refused(*again, cwd=tmp_path, contains="already holds sampled genotypes")
    assert {path: path.read_bytes() for path in sampled.iterdir()} == before
    users = tmp_path / "mine"
    users.mkdir()
    (users / "genotype_0.json").write_text("my own file\n")
    assert_refused("sample", "--out", "mine", cwd=tmp_path, contains="nasforge did not create it")
    assert_refused("sample", "--count", "0", cwd=tmp_path, contains="count must be at least 1")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # a one-epoch nas train: about 15 s on 2 cores
def test_a_sampled_genotype_trains(tmp_path, capsys) -> None:
    out = tmp_path / "sampled"
    assert main(["sample", "--space", "tiny", "--count", "1", "--out", str(out)]) == 0
    genotype = Path(out / "genotype_0.json")
    small = ["--dataset", "synthetic", "--epochs", "1", "--layers", "3", "--channels", "4"]
    small += ["--set", "data.synthetic_samples=32", "--set", "data.synthetic_image_size=8"]
    assert main(["train", "--genotype", str(genotype), *small, "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "checkpoints" / "best.pt").is_file()
