"""The search network: stem, search cells, classifier, and the architecture parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from nas.errors import NasError
from nas.genotype import CELL_KINDS, Genotype, derive_genotype
from nas.ops import global_avg_pool, spatial_layer
from nas.spaces import CellSpace, check_layers
from nas.supernet.cell import SearchCell
from nas.supernet.mixing import Mix, Mixing, dense_mixing, live_softmax


class SearchNetwork(nn.Module):
    """A DARTS supernet over `space` (Liu et al. 2019, Sec. 3.1.1).

    Args:
        space: the cell space.
        in_channels: input channels (1 for digits, 3 for CIFAR).
        num_classes: classifier outputs.
        channels: initial channels C; reduction cells double it.
        layers: number of cells.
        partial_channels: PC-DARTS K (Xu et al., ICLR 2020): each mixed op sees C/K channels,
            and edge-normalisation weights `beta_normal` / `beta_reduce` (num_edges,) weigh
            the edges into each node by a softmax over the node's edges. 1: plain DARTS.
        checkpoint_cells: recompute each cell's activations in the backward pass instead of
            keeping them (activation checkpointing): less memory, about one more forward.
        dims: spatial dims of the input: 2 for (N, C, H, W) images, 1 for (N, C, L) signals.

    The alphas (`alpha_normal`, `alpha_reduce`, each num_edges x num_ops) are registered parameters,
    so they are in `state_dict()` and every checkpoint; `arch_parameters()` and
    `weight_parameters()` split the two sets for their separate optimizers.

    How each forward weighs the ops of every edge is up to `mixing` (nas/supernet/mixing.py), a
    hook the strategy sets; by default softmax(alpha) over the ops alive on each edge (DARTS).
    `prune` removes ops for good; the buffers `pruned_normal` / `pruned_reduce` (num_edges x
    num_ops, -1 while alive, else the step at which the op was pruned) record which, so a
    checkpoint restores the pruned network.

    BatchNorm layers normalise with the current batch's statistics in evaluation too (no running
    averages), see `_use_batch_statistics`.
    """

    def __init__(
        self,
        space: CellSpace,
        in_channels: int,
        num_classes: int,
        channels: int,
        layers: int,
        partial_channels: int = 1,
        checkpoint_cells: bool = False,
        dims: int = 2,
    ) -> None:
        super().__init__()
        check_layers(space, layers)
        check_partial_channels(space, channels, partial_channels)
        self.space = space
        self.partial_channels = partial_channels
        self.checkpoint_cells = checkpoint_cells
        self.dims = dims
        stem_channels = space.stem_multiplier * channels
        self.stem = nn.Sequential(
            spatial_layer("conv", dims)(in_channels, stem_channels, 3, padding=1, bias=False),
            spatial_layer("bn", dims)(stem_channels),
        )
        reduction_layers = set(space.reduction_layers(layers))
        prev_prev, prev, current = stem_channels, stem_channels, channels
        reduction_prev = False
        self.cells = nn.ModuleList()
        for layer in range(layers):
            reduction = layer in reduction_layers
            if reduction:
                current *= 2
            self.cells.append(
                SearchCell(
                    space,
                    prev_prev,
                    prev,
                    current,
                    reduction,
                    reduction_prev,
                    partial_channels,
                    dims,
                )
            )
            reduction_prev = reduction
            prev_prev, prev = prev, len(space.concat) * current
        self.classifier = nn.Linear(prev, num_classes)
        # DARTS initialises alphas at 1e-3 * N(0, 1): near-uniform op weights (Sec. 3.1.1).
        shape = (space.num_edges, len(space.ops))
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(shape))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(shape))
        if partial_channels > 1:  # PC-DARTS edge normalisation, initialised like the alphas
            self.beta_normal = nn.Parameter(1e-3 * torch.randn(space.num_edges))
            self.beta_reduce = nn.Parameter(1e-3 * torch.randn(space.num_edges))
        self.register_buffer("pruned_normal", torch.full(shape, -1, dtype=torch.long))
        self.register_buffer("pruned_reduce", torch.full(shape, -1, dtype=torch.long))
        # The mixing hook; a strategy installs its own (nas/strategies/base.py).
        self.mixing: Mixing = dense_mixing
        # P-DARTS's cap on the derived normal cell's skip connections (`genotype`); None: none.
        self.max_skips: int | None = None
        _use_batch_statistics(self)

    def use_fast_path(self, fast: bool = True) -> SearchNetwork:
        """Compute cells with the fast path (True) or the per-edge reference path (False); both
        give the same result up to float summation order. Returns self.
        """
        for cell in self.cells:
            cell.fast = fast
        return self

    def alphas(self) -> list[nn.Parameter]:
        """The op architecture parameters: [alpha_normal, alpha_reduce]."""
        return [self.alpha_normal, self.alpha_reduce]

    def arch_parameters(self) -> list[nn.Parameter]:
        """Every architecture parameter: the alphas, then with PC-DARTS the betas."""
        if self.partial_channels == 1:
            return self.alphas()
        return [*self.alphas(), self.beta_normal, self.beta_reduce]

    def edge_weights(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """PC-DARTS edge normalisation, (normal, reduce): softmax(beta) over each node's incoming
        edges (Xu et al. 2020, Eq. 4); (None, None) without partial channels.
        """
        if self.partial_channels == 1:
            return None, None
        bounds = [self.space.edge_index(node, 0) for node in range(self.space.num_nodes)]
        bounds.append(self.space.num_edges)
        return tuple(
            torch.cat([F.softmax(beta[a:b], dim=-1) for a, b in zip(bounds, bounds[1:])])
            for beta in (self.beta_normal, self.beta_reduce)
        )

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) for every parameter that is not an architecture parameter."""
        arch = {id(p) for p in self.arch_parameters()}
        return [(name, p) for name, p in self.named_parameters() if id(p) not in arch]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not an architecture parameter."""
        return [p for _, p in self.named_weight_parameters()]

    def op_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The op probabilities of every edge, (normal, reduce): softmax(alpha) over the ops alive
        on the edge; pruned ops weigh exactly 0 and get no gradient. What a forward pass mixes is
        up to `mixing`.
        """
        return tuple(
            live_softmax(alpha, pruned) for alpha, pruned in zip(self.alphas(), self.pruned_masks())
        )

    def pruned_masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(normal, reduce): -1 where an op is alive, else the step at which it was pruned."""
        return self.pruned_normal, self.pruned_reduce

    def ops_remaining(self) -> dict[str, int]:
        """Ops alive per cell kind, summed over the cell's edges: {"normal": .., "reduce": ..}."""
        return {kind: int((p < 0).sum()) for kind, p in zip(CELL_KINDS, self.pruned_masks())}

    def prune(self, kind: str, edge: int, op: int, step: int) -> None:
        """Remove op `op` of edge `edge` from every cell of `kind` ("normal" or "reduce") for good.

        Its modules leave the network (so their parameters leave `weight_parameters()`); the
        remaining weights on the edge renormalise. Raises ValueError for the edge's last op.
        """
        pruned = self.pruned_masks()[CELL_KINDS.index(kind)]
        if pruned[edge, op] >= 0:
            return
        if int((pruned[edge] < 0).sum()) == 1:
            raise ValueError(f"{kind} edge {edge}: cannot prune its last op")
        pruned[edge, op] = step
        name = self.space.ops[op]
        for cell in self.cells:
            if cell.reduction == (kind == "reduce"):
                cell.edges[edge].remove(name)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Apply the checkpoint's pruning first, so its keys match the pruned modules."""
        for kind, key in zip(CELL_KINDS, ("pruned_normal", "pruned_reduce")):
            saved = state_dict.get(key)
            if saved is None:
                continue
            for edge, op in (saved >= 0).nonzero().tolist():
                self.prune(kind, edge, op, int(saved[edge, op]))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mix_normal, mix_reduce = self.mixing(self.alphas(), self.pruned_masks())
        edges_normal, edges_reduce = self.edge_weights()
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            mix = mix_reduce if cell.reduction else mix_normal
            edge_weights = edges_reduce if cell.reduction else edges_normal
            if self.checkpoint_cells and torch.is_grad_enabled():
                s0, s1 = s1, _checkpointed(cell, s0, s1, mix, edge_weights)
            else:
                s0, s1 = s1, cell(s0, s1, mix.weights, edge_weights, mix.active)
        return self.classifier(global_avg_pool(s1))

    def genotype(self) -> Genotype:
        """The genotype of the current alphas, by the DARTS rule on softmax(alpha).

        Each edge's op is its strongest live non-`none` op; the edges of a node are ranked by that
        op's weight in softmax(alpha) over all the edge's ops, pruned ones included (at the alpha
        they were pruned with). This is the DARTS rule whatever the strategy mixes with, and it
        still ranks edges once pruning has left one op on each, where ASAP's weights are all 1. An
        edge left with only `none` ranks below every edge with a live op; if a node must take one
        anyway, its op is the non-`none` op pruned last. With PC-DARTS, each edge's scores are
        scaled by its edge-normalisation weight (Xu et al. 2020, Sec. 3.3). With `max_skips` set,
        the normal cell keeps at most that many skip connections (`derive_cell`).
        """
        with torch.no_grad():
            scores = [
                torch.where(
                    pruned >= 0, -1.0 / (2.0 + pruned.double()), F.softmax(alpha.double(), dim=-1)
                )
                for alpha, pruned in zip(self.alphas(), self.pruned_masks())
            ]
            edge_weights = self.edge_weights()
            if edge_weights[0] is not None:
                scores = [s * e.double().unsqueeze(-1) for s, e in zip(scores, edge_weights)]
            return derive_genotype(self.space, scores, self.max_skips)


