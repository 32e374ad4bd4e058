"""The built-in configs: YAML files shipped inside the package, named without a path
(`--config darts_digits`). Each file's header says what it runs and the command that runs it.
"""

from __future__ import annotations

from pathlib import Path

from nas.errors import NasError, shorten

FOLDER = Path(__file__).resolve().parent
SUFFIXES = (".yaml", ".yml")


def builtin_names() -> list[str]:
    """The names of the built-in configs, sorted."""
    return sorted(path.stem for path in FOLDER.glob("*.yaml"))


def config_path(name_or_path: str | Path) -> Path:
    """The YAML file that `--config` names: an existing file first, else a built-in config
    (`darts_digits` or `darts_digits.yaml`), else the path itself when it looks like one, so that
    reading it reports the missing file. Raises NasError for a bare name that is no built-in.
    """
    path = Path(name_or_path)
    try:
        if path.exists():
            return path
    except OSError:  # a name the file system cannot hold (too long): reading it says so
        return path
    text = str(name_or_path)
    stem = text.removesuffix(path.suffix) if path.suffix in SUFFIXES else text
    if stem in builtin_names():
        return FOLDER / f"{stem}.yaml"
    if path.suffix in SUFFIXES or len(path.parts) > 1:
        return path
    raise NasError(
        f"config {shorten(text)} is neither a file nor a built-in config; give a YAML file or "
        f"one of: {', '.join(builtin_names())}"
    )
