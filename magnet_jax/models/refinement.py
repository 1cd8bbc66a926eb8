"""The MagNet refinement module (NHWC)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from magnet_jax.models.blocks import Bottleneck
from magnet_jax.models.layers import BatchNorm2d, Conv2d, relu

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
        x = relu(self.bn1(self.conv1(x)))
        x = relu(self.bn2(self.conv2(x)))
        for block in self.residual:
            x = block(x)
        return self.seg_conv(x)
