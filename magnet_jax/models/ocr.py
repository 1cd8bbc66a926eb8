"""OCR (object-contextual representations) head of the original's HRNet+OCR (NHWC).

`SpatialGather`: class centres = softmax over pixels of the coarse (aux) logits, times
the features. `SpatialOCR`: pixel-to-class scaled dot-product attention, then
concat([context, features]) -> 1x1 conv + BN + ReLU + Dropout2d. BatchNorms here use
PyTorch's default momentum 0.1 (the original's `ModuleHelper.BNReLU`).

Keys mirror `ocr_distri_head.object_context_block.f_pixel.1.0` etc.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from magnet_jax.models.hrnet import ReLU, run_sequential
from magnet_jax.models.layers import BatchNorm2d, Conv2d, Dropout2d

OCR_BN_MOMENTUM = 0.1


def bn_relu(channels: int) -> nnx.List:
    """`ModuleHelper.BNReLU`: `Sequential(BatchNorm2d(momentum 0.1), ReLU)`."""
    return nnx.List([BatchNorm2d(channels, momentum=OCR_BN_MOMENTUM), ReLU()])


def spatial_gather(feats: jax.Array, probs: jax.Array) -> jax.Array:
    """Class centres: `feats [B, H, W, C]`, `probs [B, H, W, K]` (logits) -> `[B, K, 1, C]`.

    `softmax over the H*W pixels of probs[..., k]` weights the features of class k.
    """
    b, h, w, c = feats.shape
    k = probs.shape[-1]
    weights = jax.nn.softmax(probs.reshape(b, h * w, k), axis=1)
    context = jnp.einsum("bpk,bpc->bkc", weights, feats.reshape(b, h * w, c))
    return context[:, :, None, :]


class ObjectAttentionBlock(nnx.Module):
    """`_ObjectAttentionBlock` with scale 1: `x [B, H, W, C]`, `proxy [B, K, 1, C]` -> `[B, H, W, C]`.

    query = f_pixel(x), key = f_object(proxy), value = f_down(proxy) (key_channels each);
    attention = softmax over the K classes of `query . key * key_channels^-0.5`; f_up back to C.
    """

    def __init__(self, in_channels: int, key_channels: int, *, rngs: nnx.Rngs):
        self.key_channels = key_channels

        def two_layer() -> nnx.List:
            return nnx.List(
                [
                    Conv2d(in_channels, key_channels, 1, bias=False, rngs=rngs),
                    bn_relu(key_channels),
                    Conv2d(key_channels, key_channels, 1, bias=False, rngs=rngs),
                    bn_relu(key_channels),
                ]
            )

        self.f_pixel = two_layer()
        self.f_object = two_layer()
        self.f_down = nnx.List([Conv2d(in_channels, key_channels, 1, bias=False, rngs=rngs), bn_relu(key_channels)])
        self.f_up = nnx.List([Conv2d(key_channels, in_channels, 1, bias=False, rngs=rngs), bn_relu(in_channels)])

    def __call__(self, x: jax.Array, proxy: jax.Array) -> jax.Array:
        b, h, w, _ = x.shape
        kc = self.key_channels
        query = run_sequential(self.f_pixel, x).reshape(b, h * w, kc)
        key = run_sequential(self.f_object, proxy).reshape(b, -1, kc)
        value = run_sequential(self.f_down, proxy).reshape(b, -1, kc)
        sim = jnp.einsum("bpc,bkc->bpk", query, key) * (kc**-0.5)
        sim = jax.nn.softmax(sim, axis=-1)
        context = jnp.einsum("bpk,bkc->bpc", sim, value).reshape(b, h, w, kc)
        return run_sequential(self.f_up, context)


class SpatialOCR(nnx.Module):
    """`SpatialOCR_Module`: `feats [B, H, W, C]`, `proxy [B, K, 1, C]` -> `[B, H, W, out_channels]`.

    Keys: `object_context_block.*`, `conv_bn_dropout.0` (1x1 2C->out, no bias), `conv_bn_dropout.1.0` (BN).
    Dropout2d is active only in train mode (draws from the `dropout` rng stream).
    """

    def __init__(self, in_channels: int, key_channels: int, out_channels: int, dropout: float, *, rngs: nnx.Rngs):
        self.object_context_block = ObjectAttentionBlock(in_channels, key_channels, rngs=rngs)
        self.conv_bn_dropout = nnx.List(
            [
                Conv2d(2 * in_channels, out_channels, 1, bias=False, rngs=rngs),
                bn_relu(out_channels),
                Dropout2d(dropout, rngs=rngs),
            ]
        )

    def __call__(self, feats: jax.Array, proxy: jax.Array) -> jax.Array:
        context = self.object_context_block(feats, proxy)
        conv, bn, dropout = self.conv_bn_dropout
        # conv(concat([context, feats])) as two contractions: the 2C-channel concat is never built.
        w = conv.kernel[0, 0]
        c = context.shape[-1]
        y = jnp.einsum("bhwc,cd->bhwd", context, w[:c]) + jnp.einsum("bhwc,cd->bhwd", feats, w[c:])
        return dropout(run_sequential(bn, y))
