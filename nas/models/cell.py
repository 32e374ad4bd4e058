"""The discrete cell built from a genotype, and drop-path (DARTS `model.py` semantics)."""

from __future__ import annotations

import torch
from torch import nn

from nas.genotype import CellGenotype
from nas.ops import build_op, cell_preprocessing
from nas.spaces import NUM_INPUT_NODES


def drop_path(x: torch.Tensor, probability: float) -> torch.Tensor:
    """Zero whole samples of `x` with `probability`, scaling the kept ones by 1 / (1 - p).

    Drop-path as in FractalNet (Larsson et al. 2017) and NASNet: one Bernoulli draw per sample.
    """
    keep = 1.0 - probability
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    mask = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class Cell(nn.Module):
    """One cell: preprocess both inputs, then each node sums its genotype edges.

    Every op is built with BN affine=True. Drop-path applies in training to every op's output except
    the identity (a stride-1 skip), as in the DARTS reference code. `dims`: 2 for images, 1 for
    (N, C, L) signals.
    """

    def __init__(
        self,
        genotype: CellGenotype,
        prev_prev_channels: int,
        prev_channels: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        dims: int = 2,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = cell_preprocessing(
            prev_prev_channels, prev_channels, channels, reduction_prev, affine=True, dims=dims
        )
        self.inputs = [[edge.input for edge in node] for node in genotype.nodes]
        self.nodes = nn.ModuleList(
            nn.ModuleList(
                build_op(
                    edge.op,
                    channels,
                    2 if reduction and edge.input < NUM_INPUT_NODES else 1,
                    True,
                    dims,
                )
                for edge in node
            )
            for node in genotype.nodes
        )
        self.concat = list(genotype.concat)

    @property
    def out_channels_multiplier(self) -> int:
        """Output channels are this many times the cell's channels."""
        return len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for inputs, ops in zip(self.inputs, self.nodes):
            total = None
            for index, op in zip(inputs, ops):
                out = op(states[index])
                if self.training and drop_prob > 0 and not isinstance(op, nn.Identity):
                    out = drop_path(out, drop_prob)
                total = out if total is None else total + out
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)
