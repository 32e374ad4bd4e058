"""Guarantees of `nas export` and of multi-process launches.

An export folder is one whole export or the previous one, never a mix, and a folder nasforge did
not write is never replaced. A launcher refuses bad input before any worker starts, shows a worker's
user error once, and takes its workers down with it when it is killed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nas.cli import main
from tests.conftest import assert_refused, file_states

TINY = ["--dataset", "synthetic", "--layers", "3", "--channels", "2", "--batch-size", "8",
        "--set", "data.synthetic_samples=32", "--set", "data.synthetic_image_size=8",
        "--set", "data.augment=false"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A one-epoch `nas train` run of a tiny network."""
    run = tmp_path_factory.mktemp("trained") / "run"
    args = ["train", "--genotype", "DARTS_V2", *TINY, "--cutout", "0", "--epochs", "1"]
    assert main([*args, "--out", str(run)]) == 0
    return run


def _export(run: Path, fmt: str, out: Path, *more: str) -> None:
    assert main(["export", str(run), "--format", fmt, "--out", str(out), *more]) == 0


def _card(folder: Path) -> dict:
    return json.loads((folder / "model_card.json").read_text())


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]


# --- an export folder is one unit ---------------------------------------------------------------


def test_formats_of_the_same_weights_stay_side_by_side_and_another_checkpoint_replaces_them(
    trained, tmp_path
) -> None:
    out = tmp_path / "export"
    _export(trained, "torchscript", out)
    _export(trained, "exported", out)
    assert _card(out)["exports"] == {"torchscript": "model.pt", "exported": "model.pt2"}
    assert sorted(p.name for p in out.iterdir()) == [
        "genotype.json", "model.pt", "model.pt2", "model_card.json"
    ]  # fmt: skip
    _export(trained, "torchscript", out, "--checkpoint", "last")  # other weights: a new export
    assert _card(out)["checkpoint"] == "last"
    assert _card(out)["exports"] == {"torchscript": "model.pt"}
    assert sorted(p.name for p in out.iterdir()) == ["genotype.json", "model.pt", "model_card.json"]
    assert _leftovers(out) == []


@pytest.mark.parametrize("previous", [False, True], ids=["first-export", "re-export"])
def test_an_export_that_fails_midway_leaves_the_folder_as_it_was(
    trained, tmp_path, monkeypatch, previous: bool
) -> None:
    out = tmp_path / "export"
    if previous:
        _export(trained, "exported", out)
    before = file_states(tmp_path)
    import nas.export

    original = nas.export._EXPORTERS["torchscript"]

    def broken(network, example, check, path):
        original(network, example, check, path)
        assert path.is_file()  # the model file is written, the card is not yet
        raise RuntimeError("exporter crashed")

    monkeypatch.setitem(nas.export._EXPORTERS, "torchscript", broken)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        main(["export", str(trained), "--format", "torchscript", "--out", str(out)])
    assert file_states(tmp_path) == before
    assert out.exists() == previous and _leftovers(out) == []


KILL_AT = {
    # after the model file is written into the staging folder
    "model-written": "nas.export._EXPORTERS['torchscript']",
    # after the swap, before the previous export is removed
    "swapped": "nas.export_folder._move_into_place",
}


