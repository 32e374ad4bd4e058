"""Time one final-training step of a genotype's network on synthetic data.

A step is what `nas train` does per batch: forward with the auxiliary head, cross-entropy plus
0.4 x auxiliary loss, backward, gradient clipping at 5, SGD with momentum. Prints ms per step,
images/s and peak memory (CUDA max allocated, or the process's max RSS on CPU).

    python experiments/bench_train_step.py --genotype DARTS_V2 --channels 36 --layers 20 --batch 96
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F

from nas.genotype import load_genotype
from nas.models import CifarNetwork, count_parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genotype", default="DARTS_V2")
    parser.add_argument("--channels", type=int, default=36)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    network = CifarNetwork(load_genotype(args.genotype), 3, 10, args.channels, args.layers)
    network.to(device).train()
    network.drop_path_prob = 0.2
    optimizer = torch.optim.SGD(network.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    labels = torch.randint(0, 10, (args.batch,), device=device)

    def step() -> None:
        logits, auxiliary = network.forward_with_auxiliary(images)
        loss = F.cross_entropy(logits, labels) + 0.4 * F.cross_entropy(auxiliary, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 5.0)
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ms = (time.perf_counter() - started) / args.steps * 1000
    result = {
        "genotype": args.genotype,
        "channels": args.channels,
        "layers": args.layers,
        "batch": args.batch,
        "size": args.size,
        "device": str(device),
        "params": count_parameters(network),
        "threads": torch.get_num_threads(),
        "ms_per_step": round(ms, 1),
        "images_per_s": round(args.batch / ms * 1000, 1),
        "peak_mem_mb": round(peak, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.genotype} C={args.channels} {args.layers} cells, batch {args.batch} at "
            f"{args.size}x{args.size} on {device} ({result['threads']} threads): "
            f"{ms:.1f} ms/step, {result['images_per_s']} images/s, peak {peak:.0f} MiB"
        )


if __name__ == "__main__":
    main()
