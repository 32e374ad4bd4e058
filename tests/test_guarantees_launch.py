"""Guarantees of `nas export` and of multi-process launches.

An export folder is one whole export or the previous one, never a mix, and a folder nasforge did
not write is never replaced. A launcher refuses bad input before any worker starts, shows a worker's
user error once, and takes its workers down with it when it is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from nas.cli import main
from nas.ownership import write_marker
from tests.conftest import assert_refused, file_states

TINY = [
    "--dataset",
    "synthetic",
    "--layers",
    "3",
    "--channels",
    "2",
    "--batch-size",
    "8",
    "--set",
    "data.synthetic_samples=32",
    "--set",
    "data.synthetic_image_size=8",
    "--set",
    "data.augment=false",
]


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
        "genotype.json",
        "model.pt",
        "model.pt2",
        "model_card.json",
    ]
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
            "genotype.json",
            "model.pt",
            "model_card.json",
        ]
    assert _leftovers(out)  # the dead export's staging folder ...
    _export(trained, "torchscript", out)
    assert _leftovers(out) == []  # ... is removed by the next export


def test_an_export_leaves_the_staging_folder_of_a_running_export_alone(trained, tmp_path) -> None:
    import fcntl

    out = tmp_path / "export"
    dead, live = tmp_path / ".export.nas-export-dead", tmp_path / ".export.nas-export-live"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "model.pt").write_bytes(b"half written")
    lock = os.open(live, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)  # as the export writing it holds it
    try:
        _export(trained, "torchscript", out)
    finally:
        os.close(lock)
    assert not dead.exists() and (live / "model.pt").read_bytes() == b"half written"


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

TARGET = ["--out", "target"]
# id -> (arguments after `RUN_DIR --format torchscript`, set-up of tmp_path, text of the error).
# The set-ups other than the first four copy a trained run's checkpoints into "run".
EXPORT_CASES = {
    "missing-run-dir": ([], "gone", "needs a run directory"),
    "search-run": (["--checkpoint", "last"], "search", "not a nas train checkpoint"),
    "checkpoint-without-network": ([], "broken-spec", "does not describe a network"),
    "run-dir-is-a-file": ([], "file-run", "needs a run directory"),
    "out-is-a-file": (TARGET, "out-file", "is not a folder"),
    "out-under-a-file": (["--out", "target/export"], "out-file", "cannot write the export"),
    "out-holds-user-genotype": (TARGET, "user-genotype", "did not write (genotype.json)"),
    "out-holds-foreign-card": (TARGET, "foreign-card", "did not write (model_card.json)"),
    "out-holds-broken-card": (TARGET, "broken-card", "did not write"),
    "out-export-plus-user-file": (TARGET, "our-plus-notes", "did not write (notes.txt)"),
    "out-is-the-run-dir": (["--out", "run"], "", "did not write"),
    "default-out-holds-user-files": ([], "default-user", "did not write (genotype.json, model"),
    "default-out-is-a-file": ([], "default-file", "is not a folder"),
}


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
    argv = ["--format", "torchscript", *argv]
    assert_refused("export", "run", *argv, cwd=tmp_path, contains=message)
    assert not [p for p in tmp_path.rglob(".*")]  # no staging folder either


@pytest.mark.parametrize("out", [".", ".."])
def test_export_into_the_current_folder_is_refused(trained, tmp_path, out: str) -> None:
    import shutil

    shutil.copytree(trained / "checkpoints", tmp_path / "run" / "checkpoints")
    empty = tmp_path / "empty"
    empty.mkdir()
    run = str(tmp_path / "run")
    argv = ["export", run, "--format", "torchscript", "--out", out]
    assert_refused(*argv, cwd=empty, contains="current folder")


# --- launcher flags -----------------------------------------------------------------------------

SEARCH = ["search", "--space", "tiny", *TINY, "--epochs", "1"]

# id -> (arguments, text of the error). Refused in the launcher before torch.distributed.run runs.
FLAG_CASES = {
    "nproc-per-node-0": ([*SEARCH, "--nproc-per-node", "0"], "--nproc-per-node must be"),
    "nnodes-0": ([*SEARCH, "--nnodes", "0"], "--nnodes must be"),
    "nnodes-2-without-endpoint": ([*SEARCH, "--nnodes", "2"], "--rdzv-endpoint"),
    "node-rank-out-of-range": (
        [*SEARCH, "--nnodes", "2", "--rdzv-endpoint", "localhost:29400", "--node-rank", "2"],
        "--node-rank must be between 0 and",
    ),
    "node-rank-without-nnodes": ([*SEARCH, "--node-rank", "1"], "--node-rank must be"),
    "negative-max-restarts": (
        [*SEARCH, "--nproc-per-node", "2", "--max-restarts", "-1"],
        "--max-restarts must be",
    ),
    "endpoint-without-port": (
        [*SEARCH, "--nproc-per-node", "2", "--rdzv-endpoint", "localhost"],
        "is not HOST:PORT",
    ),
    "endpoint-bad-port": (
        [*SEARCH, "--nproc-per-node", "2", "--rdzv-endpoint", "localhost:99999"],
        "is not HOST:PORT",
    ),
    "summary-on-two-processes": (
        ["train", "--summary", "--genotype", "DARTS_V2", "--nproc-per-node", "2"],
        "--summary runs on one process",
    ),
}


@pytest.mark.parametrize("case", list(FLAG_CASES))
def test_bad_launcher_flags_are_refused(tmp_path, case: str) -> None:
    argv, message = FLAG_CASES[case]
    assert_refused(*argv, "--out", "run", cwd=tmp_path, contains=message)


# --- refusals found in the launcher, before any worker starts -----------------------------------


def _fake_run(run: Path) -> None:
    """A search run directory with a checkpoint, as far as the run-directory checks look."""
    write_marker(run, "search")
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")


TWO = ["--nproc-per-node", "2"]
# id -> (arguments, set-up in tmp_path, text of the error)
LAUNCH_CASES = {
    "bad-set-value": ([*SEARCH, *TWO, "--set", "model.layers=many"], None, "model.layers"),
    "unknown-key": ([*SEARCH, *TWO, "--set", "model.colour=red"], None, "model.colour"),
    "resume-without-checkpoint": ([*SEARCH, *TWO, "--resume"], "marked", "nothing to resume"),
    "existing-run-without-resume": ([*SEARCH, *TWO], "fake-run", "already holds a run"),
    "train-bad-genotype": (["train", *TINY, *TWO, "--genotype", "NO_SUCH"], None, "NO_SUCH"),
    "train-without-genotype": (["train", *TINY, *TWO], None, "needs --genotype"),
    "grow-unknown-key": (["grow", *TWO, "--set", "adanet.colour=red"], None, "adanet.colour"),
    "tune-without-config": (["tune", *TWO], None, "needs --config"),
}


def _launch_case(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """The arguments and expected error of LAUNCH_CASES[case], its folders set up in tmp_path."""
    argv, setup, message = LAUNCH_CASES[case]
    if setup == "marked":  # a search run that stopped before its first checkpoint
        write_marker(tmp_path / "run", "search")
    elif setup == "fake-run":
        _fake_run(tmp_path / "run")
    return argv + ([] if argv[0] == "tune" else ["--out", "run"]), message


@pytest.mark.parametrize("case", list(LAUNCH_CASES))
def test_a_launch_refusal_comes_before_the_launcher_starts(tmp_path, monkeypatch, case) -> None:
    import nas.runtime.launch

    def no_launch(*args):
        raise AssertionError("workers were started")

    monkeypatch.setattr(nas.runtime.launch, "launch", no_launch)
    argv, message = _launch_case(tmp_path, case)
    assert_refused(*argv, cwd=tmp_path, contains=message)


# End to end through a real launcher, one case per kind of check (config, run directory, tune);
# the in-process test above covers every case.
@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize(
    "case", ["bad-set-value", "resume-without-checkpoint", "tune-without-config"]
)
def test_a_launch_refuses_with_one_line(tmp_path, case: str) -> None:
    argv, message = _launch_case(tmp_path, case)
    assert_refused(*argv, cwd=tmp_path, subprocess_run=True, contains=message)


@pytest.mark.slow
@pytest.mark.distributed
def test_a_user_error_inside_the_workers_is_printed_once(tmp_path) -> None:
    # Found only when the workers build their data: a batch larger than the split. The run
    # directory already holds config.yaml then, so it lies outside the folder checked unchanged.
    (tmp_path / "cwd").mkdir()
    argv = [*SEARCH, *TWO, "--batch-size", "64", "--out", str(tmp_path / "run")]
    cwd = tmp_path / "cwd"
    assert_refused(*argv, cwd=cwd, subprocess_run=True, contains="fewer than one batch")


# --- a killed launcher takes its workers with it ------------------------------------------------


def _children(pid: int) -> list[int]:
    """The pids of the processes `pid` started (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # the thread has ended
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["term-group", "kill-launcher"])
def test_killing_the_launcher_stops_its_workers(tmp_path, how: str) -> None:
    run = tmp_path / "run"
    argv = [*SEARCH[:-1], "300", *TWO, "--out", str(run)]  # long enough to be killed mid-way
    stderr = (tmp_path / "stderr.txt").open("w")
    command = [sys.executable, "-m", "nas", *argv]
    launcher = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,  # its own process group, as a shell job has
    )
    try:
        deadline = time.monotonic() + 300
        while not (run / "metrics.jsonl").exists():  # both workers are training
            assert launcher.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        workers = _children(launcher.pid)
        assert len(workers) == 2
        if how == "term-group":
            os.killpg(launcher.pid, signal.SIGTERM)
        else:
            os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=60)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
    finally:
        for pid in [launcher.pid, *_children(launcher.pid)]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    if how == "term-group":
        assert launcher.returncode == 128 + signal.SIGTERM
        assert "Traceback" not in (tmp_path / "stderr.txt").read_text()
