"""Atomic checkpoints loaded with `weights_only=True`, and RNG state capture for exact resume."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.errors import NasError
from nas.io import atomic_write

CHECKPOINT_VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (plus format version and RNG states) to `path` via temp file and rename."""
    payload = {"checkpoint_version": CHECKPOINT_VERSION, "rng": _rng_state(), **state}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path, restore_rng: bool = True) -> dict[str, Any]:
    """Load a checkpoint safely (tensors and plain containers only). Raises NasError if unusable.

    Torch's weights-only unpickler refuses anything else, so a hostile pickle never runs.
    """
    if not path.is_file():
        raise NasError(f"no checkpoint at {str(path)!r}; nothing to resume")
    damaged = f"checkpoint {path}"
    redo = "it was not written by nasforge or is damaged; restore it or start a new run"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message advises loading unsafely: not repeated
        raise NasError(
            f"{damaged} holds objects other than tensors and plain containers, which are not "
            f"loaded; {redo}"
        ) from None
    except Exception as err:  # a truncated or foreign file: torch raises several kinds
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise NasError(f"{damaged} cannot be read ({reason}); {redo}") from None
    if not isinstance(payload, dict):
        raise NasError(f"{damaged} holds a {type(payload).__name__}, not a checkpoint; {redo}")
    if payload.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise NasError(f"{damaged} has an unknown format version; {redo}")
    if restore_rng:
        try:
            _set_rng_state(payload["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError):
            raise NasError(f"{damaged}: its random-number states are damaged; {redo}") from None
    return payload


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
