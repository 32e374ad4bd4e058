"""What an installed nasforge holds and how it meets a user's machine: the packaged configs named
without a path, the search spaces inside the `nas` namespace, the git commit a run records, the
choices --help lists, progress off a terminal, and a wheel that runs outside the repository.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nas.cli import main
from nas.configs import FOLDER, builtin_names, config_path
from nas.errors import NasError

ROOT = Path(__file__).resolve().parent.parent
# A network and data small enough for seconds; `nas search` adds --space tiny.
SMALL = [
    "--epochs",
    "1",
    "--layers",
    "3",
    "--channels",
    "4",
    "--dataset",
    "synthetic",
    "--set",
    "data.synthetic_samples=32",
    "--set",
    "data.synthetic_image_size=8",
    "--batch-size",
    "8",
]
TINY = [*SMALL, "--space", "tiny"]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_lists_every_package_and_maps_search_spaces_into_nas() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    on_disk = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "nas").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert set(setuptools["packages"]) == on_disk | {"nas.search_spaces"}
    assert setuptools["package-dir"] == {"nas.search_spaces": "search_spaces"}
    assert "search_spaces" not in setuptools["packages"]


def test_license_matches_the_metadata() -> None:
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert (ROOT / "nas" / "py.typed").is_file()
    assert "nas.configs" in _pyproject()["tool"]["setuptools"]["package-data"]


def test_a_config_is_named_without_a_path(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert {"darts_digits", "train_digits", "tune_digits"} <= set(builtin_names())
    assert config_path("darts_digits") == FOLDER / "darts_digits.yaml"
    assert config_path("darts_digits.yaml") == FOLDER / "darts_digits.yaml"
    # a file that exists wins over the built-in name
    (tmp_path / "darts_digits").write_text("run:\n  epochs: 3\n")
    assert config_path("darts_digits") == Path("darts_digits")
    # a path that does not exist is left to the reader, which names the missing file
    assert config_path("my/config.yaml") == Path("my/config.yaml")
    with pytest.raises(NasError, match="neither a file nor a built-in config; give a YAML"):
        config_path("darts_digit")


def test_cli_reads_a_builtin_config_and_refuses_an_unknown_name(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--config", "darts_digits", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["run"]["epochs"] == 36 and printed["model"]["layers"] == 5
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--config", "dart_digits", "--print-config"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("nas: error: argument --config: config 'dart_digits' is neither")
    assert ", ".join(builtin_names()) in line


def _documented_command(path: Path) -> tuple[str, str]:
    """(command, config name) of the `nas COMMAND --config NAME` line in a config's header."""
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    found = [re.search(r"nas (\w+) .*--config (\S+)", line) for line in header]
    command, name = next((m.group(1), m.group(2)) for m in found if m)
    return command, name


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_config_runs_under_the_command_its_header_names(name: str, capsys) -> None:
    command, named = _documented_command(FOLDER / f"{name}.yaml")
    assert named == name
    if command == "tune":  # its config holds a tune: section that `nas tune` plans from
        import argparse

        from nas.tune.run import plan

        args = argparse.Namespace(
            config=str(config_path(name)), overrides=[], storage=None, study=None, out=None
        )
        assert plan(args, []).study_name == name
        return
    argv = [command, "--config", name, "--print-config"]
    if command == "train":
        argv += ["--genotype", "DARTS_V2"]
    assert main(argv) == 0
    assert yaml.safe_load(capsys.readouterr().out)["run"]["seed"] == 0


def test_help_lists_the_registered_choices_plugins_included(capsys) -> None:
    from nas.strategies import STRATEGIES
    from nas.strategies.darts import Darts

    STRATEGIES.add("my_plugin_strategy", Darts)
    try:
        with pytest.raises(SystemExit):
            main(["search", "--help"])
    finally:
        del STRATEGIES._items["my_plugin_strategy"]
    text = " ".join(capsys.readouterr().out.split())
    assert "search strategy: asap, darts, gdas, my_plugin_strategy, random_ws" in text
    assert "search space: darts, rdarts_s2, rdarts_s3, tiny" in text
    assert (
        "dataset: breast_cancer, cifar10, csv, digits, folder, mnist1d, mnist1d_shuffle, npz, "
        "synthetic" in text
    )
    assert "built-in name: " + ", ".join(builtin_names()) in text
    with pytest.raises(SystemExit):
        main(["grow", "--help"])
    assert "subnetwork generator: cnn, mlp" in " ".join(capsys.readouterr().out.split())


