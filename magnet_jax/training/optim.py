"""Optimizers and learning-rate schedules as in the original (PyTorch) training scripts.

- SGD with momentum and *coupled* weight decay (`torch.optim.SGD(weight_decay=wd)`):
  `g <- g + wd * p; buf <- momentum * buf + g; p <- p - lr * buf` (dampening 0, the
  first step's buffer is `g`). In optax: `add_decayed_weights(wd)` then `sgd(lr, momentum)`.
- Refiners: `MultiStepLR(milestones, gamma)` stepped once per epoch.
- Backbones: HRNet's poly decay `base * (1 - it / max_it) ** power`, where the original
  sets the new rate *after* each step, so step `k` uses `it = max(k - 1, 0)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
import optax

from magnet_jax.training.spec import OptimSpec


def multistep_schedule(
    base_lr: float, milestones_epochs: Sequence[int], gamma: float, steps_per_epoch: int
) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """`lr(step) = base * gamma ** #{m in milestones : m <= step // steps_per_epoch}` (PyTorch MultiStepLR)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    milestones = jnp.asarray(sorted(int(m) for m in milestones_epochs), jnp.int32)

    def schedule(step):
        epoch = jnp.asarray(step, jnp.int32) // steps_per_epoch
        n = jnp.sum(milestones <= epoch) if milestones.size else 0
        return base_lr * jnp.asarray(gamma, jnp.float32) ** n

    return schedule


def poly_schedule(base_lr: float, max_steps: int, power: float) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """HRNet's `adjust_learning_rate`: step k trains with `base * (1 - max(k-1, 0) / max_steps) ** power`."""
    max_steps = max(int(max_steps), 1)

    def schedule(step):
        it = jnp.maximum(jnp.asarray(step, jnp.float32) - 1.0, 0.0)
        frac = jnp.clip(1.0 - it / max_steps, 0.0, 1.0)
        return base_lr * frac**power

    return schedule


def sgd_coupled(
    learning_rate: float | Callable[[jnp.ndarray], jnp.ndarray], momentum: float, weight_decay: float
) -> optax.GradientTransformation:
    """`torch.optim.SGD(lr, momentum, weight_decay)` (weight decay added to the gradient, no nesterov)."""
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.sgd(learning_rate, momentum=momentum if momentum else None))
    return optax.chain(*parts)


def make_schedule(optim: OptimSpec, steps_per_epoch: int, total_steps: int) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """The run's learning-rate schedule: `poly` (backbones), `multistep` (refiners) or `constant`."""
    if optim.schedule == "poly":
        return poly_schedule(optim.lr, total_steps, optim.poly_power)
    if optim.schedule == "multistep":
        return multistep_schedule(optim.lr, optim.milestones, optim.gamma, steps_per_epoch)
    if optim.schedule == "constant":
        return lambda step: jnp.asarray(optim.lr, jnp.float32)
    raise ValueError(f"config.train.lr_schedule: expected auto | multistep | poly | constant, got {optim.schedule!r}")


def make_optimizer(optim: OptimSpec, steps_per_epoch: int, total_steps: int):
    """(optax transformation, schedule): `optimizer` sgd (the original) or adam (Adam with the same coupled
    weight decay, for short from-scratch runs such as the synthetic demo)."""
    schedule = make_schedule(optim, steps_per_epoch, total_steps)
    if optim.optimizer == "sgd":
        return sgd_coupled(schedule, optim.momentum, optim.weight_decay), schedule
    if optim.optimizer == "adam":
        parts = [optax.add_decayed_weights(optim.weight_decay)] if optim.weight_decay else []
        return optax.chain(*parts, optax.adam(schedule)), schedule
    raise ValueError(f"config.train.optimizer: expected 'sgd' or 'adam', got {optim.optimizer!r}")
