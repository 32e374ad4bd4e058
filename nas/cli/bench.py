"""`nas bench supernet`: time one search iteration of the supernet."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(commands: Any) -> None:
    """`nas bench` and its benchmarks."""
    bench = commands.add_parser("bench", help="benchmarks (supernet step)")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="WHAT")
    supernet = benches.add_parser(
        "supernet",
        help="time one search iteration (alpha step + weight step)",
        description="Time one full DARTS search iteration (alpha step + weight step) of the "
        "supernet on synthetic 3-channel images after warm-up: ms per iteration, images/s "
        "(train + val images) and peak memory.",
    )
    supernet.add_argument("--size", type=int, default=16, help="image side (default: 16)")
    supernet.add_argument("--channels", type=int, default=8, help="initial channels C (8)")
    supernet.add_argument("--layers", type=int, default=5, help="cells (default: 5)")
    supernet.add_argument("--batch", type=int, default=32, help="images per split (32)")
    supernet.add_argument("--order", type=int, default=1, choices=[1, 2], help="1 or 2")
    supernet.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    supernet.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    supernet.add_argument("--iterations", type=int, default=10, help="timed iterations (10)")
    supernet.add_argument("--warmup", type=int, default=2, help="untimed iterations first (2)")
    supernet.add_argument(
        "--path",
        choices=["reference", "fast"],
        default="fast",
        help="supernet forward: per-edge reference or fast (default: fast)",
    )
    supernet.add_argument(
        "--compare",
        action="store_true",
        help="time the reference and the fast path in alternating runs; report the speedup",
    )
    supernet.add_argument("--rounds", type=int, default=3, help="--compare: runs per path (3)")
    supernet.add_argument(
        "--partial-channels",
        type=int,
        default=1,
        metavar="K",
        help="PC-DARTS: mixed ops see 1/K of the channels (default: 1, off)",
    )
    supernet.add_argument(
        "--checkpoint", action="store_true", help="activation checkpointing per cell"
    )
    supernet.add_argument(
        "--channels-last", action="store_true", help="NHWC memory format for weights and images"
    )
    supernet.add_argument("--json", action="store_true", help="one JSON line")
    supernet.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Time the supernet step and print the result."""
    from nas.bench import bench_supernet, compare_paths

    settings = {
        "size": args.size,
        "channels": args.channels,
        "layers": args.layers,
        "batch": args.batch,
        "order": args.order,
        "device": args.device,
        "amp": args.amp,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "channels_last": args.channels_last,
        "partial_channels": args.partial_channels,
        "checkpoint_cells": args.checkpoint,
    }
    if args.compare:
        result = compare_paths(args.rounds, **settings)
    else:
        result = bench_supernet(path=args.path, **settings).to_dict()
    if args.json:
        print(json.dumps(result))
        return 0
    options = [
        "bf16 autocast" if args.amp else "",
        "channels-last" if args.channels_last else "",
        f"partial channels K={args.partial_channels}" if args.partial_channels > 1 else "",
        "checkpointed cells" if args.checkpoint else "",
    ]
    print(
        f"supernet {args.size}x{args.size}, C={args.channels}, {args.layers} cells, batch "
        f"{args.batch}, order {args.order}, {', '.join([result['device'], *filter(None, options)])}"
    )
    for path in ["reference", "fast"] if args.compare else [args.path]:
        prefix = f"{path}_" if args.compare else ""
        ms, saved = result[f"{prefix}ms_per_iter"], result[f"{prefix}saved_for_backward_mb"]
        print(
            f"  {path} path: {ms:.1f} ms/iter, {1000 * 2 * args.batch / ms:.1f} images/s, "
            f"{saved:.1f} MiB saved for backward"
        )
    if args.compare:
        print(f"  speedup (median of {args.rounds} alternating runs): {result['speedup']:.2f}x")
    print(f"  peak memory (process) {result['peak_mem_mb']:.0f} MiB")
    return 0