def test_git_commit_is_nasforges_own_never_the_users(tmp_path, monkeypatch) -> None:
    from nas.rundir import git_commit

    def repository(folder: Path, project: str | None) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        if project is not None:
            (folder / "pyproject.toml").write_text(f'[project]\nname = "{project}"\n')
        (folder / "README").write_text("x\n")
        git = ["git", "-c", "user.name=u", "-c", "user.email=u@example.com"]
        subprocess.run([*git, "init", "-q"], cwd=folder, check=True)
        subprocess.run([*git, "add", "-A"], cwd=folder, check=True)
        subprocess.run([*git, "commit", "-q", "-m", "c"], cwd=folder, check=True)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True)
        return head.stdout.decode().strip()

    # nasforge installed in a virtualenv inside the user's repository
    user = repository(tmp_path / "user", "my-project")
    installed = tmp_path / "user" / ".venv" / "lib" / "site-packages" / "nas"
    installed.mkdir(parents=True)
    assert git_commit(installed) is None
    # a `nas/` folder at the top of a repository that is not nasforge
    (tmp_path / "user" / "nas").mkdir()
    assert git_commit(tmp_path / "user" / "nas") is None
    # a nasforge checkout records its commit
    checkout = tmp_path / "nasforge"
    (checkout / "nas").mkdir(parents=True)
    (checkout / "nas" / "x.py").write_text("")
    nasforge = repository(checkout, "nasforge")
    assert git_commit(checkout / "nas") == nasforge
    # this package, run from a cwd that is the user's repository
    monkeypatch.chdir(tmp_path / "user")
    assert git_commit() != user
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True)
        assert git_commit() == head.stdout.decode().strip()


@pytest.mark.slow  # a process that imports torch
def test_spaces_are_found_when_the_cwd_holds_its_own_search_spaces(tmp_path) -> None:
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "__init__.py").write_text("raise ImportError('the user one')\n")
    code = (
        "import sys; from nas.spaces import SPACES; print(SPACES.names()); "
        "print('search_spaces' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["['darts', 'rdarts_s2', 'rdarts_s3', 'tiny']", "False"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.slow  # a 2-epoch search: 10-20 s on 2 busy cores
def test_progress_off_a_terminal_is_plain_lines(tmp_path, capfd) -> None:
    assert main(["search", *TINY, "--epochs", "2", "--out", str(tmp_path / "r")]) == 0
    err = capfd.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    # a line after the run's first step, then one a minute (none more in these seconds)
    steps = [line for line in err.splitlines() if ": step " in line]
    assert len(steps) == 1, err
    assert re.fullmatch(r"epoch 1/2: step 1/\d+, loss=\d\.\d+, acc=\d\.\d+, lr=.+", steps[0])
    assert re.search(r"^epoch 2/2: train_loss ", err, re.MULTILINE)
    assert "nas: loading" not in err  # a log keeps a refusal's stderr to its one line


@pytest.mark.slow  # optuna, a study and its report: about 30 s on 2 busy cores
def test_tune_off_a_terminal_prints_its_trial_lines_without_a_bar(tmp_path, capfd) -> None:
    pytest.importorskip("optuna")
    config = {
        "data": {"name": "synthetic", "batch_size": 16, "augment": False, "cutout": 0},
        "model": {"genotype": "DARTS_V2", "layers": 3, "channels": 4, "auxiliary_weight": 0.0},
        "run": {"epochs": 1, "device": "cpu"},
        "tune": {"command": "train", "trials": 1, "params": {"train.lr": {"type": "float"}}},
    }
    config["data"].update(synthetic_samples=64, synthetic_image_size=8)
    config["tune"]["params"]["train.lr"].update(low=0.01, high=0.1)
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(config))
    assert (
        main(["tune", "--config", str(tmp_path / "tune.yaml"), "--out", str(tmp_path / "s")]) == 0
    )
    err = capfd.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert re.search(r"^trial 0\b", err, re.MULTILINE), err


