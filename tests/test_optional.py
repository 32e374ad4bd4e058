"""Optional dependencies: one helper, one message naming the extra to install."""

import sys
import warnings

import pytest

from nas.errors import NasError
from nas.optional import EXTRAS, optional_import


@pytest.mark.parametrize("name", sorted(EXTRAS))
def test_a_missing_package_names_its_extra(monkeypatch, name) -> None:
    monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    with pytest.raises(NasError) as err:
        optional_import(name, "this feature")
    extra = EXTRAS[name]
    assert str(err.value) == (
        f"this feature needs {name}: install the {extra} extra: pip install 'nasforge[{extra}]'"
    )


@pytest.mark.parametrize(
    "body, error",
    [
        ("raise RuntimeError('built for another torch')", "RuntimeError: built for another torch"),
        ("import nasforge_no_such_dependency", "ModuleNotFoundError: No module named"),
    ],
)
def test_a_package_that_fails_on_import_is_reported_with_its_error(
    monkeypatch, tmp_path, body, error
) -> None:
    (tmp_path / "nasforge_broken.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(EXTRAS, "nasforge_broken", "vision")
    with pytest.raises(NasError) as err:
        optional_import("nasforge_broken", "downloading")
    message = str(err.value)
    assert message.startswith("downloading needs nasforge_broken, which fails to import (")
    assert error in message and message.endswith("pip install 'nasforge[vision]'")


def test_an_installed_package_is_returned(monkeypatch) -> None:
    monkeypatch.setitem(EXTRAS, "json", "none")
    assert optional_import("json", "reading") is sys.modules["json"]


def test_drawing_without_matplotlib_is_one_line(monkeypatch, tmp_path, capsys) -> None:
    from nas.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["show", "DARTS_V2", "--out", str(tmp_path / "cells.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "nas: error: drawing a genotype needs matplotlib: install the plot extra: "
        "pip install 'nasforge[plot]'"
    ]
    assert not (tmp_path / "cells.png").exists()


def test_tensorboard_picture_without_matplotlib_is_one_warning(monkeypatch) -> None:
    from nas import drawing
    from nas.genotype import load_genotype

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(drawing, "_warned", False)
    genotype = load_genotype("DARTS_V2")
    with pytest.warns(UserWarning, match=r"needs matplotlib: install the plot extra.*text only"):
        assert drawing.genotype_picture(genotype) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process, not once per epoch
        assert drawing.genotype_picture(genotype) is None
