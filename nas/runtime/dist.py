"""Process and device setup. Everything that touches torch.distributed lives in nas/runtime/."""

from __future__ import annotations

import contextlib
import gc
import os
import resource
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from nas.errors import NasError


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among `world_size` processes and its device.

    With one process every collective below is a no-op, so tasks and strategies call them
    unconditionally; with several (started by torchrun) they are gloo (CPU) or nccl (CUDA)
    collectives. Nothing outside nas/runtime/ imports torch.distributed.
    """

    rank: int
    world_size: int
    device: torch.device
    local_rank: int = 0
    sync_batchnorm: bool = False
    # The process group of the collectives below: None for all processes, or a share's group
    # (see `split`), whose `rank` and `world_size` are then within the share.
    group: Any = None

    @property
    def is_main(self) -> bool:
        """True on the process that writes the run directory, logs and checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when this process is one of several."""
        return self.world_size > 1

    def peak_memory_mb(self) -> float:
        """Peak memory so far: CUDA max allocated on GPU, else the process's max RSS (MiB)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def reset_peak_memory(self) -> None:
        """Start a new peak-memory window (CUDA only; max RSS cannot be reset)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def prepare(self, module: nn.Module) -> nn.Module:
        """Convert `module`'s BatchNorm layers to SyncBatchNorm when `sync_batchnorm` is set and
        there are several processes. Call it before building optimisers: it replaces modules.
        """
        if self.sync_batchnorm and self.is_distributed:
            return nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return module

    def wrap(
        self, module: nn.Module, ignore: Sequence[str] = (), find_unused: bool = False
    ) -> nn.Module:
        """`module` under DistributedDataParallel (itself with one process).

        DDP averages the gradients of a `backward()` over the ranks. Parameters named in `ignore`
        (for example the alphas, trained with `autograd.grad`, which bypasses DDP's hooks) are left
        to the caller, who averages their gradients with `average`. Buffers are not broadcast: the
        supernet keeps no BatchNorm running statistics, and a final network's are per rank.
        `find_unused`: a forward pass may leave parameters unused (a sampled architecture); DDP
        then finds them after each forward, and their gradients stay unset as in one process.
        Call `wrap` again after the module's parameters change (ASAP pruning).
        """
        if not self.is_distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        if ignore:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                module, list(ignore)
            )
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(
            module,
            device_ids=device_ids,
            forward_sync_buffers=False,
            find_unused_parameters=find_unused,
        )

    def average(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor by its mean over the ranks, in place (one flat all-reduce)."""
        if not self.is_distributed or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, group=self.group)
        flat /= self.world_size
        offset = 0
        for tensor in tensors:
            tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()

    def sum(self, values: Sequence[float]) -> list[float]:
        """The sums over the ranks of `values` (float64)."""
        if not self.is_distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(tensor, group=self.group)
        return tensor.tolist()

    def broadcast(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite each tensor with rank 0's, in place."""
        if self.is_distributed:
            for tensor in tensors:
                dist.broadcast(tensor.data, src=self._global_rank(0), group=self.group)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s `obj` (any picklable object: a trial's parameters, a state dict), on
        every rank of this runtime's group. With one process it returns `obj`.
        """
        if not self.is_distributed:
            return obj
        holder = [obj if self.rank == src else None]
        dist.broadcast_object_list(
            holder, src=self._global_rank(src), group=self.group, device=self._collective_device
        )
        return holder[0]

    def split(self, shares: int) -> Runtime:
        """This process's share when the processes are cut into `shares` equal, consecutive
        groups (AdaNet trains one candidate per share). Every process must call it, with the
        same `shares`: creating a group is a collective. Raises ValueError if they do not divide.
        """
        if self.world_size % shares:
            raise ValueError(f"{self.world_size} processes do not split into {shares} shares")
        size = self.world_size // shares
        if shares == 1:
            return self
        mine = None
        for share in range(shares):
            ranks = list(range(share * size, (share + 1) * size))
            group = dist.new_group(ranks, group_desc=f"share_{share}_of_{shares}")
            if self.rank in ranks:
                mine = group
        first = self.rank - self.rank % size
        return replace(self, rank=self.rank - first, world_size=size, group=mine)

    def _global_rank(self, rank: int) -> int:
        return rank if self.group is None else dist.get_global_rank(self.group, rank)

    @property
    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def shutdown(self, wait: bool = False) -> None:
        """Leave the process groups, every share's included (no-op with one process).

        With `wait` (a run that ended normally), first wait at a barrier until every process
        is done: a process that leaves early must not tear down its connections, or exit,
        while rank 0 still writes the run's outputs (torchrun stops the others when one
        process dies). Groups are then destroyed explicitly, and objects in reference cycles
        collected while the interpreter is whole: a gloo group still alive when Python exits
        can abort the process ("terminate called without an active exception", seen in 2 of 5
        two-process exits that skipped the destroy, none in 50 that did not).
        """
        if not (self.is_distributed and dist.is_initialized()):
            return
        if wait:
            dist.barrier()
        dist.destroy_process_group()
        gc.collect()

    @contextlib.contextmanager
    def until_done(self) -> Iterator[None]:
        """Run the body, then `shutdown`: waiting for every rank when the body ended normally
        (a `return` included), not when it raised (another rank may never reach the barrier).
        """
        try:
            yield
        except BaseException:
            self.shutdown()
            raise
        self.shutdown(wait=True)


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


def init_runtime(device: str, sync_batchnorm: bool = False) -> Runtime:
    """Set up this process from the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK and the
    rendezvous variables), or as the only process when WORLD_SIZE is unset or 1.

    Several processes use nccl on CUDA (device cuda:LOCAL_RANK) and gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if sync_batchnorm and resolved.type != "cuda":
        raise NasError(
            "run.sync_batchnorm needs CUDA devices (SyncBatchNorm has no CPU implementation); "
            "drop it, or run on GPUs"
        )
    if world_size <= 1:
        return Runtime(rank=0, world_size=1, device=resolved)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if resolved.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise NasError(
                f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                "start at most that many processes per node (--nproc-per-node)"
            )
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend, store=_store(rank, world_size), rank=rank, world_size=world_size
        )
    return Runtime(rank, world_size, resolved, local_rank, sync_batchnorm)


def _store(rank: int, world_size: int) -> dist.Store:
    """The rendezvous store of the environment (MASTER_ADDR/MASTER_PORT, torchrun's agent store
    when it offers one), with keys prefixed by the restart attempt.

    Without the prefix, workers that torchrun restarted could read the addresses the previous
    attempt's workers published under the same keys, and fail to connect (seen with gloo on
    torch 2.13: "connectFullMesh failed ... Connection refused").
    """
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    try:
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            world_size,
            is_master=rank == 0 and not agent_store,
            timeout=timedelta(minutes=10),
        )
    except KeyError as err:
        raise NasError(
            f"WORLD_SIZE is {world_size} but {err.args[0]} is not set; start the processes with "
            "torchrun or nas ... --nproc-per-node N"
        ) from None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"nasforge/attempt_{attempt}", store)


def restarted() -> bool:
    """True in a worker that torchrun restarted after a failure (it must resume, not restart)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