def check_partial_channels(space: CellSpace, channels: int, partial_channels: int) -> None:
    """Raise NasError unless every cell's channels split into K equal parts that its ops accept."""
    if partial_channels < 1:
        raise NasError(f"model.partial_channels must be 1 (off) or more, got {partial_channels}")
    if partial_channels == 1:
        return
    if channels % partial_channels:
        raise NasError(
            f"model.partial_channels={partial_channels} must divide model.channels={channels} "
            "(each mixed op sees channels / partial_channels of them)"
        )
    searched = channels // partial_channels
    if "skip_connect" in space.ops and searched % 2:
        raise NasError(
            f"model.channels / model.partial_channels = {searched} must be even: the stride-2 "
            "skip (FactorizedReduce) splits the searched channels in two; pick another K or C"
        )


def _checkpointed(
    cell: SearchCell,
    s0: torch.Tensor,
    s1: torch.Tensor,
    mix: Mix,
    edge_weights: torch.Tensor | None,
) -> torch.Tensor:
    """`cell(s0, s1, mix.weights, edge_weights, mix.active)`, its activations recomputed in the
    backward pass.

    Under `functional_call` (the second-order step's virtual weights) the recomputation runs
    after `functional_call` has returned, so the cell's current parameter tensors go in as
    explicit inputs and are put back for it. Otherwise (first order, the weight step) the cell
    is checkpointed as it is: swapping hundreds of parameters per cell costs time.
    """
    weights, active = mix.weights, mix.active
    parameters = dict(cell.named_parameters())
    if all(isinstance(value, nn.Parameter) for value in parameters.values()):
        return checkpoint(cell, s0, s1, weights, edge_weights, active, use_reentrant=False)
    names, values = zip(*parameters.items())

    def run(s0, s1, weights, edge_weights, *values):
        arguments = (s0, s1, weights, edge_weights, active)
        return functional_call(cell, dict(zip(names, values)), arguments)

    return checkpoint(run, s0, s1, weights, edge_weights, *values, use_reentrant=False)


def _use_batch_statistics(module: nn.Module) -> None:
    """Make every BatchNorm use batch statistics in eval mode as well.

    Training is unchanged (train-mode BN always uses batch statistics). The supernet is only
    evaluated to monitor the search, and running averages lag far behind weights that move every
    step: after 2 digits epochs (8 cells, C=8, 22 updates) eval accuracy was 0.08 with running
    averages and 0.91 with statistics recomputed at the final weights.
    """
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.track_running_stats = False
            layer.running_mean = layer.running_var = layer.num_batches_tracked = None