@pytest.mark.parametrize("where", list(KILL_AT))
def test_a_killed_export_leaves_the_previous_or_the_new_export(trained, tmp_path, where) -> None:
    out = tmp_path / "export"
    _export(trained, "exported", out, "--checkpoint", "last")
    previous = file_states(out)
    script = textwrap.dedent(f"""
        import os, sys
        import nas.export, nas.export_folder
        from nas.cli import main
        target = {KILL_AT[where]}
        def killed(*args):
            target(*args)
            os._exit(9)
        if {where!r} == "model-written":
            nas.export._EXPORTERS["torchscript"] = killed
        else:
            nas.export_folder._move_into_place = killed
        main(["export", {str(trained)!r}, "--format", "torchscript", "--out", {str(out)!r}])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert result.returncode == 9, result.stderr.decode()[-2000:]
    card = _card(out)
    if where == "model-written":
        assert file_states(out) == previous
    else:  # the new export, whole: its card lists exactly the files beside it
        assert card["checkpoint"] == "best" and card["exports"] == {"torchscript": "model.pt"}
        assert sorted(p.name for p in out.iterdir()) == [
            "genotype.json", "model.pt", "model_card.json"
        ]  # fmt: skip
    assert _leftovers(out)  # the dead export's staging folder ...
    _export(trained, "torchscript", out)
    assert _leftovers(out) == []  # ... is removed by the next export


# --- refusals of nas export ---------------------------------------------------------------------


def _search_checkpoint(run: Path) -> None:
    from nas.runtime.checkpoint import save_checkpoint

    state = {"network": {"alpha_normal": torch.zeros(2)}, "strategy": {}}
    save_checkpoint(run / "checkpoints" / "last.pt", {"epoch": 1, "task": state})


def _broken_spec_checkpoint(run: Path) -> None:
    from nas.runtime.checkpoint import save_checkpoint

    state = {"model": {"network": "cifar"}, "network": {}, "epoch": 1, "test_acc": 0.5}
    save_checkpoint(run / "checkpoints" / "best.pt", state)


def _user_files(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_json", ".json").replace("_txt", ".txt")).write_text(text)


OUR_CARD = json.dumps({"format": "nasforge.model_card", "version": 1, "exports": {}})

# id -> (arguments after RUN_DIR, set-up of the folder (tmp_path, run dir), text of the error).
# The run dir "run" is a copy of a trained run unless the set-up replaces it.
EXPORT_CASES = {
    "missing-run-dir": (["--format", "torchscript"], "gone", "needs a run directory"),
    "search-run": (["--format", "exported", "--checkpoint", "last"], "search",
                   "not a nas train checkpoint"),
    "checkpoint-without-network": (["--format", "torchscript"], "broken-spec",
                                   "does not describe a network"),
    "run-dir-is-a-file": (["--format", "torchscript"], "file-run", "needs a run directory"),
    "out-is-a-file": (["--format", "torchscript", "--out", "target"], "out-file",
                      "is not a folder"),
    "out-under-a-file": (["--format", "torchscript", "--out", "target/export"], "out-file",
                         "cannot write the export folder"),
    "out-holds-user-genotype": (["--format", "torchscript", "--out", "target"], "user-genotype",
                                "did not write (genotype.json)"),
    "out-holds-foreign-card": (["--format", "torchscript", "--out", "target"], "foreign-card",
                               "did not write (model_card.json)"),
    "out-holds-broken-card": (["--format", "torchscript", "--out", "target"], "broken-card",
                              "did not write"),
    "out-export-plus-user-file": (["--format", "torchscript", "--out", "target"], "our-plus-notes",
                                  "did not write (notes.txt)"),
    "out-is-the-run-dir": (["--format", "torchscript", "--out", "run"], "", "did not write"),
    "default-out-holds-user-files": (["--format", "torchscript"], "default-user",
                                     "did not write (genotype.json, model.pt)"),
    "default-out-is-a-file": (["--format", "torchscript"], "default-file", "is not a folder"),
}  # fmt: skip


def _set_up_export_case(tmp_path: Path, trained: Path, setup: str) -> Path:
    import shutil

    run = tmp_path / "run"
    if setup == "gone":
        return run
    if setup == "file-run":
        run.write_text("not a run\n")
        return run
    if setup == "search":
        _search_checkpoint(run)
        return run
    if setup == "broken-spec":
        _broken_spec_checkpoint(run)
        return run
    shutil.copytree(trained / "checkpoints", run / "checkpoints")
    target = tmp_path / "target"
    if setup == "out-file":
        target.write_text("my notes\n")
    elif setup == "user-genotype":
        _user_files(target, genotype_json='{"normal": "mine"}\n')
    elif setup == "foreign-card":
        _user_files(target, model_card_json='{"model": "my own card"}\n')
    elif setup == "broken-card":
        _user_files(target, model_card_json='{"format": "nasforge.model_ca')
    elif setup == "our-plus-notes":
        _user_files(target, model_card_json=OUR_CARD, notes_txt="keep me\n")
    elif setup == "default-user":
        (run / "export").mkdir()
        (run / "export" / "genotype.json").write_text("{}\n")
        (run / "export" / "model.pt").write_bytes(b"my model")
    elif setup == "default-file":
        (run / "export").write_text("a file\n")
    return run


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_export_refuses_bad_input_and_keeps_every_file(trained, tmp_path, case: str) -> None:
    argv, setup, message = EXPORT_CASES[case]
    _set_up_export_case(tmp_path, trained, setup)
    assert_refused("export", "run", *argv, cwd=tmp_path, contains=message)
    assert not [p for p in tmp_path.rglob(".*")]  # no staging folder either
