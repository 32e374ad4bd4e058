"""The folder of an export as one unit: built beside its place, then moved in whole.

`nas export` writes a model file, genotype.json and model_card.json. They are written into a
staging folder next to the output folder and swapped in with one rename, so a killed export leaves
the previous export or the new one, never a mix; the next export removes a dead one's staging
folder. A folder that nasforge did not write (no model card with its format tag, or files other
than an export's) is never replaced.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nas.errors import NasError

CARD_FORMAT = "nasforge.model_card"
CARD_FILE = "model_card.json"
GENOTYPE_FILE = "genotype.json"
# Linux renameat2 flag: swap two paths in one step.
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def previous_card(folder: Path, known_files: set[str]) -> dict[str, Any] | None:
    """The model card of the export in `folder`; None when `folder` is missing or empty.

    Raises NasError when `folder` is not a folder, or holds anything but a nasforge export
    (its card tagged CARD_FORMAT and no file outside `known_files`): it is never replaced.
    """
    if not folder.exists() and not folder.is_symlink():
        return None
    if not folder.is_dir() or folder.is_symlink():
        raise NasError(f"{folder} exists and is not a folder; pick another --out")
    try:
        names = sorted(path.name for path in folder.iterdir())
    except OSError as err:
        raise NasError(f"cannot read {folder} ({err.strerror}); pick another --out") from None
    if not names:
        return None
    card = _read_card(folder / CARD_FILE)
    unknown = [name for name in names if name not in known_files]
    if card is None or unknown:
        listed = ", ".join(unknown[:3] if card is not None else names[:3])
        more = " ..." if len(unknown if card is not None else names) > 3 else ""
        raise NasError(
            f"{folder} holds files nas export did not write ({listed}{more}); they are kept: "
            "pick a new or empty --out"
        )
    return card


def _read_card(path: Path) -> dict[str, Any] | None:
    """The card at `path` if nasforge wrote it (its format tag), else None."""
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return card if isinstance(card, dict) and card.get("format") == CARD_FORMAT else None


@contextlib.contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A new empty folder beside `folder`; moved into its place when the body ends normally,
    removed when it raises. Removes staging folders that earlier, killed exports left.
    """
    parent = folder.absolute().parent
    prefix = f".{folder.absolute().name}.nas-export-"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for leftover in parent.glob(f"{prefix}*"):
            _remove_if_abandoned(leftover)
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        # Held until the export ends: another export into the same folder leaves it alone.
        lock = os.open(staging, os.O_RDONLY)
    except OSError as err:
        raise NasError(
            f"cannot write the export folder {folder} ({err.strerror}); pick another --out"
        ) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the export from others
        yield staging
        _move_into_place(staging, folder.absolute())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.close(lock)


def _remove_if_abandoned(leftover: Path) -> None:
    """Remove a staging folder unless a running export holds its lock."""
    if not leftover.is_dir() or leftover.is_symlink():
        return
    try:
        lock = os.open(leftover, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a live export's
        return
    finally:
        os.close(lock)
    shutil.rmtree(leftover, ignore_errors=True)


def keep_file(source: Path, staging_path: Path) -> None:
    """Carry an earlier export's file into the staging folder (a hard link where possible)."""
    try:
        os.link(source, staging_path)
    except OSError:
        shutil.copy2(source, staging_path)


def _move_into_place(staging: Path, folder: Path) -> None:
    """Rename `staging` to `folder`; an existing `folder` ends up at `staging` (removed after)."""
    for path in staging.iterdir():
        _fsync(path)
    if folder.exists():
        if not _exchange(staging, folder):
            # No atomic swap here: a kill between the renames leaves the previous export under
            # a staging name, which the next export removes.
            old = staging.with_name(f"{staging.name}-previous")
            os.replace(folder, old)
            os.replace(staging, folder)
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, folder)
    _fsync(folder.parent)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    return result == 0


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk, so a rename never lands before its content."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
