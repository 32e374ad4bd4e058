"""Crash-safe file writes (a killed process leaves either the old file or the new one), and
reading a user's JSON file with one-line errors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# atomic_write's temp files: `.NAME.RANDOM.tmp` next to NAME.
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temp file next to `path`, fsync it, then rename it over `path`.

    The temp file is private (mkstemp's 0600) while it is written; the finished file gets the
    mode of any file the user creates, 0666 minus the umask.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files a killed atomic_write left in `folder`; the paths removed."""
    removed = []
    for path in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        # only atomic_write's own pattern: `.NAME.RANDOM.tmp`, two dots at least after the first
        if path.is_file() and path.name.count(".") >= 3:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_json(path: Path, label: str) -> Any:
    """The JSON value in the file at `path`, named `label` in errors. Raises NasError for a
    missing or unreadable file, one that is not UTF-8, not JSON, nested too deeply, or holds a
    number too long to convert.
    """
    import json

    from nas.errors import NasError

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NasError(f"{label} does not exist") from None
    except OSError as err:  # a directory, no permission, a name too long
        raise NasError(f"{label} cannot be read ({err.strerror})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise NasError(
            f"{label} is not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start})"
        ) from None
    except json.JSONDecodeError as err:
        raise NasError(f"{label}: not valid JSON ({err})") from None
    except RecursionError:
        raise NasError(f"{label}: JSON nested too deeply to read") from None
    except ValueError:  # an integer beyond Python's 4300-digit conversion limit
        raise NasError(f"{label}: a number has more than 4300 digits") from None
