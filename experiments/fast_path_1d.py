"""Fast against reference supernet path on 1D signals: median time of a first-order DARTS step
(the step of `nas bench supernet`) on MNIST-1D-sized inputs, both paths alternating in one process:

    python experiments/fast_path_1d.py [--length 40] [--batch 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nas.config import StrategyConfig
from nas.runtime.dist import Runtime
from nas.spaces import get_space
from nas.strategies import STRATEGIES
from nas.strategies.darts import DartsOptions
from nas.supernet import SearchNetwork


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    runtime = Runtime(rank=0, world_size=1, device=torch.device("cpu"))
    batch = (torch.randn(args.batch, 1, args.length), torch.randint(0, 10, (args.batch,)))
    steps = {}
    for path in ("reference", "fast"):
        network = SearchNetwork(
            get_space("darts"), 1, 10, args.channels, args.layers, dims=1
        ).use_fast_path(path == "fast")
        strategy = STRATEGIES.get("darts")(
            network, StrategyConfig(options=DartsOptions(order=1)), 1, 1, runtime
        )
        strategy.step(batch, batch)  # warm-up
        steps[path] = (strategy, [])
    for _ in range(args.rounds):
        for strategy, times in steps.values():
            start = time.perf_counter()
            strategy.step(batch, batch)
            times.append(time.perf_counter() - start)
    medians = {path: statistics.median(times) for path, (_, times) in steps.items()}
    for path, median in medians.items():
        print(f"{path}: {median * 1000:.0f} ms/step")
    print(f"fast / reference step time: {medians['fast'] / medians['reference']:.2f}")


if __name__ == "__main__":
    main()
