"""Faster convolution gradients for training on CPU (same values, different summation order).

XLA's CPU backend computes a convolution's *weight* gradient (and 1x1 convolutions in general)
far below its forward speed: on this project's 2-core CPU a 3x3 64->64 convolution at 508x508
runs forward at ~120-200 GFLOP/s but its weight gradient at ~15, and a 1x1 convolution at ~35
forward / ~6 for the weight gradient. The refinement module is made of exactly those layers at
full resolution, so its training step was dominated by them.

`conv2d` computes the same function with:
- 1x1 convolutions as matrix products (`[B*H*W, Cin] @ [Cin, Cout]`, strided inputs subsampled
  first); their gradients are matrix products too;
- k x k convolutions forward and input gradient by XLA as before, and the weight gradient by a
  custom VJP: image rows in chunks, the k*k shifted (strided, dilated) views of each chunk side by
  side (im2col), one `[k*k*Cin, rows] @ [rows, Cout]` product per chunk, accumulated in a scan.
Results equal `lax.conv_general_dilated` up to float32 rounding.

`fast_conv_gradients()` makes `magnet_jax.models.layers.Conv2d` use it while a training step is
traced on the CPU backend (`config.train.fast_conv`, on by default); inference, GPU runs and the
models themselves are unchanged.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp

_DN = ("NHWC", "HWIO", "NHWC")
_CHUNK_BYTES = 32 * 1024 * 1024


def _native(x, w, stride, padding, dilation):
    return jax.lax.conv_general_dilated(
        x, w, window_strides=stride, padding=padding, rhs_dilation=dilation, dimension_numbers=_DN
    )


def _pointwise(x: jax.Array, w: jax.Array, stride: tuple[int, int]) -> jax.Array:
    if stride != (1, 1):
        x = x[:, :: stride[0], :: stride[1], :]
    b, h, wd, c = x.shape
    y = jnp.dot(x.reshape(b * h * wd, c), w.reshape(c, -1))
    return y.reshape(b, h, wd, -1)


def _weight_grad(x, g, kernel_hw, stride, padding, dilation):
    """dL/dW `[kh, kw, Cin, Cout]` of a k x k convolution from its input `x` and output gradient `g`."""
    kh, kw = kernel_hw
    (sh, sw), (dh, dw) = stride, dilation
    b, _, _, cin = x.shape
    _, ho, wo, cout = g.shape
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    row_bytes = b * wo * kh * kw * cin * 4
    rows = int(max(1, min(ho, _CHUNK_BYTES // max(row_bytes, 1))))
    n_chunks = -(-ho // rows)
    pad_rows = n_chunks * rows - ho
    if pad_rows:
        g = jnp.pad(g, ((0, 0), (0, pad_rows), (0, 0), (0, 0)))  # zero gradient rows contribute nothing
        xp = jnp.pad(xp, ((0, 0), (0, pad_rows * sh), (0, 0), (0, 0)))
    span_h = sh * (rows - 1) + 1
    span_w = sw * (wo - 1) + 1

    def chunk(acc, c):
        r0 = c * rows
        gc = jax.lax.dynamic_slice_in_dim(g, r0, rows, axis=1).reshape(-1, cout)
        xc = jax.lax.dynamic_slice_in_dim(xp, r0 * sh, span_h + dh * (kh - 1), axis=1)
        taps = []
        for i in range(kh):
            for j in range(kw):
                t = jax.lax.slice(
                    xc, (0, i * dh, j * dw, 0), (b, i * dh + span_h, j * dw + span_w, cin), (1, sh, sw, 1)
                )
                taps.append(t)
        cols = jnp.concatenate(taps, axis=-1).reshape(-1, kh * kw * cin)
        return acc + jnp.dot(cols.T, gc), None

    acc, _ = jax.lax.scan(chunk, jnp.zeros((kh * kw * cin, cout), jnp.float32), jnp.arange(n_chunks))
    return acc.reshape(kh, kw, cin, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_kxk(x, w, stride, padding, dilation):
    return _native(x, w, stride, padding, dilation)


def _conv_kxk_fwd(x, w, stride, padding, dilation):
    return _native(x, w, stride, padding, dilation), (x, w)


def _conv_kxk_bwd(stride, padding, dilation, res, g):
    x, w = res
    _, vjp_x = jax.vjp(lambda xx: _native(xx, w, stride, padding, dilation), x)
    (gx,) = vjp_x(g)
    gw = _weight_grad(x.astype(jnp.float32), g.astype(jnp.float32), w.shape[:2], stride, padding, dilation)
    return gx, gw.astype(w.dtype)


_conv_kxk.defvjp(_conv_kxk_fwd, _conv_kxk_bwd)


def conv2d(
    x: jax.Array,
    w: jax.Array,
    *,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> jax.Array:
    """`lax.conv_general_dilated(x [B,H,W,Cin], w [kh,kw,Cin/groups,Cout])` (NHWC/HWIO) with fast gradients."""
    stride, dilation = tuple(stride), tuple(dilation)
    padding = tuple(tuple(p) for p in padding)
    if groups != 1:
        return jax.lax.conv_general_dilated(
            x, w, stride, padding, rhs_dilation=dilation, dimension_numbers=_DN, feature_group_count=groups
        )
    if w.shape[:2] == (1, 1) and padding == ((0, 0), (0, 0)):
        return _pointwise(x, w, stride)
    return _conv_kxk(x, w, stride, padding, dilation)


@contextlib.contextmanager
def fast_conv_gradients(enabled: bool = True):
    """While active (during the tracing of a training step), `layers.Conv2d` computes with `conv2d`.

    Only on the CPU backend: on GPUs XLA's own convolution gradients (cuDNN) are the fast ones.
    """
    if not enabled or jax.default_backend() != "cpu":
        yield
        return
    from magnet_jax.models import layers

    original = layers.Conv2d.__call__

    def call(self, x):
        y = conv2d(
            x,
            self.kernel[...].astype(x.dtype),
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
        )
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y

    layers.Conv2d.__call__ = call
    try:
        yield
    finally:
        layers.Conv2d.__call__ = original
