"""Collapse of a cell search: diagnostics every epoch and the guards against it.

A long DARTS search tends to drift to cells of parameter-free ops (skip connections, pooling),
whose networks train worse than random cells (Zela et al., "Understanding and Robustifying
Differentiable Architecture Search", ICLR 2020; Chen et al., P-DARTS, ICCV 2019; Liang et al.,
DARTS+, 2019). The search task measures, after every epoch:

- the parameter-free ops in each derived cell (and the skip connections among them);
- the mean entropy of each cell kind's op weights (how decided the edges are);
- every `hessian_every` epochs, the dominant eigenvalue of the Hessian of the validation loss with
  respect to the alphas (R-DARTS's indicator), by power iteration on Hessian-vector products.

`CollapseWatch` turns these into warnings and, when asked, an early stop that keeps the genotype
from before the collapse; `max_skips` caps the skip connections of the derived normal cell.
docs/collapse.md explains each option and its default.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from nas.config import CollapseConfig
from nas.genotype import CELL_KINDS, SKIP_CONNECT, Genotype
from nas.supernet.mixing import dense_mixing


@functools.cache
def parameter_free(op: str) -> bool:
    """True when the op `op` has no parameters at stride 1 (skip connection, pooling, zero)."""
    from nas.ops import OPS

    return not any(True for _ in OPS.get(op).make(4, 1, True).parameters())


def cell_counts(genotype: Genotype) -> dict[str, int]:
    """Parameter-free ops and skip connections in each derived cell:
    {"param_free_normal": .., "param_free_reduce": .., "skips_normal": .., "skips_reduce": ..}.
    """
    counts = {}
    for kind in CELL_KINDS:
        ops = [edge.op for node in genotype.cell(kind).nodes for edge in node]
        counts[f"param_free_{kind}"] = sum(parameter_free(op) for op in ops)
        counts[f"skips_{kind}"] = ops.count(SKIP_CONNECT)
    return counts


def mean_entropy(weights: torch.Tensor) -> float:
    """The mean over edges of the entropy (nats) of each edge's op weights (num_edges x num_ops);
    0 when every edge has decided on one op, log(num_ops) when every edge is uniform."""
    p = weights.detach().double()
    terms = torch.where(p > 0, -p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p))
    return float(terms.sum(dim=1).mean())


def dominant_eigenvalue(
    network: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    iterations: int,
    tolerance: float = 1e-4,
) -> float:
    """The largest eigenvalue of the Hessian of the cross-entropy loss on (`images`, `labels`)
    with respect to the supernet's alphas (both cell kinds, one vector), by power iteration on
    Hessian-vector products (double backpropagation). Power iteration finds the eigenvalue of
    largest magnitude; when that one is negative, a second run on H - lambda I finds the largest.

    The supernet mixes by softmax(alpha) (DARTS's relaxation, whatever the strategy samples) and
    normalises with batch statistics, as in an alpha step; its buffers and mixing hook are
    restored afterwards, and the start vector comes from a fixed generator, so the search itself
    is unchanged and the result is the same on every process and after a resume.
    """
    alphas = network.alphas()
    buffers = [b.detach().clone() for b in network.buffers()]
    mixing, training = network.mixing, network.training
    network.mixing = dense_mixing
    network.train()
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(network(images), labels)
            grads = torch.autograd.grad(loss, alphas, create_graph=True)

            def hessian_times(vector: list[torch.Tensor]) -> list[torch.Tensor]:
                return list(torch.autograd.grad(grads, alphas, vector, retain_graph=True))

            largest = _power_iteration(hessian_times, alphas, iterations, tolerance)
            if largest >= 0:
                return largest

            def shifted(vector: list[torch.Tensor]) -> list[torch.Tensor]:
                return [h - largest * v for h, v in zip(hessian_times(vector), vector)]

            return largest + _power_iteration(shifted, alphas, iterations, tolerance)
    finally:
        network.mixing = mixing
        network.train(training)
        with torch.no_grad():
            for buffer, saved in zip(network.buffers(), buffers):
                buffer.copy_(saved)


def _power_iteration(
    product: Callable[[list[torch.Tensor]], list[torch.Tensor]],
    like: Sequence[torch.Tensor],
    iterations: int,
    tolerance: float,
) -> float:
    """The eigenvalue of largest magnitude of the symmetric operator `product`, acting on lists
    of tensors shaped as `like`, from a fixed start vector (the Rayleigh quotient of the last
    iterate); stops early once it changes by less than `tolerance` relative to itself."""
    generator = torch.Generator().manual_seed(0)
    vector = [torch.randn(t.shape, generator=generator).to(t) for t in like]
    norm = torch.sqrt(sum((v * v).sum() for v in vector))
    vector = [v / norm for v in vector]
    eigenvalue = 0.0
    for _ in range(iterations):
        image = product(vector)
        estimate = float(sum((v * h).sum() for v, h in zip(vector, image)))
        norm = math.sqrt(float(sum((h * h).sum() for h in image)))
        if norm == 0.0:  # the operator is zero: every eigenvalue is 0
            return 0.0
        vector = [h / norm for h in image]
        done = abs(estimate - eigenvalue) <= tolerance * abs(estimate)
        eigenvalue = estimate
        if done:
            break
    return eigenvalue


class CollapseWatch:
    """Reads each epoch's genotype and eigenvalue; says when collapse is under way, and with an
    early stop configured, stops and keeps the genotype from before it.

    Its `state_dict` holds every epoch it saw, so a resumed search decides as an uninterrupted one.
    """

    def __init__(self, config: CollapseConfig) -> None:
        self.config = config
        # One entry per epoch: {"epoch", "genotype" (dict), "param_free", "eigenvalue" or None}.
        self.history: list[dict[str, Any]] = []
        self.stopped_at: int | None = None  # the epoch after which the search stopped
        self.kept_epoch: int | None = None  # the epoch whose genotype is kept
        self.reason = ""
        self.growing = False  # the eigenvalue was growing at the last measurement

    def observe(
        self, epoch: int, genotype: Genotype, param_free: int, eigenvalue: float | None
    ) -> list[str]:
        """Record epoch `epoch` (1-based): its genotype, the parameter-free ops of its normal
        cell and the eigenvalue (None when not computed); return the warnings it raises."""
        entry = {
            "epoch": epoch,
            "genotype": genotype.to_dict(),
            "param_free": param_free,
            "eigenvalue": eigenvalue,
        }
        earlier = list(self.history)
        self.history.append(entry)
        warnings = []
        for indicator, found in (
            ("param_free", self._by_ops(entry, earlier)),
            ("eigenvalue", self._by_eigenvalue()),
        ):
            if found is None:
                continue
            kept, what = found
            warnings.append(self._warning(indicator, epoch, what))
            if self.config.early_stop == indicator:
                self._stop(epoch, kept, what)
        return warnings

    def _by_ops(
        self, entry: dict[str, Any], earlier: list[dict[str, Any]]
    ) -> tuple[int, str] | None:
        """(kept epoch, what happened) when the normal cell's parameter-free ops rose to the
        limit from fewer earlier in the search. A rise, not a level: in the first epochs the
        derived cells are full of pooling and skips before the convolutions have learned
        anything (DARTS+, Sec. 3), and a search that keeps them is not one that drifts to them.
        The kept genotype is the latest with the fewest."""
        count, limit = entry["param_free"], self.config.param_free_limit
        if not earlier or count < limit:
            return None
        fewest = min(e["param_free"] for e in earlier)
        if count <= fewest or earlier[-1]["param_free"] >= count:
            return None  # no rise, or already reported at this count
        kept = max((e for e in earlier if e["param_free"] == fewest), key=lambda e: e["epoch"])
        what = (
            f"the normal cell's parameter-free ops rose from {fewest} (epoch {kept['epoch']}) "
            f"to {count} of {self._edges(entry)}"
        )
        return kept["epoch"], what

    def _by_eigenvalue(self) -> tuple[int, str] | None:
        """(kept epoch, what happened) when the eigenvalue's mean over the last k epochs grew
        beyond 1/ratio times its mean over the k epochs before (R-DARTS, Sec. 4.2)."""
        k, ratio = self.config.eigenvalue_epochs, self.config.eigenvalue_ratio
        now = self.history[-1]["epoch"]
        if self.history[-1]["eigenvalue"] is None:
            return None
        recent = self._eigenvalues(now - k, now)
        before = self._eigenvalues(now - 2 * k, now - k)
        if not recent or not before or now - 2 * k < 0:
            return None
        mean_recent, mean_before = sum(recent) / len(recent), sum(before) / len(before)
        growing = mean_recent > 0 and mean_before / mean_recent < ratio
        was_growing, self.growing = self.growing, growing
        if not growing or was_growing:
            return None  # no growth, or already reported while it lasts
        what = (
            f"the Hessian's dominant eigenvalue grew from {mean_before:.4g} (mean of epochs "
            f"{now - 2 * k + 1}-{now - k}) to {mean_recent:.4g} (epochs {now - k + 1}-{now})"
        )
        return max(now - k, 1), what

    def _eigenvalues(self, after: int, upto: int) -> list[float]:
        return [
            e["eigenvalue"]
            for e in self.history
            if after < e["epoch"] <= upto and e["eigenvalue"] is not None
        ]

    @staticmethod
    def _edges(entry: dict[str, Any]) -> int:
        return sum(len(node) for node in entry["genotype"]["normal"]["nodes"])

    def _warning(self, indicator: str, epoch: int, what: str) -> str:
        if self.config.early_stop == indicator:
            return f"warning: collapse under way after epoch {epoch}: {what}"
        cap = (
            " or cap skip connections with collapse.max_skips=2,"
            if (self.config.max_skips is None)
            else ""
        )
        return (
            f"warning: collapse may be under way after epoch {epoch}: {what}; to stop such a "
            f"search and keep the earlier genotype set collapse.early_stop={indicator},{cap} "
            "see docs/collapse.md"
        )

    def _stop(self, epoch: int, kept: int, what: str) -> None:
        if self.stopped_at is not None:
            return
        self.stopped_at, self.kept_epoch = epoch, kept
        self.reason = (
            f"collapse under way ({what}; collapse.early_stop={self.config.early_stop}); "
            f"genotype.json keeps the genotype of epoch {kept}"
        )

    def kept_genotype(self) -> Genotype | None:
        """The genotype kept by an early stop, or None while the search goes on."""
        if self.kept_epoch is None:
            return None
        entry = next(e for e in self.history if e["epoch"] == self.kept_epoch)
        return Genotype.from_dict(entry["genotype"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "stopped_at": self.stopped_at,
            "kept_epoch": self.kept_epoch,
            "reason": self.reason,
            "growing": self.growing,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.stopped_at = state["stopped_at"]
        self.kept_epoch = state["kept_epoch"]
        self.reason = state["reason"]
        self.growing = state["growing"]