@pytest.mark.slow  # a search: 3 s, or 20 s as a process's first
def test_a_terminal_hears_what_is_being_prepared(tmp_path, monkeypatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["search", *TINY, "--out", str(tmp_path / "r")]) == 0
    lines = terminal.getvalue().splitlines()
    loading = lines.index("nas: loading dataset synthetic ...")
    assert lines[loading + 1] == "nas: building the supernet ..."
    assert lines[loading + 2].startswith("nas search: darts on synthetic")


def _stderr_on_a_terminal(*args: str) -> str:
    """What `nas ARGS` writes to stderr when stderr is a terminal (a pseudo-terminal here)."""
    pty = pytest.importorskip("pty")
    main_fd, child_fd = pty.openpty()
    try:
        subprocess.run(
            [sys.executable, "-m", "nas", *args],
            stdout=subprocess.DEVNULL,
            stderr=child_fd,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )
        os.close(child_fd)
        chunks = []
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # EIO once the terminal is drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(main_fd)
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.mark.slow  # two processes that import torch
def test_a_terminal_hears_that_pytorch_is_loading() -> None:
    assert _stderr_on_a_terminal("search", "--print-config") == "nas: loading PyTorch ...\n"
    assert _stderr_on_a_terminal("search", "--help") == (
        "nas: loading PyTorch to list the registered names ...\n"
    )


@pytest.mark.slow
def test_a_wheel_runs_outside_the_repository(tmp_path) -> None:
    source, target, work = tmp_path / "source", tmp_path / "site", tmp_path / "work"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for folder in ("nas", "search_spaces"):
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)]
    subprocess.run(build, check=True, cwd=tmp_path, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("nasforge-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    assert sorted(p.name for p in (target / "nas" / "search_spaces").glob("*.py")) == [
        "__init__.py",
        "darts.py",
        "rdarts.py",
        "tiny.py",
    ]
    assert not (target / "search_spaces").exists()
    assert (target / "nas" / "py.typed").is_file()
    assert (target / "nas" / "configs" / "darts_digits.yaml").is_file()

    # the user's folder: a git repository with its own search_spaces package
    (work / "search_spaces").mkdir(parents=True)
    (work / "search_spaces" / "__init__.py").write_text("raise ImportError('the user one')\n")
    git = ["git", "-c", "user.name=u", "-c", "user.email=u@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=work, check=True)
    subprocess.run([*git, "add", "-A"], cwd=work, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], cwd=work, check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}

    def nas(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "nas", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )

    shown = nas("--help")
    assert shown.returncode == 0 and "search" in shown.stdout
    printed = nas("search", "--config", "darts_digits", "--print-config")
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["run"]["epochs"] == 36
    # the packaged configs, made tiny
    searched = nas("search", "--config", "darts_digits", *TINY, "--out", "s")
    assert searched.returncode == 0, searched.stderr[-3000:]
    assert "\r" not in searched.stderr and "\x1b" not in searched.stderr
    meta = yaml.safe_load((work / "s" / "config.yaml").read_text())["meta"]
    assert meta["git_commit"] is None  # installed: the user's repository's commit never leaks in
    trained = nas("train", "--genotype", "s", "--config", "train_digits", *SMALL, "--out", "t")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (work / "t" / "checkpoints" / "best.pt").is_file()
    where = [sys.executable, "-c", "import nas; print(nas.__file__)"]
    imported = subprocess.run(where, cwd=work, env=env, capture_output=True, text=True)
    assert imported.stdout.strip() == str(target / "nas" / "__init__.py")


@pytest.mark.parametrize("target", ["setup", "search"])
def test_make_says_where_nas_is_installed(target: str) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on this machine")
    # Under `make test` the parent's MAKELEVEL/MAKEFLAGS would add "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    planned = subprocess.run(
        [make, "--no-print-directory", "-n", target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    hint = "run 'source .venv/bin/activate' or call .venv/bin/nas"
    assert hint in planned[-1]  # the last line, after the search
    readme = (ROOT / "README.md").read_text()
    assert "`source .venv/bin/activate`" in readme and "`.venv/bin/nas`" in readme
