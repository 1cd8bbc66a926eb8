"""PSPNet on ResNet-101 as in the original MagNet, NHWC."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from magnet_jax.models.layers import BatchNorm2d, Conv2d, Dropout2d, PReLU, relu
from magnet_jax.models.resnet import ResNet
from magnet_jax.ops.resize import adaptive_avg_pool, resize_bilinear

AUX_WEIGHT = 0.4


class AdaptiveAvgPool2d(nnx.Module):
    """`nn.AdaptiveAvgPool2d(size)` (no variables; a placeholder for key index `.0`)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, x: jax.Array) -> jax.Array:
        return adaptive_avg_pool(x, (self.size, self.size))


class PSPModule(nnx.Module):
    """Pyramid pooling: `stages.i` = (adaptive avg pool to s x s, 1x1 conv no bias), upsampled
    back bilinear(ac=False), concatenated with the input -> `bottleneck` 1x1 (bias) -> ReLU.

    Call: `[B, h, w, features]` -> `[B, h, w, out_features]`.
    """

    def __init__(self, features: int, out_features: int = 1024, sizes=(1, 2, 3, 6), *, rngs: nnx.Rngs):
        self.stages = nnx.List(
            [nnx.List([AdaptiveAvgPool2d(s), Conv2d(features, features, 1, bias=False, rngs=rngs)]) for s in sizes]
        )
        self.bottleneck = Conv2d(features * (len(sizes) + 1), out_features, 1, rngs=rngs)

    def __call__(self, feats: jax.Array) -> jax.Array:
        size = feats.shape[1:3]
        priors = [resize_bilinear(stage[1](stage[0](feats)), size, align_corners=False) for stage in self.stages]
        return relu(self.bottleneck(jnp.concatenate(priors + [feats], axis=-1)))


class PSPUpsample(nnx.Module):
    """x2 bilinear(ac=False) -> `conv.0` 3x3 (bias) -> `conv.1` BN -> `conv.2` PReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, rngs: nnx.Rngs):
        self.conv = nnx.List(
            [
                Conv2d(in_channels, out_channels, 3, padding=1, rngs=rngs),
                BatchNorm2d(out_channels, momentum=0.1),
                PReLU(1),
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h, w = x.shape[1:3]
        x = resize_bilinear(x, (2 * h, 2 * w), align_corners=False)
        for layer in self.conv:
            x = layer(x)
        return x


class PSPNet(nnx.Module):
    """PSPNet(n): ResNet-101 `feats` -> `psp` -> dropout 0.3 -> `up_1..3` (dropout 0.15 after each)
    -> `final` 1x1; auxiliary `classifier` 1x1 on c5; both bilinear(ac=False) to the input.

    Call: `model(images [B, H, W, 3]) -> (out + 0.4 * aux) / 1.4` `[B, H, W, n]`;
    `model(images, return_heads=True) -> {"out": out, "aux": aux}` (for the training loss).
    """

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs, depth: int = 101):
        self.feats = ResNet(depth, rngs=rngs)
        c5 = self.feats.out_channels[-1]
        self.psp = PSPModule(c5, 1024, (1, 2, 3, 6), rngs=rngs)
        self.drop_1 = Dropout2d(0.3, rngs=rngs)
        self.up_1 = PSPUpsample(1024, 256, rngs=rngs)
        self.up_2 = PSPUpsample(256, 64, rngs=rngs)
        self.up_3 = PSPUpsample(64, 64, rngs=rngs)
        self.drop_2 = Dropout2d(0.15, rngs=rngs)
        self.final = Conv2d(64, num_classes, 1, rngs=rngs)
        self.classifier = Conv2d(c5, num_classes, 1, rngs=rngs)

    def heads(self, c5: jax.Array, size_hw: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
        """Both heads on the backbone's c5 `[B, h, w, 2048]` -> (out, aux), each `[B, *size_hw, n]`."""
        p = self.drop_1(self.psp(c5))
        for up in (self.up_1, self.up_2, self.up_3):
            p = self.drop_2(up(p))
        out = resize_bilinear(self.final(p), size_hw, align_corners=False)
        aux = resize_bilinear(self.classifier(c5), size_hw, align_corners=False)
        return out, aux

    def __call__(self, x: jax.Array, *, return_heads: bool = False):
        out, aux = self.heads(self.feats(x)[-1], x.shape[1:3])
        if return_heads:
            return {"out": out, "aux": aux}
        return (out + AUX_WEIGHT * aux) / (1.0 + AUX_WEIGHT)
