"""A/B timing of the fast supernet path against its version at another git revision.

Small changes to nas/supernet/fast.py gain a few percent, less than this VM's run-to-run noise
between processes, so both versions run in one process, alternating, on the same supernet and
batches (the DARTS step of `nas bench supernet`, first order), and the medians are compared:

    python experiments/ab_fast_path.py --against HEAD~1 [--size 16] [--batch 32] [--rounds 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import nas.supernet.cell as cell_module
import nas.supernet.fast as current
from nas.config import StrategyConfig
from nas.runtime.dist import Runtime
from nas.spaces import get_space
from nas.strategies import STRATEGIES
from nas.strategies.darts import DartsOptions
from nas.supernet import SearchNetwork


def load_revision(revision: str) -> object:
    """nas/supernet/fast.py as it was at `revision`, imported as a separate module."""
    source = subprocess.run(
        ["git", "show", f"{revision}:nas/supernet/fast.py"],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    path = Path(tempfile.mkdtemp()) / "fast_at_revision.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("fast_at_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision to compare with")
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    versions = {args.against: load_revision(args.against), "working tree": current}
    torch.manual_seed(0)
    network = SearchNetwork(get_space("darts"), 3, 10, 8, 5)
    network.use_fast_path(True)
    runtime = Runtime(rank=0, world_size=1, device=torch.device("cpu"))
    steps = args.rounds * len(versions) * (args.iterations + 2)
    strategy = STRATEGIES.get("darts")(
        network,
        StrategyConfig(options=DartsOptions(order=1)),
        epochs=1,
        steps_per_epoch=steps,
        runtime=runtime,
    )
    batches = [
        (torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,)))
        for _ in range(2)
    ]
    times: dict[str, list[float]] = {name: [] for name in versions}
    for _ in range(args.rounds):
        for name, module in versions.items():
            cell_module.fast_cell_forward = module.fast_cell_forward  # what SearchCell calls
            for _ in range(2):
                strategy.step(*batches)
            started = time.perf_counter()
            for _ in range(args.iterations):
                strategy.step(*batches)
            times[name].append(1000 * (time.perf_counter() - started) / args.iterations)
    print(f"{args.size}x{args.size}, batch {args.batch}, ms per search iteration:")
    for name, runs in times.items():
        each = ", ".join(f"{t:.0f}" for t in runs)
        print(f"  {name}: median {statistics.median(runs):.1f} ({each})")


if __name__ == "__main__":
    main()
