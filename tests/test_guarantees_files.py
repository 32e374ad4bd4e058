"""Hostile and damaged inputs: each is refused with one `nas: error:` line and changes no file.

Config files, genotype files and notation, run directories damaged after a run, checkpoints that
torch's weights-only loader refuses, settings the optimisers would reject, numbers beyond int64,
huge values that must not be echoed whole, and a network too large for memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nas.adanet import GENERATORS
from nas.cli import main
from nas.data import DATASETS
from nas.genotype import Genotype
from nas.published import PUBLISHED_GENOTYPES
from nas.spaces import SPACES
from nas.strategies import STRATEGIES
from tests.conftest import assert_refused

DATA = ["--dataset", "synthetic", "--batch-size", "8", "--epochs", "1", "--device", "cpu"]
DATA += ["--set", "data.synthetic_samples=32", "--set", "data.synthetic_image_size=8"]
SIZES = ["--layers", "3", "--channels", "2"]
SMALL = {
    "search": ["search", "--space", "tiny", *SIZES, *DATA],
    "train": ["train", "--genotype", "DARTS_V2", "--cutout", "0", "--auxiliary-weight", "0"]
    + [*SIZES, *DATA],
    "grow": ["grow", "--iterations", "1", *DATA],
}
HUGE = "x" * 100_000
# The deadlines below time the refusals, not first imports of torch and the registries' plugins.
for _registry in (DATASETS, STRATEGIES, GENERATORS, SPACES):
    _registry.names()
NOTATION = PUBLISHED_GENOTYPES["DARTS_V2"].to_notation()


def _short_echo(line: str) -> bool:
    """A huge value is echoed as a short head with its length, not a long stretch of it."""
    return "x" * 100 not in line


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging) when the block runs longer than `seconds`."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _bomb() -> str:
    """A YAML alias bomb: nine levels, each repeating the one below nine times (9^9 strings once
    printed, as the message of a type error does)."""
    levels = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    return f"run:\n  seed: [{', '.join(levels)}]\n"


def _deep_block(levels: int) -> str:
    return "run:\n" + "".join("  " * i + "a:\n" for i in range(1, levels))


# name -> (config file bytes, text the refusal must contain)
CONFIG_FILES = {
    "not-utf8": (b"run:\n  seed: 1  # \xff\xfe\n", "not UTF-8"),
    "utf16": ("run:\n  seed: 1\n".encode("utf-16"), "not UTF-8"),
    "flow-nested-100000-deep": (b"run: " + b"[" * 100_000, "nested more than"),
    "block-nested-1000-deep": (_deep_block(1000).encode(), "nested more than"),
    "alias-bomb": (_bomb().encode(), "aliases"),
    "python-tag-payload": (b"run: !!python/object/apply:os.system ['touch MARKER']\n", "tag"),
    "empty": (b"", "is empty"),
    "comments-only": (b"# nothing\n", "is empty"),
    "top-level-list": (b"- run\n- data\n", "expected a mapping of sections"),
    "section-not-mapping": (b"run: 5\n", "section 'run'"),
    "seed-beyond-int64": (b"run:\n  seed: 1000000000000000000000000000000\n", "run.seed"),
    "seed-5000-digits": (b"run:\n  seed: " + b"9" * 5000 + b"\n", "4300 digits"),
    "lr-infinite": (b"strategy:\n  weight_lr: .inf\n", "strategy.weight_lr"),
    "lr-1e999": (b"strategy:\n  alpha_lr: 1e999\n", "strategy.alpha_lr"),
    # "? key" is YAML's explicit key: plain keys stop at 1024 characters.
    "huge-key": (f"run:\n  ? {HUGE}\n  : 1\n".encode(), "unknown config key"),
    "huge-section": (f"? {HUGE}\n: {{a: 1}}\n".encode(), "unknown config key"),
    "huge-string-for-int": (f"run:\n  epochs: {HUGE}\n".encode(), "run.epochs"),
    "huge-string-for-list": (f"strategy:\n  alpha_betas: {HUGE}\n".encode(), "alpha_betas"),
    "directory": (None, "is a directory"),
}


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_a_hostile_config_file_is_refused_fast(tmp_path: Path, name: str) -> None:
    content, contains = CONFIG_FILES[name]
    if content is None:
        (tmp_path / "c.yaml").mkdir()
    else:
        (tmp_path / "c.yaml").write_bytes(content)
    with deadline(20):
        args = [*SMALL["search"], "--config", "c.yaml"]
        line = assert_refused(*args, cwd=tmp_path, contains=contains)
    assert "c.yaml" in line and _short_echo(line)
    assert not (tmp_path / "MARKER").exists()


# Values given by flag or --set: numbers beyond int64, non-finite floats, huge echoes.
FLAG_CASES = {
    "seed-flag-10**30": (["search", "--seed", str(10**30)], "run.seed"),
    "seed-set-10**30": (["search", "--set", f"run.seed={10**30}"], "run.seed"),
    "epochs-10**30": (["search", "--epochs", str(10**30)], "run.epochs"),
    "train-lr-inf": (["train", "--lr", "inf"], "train.lr"),
    "train-lr-nan": (["train", "--lr", "nan"], "train.lr"),
    "drop-path-nan": (["train", "--drop-path", "nan"], "model.drop_path"),
    "config-name-too-long": (["search", "--config", HUGE[:5000]], "cannot be read"),
    "huge-unknown-key": (["search", "--set", f"{HUGE}=1"], "unknown config key"),
    "huge-value-for-int": (["search", "--set", f"run.epochs={HUGE}"], "run.epochs"),
    "huge-assignment": (["search", "--set", HUGE], "--set expects key=value"),
    "huge-strategy-name": (["search", "--strategy", HUGE], "unknown strategy"),
    "huge-dataset-name": (["search", "--dataset", HUGE], "unknown dataset"),
    "huge-generator-name": (["grow", "--generator", HUGE], "unknown subnetwork generator"),
    "huge-space-name": (["search", "--space", HUGE], "unknown search space"),
}


@pytest.mark.parametrize("name", FLAG_CASES)
def test_a_hostile_value_is_refused(tmp_path: Path, name: str) -> None:
    extra, contains = FLAG_CASES[name]
    command, *rest = extra
    with deadline(30):
        assert _short_echo(assert_refused(*SMALL[command], *rest, cwd=tmp_path, contains=contains))


# Settings torch would reject, or sizes that cannot work: refused when the config is read.
RANGE_CASES = [
    ("search", "strategy.weight_momentum", "-0.9"),
    ("search", "strategy.alpha_betas", "[0.5, 1.0]"),
    ("search", "strategy.alpha_betas", "[-0.1, 0.9]"),
    ("search", "strategy.alpha_betas", "[0.5]"),
    ("search", "strategy.weight_lr", "0"),
    ("search", "strategy.weight_lr_min", "-0.001"),
    ("search", "strategy.alpha_lr", "-1"),
    ("search", "strategy.weight_decay", "-0.1"),
    ("search", "strategy.alpha_weight_decay", "-0.1"),
    ("search", "strategy.grad_clip", "0"),
    ("search", "data.synthetic_image_size", "0"),
    ("search", "data.synthetic_channels", "0"),
    ("search", "data.synthetic_samples", "0"),
    ("search", "data.synthetic_classes", "1"),
    ("search", "data.batch_size", "0"),
    ("search", "model.layers", "1"),
    ("search", "model.channels", "0"),
    ("search", "model.partial_channels", "3"),
    ("train", "train.momentum", "-0.9"),
    ("train", "train.lr", "-0.1"),
    ("train", "train.lr_min", "-1"),
    ("train", "train.weight_decay", "-0.1"),
    ("train", "train.grad_clip", "-1"),
    ("train", "train.label_smoothing", "1.0"),
    ("train", "model.drop_path", "1.0"),
    ("train", "model.auxiliary_weight", "-1"),
    ("train", "model.channels", "0"),
    ("train", "run.epochs", "0"),
    ("grow", "adanet.lr", "-1"),
    ("grow", "adanet.mixture_lr", "0"),
    ("grow", "adanet.weight_decay", "-1"),
    ("grow", "adanet.iterations", "0"),
    ("grow", "adanet.widths", "[0]"),
    ("grow", "adanet.mixture_epochs", "0"),
    ("grow", "adanet.complexity_weight", "-1"),
]


@pytest.mark.parametrize(("command", "key", "value"), RANGE_CASES)
def test_a_setting_out_of_range_is_refused_naming_it(
    tmp_path: Path, command: str, key: str, value: str
) -> None:
    with deadline(30):
        assert_refused(*SMALL[command], "--set", f"{key}={value}", cwd=tmp_path, contains=key)


def _genotype_with(**changes: object) -> dict:
    data = PUBLISHED_GENOTYPES["DARTS_V2"].to_dict()
    for path, value in changes.items():
        target = data
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value
    return data


def _deep_json(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


# name -> (genotype.json bytes, text the refusal must contain)
GENOTYPE_FILES = {
    "not-utf8": (b'{"format": "nasforge.genotype", \xff}', "not UTF-8"),
    "nested-100000-deep": (_deep_json(100_000), "nested too deeply"),
    "input-5000-digits": (
        json.dumps(_genotype_with(normal__nodes__0__0__input=0))
        .replace('"input": 0', '"input": ' + "7" * 5000, 1)
        .encode(),
        "4300 digits",
    ),
    "input-10**30": (
        json.dumps(_genotype_with(normal__nodes__0__0__input=10**30)).encode(),
        "out of range",
    ),
    "huge-op": (json.dumps(_genotype_with(normal__nodes__0__0__op=HUGE)).encode(), "unknown op"),
    "huge-key": (json.dumps(_genotype_with(**{HUGE: 1})).encode(), "unexpected field"),
    "huge-format": (json.dumps(_genotype_with(format=HUGE)).encode(), "format"),
    "huge-space": (json.dumps(_genotype_with(space=HUGE)).encode(), "space"),
    "huge-edge": (json.dumps(_genotype_with(normal__nodes__0__0=[HUGE])).encode(), "expected"),
    "huge-concat": (json.dumps(_genotype_with(normal__concat=[2] * 50_000)).encode(), "repeated"),
}


@pytest.mark.parametrize("command", ["show", "train"])
@pytest.mark.parametrize("name", GENOTYPE_FILES)
def test_a_hostile_genotype_file_is_refused(tmp_path: Path, name: str, command: str) -> None:
    content, contains = GENOTYPE_FILES[name]
    (tmp_path / "g.json").write_bytes(content)
    args = ["show", "g.json"] if command == "show" else [*SMALL["train"], "--genotype", "g.json"]
    with deadline(20):
        line = assert_refused(*args, cwd=tmp_path, contains=contains)
    assert "g.json" in line and _short_echo(line)


# A genotype argument that is no file: notation, or a path the OS refuses.
GENOTYPE_ARGUMENTS = {
    "name-too-long-for-a-file": (HUGE[:5000], "cannot be a file"),
    "notation-huge-op": (NOTATION.replace("sep_conv_3x3", HUGE[:20_000], 1), "unknown op"),
    "notation-nested-deep": ("Genotype(normal=" + "[" * 100_000, "notation"),
    "notation-sum-100000-terms": ("Genotype(normal=" + "+".join(["1"] * 100_000) + ")", "notation"),
    "notation-range-10**18": (NOTATION.replace("[2, 3, 4, 5]", "range(0, 10**18)", 1), "notation"),
    "notation-huge-range": (
        NOTATION.replace("[2, 3, 4, 5]", f"range(0, {10**18})", 1),
        "spans more states",
    ),
    "notation-5000-digit-input": (NOTATION.replace(", 0)", ", " + "1" * 5000 + ")", 1), "notation"),
    "notation-call": (NOTATION.replace("[2, 3, 4, 5]", "__import__('os').getcwd()", 1), "integers"),
    "notation-positional": ("Genotype([])", "keyword"),
    "run-dir-without-genotype": ("run", "without a genotype.json"),
}


@pytest.mark.parametrize("command", ["show", "train"])
@pytest.mark.parametrize("name", GENOTYPE_ARGUMENTS)
def test_a_hostile_genotype_argument_is_refused(tmp_path: Path, name: str, command: str) -> None:
    text, contains = GENOTYPE_ARGUMENTS[name]
    (tmp_path / "run").mkdir()
    args = ["show", text] if command == "show" else [*SMALL["train"], "--genotype", text]
    with deadline(20):
        assert _short_echo(assert_refused(*args, cwd=tmp_path, contains=contains))


def test_a_genotype_json_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run" / "genotype.json").mkdir(parents=True)
    assert_refused("show", "run", cwd=tmp_path, contains="cannot be read")


def test_the_notation_is_accepted_wherever_a_genotype_is(tmp_path: Path, capsys) -> None:
    assert main(["show", NOTATION]) == 0
    assert "normal cell" in capsys.readouterr().out
    out = tmp_path / "run"
    assert main([*SMALL["train"], "--genotype", NOTATION, "--out", str(out)]) == 0
    assert Genotype.load(out / "genotype.json") == PUBLISHED_GENOTYPES["DARTS_V2"]
    ranged = NOTATION.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=range(2, 6)")
    assert main([*SMALL["train"], "--genotype", ranged, "--summary", "--json"]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny train run and search run (one epoch each)."""
    root = tmp_path_factory.mktemp("runs")
    assert main([*SMALL["train"], "--out", str(root / "train")]) == 0
    assert main([*SMALL["search"], "--out", str(root / "search")]) == 0
    return root


