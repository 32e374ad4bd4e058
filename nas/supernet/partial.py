"""PC-DARTS partial channels (Xu et al., ICLR 2020, Sec. 3.2): only C/K of an edge's channels go
through its mixed op; the rest bypass it, and the two are channel-shuffled back together. Shared by
the reference and the fast path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def split_partial(x: torch.Tensor, partial_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PC-DARTS: (the first C/K channels, which go through the ops; the rest, which bypass them)."""
    searched = x.shape[1] // partial_channels
    return x[:, :searched], x[:, searched:]


def merge_partial(out: torch.Tensor, bypass: torch.Tensor, partial_channels: int) -> torch.Tensor:
    """PC-DARTS: join E edges' op outputs (N, E, C/K, H', W') with the bypassed channels
    (N, C - C/K, H, W) and shuffle the channels; returns (N, E, C, H', W'). Signals (one spatial
    dim, L instead of H, W) alike.

    The bypass is max-pooled to H' on a stride-2 edge (2x2, or 2 in 1D, rounding up like the ops
    do).
    """
    if bypass.shape[-1] != out.shape[-1]:
        pool = F.max_pool1d if bypass.dim() == 3 else F.max_pool2d
        bypass = pool(bypass, 2, 2, ceil_mode=True)
    bypass = bypass.unsqueeze(1).expand(-1, out.shape[1], *bypass.shape[1:])
    joined = torch.cat([out, bypass], dim=2)
    batch, edges, channels, *spatial = joined.shape
    # Channel shuffle (ShuffleNet): K groups of C/K channels, interleaved.
    joined = joined.view(batch, edges, partial_channels, channels // partial_channels, *spatial)
    return joined.transpose(2, 3).reshape(batch, edges, channels, *spatial)
