"""What storing the supernet's weights stacked per op type could gain, at most, on the fast path.

The fast path stacks (and, for the 5x5 embedding, pads) every edge's conv weights in every step
before its grouped calls, and every edge's weights get their own gradient and optimiser update.
Stacked storage (one tensor per op type per source state) would remove that preparation. This
script times an upper bound of the gain without the refactor: the prepared kernels of each group
are made once and then held as leaf tensors, so a step runs none of the preparation, its backward
and no per-edge gradient accumulation, and the optimiser skips the per-edge conv weights (they
get no gradients). The step's numbers are then wrong, but its cost is the floor that stacked
storage could reach. Plain and bound runs alternate in one process (the DARTS step of
`nas bench supernet`, first order, two threads); medians:

    python experiments/stacked_weights_bound.py [--size 16] [--batch 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import nas.supernet.fast as fast
from nas.config import StrategyConfig
from nas.runtime.dist import Runtime
from nas.spaces import get_space
from nas.strategies import STRATEGIES
from nas.strategies.darts import DartsOptions
from nas.supernet import SearchNetwork

PREPARE = fast._grouped_kernels


def held_kernels() -> object:
    """A `_grouped_kernels` that prepares each group's kernels once and then returns them as
    leaf tensors (no graph back to the per-edge weights)."""
    held: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def prepare(blocks, shared_input: bool, embed: bool):
        key = (tuple(id(block) for block in blocks), shared_input, embed)
        if key not in held:
            held[key] = tuple(
                t.detach().clone().requires_grad_() for t in PREPARE(blocks, shared_input, embed)
            )
        return held[key]

    return prepare


def ms_per_iter(size: int, batch: int, iterations: int) -> float:
    torch.manual_seed(0)
    network = SearchNetwork(get_space("darts"), 3, 10, 8, 5)
    network.use_fast_path(True)
    runtime = Runtime(rank=0, world_size=1, device=torch.device("cpu"))
    config = StrategyConfig(options=DartsOptions(order=1))
    strategy = STRATEGIES.get("darts")(
        network, config, epochs=1, steps_per_epoch=iterations + 2, runtime=runtime
    )
    generator = torch.Generator().manual_seed(1)
    train, val = [
        (
            torch.randn(batch, 3, size, size, generator=generator),
            torch.randint(0, 10, (batch,), generator=generator),
        )
        for _ in range(2)
    ]
    for _ in range(2):
        strategy.step(train, val)
    started = time.perf_counter()
    for _ in range(iterations):
        strategy.step(train, val)
    return 1000 * (time.perf_counter() - started) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"fast path": [], "bound": []}
    for round_ in range(args.rounds):
        for name in times:
            fast._grouped_kernels = PREPARE if name == "fast path" else held_kernels()
            times[name].append(ms_per_iter(args.size, args.batch, args.iterations))
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.0f} ms" for k, v in times.items()))
    plain, bound = (statistics.median(v) for v in times.values())
    print(
        f"medians: fast path {plain:.0f} ms/iter, bound {bound:.0f} ms/iter "
        f"(at most {plain / bound:.2f}x from stacked weight storage)"
    )


if __name__ == "__main__":
    main()
