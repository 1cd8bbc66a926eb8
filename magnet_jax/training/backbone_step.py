"""One training step of a segmentation backbone (HRNet-style recipe of the original).

loss = CE(out, labels) + aux_weight * CE(aux, labels) when the model has an auxiliary
head (HRNet-OCR, PSP), else CE(out, labels); ignore label excluded; BatchNorm in
training mode over the global (sharded) batch; dropout on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from magnet_jax.metrics import confusion_matrix_jax
from magnet_jax.ops.conv import weight_gradient_rule
from magnet_jax.sharding import data_sharding, replicated
from magnet_jax.training.state import ModelDef, TrainState, split_variables

BATCH_KEYS = ("image", "label")


def make_backbone_step(
    backbone: ModelDef,
    tx: optax.GradientTransformation,
    schedule: Callable,
    *,
    num_classes: int,
    ignore_label: int,
    aux_weight: float,
    mesh: Mesh | None = None,
    with_metrics: bool = True,
    fast_conv: bool = True,
    loss: str = "ce",
    ohem_thresh: float = 0.7,
    ohem_min_kept: int = 100000,
):
    """Returns `step(state, batch) -> (state, metrics)`; `batch` = {"image" [B,H,W,3], "label" [B,H,W]}.

    `loss`: "ce" (the spec's recipe) or "ohem" (OHEM cross-entropy on each head, as HRNet's
    Cityscapes configs use).
    """
    from magnet_jax import losses

    def head_loss(logits, labels):
        if loss == "ohem":
            return losses.ohem_cross_entropy(
                logits, labels, ignore_label=ignore_label, thresh=ohem_thresh, min_kept=ohem_min_kept
            )
        return losses.cross_entropy(logits, labels, ignore_label)

    def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, Any]]:
        with weight_gradient_rule("auto" if fast_conv else "native"):  # read while the step is traced
            return _step(state, batch)

    def _step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, Any]]:
        labels = batch["label"]

        def loss_fn(params):
            model = backbone.merge(train=True, params=params, batch_stats=state.batch_stats, rngs=state.rngs)
            heads = model(batch["image"], return_heads=True)
            out = heads["out"]
            loss_v = head_loss(out, labels)
            if heads.get("aux") is not None and aux_weight:
                loss_v = loss_v + aux_weight * head_loss(heads["aux"], labels)
            _, batch_stats, rngs = split_variables(model)
            return loss_v, (out, batch_stats, rngs)

        (loss_v, (out, batch_stats, rngs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(
            step=state.step + 1, params=params, batch_stats=batch_stats, rngs=rngs, opt_state=opt_state
        )
        metrics = {
            "loss": loss_v,
            "lr": jnp.asarray(schedule(state.step), jnp.float32),
            "grad_norm": optax.global_norm(grads),
        }
        if with_metrics:
            metrics["conf"] = confusion_matrix_jax(labels, jnp.argmax(out, -1), num_classes, ignore_label)
        return new_state, metrics

    if mesh is None:
        return jax.jit(step, donate_argnums=(0,))
    rep, dat = replicated(mesh), data_sharding(mesh)
    return jax.jit(step, in_shardings=(rep, dat), out_shardings=(rep, rep), donate_argnums=(0,))
