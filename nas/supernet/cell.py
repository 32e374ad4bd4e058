"""Mixed ops and search cells (DARTS, Liu et al. 2019, Eq. 2 and Sec. 2.1)."""

from __future__ import annotations

import torch
from torch import nn

from nas.ops import OPS, Zero, cell_preprocessing
from nas.spaces import NUM_INPUT_NODES, CellSpace
from nas.supernet.fast import fast_cell_forward


class MixedOp(nn.Module):
    """One edge: the weighted sum of its candidate ops (Eq. 2), one call per op.

    This is the straightforward reference path. Ops are held by name, so `remove` can drop one for
    good (ASAP pruning): its module, and with it its parameters, leave the edge. The zero op is
    skipped: its output is zero, so leaving it out changes neither the sum nor any gradient (its
    alpha still gets gradient through the softmax).
    """

    def __init__(self, op_names: tuple[str, ...], channels: int, stride: int) -> None:
        super().__init__()
        self.index = {name: k for k, name in enumerate(op_names)}
        self.ops = nn.ModuleDict()
        for name in op_names:
            op_def = OPS.get(name)
            op = op_def.build(channels, stride, False)
            if op_def.pooling:
                op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False))
            self.ops[name] = op

    def remove(self, name: str) -> None:
        """Drop the op `name` from this edge (it is no longer built, run or trained)."""
        if name in self.ops:
            if len(self.ops) == 1:
                raise ValueError(f"cannot remove {name!r}: an edge keeps at least one op")
            del self.ops[name]

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = None
        for name, op in self.ops.items():
            if isinstance(op, Zero):
                continue
            term = weights[self.index[name]] * op(x)
            out = term if out is None else out + term
        if out is None:  # only the zero op is left on this edge
            (zero,) = self.ops.values()
            return zero(x)
        return out


class SearchCell(nn.Module):
    """A search cell: two preprocessed inputs, `num_nodes` intermediate nodes, every edge mixed.

    Node i sums the mixed ops on its edges from every earlier state; the output concatenates the
    intermediate nodes along channels.
    """

    def __init__(
        self,
        space: CellSpace,
        prev_prev_channels: int,
        prev_channels: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.space = space
        self.reduction = reduction
        self.fast = False  # True: nas/supernet/fast.py computes the same result with fewer calls
        self.preprocess0, self.preprocess1 = cell_preprocessing(
            prev_prev_channels, prev_channels, channels, reduction_prev, affine=False
        )
        self.edges = nn.ModuleList()
        for node in range(space.num_nodes):
            for source in range(NUM_INPUT_NODES + node):
                stride = 2 if reduction and source < NUM_INPUT_NODES else 1
                self.edges.append(MixedOp(space.ops, channels, stride))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return fast_cell_forward(self, s0, s1, weights)
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.space.num_nodes):
            node = sum(self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(node)
        return torch.cat([states[i] for i in self.space.concat], dim=1)
