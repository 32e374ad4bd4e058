"""Time one training step of MLP candidates (batch 128, one thread), as the async schedule's cost
model assumes: `python experiments/adanet_step_time.py`. Prints width, depth, multiply-adds per
sample and milliseconds per step (mean of 25 steps after 5 warm-up steps).
"""

import time

import torch

from nas.adanet.candidates import Candidate
from nas.adanet.config import AdaNetConfig
from nas.adanet.ensemble import Ensemble
from nas.adanet.generators import GENERATORS, DataShape
from nas.runtime.dist import Runtime

torch.set_num_threads(1)  # one thread per process, as torchrun sets
cpu = Runtime(0, 1, torch.device("cpu"))
shape = DataShape(1, 8, 10)
data = torch.utils.data.TensorDataset(torch.randn(4096, 1, 8, 8), torch.randint(0, 10, (4096,)))
for width in (16, 128, 512):
    for depth in (1, 2, 3):
        config = AdaNetConfig(widths=[width])
        generator = GENERATORS.get("mlp")(config, shape)
        architecture = {"kind": "mlp", "depth": depth, "width": width, "reads": []}
        candidate = Candidate(
            generator, architecture, 0, Ensemble(10, False), 0, config, torch.device("cpu")
        )
        batches = [candidate.batch(data, i, 128, cpu) for i in range(30)]
        for batch in batches[:5]:
            candidate.train_step(*batch, [], cpu)
        start = time.perf_counter()
        for batch in batches[5:]:
            candidate.train_step(*batch, [], cpu)
        seconds = (time.perf_counter() - start) / 25
        print(
            f"width {width} depth {depth}: {generator.cost(architecture, [])} madds, "
            f"{seconds * 1e3:.3f} ms/step"
        )
