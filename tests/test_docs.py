"""The docs' runnable examples: every fenced block marked `<!-- runnable -->` runs and succeeds.

A marked ```python block runs as a script; a marked ```sh or ```bash block runs in bash with
`set -euo pipefail` and `nas` meaning this interpreter's `python -m nas`. Each runs in a fresh
temporary folder, in its own process, so the examples cannot depend on each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- runnable -->"
LANGUAGES = {"python": "python", "sh": "sh", "bash": "sh"}
TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    """A marked code block: where its fence opens, its language ("python" or "sh"), its code."""

    where: str
    language: str
    code: str


def runnable_blocks(path: Path) -> list[Block]:
    """The marked blocks of one Markdown file. Raises ValueError for a marker on no block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    name = path.relative_to(ROOT).as_posix()
    blocks = []
    for index, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = lines[index + 1].strip() if index + 1 < len(lines) else ""
        language = LANGUAGES.get(fence.removeprefix("```"))
        if not fence.startswith("```") or language is None:
            raise ValueError(
                f"{name}:{index + 1}: {MARKER} must be followed by a ```python, ```sh or ```bash "
                f"fence, got {fence!r}"
            )
        end = next((i for i in range(index + 2, len(lines)) if lines[i].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{name}:{index + 2}: the runnable block is never closed")
        code = "\n".join(lines[index + 2 : end]) + "\n"
        blocks.append(Block(f"{name}:{index + 2}", language, code))
    return blocks


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def run_block(block: Block, folder: Path) -> subprocess.CompletedProcess:
    """Run `block` in `folder` (a fresh, empty one) with this interpreter and this checkout."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    if block.language == "python":
        (folder / "example.py").write_text(block.code)
        command = [sys.executable, "example.py"]
    else:
        bin_dir = folder / ".bin"
        bin_dir.mkdir()
        shim = bin_dir / "nas"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m nas "$@"\n')
        shim.chmod(0o755)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
        (folder / "example.sh").write_text("set -euo pipefail\n" + block.code)
        command = ["bash", "example.sh"]
    return subprocess.run(
        command,
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


BLOCKS = [block for path in _documents() for block in runnable_blocks(path)]


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_runnable_block_succeeds(block: Block, tmp_path: Path) -> None:
    result = run_block(block, tmp_path)
    assert result.returncode == 0, (
        f"{block.where} exited with {result.returncode}\n--- stdout\n{result.stdout[-3000:]}"
        f"\n--- stderr\n{result.stderr[-3000:]}"
    )


@pytest.mark.parametrize(
    "registration",
    [
        "@register_op(",
        "register_space(",
        "@STRATEGIES.register(",
        "@DATASETS.register(",
        "@GENERATORS.register(",
    ],
)
def test_each_extension_guide_is_a_runnable_block(registration: str) -> None:
    assert any(registration in block.code for block in BLOCKS if block.language == "python")


@pytest.mark.parametrize(
    "language, code",
    [("python", "raise SystemExit('broken example')\n"), ("sh", "nas no-such-command\n")],
)
def test_a_failing_block_fails(language: str, code: str, tmp_path: Path) -> None:
    result = run_block(Block("example.md:1", language, code), tmp_path)
    assert result.returncode != 0


def test_a_marker_without_a_block_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    page = tmp_path / "page.md"
    page.write_text(f"{MARKER}\n```text\nnot code\n```\n")
    with pytest.raises(ValueError, match="page.md:1: <!-- runnable --> must be followed by"):
        runnable_blocks(page)
