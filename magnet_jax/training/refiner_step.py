"""One training step of the refinement module, backbone frozen (section 4 of the spec).

Per sample: coarse = softmax(backbone(coarse image)), fine = softmax(backbone(fine crop)),
crop_coarse = roi_align(coarse, crop box in coarse pixels, input size); logits =
refiner(fine, crop_coarse) (`fine_first`, as inference runs it) or refiner(crop_coarse,
fine) (`coarse_first`, as the original trained it); loss = OHEM cross-entropy.
The backbone runs in eval mode (running BatchNorm statistics, no dropout, no gradient)
inside the same jitted function, its convolutions computed as the inference stages compute them
(`config.magnet.conv_algorithm`, the run's `frozen_conv`: it is never differentiated); the refiner's
own forward and backward keep XLA's direct convolutions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from magnet_jax.metrics import confusion_matrix_jax
from magnet_jax.models import refinement
from magnet_jax.models.refinement import class_probabilities
from magnet_jax.ops.conv import forward_algorithm, weight_gradient_rule
from magnet_jax.sharding import data_sharding, replicated
from magnet_jax.training.metrics_ops import aggregate
from magnet_jax.training.state import ModelDef, TrainState, split_variables

BATCH_KEYS = ("coarse_image", "fine_image", "label", "box")


def _frozen_model(backbone: ModelDef, frozen: tuple):
    params, batch_stats, rngs = frozen
    return backbone.merge(train=False, params=params, batch_stats=batch_stats, rngs=rngs)


def backbone_probs(backbone: ModelDef, frozen: tuple, images: jax.Array) -> jax.Array:
    """softmax(backbone(images)) in eval mode, `[B, H, W, 3]` -> `[B, H, W, n]` (no gradient)."""
    return jax.lax.stop_gradient(class_probabilities(_frozen_model(backbone, frozen)(images)))


def refiner_inputs(
    backbone: ModelDef, frozen: tuple, batch: dict, input_hw: tuple[int, int], conv_algorithm: str = "direct"
):
    """(fine probs, crop_coarse probs), both `[B, h, w, n]` at the input size (`models.refinement.refiner_inputs`);
    the backbone's convolutions by `conv_algorithm` (`ops.conv.forward_algorithm`, read while traced)."""
    if tuple(batch["fine_image"].shape[1:3]) != tuple(input_hw):
        raise ValueError(f"refiner batch: fine_image is {batch['fine_image'].shape[1:3]}, expected input {input_hw}")
    with forward_algorithm(conv_algorithm):
        coarse = backbone_probs(backbone, frozen, batch["coarse_image"])
        # The crop box covers at most the whole coarse image, which is input-sized: one sample per bin.
        fine, crop = refinement.refiner_inputs(
            _frozen_model(backbone, frozen), batch["fine_image"], coarse, batch["box"], max_samples=(1, 1)
        )
    return jax.lax.stop_gradient(fine), jax.lax.stop_gradient(crop)


def refiner_model_inputs(
    backbone: ModelDef,
    frozen: tuple,
    batch: dict,
    input_hw: tuple[int, int],
    order: str,
    conv_algorithm: str = "direct",
):
    """The refiner's two inputs in call order: `(fine, crop_coarse)` for `fine_first` (as inference), else
    `(crop_coarse, fine)` (the original's training order); each `[B, h, w, n]`."""
    return refinement.ordered_inputs(*refiner_inputs(backbone, frozen, batch, input_hw, conv_algorithm), order)


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
    frozen_conv: str = "direct",
):
    """Returns `step(state, frozen, batch) -> (state, metrics)`, jitted (with shardings when `mesh`).

    `frozen` = (params, batch_stats, rngs) of the backbone; `batch` holds `coarse_image`,
    `fine_image` `[B, h, w, 3]`, `label` `[B, h, w]` int and `box` `[B, 4]` float
    (x0, y0, x1, y1) in pixels of the input-sized coarse image. `frozen_conv`: how the frozen
    backbone computes its convolutions (`ops.conv.FORWARD_ALGORITHMS`).
    """
    from magnet_jax import losses

    refinement.check_input_order(input_order)

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
        fine, crop = refiner_inputs(backbone, frozen, batch, input_hw, frozen_conv)
        labels = batch["label"]

        def loss_fn(params):
            model = refiner.merge(train=True, params=params, batch_stats=state.batch_stats, rngs=state.rngs)
            logits = refinement.refine(model, fine, crop, order=input_order)
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
            metrics["conf_coarse"] = confusion_matrix_jax(labels, jnp.argmax(crop, -1), num_classes, ignore_label)
            metrics["conf_fine"] = confusion_matrix_jax(labels, jnp.argmax(fine, -1), num_classes, ignore_label)
            metrics["conf_aggre"] = confusion_matrix_jax(labels, jnp.argmax(aggre, -1), num_classes, ignore_label)
        return new_state, metrics

    if mesh is None:
        return jax.jit(step, donate_argnums=(0,))
    rep, dat = replicated(mesh), data_sharding(mesh)
    return jax.jit(step, in_shardings=(rep, rep, dat), out_shardings=(rep, rep), donate_argnums=(0,))
