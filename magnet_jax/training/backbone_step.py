"""One training step of a segmentation backbone (HRNet-style recipe of the original).

loss = CE(out, labels) + aux_weight * CE(aux, labels) when the model has an auxiliary
head (HRNet-OCR, PSP), else CE(out, labels); ignore label excluded; BatchNorm in
training mode over the global (sharded) batch; dropout on. The update is `training.step`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from magnet_jax.metrics import confusion_matrix_jax
from magnet_jax.training.state import ModelDef, split_variables
from magnet_jax.training.step import LossFn, MetricsFn, make_train_step, segmentation_loss

BATCH_KEYS = ("image", "label")


def backbone_loss(backbone: ModelDef, head_loss: Callable, aux_weight: float) -> LossFn:
    """The backbone's `LossFn`: head_loss(out) (+ aux_weight * head_loss(aux)); outputs = `out` [B, H, W, C]."""

    def loss_fn(params, state, inputs, batch):
        labels = batch["label"]
        model = backbone.merge(train=True, params=params, batch_stats=state.batch_stats, rngs=state.rngs)
        heads = model(batch["image"], return_heads=True)
        out = heads["out"]
        loss_v = head_loss(out, labels)
        if heads.get("aux") is not None and aux_weight:
            loss_v = loss_v + aux_weight * head_loss(heads["aux"], labels)
        _, batch_stats, rngs = split_variables(model)
        return loss_v, (out, batch_stats, rngs)

    return loss_fn


def backbone_metrics(num_classes: int, ignore_label: int) -> MetricsFn:
    """`conf` [C, C]: the confusion matrix of argmax(out) against the labels."""

    def metrics(out, inputs, batch):
        return {"conf": confusion_matrix_jax(batch["label"], jnp.argmax(out, -1), num_classes, ignore_label)}

    return metrics


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
) -> Callable:
    """Returns `step(state, batch) -> (state, metrics)`; `batch` = {"image" [B,H,W,3], "label" [B,H,W]}.

    `loss`: "ce" (the spec's recipe) or "ohem" (OHEM cross-entropy on each head, as HRNet's
    Cityscapes configs use).
    """
    step = make_train_step(
        backbone_loss(backbone, segmentation_loss(loss, ignore_label, ohem_thresh, ohem_min_kept), aux_weight), tx,
        schedule, metrics=backbone_metrics(num_classes, ignore_label) if with_metrics else None, mesh=mesh,
        fast_conv=fast_conv,
    )  # fmt: skip

    def backbone_step(state, batch: dict[str, jax.Array]):
        return step(state, (), batch)

    return backbone_step
