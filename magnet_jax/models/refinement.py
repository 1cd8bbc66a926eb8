"""The MagNet refinement module (NHWC), and the one place its inputs are built and it is called.

Inference (`inference.stages`) and training (`training.refiner_step`) both go through
`refiner_inputs` (fine = softmax(backbone(patches)), coarse = RoI Align of a coarse probability map
over each patch's box) and `refine` (the refiner on those two, in the configured order), so a new
refiner or input recipe changes here only.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.models.blocks import Bottleneck
from magnet_jax.models.layers import BatchNorm2d, Conv2d, conv_bn
from magnet_jax.ops.roi_align import roi_align, roi_align_batched

# fine_first: refiner(fine, coarse), as inference runs it; coarse_first: as the original trained it.
REFINER_INPUT_ORDERS = ("fine_first", "coarse_first")

BN_MOMENTUM = 0.01  # PyTorch convention; every BatchNorm of the refiner uses it.


class RefinementMagNet(nnx.Module):
    """Refines a segmentation from two probability maps of the same region.

    Call: `model(first [B, H, W, n], second [B, H, W, n]) -> logits [B, H, W, n]`.
    Inference passes (fine, coarse); the original's training passes (coarse, fine).
    Layout: concat (2n) -> `bn0` -> conv3x3 2n->64 -> BN -> ReLU -> conv3x3 64->64 -> BN ->
    ReLU -> `residual` (2 Bottlenecks, planes 32, 128 out) -> `seg_conv` 1x1 128->n.
    """

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
        n2 = 2 * num_classes
        self.bn0 = BatchNorm2d(n2, momentum=BN_MOMENTUM)
        self.conv1 = Conv2d(n2, 64, 3, padding=1, bias=False, rngs=rngs)
        self.bn1 = BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.conv2 = Conv2d(64, 64, 3, padding=1, bias=False, rngs=rngs)
        self.bn2 = BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.residual = nnx.List(
            [
                Bottleneck(64, 32, bn_momentum=BN_MOMENTUM, rngs=rngs),  # 64 -> 128: 1x1 shortcut
                Bottleneck(128, 32, bn_momentum=BN_MOMENTUM, rngs=rngs),
            ]
        )
        self.seg_conv = Conv2d(128, num_classes, 1, bias=False, rngs=rngs)

    def __call__(self, first: jax.Array, second: jax.Array) -> jax.Array:
        x = jnp.concatenate([first, second], axis=-1)
        x = self.bn0(x)
        x = conv_bn(self.conv1, self.bn1, x, act=True)
        x = conv_bn(self.conv2, self.bn2, x, act=True)
        for block in self.residual:
            x = block(x)
        return self.seg_conv(x)


def class_probabilities(logits: jax.Array) -> jax.Array:
    """Softmax over the class axis in float32: `[..., C]` logits -> `[..., C]` probabilities."""
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def refiner_inputs(
    backbone: Callable[[jax.Array], jax.Array],
    images: jax.Array,
    coarse: jax.Array,
    boxes: jax.Array | np.ndarray,
    *,
    max_samples: tuple[int, int],
    full_hw: tuple[int, int] | None = None,
    origin: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The refiner's inputs for `B` patches: `(fine, coarse_crop)`, both `[B, ih, iw, C]` probabilities.

    `fine = softmax(backbone(images [B, ih, iw, 3]))`; `coarse_crop` = RoI Align of the coarse
    probabilities over each patch's box `(x0, y0, x1, y1)` (pixels of `coarse`), at the patches'
    size `(ih, iw)`. `coarse` is either one map `[H, W, C]` shared by every box (`boxes [B, 4]`:
    inference, the stage's upsampled map) or one map per patch `[B, h, w, C]` (`boxes [B, 4]`, one
    box each: training, each sample's coarse image). `max_samples` bounds RoI Align's sampling
    (see `ops.roi_align`), static. `full_hw` / `origin` (shared map only): `coarse` is the window at
    `origin` of a `full_hw` map and `boxes` are in full-map pixels (tiled inference, see `ops.roi_align`).
    """
    fine = class_probabilities(backbone(images))
    out_hw = (int(images.shape[1]), int(images.shape[2]))
    if coarse.ndim == 3:
        crop = roi_align(coarse, boxes, out_hw, max_samples=max_samples, full_hw=full_hw, origin=origin)
    elif coarse.ndim == 4 and full_hw is None and origin is None:
        crop = roi_align_batched(coarse, boxes, out_hw, max_samples=max_samples)
    else:
        raise ValueError(
            f"refiner_inputs: coarse must be [H, W, C] or [B, h, w, C] (without full_hw / origin), "
            f"got shape {coarse.shape}"
        )
    return fine, crop


def check_input_order(order: str) -> None:
    """ValueError unless `order` is one of `REFINER_INPUT_ORDERS`."""
    if order not in REFINER_INPUT_ORDERS:
        raise ValueError(f"refiner input order: expected one of {', '.join(REFINER_INPUT_ORDERS)}, got {order!r}")


def ordered_inputs(fine: jax.Array, coarse: jax.Array, order: str = "fine_first") -> tuple[jax.Array, jax.Array]:
    """`(fine, coarse)` for `fine_first`, `(coarse, fine)` for `coarse_first` (the refiner's call order)."""
    check_input_order(order)
    return (fine, coarse) if order == "fine_first" else (coarse, fine)


def refine(refiner: Callable, fine: jax.Array, coarse: jax.Array, *, order: str = "fine_first") -> jax.Array:
    """Refiner logits `[B, ih, iw, C]` from fine and coarse probabilities `[B, ih, iw, C]`, in `order`."""
    return refiner(*ordered_inputs(fine, coarse, order))
