"""The fast search-cell forward: the same modules and parameters as the reference path, fewer calls.

The reference path (`SearchCell.forward`) runs every op of every edge as its own call. Here the
edges that leave one state are computed together (the performance issue's plan):

- Parameter-free ops (pooling followed by affine-free BatchNorm, and the stride-1 skip) give the
  same output on every edge that leaves a state, so each runs once per state.
- The convolution ops of one type (for example sep_conv_3x3) on the k edges that leave a state run
  as one grouped call: the k depthwise kernels concatenated (k x C groups), the k pointwise kernels
  as one conv with k groups, and one affine-free BatchNorm over the k x C channels, which
  normalises each channel exactly as the per-edge BatchNorms do.

Edges run as soon as their source state exists, and each node sums its edges' weighted ops, so
the result equals the reference up to float summation order; tests/test_fast_supernet.py checks
outputs and gradients in train and eval mode, with and without pruning.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from nas.ops import DilConv, SepConv, Zero
from nas.spaces import NUM_INPUT_NODES


def fast_cell_forward(
    cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """`cell(s0, s1, weights)` computed edge group by edge group (see the module docstring)."""
    space = cell.space
    states = [cell.preprocess0(s0), cell.preprocess1(s1)]
    pending: list[torch.Tensor | None] = [None] * space.num_nodes
    for source in range(NUM_INPUT_NODES + space.num_nodes - 1):
        edges = [
            (node, space.edge_index(node, source))
            for node in range(max(0, source - NUM_INPUT_NODES + 1), space.num_nodes)
        ]
        for node, term in _edges_from(cell, states[source], edges, weights):
            pending[node] = term if pending[node] is None else pending[node] + term
        finished = source - NUM_INPUT_NODES + 1  # the node whose last input is `source`
        if finished >= 0:
            states.append(pending[finished])
    return torch.cat([states[i] for i in space.concat], dim=1)


def _edges_from(
    cell: nn.Module, x: torch.Tensor, edges: list[tuple[int, int]], weights: torch.Tensor
) -> list[tuple[int, torch.Tensor]]:
    """(node, weighted sum of the edge's ops) for every edge leaving state `x`."""
    terms: dict[int, torch.Tensor] = {}
    shared: dict[str, torch.Tensor] = {}
    groups: dict[str, list[tuple[int, int, nn.Module]]] = defaultdict(list)

    def add(node: int, term: torch.Tensor) -> None:
        terms[node] = term if node not in terms else terms[node] + term

    for node, edge in edges:
        mixed = cell.edges[edge]
        for name, op in mixed.ops.items():
            weight = weights[edge, mixed.index[name]]
            if isinstance(op, Zero):
                continue
            if _parameter_free(op):
                if name not in shared:
                    shared[name] = op(x)
                add(node, weight * shared[name])
            elif isinstance(op, DilConv | SepConv):
                groups[name].append((node, edge, op))
            else:  # per-edge op with parameters (FactorizedReduce)
                add(node, weight * op(x))
    relu = F.relu(x) if groups else None
    for name, members in groups.items():
        outputs = _grouped(relu, [op for _, _, op in members])
        for (node, edge, _), out in zip(members, outputs):
            add(node, weights[edge, cell.edges[edge].index[name]] * out)
    for node, edge in edges:
        if node not in terms:  # only `none` left on the edge
            (zero,) = cell.edges[edge].ops.values()
            add(node, zero(x))
    return list(terms.items())


def _parameter_free(op: nn.Module) -> bool:
    return next(op.parameters(), None) is None


def _grouped(relu_x: torch.Tensor, ops: list[nn.Module]) -> list[torch.Tensor]:
    """Run k identical-shape DilConv or SepConv ops on the same (ReLU'd) input as one call each
    per layer; return the k outputs.
    """
    k = len(ops)
    x = relu_x if k == 1 else relu_x.repeat(1, k, 1, 1)
    if isinstance(ops[0], SepConv):
        x = _dil_grouped(x, [op[0] for op in ops], relu_first=False)
        x = _dil_grouped(x, [op[1] for op in ops], relu_first=True)
    else:
        x = _dil_grouped(x, ops, relu_first=False)
    return list(x.chunk(k, dim=1))


def _dil_grouped(x: torch.Tensor, blocks: list[DilConv], relu_first: bool) -> torch.Tensor:
    """k DilConv blocks (ReLU, depthwise, pointwise, affine-free BN) on k channel groups of x."""
    k = len(blocks)
    depthwise = blocks[0][1]
    if relu_first:
        x = F.relu(x)
    x = F.conv2d(
        x,
        torch.cat([b[1].weight for b in blocks]),
        None,
        depthwise.stride,
        depthwise.padding,
        depthwise.dilation,
        groups=x.shape[1],
    )
    x = F.conv2d(x, torch.cat([b[2].weight for b in blocks]), None, 1, 0, 1, groups=k)
    bn = blocks[0][3]
    return F.batch_norm(x, None, None, training=True, momentum=0.0, eps=bn.eps)
