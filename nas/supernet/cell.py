"""Mixed ops and search cells (DARTS, Liu et al. 2019, Eq. 2 and Sec. 2.1), with the optional
PC-DARTS partial channels (Xu et al., ICLR 2020, Sec. 3.2).
"""

from __future__ import annotations

import torch
from torch import nn

from nas.ops import OPS, Zero, cell_preprocessing, spatial_layer
from nas.spaces import NUM_INPUT_NODES, CellSpace
from nas.supernet.fast import fast_cell_forward
from nas.supernet.partial import merge_partial, split_partial


class MixedOp(nn.Module):
    """One edge: the weighted sum of its candidate ops (Eq. 2), one call per op.

    This is the straightforward reference path. Ops are held by name, so `remove` can drop one for
    good (ASAP pruning): its module, and with it its parameters, leave the edge. The zero op is
    skipped: its output is zero, so leaving it out changes neither the sum nor any gradient (its
    alpha still gets gradient through the softmax). So is every op left out of `active` (the
    mix gives it weight exactly 0); with no op left to run the edge outputs zeros.

    With `partial_channels` K > 1 (PC-DARTS), the ops see only the first C/K channels; the other
    channels bypass them (max-pooled on a stride-2 edge) and the result is channel-shuffled.
    """

    def __init__(
        self,
        op_names: tuple[str, ...],
        channels: int,
        stride: int,
        partial_channels: int = 1,
        dims: int = 2,
    ) -> None:
        super().__init__()
        self.index = {name: k for k, name in enumerate(op_names)}
        self.partial_channels = partial_channels
        self.ops = nn.ModuleDict()
        for name in op_names:
            op_def = OPS.get(name)
            searched = channels // partial_channels
            op = op_def.make(searched, stride, False, dims)
            if op_def.pooling:
                op = nn.Sequential(op, spatial_layer("bn", dims)(searched, affine=False))
            self.ops[name] = op
        self.zero = Zero(stride)  # the output of an edge none of whose ops runs

    def remove(self, name: str) -> None:
        """Drop the op `name` from this edge (it is no longer built, run or trained)."""
        if name in self.ops:
            if len(self.ops) == 1:
                raise ValueError(f"cannot remove {name!r}: an edge keeps at least one op")
            del self.ops[name]

    def forward(
        self, x: torch.Tensor, weights: torch.Tensor, active: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        """The edge's output; `active`: the op indices that run (None: every live op)."""
        if self.partial_channels == 1:
            return self._mix(x, weights, active)
        searched, bypass = split_partial(x, self.partial_channels)
        out = self._mix(searched, weights, active)
        return merge_partial(out.unsqueeze(1), bypass, self.partial_channels).squeeze(1)

    def _mix(
        self, x: torch.Tensor, weights: torch.Tensor, active: tuple[int, ...] | None
    ) -> torch.Tensor:
        out = None
        for name, op in self.ops.items():
            index = self.index[name]
            if isinstance(op, Zero) or (active is not None and index not in active):
                continue
            term = weights[index] * op(x)
            out = term if out is None else out + term
        return self.zero(x) if out is None else out


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
        partial_channels: int = 1,
        dims: int = 2,
    ) -> None:
        super().__init__()
        self.space = space
        self.reduction = reduction
        self.fast = False  # True: nas/supernet/fast.py computes the same result with fewer calls
        self.preprocess0, self.preprocess1 = cell_preprocessing(
            prev_prev_channels, prev_channels, channels, reduction_prev, affine=False, dims=dims
        )
        self.edges = nn.ModuleList()
        for node in range(space.num_nodes):
            for source in range(NUM_INPUT_NODES + node):
                stride = 2 if reduction and source < NUM_INPUT_NODES else 1
                self.edges.append(MixedOp(space.ops, channels, stride, partial_channels, dims))

    def forward(
        self,
        s0: torch.Tensor,
        s1: torch.Tensor,
        weights: torch.Tensor,
        edge_weights: torch.Tensor | None = None,
        active: tuple[tuple[int, ...], ...] | None = None,
    ) -> torch.Tensor:
        """The cell output; `edge_weights` (num_edges,): PC-DARTS edge normalisation, or None;
        `active`: per edge, the op indices that run (`Mix.active`; None: every live op).
        """
        if self.fast:
            return fast_cell_forward(self, s0, s1, weights, edge_weights, active)
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.space.num_nodes):
            terms = [
                self.edges[offset + j](
                    h, weights[offset + j], None if active is None else active[offset + j]
                )
                for j, h in enumerate(states)
            ]
            if edge_weights is not None:
                terms = [edge_weights[offset + j] * term for j, term in enumerate(terms)]
            node = sum(terms)
            offset += len(states)
            states.append(node)
        return torch.cat([states[i] for i in self.space.concat], dim=1)
