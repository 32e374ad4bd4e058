"""experiments/collapse.py: the cap row's genotype is the search's own derivation, capped."""

import importlib.util
import sys
from pathlib import Path

from nas.cli import main
from nas.genotype import Genotype

EXPERIMENTS = Path(__file__).parents[1] / "experiments"


def _script():
    sys.path.insert(0, str(EXPERIMENTS))  # the script imports search_quality
    try:
        spec = importlib.util.spec_from_file_location(
            "collapse_script", EXPERIMENTS / "collapse.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(EXPERIMENTS))


def _skips(genotype: Genotype) -> int:
    return sum(edge.op == "skip_connect" for node in genotype.normal.nodes for edge in node)


def test_cap_row_derives_what_the_search_derives_then_caps_it(tmp_path) -> None:
    script = _script()
    search = tmp_path / "plain"
    args = ["search", "--space", "rdarts_s2", "--layers", "3", "--channels", "4"]
    args += ["--dataset", "synthetic", "--set", "data.synthetic_samples=32", "--batch-size", "8"]
    args += ["--set", "data.synthetic_image_size=8", "--epochs", "2", "--out", str(search)]
    assert main(args) == 0
    searched = Genotype.load(search / "genotype.json")
    script.derive_capped(search, tmp_path / "uncapped", max_skips=None)
    assert Genotype.load(tmp_path / "uncapped" / "genotype.json") == searched
    assert _skips(searched) > 0  # S2 at initialisation: about half the edges are skips
    script.derive_capped(search, tmp_path / "cap", max_skips=0)
    capped = Genotype.load(tmp_path / "cap" / "genotype.json")
    assert _skips(capped) == 0 and capped.reduce == searched.reduce
    assert capped.search == searched.search
