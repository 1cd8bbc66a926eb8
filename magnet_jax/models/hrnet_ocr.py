"""HRNet + OCR segmentation models of the original MagNet ("hrnet18+ocr", "hrnet48+ocr"), NHWC.

`model(images [B, H, W, 3]) -> logits [B, H, W, n]`: the eval output
`(out + 0.4 * aux) / 1.4` resized bilinear(align_corners=True) to the input size (the
original's `HighResolutionNet.forward`); `model(images, return_heads=True)` ->
`{"out": [B, H, W, n], "aux": [B, H, W, n]}`, each resized the same way (for training
with the [1, 0.4]-weighted losses). The state dict keys are the original's (see
`parity/manifests/hrnet{18,48}_ocr_19.json`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from magnet_jax.models.hrnet import (
    HRNET_W18_SMALL_V2,
    HRNET_W48,
    HighResolutionNet,
    HRNetConfig,
    ReLU,
    run_sequential,
)
from magnet_jax.models.layers import BatchNorm2d, Conv2d
from magnet_jax.models.ocr import OCR_BN_MOMENTUM, SpatialOCR, spatial_gather
from magnet_jax.ops.resize import resize_bilinear

ALIGN_CORNERS = True
OCR_MID_CHANNELS = 512
OCR_KEY_CHANNELS = 256
OCR_DROPOUT = 0.05
AUX_WEIGHT = 0.4


class HRNetOCR(HighResolutionNet):
    """HRNet backbone + OCR head (see the module docstring for the calling contract).

    Head: branches bilinear(ac=True) to branch 0, concatenated (sum C_i channels) ->
    `aux_head` (1x1 + BN + ReLU + 1x1 -> n) and `conv3x3_ocr` (3x3 -> 512 + BN + ReLU);
    `ocr_gather_head` (no weights) + `ocr_distri_head` (SpatialOCR) -> `cls_head` (1x1 -> n).
    """

    def __init__(self, num_classes: int, config: HRNetConfig, *, rngs: nnx.Rngs):
        super().__init__(config, rngs=rngs)
        c = sum(self.out_channels)
        self.num_classes = num_classes
        self.conv3x3_ocr = nnx.List(
            [
                Conv2d(c, OCR_MID_CHANNELS, 3, padding=1, bias=True, rngs=rngs),
                BatchNorm2d(OCR_MID_CHANNELS, momentum=OCR_BN_MOMENTUM),
                ReLU(),
            ]
        )
        self.ocr_distri_head = SpatialOCR(OCR_MID_CHANNELS, OCR_KEY_CHANNELS, OCR_MID_CHANNELS, OCR_DROPOUT, rngs=rngs)
        self.cls_head = Conv2d(OCR_MID_CHANNELS, num_classes, 1, bias=True, rngs=rngs)
        self.aux_head = nnx.List(
            [
                Conv2d(c, c, 1, bias=True, rngs=rngs),
                BatchNorm2d(c, momentum=OCR_BN_MOMENTUM),
                ReLU(),
                Conv2d(c, num_classes, 1, bias=True, rngs=rngs),
            ]
        )

    def heads(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`[B, H, W, 3]` -> `(out, aux)`, each `[B, H0, W0, n]` at branch-0 resolution (= H, W)."""
        xs = self.features(images)
        hw = xs[0].shape[1:3]
        feats = jnp.concatenate([xs[0]] + [resize_bilinear(x, hw, ALIGN_CORNERS) for x in xs[1:]], axis=-1)
        aux = run_sequential(self.aux_head, feats)
        feats = run_sequential(self.conv3x3_ocr, feats)
        proxy = spatial_gather(feats, aux)
        feats = self.ocr_distri_head(feats, proxy)
        out = self.cls_head(feats)
        return out, aux

    def __call__(self, images: jax.Array, *, return_heads: bool = False) -> jax.Array | dict[str, jax.Array]:
        """`images [B, H, W, 3]` (ImageNet-normalised RGB) -> logits `[B, H, W, n]`, or heads."""
        size = images.shape[1:3]
        out, aux = self.heads(images)
        if return_heads:
            return {
                "out": resize_bilinear(out, size, ALIGN_CORNERS),
                "aux": resize_bilinear(aux, size, ALIGN_CORNERS),
            }
        return resize_bilinear((out + AUX_WEIGHT * aux) / (1.0 + AUX_WEIGHT), size, ALIGN_CORNERS)


def hrnet18_ocr(num_classes: int, *, rngs: nnx.Rngs) -> HRNetOCR:
    """ "hrnet18+ocr": HRNet-W18-small-v2 + OCR (the original's `HRNetW18_OCR`)."""
    return HRNetOCR(num_classes, HRNET_W18_SMALL_V2, rngs=rngs)


def hrnet48_ocr(num_classes: int, *, rngs: nnx.Rngs) -> HRNetOCR:
    """ "hrnet48+ocr": HRNet-W48 + OCR (the original's `HRNetW48_OCR`)."""
    return HRNetOCR(num_classes, HRNET_W48, rngs=rngs)
