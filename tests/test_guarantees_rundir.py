"""Run directories: nothing a user made is overwritten, a run has one owner, restarts and resumes
touch only nasforge's files, and a genotype says whether its search finished.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_refused, file_states

from nas.cli import main

DATA = ["--dataset", "synthetic", "--set", "data.synthetic_samples=32"]
DATA += ["--set", "data.synthetic_image_size=8", "--batch-size", "8"]
SEARCH = ["search", "--epochs", "1", "--layers", "3", "--channels", "2", "--space", "tiny", *DATA]
TRAIN = ["train", "--genotype", "DARTS_V2", "--epochs", "1", "--layers", "3", "--channels", "2"]
TRAIN += ["--cutout", "0", *DATA]
GROW = ["grow", "--iterations", "1", "--epochs", "1", *DATA]
COMMANDS = {"search": SEARCH, "train": TRAIN, "grow": GROW}
# Inputs that fail only once the data is read, after the config checks passed.
MISSING_DATA = {
    "search": ["--set", "data.name=cifar10", "--set", "data.data_dir=no-such-dir"],
    "train": ["--set", "data.name=cifar10", "--set", "data.data_dir=no-such-dir"],
    "grow": ["--dataset", "csv", "--data-file", "no-such.csv", "--target", "y"],
}


def _user_folder(root: Path, *files: str, name: str = "mine") -> str:
    folder = root / name
    folder.mkdir()
    for file in files:
        (folder / file).write_text("the user's own\n")
    return name


def _run_dir(root: Path, command: str, checkpoint: bool, name: str = "run") -> str:
    """A run directory as nasforge leaves it, with or without its first checkpoint."""
    folder = root / name
    (folder / "checkpoints").mkdir(parents=True)
    marker = {"format": "nasforge.run", "command": command}
    (folder / ".nasforge-run").write_text(json.dumps(marker))
    (folder / "config.yaml").write_text(
        f"meta:\n  nasforge_version: 0.1.0\n  command: nas {command} --out {name}\n"
    )
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0}\n')
    result = {"search": "genotype.json", "train": "genotype.json", "grow": "ensemble.json"}
    (folder / result[command]).write_text("{}\n")
    if checkpoint:
        (folder / "checkpoints" / "last.pt").write_bytes(b"checkpoint")
    return name


def _prepare(root: Path, kind: str, *details) -> str:
    """Make the folder or file a case points --out (or --config) at; its name."""
    if kind == "file":
        (root / "notes.txt").write_text("a file\n")
        return "notes.txt"
    if kind == "user":
        return _user_folder(root, *details)
    if kind == "run":
        return _run_dir(root, *details)
    if kind == "bad-marker":
        name = _run_dir(root, "search", False)
        (root / name / ".nasforge-run").write_text("not json")
        return name
    if kind == "user-checkpoint":
        name = _user_folder(root, "config.yaml")
        (root / name / "checkpoints").mkdir()
        (root / name / "checkpoints" / "last.pt").write_text("x")
        return name
    assert kind == "config"
    (root / "c.yaml").write_text(details[0])
    return "c.yaml"


OUT = ["--out", "{}"]
# (id, argv with "{}" for the prepared name, what to prepare); each case must be refused with
# every file in the folder left as it was.
CASES = [
    ("search-out-empty", [*SEARCH, "--out", ""], None),
    ("search-out-spaces", [*SEARCH, "--out", "   "], None),
    ("train-out-empty", [*TRAIN, "--out", ""], None),
    ("grow-out-empty", [*GROW, "--out", ""], None),
    ("search-out-is-a-file", [*SEARCH, *OUT], ("file",)),
    ("grow-out-is-a-file", [*GROW, *OUT], ("file",)),
    ("search-out-under-a-file", [*SEARCH, "--out", "{}/run"], ("file",)),
    ("search-out-cwd-of-user-files", [*SEARCH, "--out", "."], ("file",)),
    ("search-out-user-genotype", [*SEARCH, *OUT], ("user", "genotype.json")),
    ("search-out-user-config", [*SEARCH, *OUT], ("user", "config.yaml")),
    ("train-out-user-results", [*TRAIN, *OUT], ("user", "results.jsonl")),
    ("train-out-user-genotype", [*TRAIN, *OUT], ("user", "genotype.json")),
    ("grow-out-user-ensemble", [*GROW, *OUT], ("user", "ensemble.json")),
    ("grow-out-user-hidden-file", [*GROW, *OUT], ("user", ".keep")),
    ("search-config-file-out-empty", [*SEARCH, "--config", "{}"], ("config", 'run:\n  out: ""\n')),
    ("search-set-out-spaces", [*SEARCH, "--set", "run.out='  '"], None),
    ("search-over-finished-run", [*SEARCH, *OUT], ("run", "search", True)),
    ("train-over-search-run", [*TRAIN, *OUT], ("run", "search", False)),
    ("grow-over-search-run", [*GROW, *OUT], ("run", "search", True)),
    ("search-over-unreadable-marker", [*SEARCH, *OUT], ("bad-marker",)),
    ("search-resume-out-empty", ["search", "--resume", "--out", ""], None),
    ("search-resume-missing", ["search", "--resume", "--out", "nowhere"], None),
    ("search-resume-empty-folder", ["search", "--resume", *OUT], ("user",)),
    ("train-resume-a-file", ["train", "--resume", *OUT], ("file",)),
    ("search-resume-user-folder", ["search", "--resume", *OUT], ("user", "config.yaml", "x.pt")),
    ("grow-resume-user-checkpoint", ["grow", "--resume", *OUT], ("user-checkpoint",)),
    ("grow-resume-search-run", ["grow", "--resume", *OUT], ("run", "search", True)),
    ("train-resume-search-run", ["train", "--resume", *OUT], ("run", "search", True)),
    ("search-resume-no-checkpoint", ["search", "--resume", *OUT], ("run", "search", False)),
    ("grow-resume-no-checkpoint", ["grow", "--resume", *OUT], ("run", "grow", False)),
    *[
        (
            f"{command}-restart-missing-data",
            [*argv, *MISSING_DATA[command], *OUT],
            ("run", command, False),
        )
        for command, argv in COMMANDS.items()
    ],
    *[
        (f"{command}-new-run-missing-data", [*argv, *MISSING_DATA[command], "--out", "new"], None)
        for command, argv in COMMANDS.items()
    ],
]


@pytest.mark.parametrize(
    ("argv", "prepare"), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
def test_bad_output_folder_is_refused_and_left_alone(tmp_path, argv, prepare) -> None:
    name = _prepare(tmp_path, *prepare) if prepare else ""
    assert_refused(*[arg.replace("{}", name) for arg in argv], cwd=tmp_path)
    assert not (tmp_path / "new").exists()  # a refused new run creates no folder either


def test_refusals_say_what_to_do(tmp_path) -> None:
    user = _user_folder(tmp_path, "genotype.json")
    assert_refused(*SEARCH, "--out", user, cwd=tmp_path, contains="nasforge did not create it")
    stopped = _run_dir(tmp_path, "search", False)
    line = assert_refused("search", "--resume", "--out", stopped, cwd=tmp_path)
    assert "start it again without --resume: nas search --out run" in line
    other = _run_dir(tmp_path, "search", True, name="other")
    assert_refused(*GROW, "--out", other, cwd=tmp_path, contains="holds a nas search run")


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """A process that takes the run directory's lock through the API and sleeps."""
    code = (
        "import sys, time; from pathlib import Path; from nas.runtime.lock import RunDirLock; "
        "RunDirLock(Path(sys.argv[1])).acquire('nas search --out held'); "
        "print('held', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.slow
def test_lock_refuses_a_second_run_until_its_holder_dies(tmp_path) -> None:
    """Also: the restart in place keeps the user's files, drops temp files and stale rows."""
    run = tmp_path / _run_dir(tmp_path, "search", False)
    (run / "notes.jsonl").write_text('{"epoch": 7, "mine": true}\n')
    (run / ".metrics.jsonl.k2j4.tmp").write_text('{"epoch": 9}\n')
    (run / "checkpoints" / ".last.pt.a8x1.tmp").write_bytes(b"torn")
    holder = _hold_lock(run)
    try:
        line = assert_refused(*SEARCH, "--out", "run", cwd=tmp_path, contains="in use")
        assert f"pid {holder.pid}" in line and "nas search --out held" in line
        (run / "checkpoints" / "last.pt").write_bytes(b"checkpoint")
        assert_refused("search", "--resume", "--out", "run", cwd=tmp_path, contains="in use")
        (run / "checkpoints" / "last.pt").unlink()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main([*SEARCH, "--out", str(run)]) == 0  # the kernel dropped the dead holder's lock
    assert (run / "notes.jsonl").read_text() == '{"epoch": 7, "mine": true}\n'
    assert not list(run.rglob("*.tmp"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1] and "val_acc" in rows[0]
    assert (run / "checkpoints" / "last.pt").stat().st_size > 100


def test_interrupted_search_genotype_resume_and_file_modes(tmp_path, monkeypatch, capsys) -> None:
    """Ctrl-C after the first checkpoint says --resume; the genotype then is unfinished (noted by
    nas show) until the resumed search completes. Written files get 0666 & ~umask."""
    import nas.runtime.engine as engine

    saved = engine.save_checkpoint

    def save_then_interrupt(path, state):
        saved(path, state)
        raise KeyboardInterrupt

    run = tmp_path / "run"
    monkeypatch.setattr(engine, "save_checkpoint", save_then_interrupt)
    old_umask = os.umask(0o022)
    try:
        assert main([*SEARCH, "--epochs", "2", "--out", str(run)]) == 130
    finally:
        os.umask(old_umask)
    assert f"nas search --out {run} --resume" in capsys.readouterr().err
    for name in ("config.yaml", "genotype.json", ".nasforge-run", "checkpoints/last.pt"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name
    search = json.loads((run / "genotype.json").read_text())["search"]
    assert search == {"epoch": 1, "epochs": 2, "complete": False}
    assert main(["show", str(run)]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "nas: note: this genotype comes from an unfinished search, epoch 1 of 2; its "
        "architecture may still have changed"
    ]
    monkeypatch.setattr(engine, "save_checkpoint", saved)
    assert main(["search", "--out", str(run), "--resume"]) == 0
    search = json.loads((run / "genotype.json").read_text())["search"]
    assert search == {"epoch": 2, "epochs": 2, "complete": True}
    capsys.readouterr()
    assert main(["show", str(run)]) == 0 and main(["show", "DARTS_V2"]) == 0
    assert capsys.readouterr().err == ""


def test_train_notes_an_unfinished_genotype(tmp_path, capsys) -> None:
    from nas.published import PUBLISHED_GENOTYPES

    data = PUBLISHED_GENOTYPES["DARTS_V2"].to_dict()
    data["search"] = {"epoch": 1, "epochs": 50, "complete": False}
    (tmp_path / "g.json").write_text(json.dumps(data))
    # data that is read (the config resolves) but cannot fill one batch: refused after the note
    too_few = ["--dataset", "digits", "--batch-size", "5000"]
    args = ["train", "--genotype", str(tmp_path / "g.json"), *too_few]
    assert main([*args, "--out", str(tmp_path / "t")]) == 2
    note, error = capsys.readouterr().err.splitlines()
    assert "unfinished search, epoch 1 of 50" in note and error.startswith("nas: error:")
    data["search"]["complete"] = True
    (tmp_path / "g.json").write_text(json.dumps(data))
    assert main([*args, "--out", str(tmp_path / "t")]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_ctrl_c_before_the_first_checkpoint_says_start_again(tmp_path, monkeypatch) -> None:
    from nas.runtime.engine import Engine

    def interrupt(self, start_epoch=0):
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "run", interrupt)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main([*SEARCH, "--out", str(tmp_path / "run")]) == 130
    last = err.getvalue().strip().splitlines()[-1]
    assert "before the first checkpoint" in last and "--resume" not in last
    assert f"--out {tmp_path / 'run'}" in last
    assert_refused("search", "--resume", "--out", "run", cwd=tmp_path, contains="without --resume")


@pytest.mark.parametrize(
    "search", [{"epoch": 3, "epochs": 2, "complete": False}, {"epoch": 1, "epochs": 2}, "done"]
)
def test_bad_search_progress_in_a_genotype_is_refused(tmp_path, search) -> None:
    from nas.published import PUBLISHED_GENOTYPES

    data = {**PUBLISHED_GENOTYPES["DARTS_V2"].to_dict(), "search": search}
    (tmp_path / "g.json").write_text(json.dumps(data))
    assert_refused("show", "g.json", cwd=tmp_path, contains="g.json.search: expected")


def test_atomic_write_gives_umask_modes_and_never_leaves_temp_files(tmp_path) -> None:
    from nas.io import atomic_write_text, remove_temp_files

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    (tmp_path / ".a.txt.x1y2.tmp").write_text("torn")
    (tmp_path / ".keep.tmp").write_text("the user's")  # not atomic_write's pattern
    before = file_states(tmp_path)
    assert [p.name for p in remove_temp_files(tmp_path)] == [".a.txt.x1y2.tmp"]
    assert set(before) - set(file_states(tmp_path)) == {".a.txt.x1y2.tmp"}


def test_lock_is_released_when_its_holder_is_killed(tmp_path) -> None:
    from nas.errors import NasError
    from nas.runtime.lock import RunDirLock, is_locked

    holder = _hold_lock(tmp_path)
    try:
        assert is_locked(tmp_path)
        with pytest.raises(NasError, match=f"pid {holder.pid}"):
            RunDirLock(tmp_path).acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 5
    while is_locked(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    with RunDirLock(tmp_path) as lock:
        lock.acquire()
        assert is_locked(tmp_path)
    assert not is_locked(tmp_path)


def _launcher_args(out: str, resume: bool = False):
    import argparse

    return argparse.Namespace(command="search", out=out, resume=resume, node_rank=None)


def test_the_launcher_refuses_a_folder_in_use_before_starting_workers(tmp_path) -> None:
    run = tmp_path / _run_dir(tmp_path, "search", False)
    holder = _hold_lock(run)
    try:
        launched = [SEARCH[0], "--nproc-per-node", "2", *SEARCH[1:], "--out", "run"]
        assert_refused(*launched, cwd=tmp_path, contains=f"pid {holder.pid}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_workers_run_under_the_launchers_lock(tmp_path) -> None:
    """What a worker does under `--nproc-per-node`: the launcher's lock does not refuse it (nor
    a torchrun restart of it), and the lock is the launcher's until it ends."""
    from nas.ownership import hold_for_workers
    from nas.runtime.lock import is_locked

    run = tmp_path / "run"
    with hold_for_workers(_launcher_args(str(run))):
        assert main([*SEARCH, "--out", str(run)]) == 0
        assert is_locked(run)  # the worker took no lock of its own: the launcher's is held
    assert not is_locked(run) and (run / ".nasforge-run").is_file()


def test_the_launcher_leaves_an_unclaimed_folder_as_it_was(tmp_path) -> None:
    """Workers that refuse their input never claim the folder: the launcher's lock file (and a
    folder it made) go."""
    from nas.ownership import hold_for_workers

    (tmp_path / "empty").mkdir()
    for name in ("new", "empty"):
        with hold_for_workers(_launcher_args(str(tmp_path / name))):
            assert (tmp_path / name / ".nasforge.lock").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]
    assert not any((tmp_path / "empty").iterdir())
