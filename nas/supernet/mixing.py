"""The mixing hook: how a supernet weighs the candidate ops of each edge in one forward pass.

A strategy supplies a `Mixing`, a function from the alphas and pruning records of both cell kinds
to one `Mix` per kind. Dense mixing (DARTS Eq. 2) weighs every live op; a sampling strategy
(GDAS, random search) gives one op per edge the weight 1 and every other op exactly 0, and the
cells then run only the sampled ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Mix:
    """One cell kind's op weights for one forward pass.

    Attributes:
        weights: (num_edges, num_ops). Each edge's output is the weighted sum of its ops.
        active: per edge, the indices of the ops that run, known on the host so the cells skip
            the others without reading the device; every other op's weight must be exactly 0.
            An edge with no active op outputs zeros. None: every live op runs (dense mixing).
    """

    weights: torch.Tensor
    active: tuple[tuple[int, ...], ...] | None = None


# (alphas, pruned masks) of the (normal, reduce) cells -> one Mix per cell kind. Called once at
# the start of every forward pass of the supernet.
Mixing = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], Sequence[Mix]]


def live_softmax(
    alpha: torch.Tensor, pruned: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """softmax(alpha / T) over each edge's live ops (`pruned` < 0); pruned ops weigh exactly 0
    and get no gradient.
    """
    return F.softmax((alpha / temperature).masked_fill(pruned >= 0, -math.inf), dim=-1)


def dense_mixing(alphas: Sequence[torch.Tensor], pruned: Sequence[torch.Tensor]) -> list[Mix]:
    """DARTS mixing (Liu et al. 2019, Eq. 2): softmax(alpha) over the live ops of every edge."""
    return [Mix(live_softmax(alpha, mask)) for alpha, mask in zip(alphas, pruned)]


def one_hot_mix(
    choices: Sequence[int | None],
    num_ops: int,
    device: torch.device,
    soft: torch.Tensor | None = None,
) -> Mix:
    """One op per edge: `choices[e]` is the op index edge e runs, or None for an edge that is left
    out (it outputs zeros).

    The chosen op weighs exactly 1, every other op exactly 0. With `soft` (num_edges, num_ops),
    the weights are a straight-through estimator: the forward value is the one-hot, the gradient
    flows to `soft` as if the weights were `soft` (Bengio et al. 2013; GDAS Eq. 5).
    """
    hard = torch.zeros(len(choices), num_ops, device=device)
    rows = [edge for edge, op in enumerate(choices) if op is not None]
    if rows:
        hard[rows, [choices[edge] for edge in rows]] = 1.0
    active = tuple(() if op is None else (op,) for op in choices)
    if soft is None:
        return Mix(hard, active)
    # soft - soft.detach() is exactly 0, so the forward value stays exactly one-hot.
    return Mix(hard + (soft - soft.detach()), active)
