"""One training step of the refinement module, backbone frozen (section 4 of the spec).

Per sample: coarse = softmax(backbone(coarse image)), fine = softmax(backbone(fine crop)),
crop_coarse = roi_align(coarse, crop box in coarse pixels, input size); logits =
refiner(fine, crop_coarse) (`fine_first`, as inference runs it) or refiner(crop_coarse,
fine) (`coarse_first`, as the original trained it); loss = OHEM cross-entropy.
The backbone runs in eval mode (running BatchNorm statistics, no dropout, no gradient)
inside the same jitted function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from magnet_jax.ops.conv import weight_gradient_rule
from magnet_jax.training.mesh import data_sharding, replicated
from magnet_jax.training.metrics_ops import aggregate, confusion
from magnet_jax.training.state import ModelDef, TrainState, split_variables

BATCH_KEYS = ("coarse_image", "fine_image", "label", "box")


def backbone_probs(backbone: ModelDef, frozen: tuple, images: jax.Array) -> jax.Array:
    """softmax(backbone(images)) in eval mode, `[B, H, W, 3]` -> `[B, H, W, n]` (no gradient)."""
    params, batch_stats, rngs = frozen
    model = backbone.merge(train=False, params=params, batch_stats=batch_stats, rngs=rngs)
    return jax.lax.stop_gradient(jax.nn.softmax(model(images).astype(jnp.float32), axis=-1))


def refiner_inputs(backbone: ModelDef, frozen: tuple, batch: dict, input_hw: tuple[int, int]):
    """(fine probs, crop_coarse probs), both `[B, h, w, n]` at the input size."""
    from magnet_jax.ops.roi_align import roi_align_batched

    coarse = backbone_probs(backbone, frozen, batch["coarse_image"])
    fine = backbone_probs(backbone, frozen, batch["fine_image"])
    # The crop box covers at most the whole coarse image, which is input-sized: one sample per bin.
    crop = roi_align_batched(coarse, batch["box"], input_hw, max_samples=(1, 1))
    return fine, jax.lax.stop_gradient(crop)


def make_refiner_step(
    backbone: ModelDef,
    refiner: ModelDef,
    tx: optax.GradientTransformation,
    schedule: Callable,
    *,
    num_classes: int,
    ignore_label: int,
    input_hw: tuple[int, int],
    input_order: str,
    ohem_thresh: float,
    ohem_min_kept: int,
    loss: str = "ohem",
    mesh: Mesh | None = None,
    with_metrics: bool = True,
    fast_conv: bool = True,
):
    """Returns `step(state, frozen, batch) -> (state, metrics)`, jitted (with shardings when `mesh`).

    `frozen` = (params, batch_stats, rngs) of the backbone; `batch` holds `coarse_image`,
    `fine_image` `[B, h, w, 3]`, `label` `[B, h, w]` int and `box` `[B, 4]` float
    (x0, y0, x1, y1) in pixels of the input-sized coarse image.
    """
    from magnet_jax import losses

    if input_order not in ("fine_first", "coarse_first"):
        raise ValueError(f"refiner input order must be fine_first or coarse_first, got {input_order!r}")

    def loss_value(logits, labels):
        if loss == "ohem":
            return losses.ohem_cross_entropy(
                logits, labels, ignore_label=ignore_label, thresh=ohem_thresh, min_kept=ohem_min_kept
            )
        return losses.cross_entropy(logits, labels, ignore_label)

    def step(state: TrainState, frozen: tuple, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, Any]]:
        with weight_gradient_rule("auto" if fast_conv else "native"):  # read while the step is traced
            return _step(state, frozen, batch)

    def _step(state: TrainState, frozen: tuple, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, Any]]:
        fine, crop = refiner_inputs(backbone, frozen, batch, input_hw)
        labels = batch["label"]

        def loss_fn(params):
            model = refiner.merge(train=True, params=params, batch_stats=state.batch_stats, rngs=state.rngs)
            first, second = (fine, crop) if input_order == "fine_first" else (crop, fine)
            logits = model(first, second)
            _, batch_stats, rngs = split_variables(model)
            return loss_value(logits, labels), (logits, batch_stats, rngs)

        (loss_v, (logits, batch_stats, rngs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
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
            refined = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
            aggre = aggregate(crop, fine, refined)
            metrics["conf_coarse"] = confusion(labels, jnp.argmax(crop, -1), num_classes, ignore_label)
            metrics["conf_fine"] = confusion(labels, jnp.argmax(fine, -1), num_classes, ignore_label)
            metrics["conf_aggre"] = confusion(labels, jnp.argmax(aggre, -1), num_classes, ignore_label)
        return new_state, metrics

    if mesh is None:
        return jax.jit(step, donate_argnums=(0,))
    rep, dat = replicated(mesh), data_sharding(mesh)
    return jax.jit(step, in_shardings=(rep, rep, dat), out_shardings=(rep, rep), donate_argnums=(0,))
