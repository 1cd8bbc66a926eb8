"""A small encoder-decoder segmentation backbone for the synthetic demo and fast tests (NHWC).

Not part of the original MagNet. Full-resolution 3x3 stem (pixel-level texture), four
stride-2 stages down to 1/16 (receptive field of about 150 px, for context), a top-down
decoder adding each level's lateral features after bilinear upsampling, and a 1x1
classifier at full resolution. About 0.38 M parameters at the default width 16.

Call: `model(images [B, H, W, 3]) -> logits [B, H, W, n]`;
`model(images, return_heads=True) -> {"out": logits, "aux": None}`.
H and W must be multiples of 16.
"""

from __future__ import annotations

import jax
from flax import nnx

from magnet_jax.models.layers import BatchNorm2d, Conv2d, relu
from magnet_jax.ops.resize import resize_bilinear

BN_MOMENTUM = 0.1  # PyTorch convention


class ConvBN(nnx.Module):
    """conv3x3 (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, *, stride: int = 1, dilation: int = 1, rngs: nnx.Rngs):
        self.conv = Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False, rngs=rngs)
        self.bn = BatchNorm2d(cout, momentum=BN_MOMENTUM)

    def __call__(self, x: jax.Array) -> jax.Array:
        return relu(self.bn(self.conv(x)))


class SmallSegNet(nnx.Module):
    """Small U-shaped segmentation network; see the module docstring."""

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs, width: int = 16):
        w = width
        chans = (w, 2 * w, 3 * w, 4 * w, 6 * w)  # 1, 1/2, 1/4, 1/8, 1/16
        self.stem1 = ConvBN(3, chans[0], rngs=rngs)
        self.stem2 = ConvBN(chans[0], chans[0], rngs=rngs)
        self.down1 = ConvBN(chans[0], chans[1], stride=2, rngs=rngs)
        self.block1 = ConvBN(chans[1], chans[1], rngs=rngs)
        self.down2 = ConvBN(chans[1], chans[2], stride=2, rngs=rngs)
        self.block2 = ConvBN(chans[2], chans[2], rngs=rngs)
        self.down3 = ConvBN(chans[2], chans[3], stride=2, rngs=rngs)
        self.block3 = ConvBN(chans[3], chans[3], dilation=2, rngs=rngs)
        self.down4 = ConvBN(chans[3], chans[4], stride=2, rngs=rngs)
        self.block4a = ConvBN(chans[4], chans[4], dilation=2, rngs=rngs)
        self.block4b = ConvBN(chans[4], chans[4], dilation=4, rngs=rngs)
        d = 2 * w
        self.lat4 = Conv2d(chans[4], d, 1, rngs=rngs)
        self.lat3 = Conv2d(chans[3], d, 1, rngs=rngs)
        self.lat2 = Conv2d(chans[2], d, 1, rngs=rngs)
        self.lat1 = Conv2d(chans[1], d, 1, rngs=rngs)
        self.lat0 = Conv2d(chans[0], d, 1, rngs=rngs)
        self.fuse3 = ConvBN(d, d, rngs=rngs)
        self.fuse2 = ConvBN(d, d, rngs=rngs)
        self.fuse1 = ConvBN(d, d, rngs=rngs)
        self.fuse0 = ConvBN(d, d, rngs=rngs)
        self.classify = Conv2d(d, num_classes, 1, rngs=rngs)

    def __call__(self, x: jax.Array, *, return_heads: bool = False):
        f0 = self.stem2(self.stem1(x))
        f1 = self.block1(self.down1(f0))
        f2 = self.block2(self.down2(f1))
        f3 = self.block3(self.down3(f2))
        f4 = self.block4b(self.block4a(self.down4(f3)))

        def up_add(p, lateral):
            return resize_bilinear(p, lateral.shape[1:3], align_corners=False) + lateral

        p = self.lat4(f4)
        p = self.fuse3(up_add(p, self.lat3(f3)))
        p = self.fuse2(up_add(p, self.lat2(f2)))
        p = self.fuse1(up_add(p, self.lat1(f1)))
        p = self.fuse0(up_add(p, self.lat0(f0)))
        logits = self.classify(p)
        if return_heads:
            return {"out": logits, "aux": None}
        return logits
