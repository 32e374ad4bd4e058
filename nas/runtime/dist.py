"""Process and device setup. Everything that touches torch.distributed lives in nas/runtime/."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

import torch

from nas.errors import NasError


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among `world_size` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the process that writes the run directory, logs and checkpoints."""
        return self.rank == 0

    def peak_memory_mb(self) -> float:
        """Peak memory so far: CUDA max allocated on GPU, else the process's max RSS (MiB)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def reset_peak_memory(self) -> None:
        """Start a new peak-memory window (CUDA only; max RSS cannot be reset)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda if available else cpu. Raises NasError for an unusable device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NasError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NasError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise NasError(f"device type {device.type!r} is not supported; use cpu or cuda")
    return device


def init_runtime(device: str) -> Runtime:
    """Set up this process. Raises NasError when started as one of several processes.

    Multi-process (torchrun) support lands with the distributed runtime; until then a run under
    WORLD_SIZE > 1 would train unsynchronised copies, so it is refused rather than run wrongly.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        raise NasError(
            f"this process was started as one of {world_size} (WORLD_SIZE); multi-process "
            "training is not supported yet. Run a single process."
        )
    return Runtime(rank=0, world_size=1, device=resolve_device(device))
