"""DARTS: bilevel search by gradient descent on weights and alphas (Liu et al., ICLR 2019).

Each step first updates the alphas on a validation batch, then the weights on a training batch
(Alg. 1). First order (`order=1`) uses grad_alpha L_val(w, alpha). Second order (`order=2`)
differentiates through one virtual weight step (Eq. 6-8).

With `alpha_noise` > 0 the weight step mixes the ops with randomly perturbed op weights, SDARTS-RS
(Chen and Hsieh, "Stabilizing Differentiable Architecture Search via Perturbation-based
Regularization", ICML 2020): the weights are trained on L_train(w, softmax(alpha) + delta)
with delta ~ U[-epsilon, epsilon] per op weight, fresh every step, while the alpha step (the virtual
step of order 2 included) sees softmax(alpha) unperturbed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from nas.config import StrategyConfig
from nas.options import Options
from nas.runtime.dist import Runtime
from nas.runtime.engine import StepResult
from nas.strategies.base import STRATEGIES, Batch, Strategy
from nas.supernet import SearchNetwork
from nas.supernet.mixing import Mix, Mixing

# The architecture parameters' names in SearchNetwork (left out of DDP, averaged by the
# strategy); the betas exist with PC-DARTS partial channels only.
ALPHA_NAMES = ("alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce")
HVP_EPSILON = 0.01  # Eq. 8: epsilon = 0.01 / ||grad_w' L_val||, as in the paper


@dataclass
class DartsOptions(Options):
    """DARTS's own settings (the optimisers' are common to every strategy: StrategyConfig)."""

    # 1: first-order alpha gradient; 2: through one virtual weight step (Eq. 6-8), slower.
    order: int = 1
    # SDARTS-RS epsilon: the weight step mixes with softmax(alpha) + U[-epsilon, epsilon] noise,
    # which keeps the validation loss smooth in alpha and so counters the collapse to skip
    # connections (Chen and Hsieh 2020). 0: off; a small value such as 0.03.
    alpha_noise: float = 0.0

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (self.order in (1, 2), "strategy.order must be 1 or 2"),
            (
                math.isfinite(self.alpha_noise) and self.alpha_noise >= 0,
                "strategy.alpha_noise must be a number >= 0 (0: off; a small value such as 0.03 "
                "smooths the search)",
            ),
        ]


@STRATEGIES.register("darts", options=DartsOptions)
class Darts(Strategy):
    """DARTS with SGD (momentum, cosine schedule) on weights and Adam on alphas (Sec. 3.1.1)."""

    def __init__(
        self,
        network: SearchNetwork,
        config: StrategyConfig,
        epochs: int,
        steps_per_epoch: int,
        runtime: Runtime | None = None,
    ) -> None:
        super().__init__(network, config, epochs, steps_per_epoch, runtime)
        # DDP averages the weight gradients; the alphas, trained with autograd.grad (which
        # bypasses DDP's hooks), are averaged explicitly in alpha_step.
        self.runtime.broadcast(network.arch_parameters())
        self.model = self._wrap()
        self.weight_optimizer = torch.optim.SGD(
            network.weight_parameters(),
            lr=config.weight_lr,
            momentum=config.weight_momentum,
            weight_decay=config.weight_decay,
        )
        self.alpha_optimizer = torch.optim.Adam(
            network.arch_parameters(),
            lr=config.alpha_lr,
            betas=tuple(config.alpha_betas),
            weight_decay=config.alpha_weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.weight_optimizer, T_max=epochs, eta_min=config.weight_lr_min
        )
        # Weight steps taken; weight step t draws its op-weight noise from `sampler(t)`.
        self.weight_steps = 0

    def _wrap(self) -> nn.Module:
        """The network under DDP, the architecture parameters left out."""
        return self.runtime.wrap(self.network, ignore=ALPHA_NAMES, find_unused=self.samples_ops)

    @property
    def order(self) -> int:
        """The alpha gradient: 1 first order, 2 through a virtual weight step (option `order`)."""
        return self.options.order

    @property
    def alpha_noise(self) -> float:
        """epsilon of the weight step's op-weight noise (option `alpha_noise`; 0: off)."""
        # Strategies built on DARTS with options of their own (GDAS, random search) have none.
        return self.options.alpha_noise if isinstance(self.options, DartsOptions) else 0.0

    @property
    def weight_lr(self) -> float:
        """The current weight learning rate (also xi of the virtual step)."""
        return self.weight_optimizer.param_groups[0]["lr"]

    def step(self, train_batch: Batch, val_batch: Batch) -> StepResult:
        self.network.train()
        self.alpha_step(train_batch, val_batch)
        return self.weight_step(train_batch)

    def alpha_step(self, train_batch: Batch, val_batch: Batch) -> None:
        """Update the alphas; weights, BN running stats and the weight optimiser stay untouched."""
        buffers = [b.detach().clone() for b in self.network.buffers()]
        if self.order == 1:
            images, labels = val_batch
            loss = F.cross_entropy(self.network(images), labels)
            # A sampled mix may leave a cell kind's alphas unused (every edge drew `none`): zeros.
            grads = torch.autograd.grad(
                loss, self.network.arch_parameters(), materialize_grads=True
            )
            self.runtime.average(grads)
        else:
            grads = unrolled_alpha_grads(
                self.network,
                train_batch,
                val_batch,
                self.weight_optimizer,
                xi=self.weight_lr,
                average=self.runtime.average,
            )
        with torch.no_grad():
            for buffer, saved in zip(self.network.buffers(), buffers):
                buffer.copy_(saved)
        for alpha, grad in zip(self.network.arch_parameters(), grads):
            alpha.grad = grad
        self.alpha_optimizer.step()
        self.alpha_optimizer.zero_grad(set_to_none=True)

    def weight_step(self, train_batch: Batch) -> StepResult:
        """One SGD step on the weights, gradients clipped to `grad_clip` (alphas untouched)."""
        images, labels = train_batch
        weights = self.network.weight_parameters()
        self.weight_optimizer.zero_grad(set_to_none=True)
        step, self.weight_steps = self.weight_steps, self.weight_steps + 1
        hook = self.network.mixing
        if self.alpha_noise > 0:
            self.network.mixing = self.noisy_mixing(step)
        try:
            logits = self.model(images)
        finally:  # the alpha step and evaluation mix without noise
            self.network.mixing = hook
        loss = F.cross_entropy(logits, labels)
        # A plain backward (DDP's gradient hooks miss parameters under backward(inputs=...)); the
        # alpha gradients it computes are dropped, alpha_step computes its own.
        loss.backward()
        for alpha in self.network.arch_parameters():
            alpha.grad = None
        nn.utils.clip_grad_norm_(weights, self.config.grad_clip)
        self.weight_optimizer.step()
        correct = (logits.detach().argmax(dim=1) == labels).sum()
        return StepResult(loss=loss.detach(), correct=correct, count=len(labels))

    def noisy_mixing(self, step: int) -> Mixing:
        """The mixing of weight step `step`: each `mix` perturbed by `perturb_mix` with noise from
        `sampler(step)`, so every rank, and a resumed run, draws the same noise.
        """
        generator = self.sampler(step)

        def mixing(alphas: Sequence[torch.Tensor], pruned: Sequence[torch.Tensor]) -> list[Mix]:
            mixes = self.mix(alphas, pruned)
            return [
                perturb_mix(m, mask, self.alpha_noise, generator) for m, mask in zip(mixes, pruned)
            ]

        return mixing

    def end_epoch(self, epoch: int) -> dict[str, float]:
        lr = self.weight_lr
        self.scheduler.step()
        return {"lr": lr}

    def progress(self) -> dict[str, str]:
        return {"lr": f"{self.weight_lr:.4f}"}

    def state_dict(self) -> dict[str, Any]:
        return {
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weight_steps": self.weight_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # Default 0: the count matters only with the noise on, and such a checkpoint holds it.
        self.weight_steps = state.get("weight_steps", 0)


def perturb_mix(mix: Mix, pruned: torch.Tensor, epsilon: float, generator: torch.Generator) -> Mix:
    """SDARTS-RS (Chen and Hsieh 2020): `mix.weights` + delta, delta ~ U[-epsilon, epsilon]
    independently for every op of every edge, a function of the state of the CPU generator
    `generator` (which it advances) and the device type. Pruned ops (`pruned` >= 0) keep their
    weight 0. Only for dense mixes, where every live op runs.
    """
    if mix.active is not None:
        raise ValueError("op-weight noise needs a dense mix: a sampled mix runs only chosen ops")
    weights = mix.weights
    # Drawn on the weights' device by a generator seeded from `generator`: a host-to-device copy
    # of noise drawn on the CPU would wait for the device to finish its queued work every step.
    seed = int(torch.randint(2**62, (), generator=generator))
    on_device = torch.Generator(weights.device).manual_seed(seed)
    delta = torch.empty_like(weights).uniform_(-epsilon, epsilon, generator=on_device)
    delta = delta.masked_fill(pruned >= 0, 0.0)
    return Mix(weights + delta)


def virtual_step(
    weights: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    optimizer: torch.optim.SGD,
    xi: float,
) -> list[torch.Tensor]:
    """w' = w - xi * (momentum * buffer + grad + weight_decay * w): the SGD step the optimiser
    would take next (Eq. 6 with momentum and weight decay), without changing the optimiser.
    """
    group = optimizer.param_groups[0]
    momentum, weight_decay = group["momentum"], group["weight_decay"]
    unrolled = []
    for weight, grad in zip(weights, grads):
        direction = grad + weight_decay * weight
        buffer = optimizer.state.get(weight, {}).get("momentum_buffer")
        if buffer is not None:
            direction = direction + momentum * buffer
        unrolled.append(weight - xi * direction)
    return unrolled


def unrolled_alpha_grads(
    network: SearchNetwork,
    train_batch: Batch,
    val_batch: Batch,
    optimizer: torch.optim.SGD,
    xi: float,
    average: Callable[[Sequence[torch.Tensor]], None] = lambda _: None,
) -> list[torch.Tensor]:
    """Second-order alpha gradient (Eq. 7 and 8).

    grad_alpha L_val(w', alpha)
        - xi * (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 epsilon)

    with w' the virtual step, w+- = w +- epsilon * grad_w' L_val(w', alpha) and
    epsilon = 0.01 / ||grad_w' L_val||. Every forward pass goes through `functional_call`, so the
    network's weights are never written. (BN running statistics are; the caller restores them.)

    Under several processes, `average` (the mean over the ranks, in place) is applied to each
    gradient that feeds a later computation, so every rank uses the global-batch virtual step,
    the same w+- and returns the same alpha gradient.
    """
    weight_names, weights = zip(*network.named_weight_parameters())
    alphas = network.arch_parameters()
    train_images, train_labels = train_batch
    val_images, val_labels = val_batch

    def loss_at(
        values: Sequence[torch.Tensor], images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        logits = functional_call(network, dict(zip(weight_names, values)), (images,))
        return F.cross_entropy(logits, labels)

    train_loss = F.cross_entropy(network(train_images), train_labels)
    train_grads = torch.autograd.grad(train_loss, weights)
    average(train_grads)
    with torch.no_grad():
        unrolled = [w.requires_grad_() for w in virtual_step(weights, train_grads, optimizer, xi)]
    val_loss = loss_at(unrolled, val_images, val_labels)
    grads = torch.autograd.grad(val_loss, [*alphas, *unrolled])
    average(grads)
    alpha_grads, unrolled_grads = grads[: len(alphas)], grads[len(alphas) :]

    norm = torch.sqrt(sum((g * g).sum() for g in unrolled_grads))
    epsilon = HVP_EPSILON / norm
    with torch.no_grad():
        plus = [w + epsilon * g for w, g in zip(weights, unrolled_grads)]
        minus = [w - epsilon * g for w, g in zip(weights, unrolled_grads)]
    grads_plus = torch.autograd.grad(loss_at(plus, train_images, train_labels), alphas)
    grads_minus = torch.autograd.grad(loss_at(minus, train_images, train_labels), alphas)
    differences = [gp - gm for gp, gm in zip(grads_plus, grads_minus)]
    average(differences)
    return [grad - xi * d / (2 * epsilon) for grad, d in zip(alpha_grads, differences)]
