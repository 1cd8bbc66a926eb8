"""The one training step: a task's loss -> gradients -> optimizer update -> new TrainState and metrics.

Each task (`training/tasks.py`) gives only what differs: inputs computed without gradient (`prepare`), the
loss, and the confusion matrices it logs (`metrics`). Everything after the loss is written here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from magnet_jax.ops.conv import weight_gradient_rule
from magnet_jax.sharding import data_sharding, replicated
from magnet_jax.training.state import TrainState

# loss_fn(params, state, inputs, batch) -> (loss, (outputs, batch_stats, rngs)): the model rebuilt in train mode
# from `params` and the state's batch_stats / rngs, run on the batch (and `inputs`, what `prepare` gave).
LossFn = Callable[[nnx.State, TrainState, Any, dict], tuple[jax.Array, tuple[Any, nnx.State, nnx.State]]]
# prepare(extra, batch) -> inputs: computed before the loss, never differentiated (e.g. a frozen model's output).
Prepare = Callable[[Any, dict], Any]
# metrics(outputs, inputs, batch) -> {"conf*": [C, C] confusion matrices, ...}
MetricsFn = Callable[[Any, Any, dict], dict[str, jax.Array]]


def segmentation_loss(loss: str, ignore_label: int, ohem_thresh: float, ohem_min_kept: int) -> Callable:
    """`loss(logits [B, H, W, C], labels [B, H, W]) -> scalar` by name: "ce" (cross-entropy) or "ohem" (OHEM
    cross-entropy: the pixels under `ohem_thresh` probability, at least `ohem_min_kept`); `ignore_label` excluded."""
    from magnet_jax import losses

    def loss_value(logits, labels):
        if loss == "ohem":
            return losses.ohem_cross_entropy(
                logits, labels, ignore_label=ignore_label, thresh=ohem_thresh, min_kept=ohem_min_kept
            )
        return losses.cross_entropy(logits, labels, ignore_label)

    return loss_value


def make_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    schedule: Callable,
    *,
    prepare: Prepare | None = None,
    metrics: MetricsFn | None = None,
    mesh: Mesh | None = None,
    fast_conv: bool = True,
):
    """Returns `step(state, extra, batch) -> (state, metrics)`, jitted (state donated; with shardings when `mesh`:
    state and `extra` replicated, the batch split over the data axis).

    `metrics` holds `loss`, `lr` (the schedule at the step's start), `grad_norm` and what `metrics(...)` adds.
    `fast_conv`: the convolutions' weight gradients by `ops.conv.weight_gradient_rule` "auto", else "native".
    """

    def step(state: TrainState, extra: Any, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, Any]]:
        with weight_gradient_rule("auto" if fast_conv else "native"):  # read while the step is traced
            return _step(state, extra, batch)

    def _step(state: TrainState, extra: Any, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, Any]]:
        inputs = prepare(extra, batch) if prepare is not None else None
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss_v, (outputs, batch_stats, rngs)), grads = grad_fn(state.params, state, inputs, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(
            step=state.step + 1, params=params, batch_stats=batch_stats, rngs=rngs, opt_state=opt_state
        )
        out = {
            "loss": loss_v,
            "lr": jnp.asarray(schedule(state.step), jnp.float32),
            "grad_norm": optax.global_norm(grads),
        }
        if metrics is not None:
            out.update(metrics(outputs, inputs, batch))
        return new_state, out

    if mesh is None:
        return jax.jit(step, donate_argnums=(0,))
    rep, dat = replicated(mesh), data_sharding(mesh)
    return jax.jit(step, in_shardings=(rep, rep, dat), out_shardings=(rep, rep), donate_argnums=(0,))
