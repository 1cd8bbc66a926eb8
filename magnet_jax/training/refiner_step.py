"""One training step of the refinement module, backbone frozen (section 4 of the spec).

Per sample: coarse = softmax(backbone(coarse image)), fine = softmax(backbone(fine crop)),
crop_coarse = roi_align(coarse, crop box in coarse pixels, input size); logits =
refiner(fine, crop_coarse) (`fine_first`, as inference runs it) or refiner(crop_coarse,
fine) (`coarse_first`, as the original trained it); loss = OHEM cross-entropy. The update is
`training.step`'s.
The backbone runs in eval mode (running BatchNorm statistics, no dropout, no gradient)
inside the same jitted function, its convolutions computed as the inference stages compute them
(`config.magnet.conv_algorithm`, the run's `frozen_conv`: it is never differentiated); the refiner's
own forward and backward keep XLA's direct convolutions.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from magnet_jax.metrics import confusion_matrix_jax
from magnet_jax.models import refinement
from magnet_jax.models.refinement import class_probabilities
from magnet_jax.ops.conv import forward_algorithm
from magnet_jax.ops.patches import certainty
from magnet_jax.training.state import ModelDef, split_variables
from magnet_jax.training.step import LossFn, MetricsFn, make_train_step, segmentation_loss

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


def refiner_loss(refiner: ModelDef, loss_value: Callable, input_order: str) -> LossFn:
    """The refiner's `LossFn` on `inputs` = (fine, crop_coarse) from `refiner_inputs`; outputs = its logits."""

    def loss_fn(params, state, inputs, batch):
        fine, crop = inputs
        model = refiner.merge(train=True, params=params, batch_stats=state.batch_stats, rngs=state.rngs)
        logits = refinement.refine(model, fine, crop, order=input_order)
        _, batch_stats, rngs = split_variables(model)
        return loss_value(logits, batch["label"]), (logits, batch_stats, rngs)

    return loss_fn


def refiner_metrics(num_classes: int, ignore_label: int) -> MetricsFn:
    """`conf_coarse`, `conf_fine`, `conf_aggre` [C, C]: the original training log's three views."""

    def metrics(logits, inputs, batch):
        fine, crop = inputs
        labels = batch["label"]
        refined = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        aggre = aggregate(crop, fine, refined)
        return {
            "conf_coarse": confusion_matrix_jax(labels, jnp.argmax(crop, -1), num_classes, ignore_label),
            "conf_fine": confusion_matrix_jax(labels, jnp.argmax(fine, -1), num_classes, ignore_label),
            "conf_aggre": confusion_matrix_jax(labels, jnp.argmax(aggre, -1), num_classes, ignore_label),
        }

    return metrics


def aggregate(crop_coarse: jax.Array, fine: jax.Array, refined: jax.Array) -> jax.Array:
    """The original training log's "aggregated" prediction `[B, H, W, C]` (jit-able).

    The half of the pixels (per sample) with the highest `certainty(fine) * (1 -
    certainty(crop_coarse))` take the refiner's probabilities; the rest keep the coarse ones.
    This is MAGNET_SPEC.md section 4, the same product as inference's error score. (The released
    train.py multiplies the reverse pair, certainty(crop_coarse) * (1 - certainty(fine)), because its
    `calculate_uncertainty` returns the top-1 - top-2 margin. It is a logged metric only, so we keep
    the spec's.)
    """
    b, h, w, c = crop_coarse.shape
    score = (certainty(fine) * (1.0 - certainty(crop_coarse))).reshape(b, h * w)
    k = (h * w) // 2
    if k == 0:
        return crop_coarse
    _, idx = jax.lax.top_k(score, k)
    mask = jnp.zeros((b, h * w), bool).at[jnp.arange(b)[:, None], idx].set(True).reshape(b, h, w, 1)
    return jnp.where(mask, refined, crop_coarse)


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
) -> Callable:
    """Returns `step(state, frozen, batch) -> (state, metrics)`, jitted (with shardings when `mesh`).

    `frozen` = (params, batch_stats, rngs) of the backbone; `batch` holds `coarse_image`,
    `fine_image` `[B, h, w, 3]`, `label` `[B, h, w]` int and `box` `[B, 4]` float
    (x0, y0, x1, y1) in pixels of the input-sized coarse image. `frozen_conv`: how the frozen
    backbone computes its convolutions (`ops.conv.FORWARD_ALGORITHMS`).
    """
    refinement.check_input_order(input_order)

    def prepare(frozen, batch):
        return refiner_inputs(backbone, frozen, batch, input_hw, frozen_conv)

    loss_fn = refiner_loss(refiner, segmentation_loss(loss, ignore_label, ohem_thresh, ohem_min_kept), input_order)
    return make_train_step(
        loss_fn, tx, schedule, prepare=prepare, metrics=refiner_metrics(num_classes, ignore_label) if with_metrics
        else None, mesh=mesh, fast_conv=fast_conv,
    )  # fmt: skip
