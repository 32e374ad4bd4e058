"""Architecture rules: only nas/runtime touches torch.distributed; `import nas` stays light."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mentions_distributed(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
            a.name.startswith("torch.distributed") for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch.distributed"):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "torch"
            and any(a.name == "distributed" for a in node.names)
        ):
            return True
        if isinstance(node, ast.Attribute) and node.attr == "distributed":
            return True
    return False


def test_only_runtime_touches_torch_distributed() -> None:
    files = list((ROOT / "nas").rglob("*.py")) + list((ROOT / "search_spaces").rglob("*.py"))
    offenders = [
        str(p.relative_to(ROOT))
        for p in files
        if "runtime" not in p.relative_to(ROOT).parts and _mentions_distributed(p)
    ]
    assert offenders == []


def test_the_check_catches_an_offender(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\ntorch.distributed.barrier()\n")
    assert _mentions_distributed(bad)


def test_import_nas_is_light() -> None:
    code = (
        "import sys, nas; heavy = [m for m in ('torch', 'tensorboard', 'matplotlib', "
        "'torchvision') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_commands_share_the_runner_and_nothing_below_imports_the_cli() -> None:
    cli = ROOT / "nas" / "cli"
    shared = {"nas.cli.flags", "nas.cli.runner"}
    for path in cli.glob("*.py"):
        if path.name == "__init__.py":
            continue
        # a command module reaches other commands' code only through the shared modules
        used = {
            ".".join(m.split(".")[:3]) for m in _imported_modules(path) if m.startswith("nas.cli.")
        }
        assert used <= shared | {f"nas.cli.{path.stem}"}, path.name
    # below the CLI nothing imports it but `python -m nas` and the Python API, which reads the
    # commands' flag tables (its settings are named as the flags); both run commands through
    # nas/jobs.py, as nas tune does through nas/runs.py
    importers = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "nas").rglob("*.py")
        if cli not in p.parents
        and any(m.split(".")[:2] == ["nas", "cli"] for m in _imported_modules(p))
    }
    assert importers <= {"nas/__main__.py", "nas/api.py"}


def test_cli_modules_stay_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "nas" / "cli").glob("*.py")}
    assert max(sizes.values()) <= 400, sizes


def test_import_cli_is_light() -> None:
    code = "import sys, nas.cli; print([m for m in ('torch', 'optuna') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
