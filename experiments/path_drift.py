"""How far two DARTS searches drift apart when they differ only by float rounding.

Runs two copies of one supernet (digits shape: 1x8x8 inputs, 5 cells, C=8, batch 64, first
order) side by side on the same synthetic batches and prints, after some steps, how far their
alphas and weights are apart. The copies differ by the forward path (reference against fast) or,
with --perturb, both run the reference path and one copy's weights start scaled by (1 + 1e-7):

    python experiments/path_drift.py [--dtype float32|float64] [--steps 30] [--perturb]

In float64 the two paths stay equal to about 1e-17; in float32 rounding-sized differences grow
within a few steps, the same with --perturb as between the paths (docs/performance.md).
"""

from __future__ import annotations

import argparse
import copy

import torch

from nas.config import StrategyConfig
from nas.runtime.dist import Runtime
from nas.spaces import get_space
from nas.strategies import STRATEGIES
from nas.strategies.darts import DartsOptions
from nas.supernet import SearchNetwork


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--perturb", action="store_true", help="reference path in both copies")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    runtime = Runtime(rank=0, world_size=1, device=torch.device("cpu"))
    base = SearchNetwork(get_space("darts"), 1, 10, 8, 5).to(dtype)
    first, second = copy.deepcopy(base), copy.deepcopy(base)
    first.use_fast_path(False)
    second.use_fast_path(not args.perturb)
    if args.perturb:
        with torch.no_grad():
            for weight in second.weight_parameters():
                weight.mul_(1 + 1e-7)
    strategies = [
        STRATEGIES.get("darts")(
            network,
            StrategyConfig(options=DartsOptions(order=1)),
            epochs=1,
            steps_per_epoch=args.steps,
            runtime=runtime,
        )
        for network in (first, second)
    ]
    generator = torch.Generator().manual_seed(1)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randn(64, 1, 8, 8, generator=generator, dtype=dtype)
        return images, torch.randint(0, 10, (64,), generator=generator)

    label = "reference vs perturbed reference" if args.perturb else "reference vs fast"
    print(f"{label}, {args.dtype}:")
    for step in range(1, args.steps + 1):
        train, val = batch(), batch()
        for strategy in strategies:
            strategy.step(train, val)
        if step in (1, 5, 10, 20) or step == args.steps:
            moved = (first.alpha_normal - base.alpha_normal).abs().max()
            alpha_gap = (first.alpha_normal - second.alpha_normal).abs().max()
            weights = [
                torch.cat([p.flatten() for p in n.weight_parameters()]) for n in (first, second)
            ]
            weight_gap = (weights[0] - weights[1]).norm() / weights[0].norm()
            print(
                f"  step {step}: alphas apart by {alpha_gap:.3g} (they moved {moved:.3g}); "
                f"weights apart by {weight_gap:.3g} (relative)"
            )


if __name__ == "__main__":
    main()
