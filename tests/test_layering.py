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