class _Payload:
    """Runs a shell command when unpickled by an unsafe loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def _damage(run: Path, runs: Path, name: str, marker: Path) -> None:
    checkpoint = run / "checkpoints" / "last.pt"
    if name == "config-empty":
        (run / "config.yaml").write_text("")
    elif name == "config-list":
        (run / "config.yaml").write_text("- data\n- run\n")
    elif name == "config-not-utf8":
        (run / "config.yaml").write_bytes((run / "config.yaml").read_bytes() + b"# \xff\n")
    elif name == "config-section-not-mapping":
        (run / "config.yaml").write_text("data: 5\n")
    elif name == "config-bad-value":
        text = (run / "config.yaml").read_text().replace("epochs: 1\n", "epochs: many\n", 1)
        (run / "config.yaml").write_text(text)
    elif name == "config-bad-world-size":
        text = (run / "config.yaml").read_text().replace("world_size: 1", "world_size: two", 1)
        (run / "config.yaml").write_text(text)
    elif name == "metrics-bad-epoch":
        rows = (run / "metrics.jsonl").read_text()
        (run / "metrics.jsonl").write_text('{"epoch": "one"}\n' + rows)
    elif name == "metrics-not-utf8":
        (run / "metrics.jsonl").write_bytes(b"\xff\xfe\n" + (run / "metrics.jsonl").read_bytes())
    elif name == "metrics-deep-row":
        (run / "metrics.jsonl").write_bytes(_deep_json(100_000) + b"\n" + b'{"epoch": 1}\n')
    elif name == "checkpoint-bare-tensor":
        torch.save(torch.zeros(3), checkpoint)
    elif name == "checkpoint-of-search":
        shutil.copy(runs / "search" / "checkpoints" / "last.pt", checkpoint)
    elif name == "checkpoint-other-shape":
        payload = torch.load(checkpoint, weights_only=True)
        network = payload["task"]["network"]
        network[next(iter(network))] = torch.zeros(1)
        torch.save(payload, checkpoint)
    elif name == "checkpoint-bad-epoch":
        payload = torch.load(checkpoint, weights_only=True)
        torch.save({**payload, "epoch": "1"}, checkpoint)
    elif name in ("checkpoint-no-rng", "checkpoint-no-task"):
        payload = torch.load(checkpoint, weights_only=True)
        del payload[name.removeprefix("checkpoint-no-")]
        torch.save(payload, checkpoint)
    elif name == "checkpoint-truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    elif name == "checkpoint-pickle-payload":
        torch.save({"checkpoint_version": 1, "rng": _Payload(marker)}, checkpoint)
    else:
        raise AssertionError(name)


RESUME_DAMAGE = {
    "config-empty": "config.yaml",
    "config-list": "config.yaml",
    "config-not-utf8": "config.yaml",
    "config-section-not-mapping": "config.yaml",
    "config-bad-value": "config.yaml",
    "config-bad-world-size": "config.yaml",
    "metrics-bad-epoch": "metrics.jsonl line 1",
    "metrics-not-utf8": "metrics.jsonl line 1",
    "metrics-deep-row": "metrics.jsonl line 1",
    "checkpoint-bare-tensor": "last.pt",
    "checkpoint-of-search": "last.pt",
    "checkpoint-other-shape": "last.pt",
    "checkpoint-bad-epoch": "last.pt",
    "checkpoint-truncated": "last.pt",
    "checkpoint-pickle-payload": "last.pt",
    "checkpoint-no-rng": "last.pt",
    "checkpoint-no-task": "last.pt",
}


@pytest.mark.parametrize("name", RESUME_DAMAGE)
def test_resuming_a_damaged_run_is_refused_naming_the_file(
    tmp_path: Path, runs: Path, name: str
) -> None:
    run, marker = tmp_path / "work" / "run", tmp_path / "MARKER"
    shutil.copytree(runs / "train", run)
    _damage(run, runs, name, marker)
    line = assert_refused("train", "--out", "run", "--resume", cwd=run.parent)
    assert RESUME_DAMAGE[name] in line
    assert "weights_only" not in line and not marker.exists()


EXPORT_DAMAGE = ["checkpoint-bare-tensor", "checkpoint-truncated", "checkpoint-pickle-payload"]


@pytest.mark.parametrize("name", EXPORT_DAMAGE)
def test_exporting_a_damaged_checkpoint_is_refused(tmp_path: Path, runs: Path, name: str) -> None:
    run, marker = tmp_path / "work" / "run", tmp_path / "MARKER"
    shutil.copytree(runs / "train", run)
    _damage(run, runs, name, marker)
    args = ["export", "run", "--format", "torchscript", "--checkpoint", "last"]
    line = assert_refused(*args, cwd=run.parent, contains="last.pt")
    assert "weights_only" not in line and not marker.exists()


def _overcommit_heuristic() -> bool:
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "0"
    except OSError:
        return False


# With overcommit always allowed (mode 1), a 120 GB allocation would succeed and then be touched.
@pytest.mark.skipif(not _overcommit_heuristic(), reason="needs the kernel's overcommit heuristic")
def test_a_network_too_large_for_memory_is_refused_with_what_lowers_it(tmp_path: Path) -> None:
    # 100000 channels: the first 1x1 convolution needs 120 GB, which the CPU allocator refuses.
    # The failed start leaves a new run directory; it goes outside the folder checked here.
    work = tmp_path / "work"
    work.mkdir()
    args = [*SMALL["train"], "--channels", "100000", "--out", str(tmp_path / "run")]
    line = assert_refused(*args, cwd=work, contains="ran out of memory")
    assert "tried to allocate" in line and "--batch-size" in line


@pytest.mark.parametrize(
    ("error", "contains"),
    [
        (MemoryError(), "ran out of memory; lower --batch-size"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "2.00 GiB"),
    ],
)
def test_out_of_memory_in_search_names_partial_channels_and_checkpointing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, contains: str
) -> None:
    import nas.search_task

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(nas.search_task.SearchTask, "__init__", fail)
    work = tmp_path / "work"
    work.mkdir()
    args = [*SMALL["search"], "--out", str(tmp_path / "run")]
    line = assert_refused(*args, cwd=work, contains=contains)
    assert "model.partial_channels" in line and "model.checkpoint_cells" in line
