"""ResNet-FPN segmentation backbone of the original MagNet (its DeepGlobe model), NHWC."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from magnet_jax.models.layers import Conv2d
from magnet_jax.models.resnet import ResNet
from magnet_jax.ops.resize import resize_bilinear


def _upsample_add(x: jax.Array, y: jax.Array) -> jax.Array:
    """`bilinear(ac=False)(x, to y's size) + y`."""
    return resize_bilinear(x, y.shape[1:3], align_corners=False) + y


class ResnetFPN(nnx.Module):
    """ResNet + feature pyramid; logits at the input resolution.

    Call: `model(images [B, H, W, 3]) -> logits [B, H, W, num_classes]`;
    `model(images, return_heads=True) -> {"out": logits, "aux": None}` (no auxiliary head).
    Keys: `resnet_backbone.*`, `toplayer`, `latlayer{1,2,3}`, `smooth{1..4}_{1,2}`, `classify`.
    `depth` picks the ResNet (the original uses 50; with 18/34 the laterals take 512/256/128/64
    channels, handy for small models).
    """

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs, depth: int = 50):
        self.resnet_backbone = ResNet(depth, rngs=rngs)
        c2, c3, c4, c5 = self.resnet_backbone.out_channels
        self.toplayer = Conv2d(c5, 256, 1, rngs=rngs)
        self.latlayer1 = Conv2d(c4, 256, 1, rngs=rngs)
        self.latlayer2 = Conv2d(c3, 256, 1, rngs=rngs)
        self.latlayer3 = Conv2d(c2, 256, 1, rngs=rngs)
        self.smooth1_1 = Conv2d(256, 256, 3, padding=1, rngs=rngs)
        self.smooth2_1 = Conv2d(256, 256, 3, padding=1, rngs=rngs)
        self.smooth3_1 = Conv2d(256, 256, 3, padding=1, rngs=rngs)
        self.smooth4_1 = Conv2d(256, 256, 3, padding=1, rngs=rngs)
        self.smooth1_2 = Conv2d(256, 128, 3, padding=1, rngs=rngs)
        self.smooth2_2 = Conv2d(256, 128, 3, padding=1, rngs=rngs)
        self.smooth3_2 = Conv2d(256, 128, 3, padding=1, rngs=rngs)
        self.smooth4_2 = Conv2d(256, 128, 3, padding=1, rngs=rngs)
        self.classify = Conv2d(128 * 4, num_classes, 3, padding=1, rngs=rngs)

    def __call__(self, x: jax.Array, *, return_heads: bool = False):
        h, w = x.shape[1:3]
        c2, c3, c4, c5 = self.resnet_backbone(x)
        # Top-down pathway with lateral connections.
        p5 = self.toplayer(c5)
        p4 = _upsample_add(p5, self.latlayer1(c4))
        p3 = _upsample_add(p4, self.latlayer2(c3))
        p2 = _upsample_add(p3, self.latlayer3(c2))
        # Two smoothing convolutions per level (no activation).
        p5 = self.smooth1_2(self.smooth1_1(p5))
        p4 = self.smooth2_2(self.smooth2_1(p4))
        p3 = self.smooth3_2(self.smooth3_1(p3))
        p2 = self.smooth4_2(self.smooth4_1(p2))
        size = p2.shape[1:3]
        feats = jnp.concatenate([resize_bilinear(p, size, align_corners=False) for p in (p5, p4, p3)] + [p2], axis=-1)
        logits = resize_bilinear(self.classify(feats), (h, w), align_corners=False)
        if return_heads:
            return {"out": logits, "aux": None}
        return logits
