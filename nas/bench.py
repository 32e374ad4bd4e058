"""`nas bench supernet`: the time of one full search iteration (alpha step + weight step).

The supernet, the DARTS strategy and the data are built as a search builds them, with synthetic
images (3 channels, 10 classes) held in memory, so the number measures the supernet step alone:
no data loading, evaluation or logging.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nas.config import StrategyConfig
from nas.errors import NasError
from nas.runtime.dist import Runtime, resolve_device
from nas.spaces import get_space
from nas.strategies import STRATEGIES
from nas.strategies.darts import DartsOptions
from nas.supernet import SearchNetwork


@dataclass
class SupernetBenchmark:
    """What `nas bench supernet` measured."""

    size: int
    channels: int
    layers: int
    batch: int
    order: int
    device: str
    amp: bool
    path: str
    channels_last: bool
    partial_channels: int
    checkpoint_cells: bool
    iterations: int
    ms_per_iter: float
    images_per_s: float
    peak_mem_mb: float
    # Tensors kept for the backward pass of one weight-step forward (unique storages): the
    # activation memory that partial channels and checkpointing cut, exact on any device.
    saved_for_backward_mb: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The fast path converts each state to channels-last where it pays and returns NCHW, so the flag
# changes nothing there (measured: docs/performance.md).
_CHANNELS_LAST_FAST = (
    "--channels-last applies to --path reference only: the fast path already uses channels-last "
    "where it pays; drop the flag or add --path reference"
)


def bench_supernet(
    size: int = 16,
    channels: int = 8,
    layers: int = 5,
    batch: int = 32,
    order: int = 1,
    device: str = "auto",
    amp: bool = False,
    iterations: int = 10,
    warmup: int = 2,
    space: str = "darts",
    path: str = "fast",
    channels_last: bool = False,
    partial_channels: int = 1,
    checkpoint_cells: bool = False,
) -> SupernetBenchmark:
    """Time `iterations` search iterations after `warmup` untimed ones.

    An iteration is one DARTS step: the alpha step on a validation batch and the weight step on a
    training batch, `batch` images each, so images/s counts 2 x batch images per iteration. Peak
    memory is CUDA's max allocated on a GPU, else the process's max RSS (a high-water mark that
    includes everything the process did before). `amp` runs the step under bfloat16 autocast;
    `channels_last` stores weights and images in the NHWC memory format (reference path only:
    the fast path converts to it where it pays); `partial_channels` (K) and `checkpoint_cells` are
    the PC-DARTS and activation-checkpointing memory options.
    """
    checks = [
        (size >= 4, "--size must be at least 4"),
        (channels >= 1, "--channels must be at least 1"),
        (batch >= 2, "--batch must be at least 2 (BatchNorm needs it)"),
        (order in (1, 2), "--order must be 1 or 2"),
        (iterations >= 1, "--iterations must be at least 1"),
        (warmup >= 0, "--warmup must be 0 or more"),
        (path in ("reference", "fast"), "--path must be reference or fast"),
        (not channels_last or path == "reference", _CHANNELS_LAST_FAST),
    ]
    for ok, message in checks:
        if not ok:
            raise NasError(message)
    torch_device = resolve_device(device)
    runtime = Runtime(rank=0, world_size=1, device=torch_device)
    torch.manual_seed(0)
    network = SearchNetwork(
        get_space(space), 3, 10, channels, layers, partial_channels, checkpoint_cells
    ).to(torch_device)
    network.use_fast_path(path == "fast")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    network = network.to(memory_format=memory_format)
    strategy = STRATEGIES.get("darts")(
        network,
        StrategyConfig(options=DartsOptions(order=order)),
        epochs=1,
        steps_per_epoch=iterations + warmup,
        runtime=runtime,
    )

    def data() -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randn(batch, 3, size, size, device=torch_device)
        images = images.contiguous(memory_format=memory_format)
        return images, torch.randint(0, 10, (batch,), device=torch_device)

    train, val = data(), data()
    saved_mb = _saved_for_backward_mb(network, *train)
    autocast = (
        torch.autocast(torch_device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    )
    with autocast:
        for _ in range(warmup):
            strategy.step(train, val)
        _synchronize(torch_device)
        runtime.reset_peak_memory()
        started = time.perf_counter()
        for _ in range(iterations):
            result = strategy.step(train, val)
        result.loss.item()  # waits for the device
        _synchronize(torch_device)
        seconds = time.perf_counter() - started
    return SupernetBenchmark(
        size=size,
        channels=channels,
        layers=layers,
        batch=batch,
        order=order,
        device=str(torch_device),
        amp=amp,
        path=path,
        channels_last=channels_last,
        partial_channels=partial_channels,
        checkpoint_cells=checkpoint_cells,
        iterations=iterations,
        ms_per_iter=1000 * seconds / iterations,
        images_per_s=2 * batch * iterations / seconds,
        peak_mem_mb=runtime.peak_memory_mb(),
        saved_for_backward_mb=saved_mb,
    )


def compare_paths(rounds: int = 3, **settings: Any) -> dict[str, Any]:
    """Time the reference and the fast path in alternating runs in this process (the machine's
    load drifts; alternation spreads it over both). Returns the fast path's last result as a dict
    with each path's median ms/iter and images/s, and the speedup of the medians.
    """
    if rounds < 1:
        raise NasError("--rounds must be at least 1")
    if settings.get("channels_last"):
        raise NasError(
            "--channels-last does not go with --compare: it applies to the reference path only "
            "(the fast path already uses channels-last where it pays)"
        )
    times: dict[str, list[float]] = {"reference": [], "fast": []}
    results: dict[str, SupernetBenchmark] = {}
    for _ in range(rounds):
        for path in times:
            results[path] = bench_supernet(path=path, **settings)
            times[path].append(results[path].ms_per_iter)
    median = {path: statistics.median(values) for path, values in times.items()}
    report = results["fast"].to_dict()
    report["path"] = "fast vs reference"
    batch_images = 2 * report["batch"]
    for path in times:
        report[f"{path}_ms_per_iter"] = median[path]
        report[f"{path}_images_per_s"] = 1000 * batch_images / median[path]
        report[f"{path}_runs_ms"] = times[path]
        report[f"{path}_saved_for_backward_mb"] = results[path].saved_for_backward_mb
    report["ms_per_iter"] = median["fast"]
    report["images_per_s"] = report["fast_images_per_s"]
    report["speedup"] = median["reference"] / median["fast"]
    return report


def _saved_for_backward_mb(
    network: SearchNetwork, images: torch.Tensor, labels: torch.Tensor
) -> float:
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    network.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        F.cross_entropy(network(images), labels)
    return sum(storages.values()) / 2**20


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
