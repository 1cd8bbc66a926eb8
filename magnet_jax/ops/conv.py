"""2-D convolution (NHWC / HWIO) with a fast weight gradient on the CPU backend.

`conv2d` computes exactly `lax.conv_general_dilated` forward (1x1 convolutions as matrix products,
which XLA's CPU backend runs 2-4x faster than its convolution). Only the gradient differs:

XLA's CPU backend computes a k x k convolution's *weight* gradient far below its forward speed (on
a 2-core CPU, a 3x3 64->64 convolution at 508x508 runs forward at ~120-200 GFLOP/s, its weight
gradient at ~15). The refinement module is made of exactly such layers at full resolution, so its
training step was dominated by them. With the `"im2col"` rule the weight gradient is instead: image
rows in chunks, the k*k shifted (strided, dilated) views of each chunk side by side, one
`[k*k*Cin, rows] @ [rows, Cout]` product per chunk, accumulated in a scan. The input gradient stays
XLA's. Results equal the native gradient up to float32 summation order.

The rule is chosen when a function is traced (`weight_gradient_rule`): `"auto"` (default) is
`"im2col"` on the CPU backend and `"native"` elsewhere (cuDNN's gradients are the fast ones on
GPUs). Inference never differentiates, so it is unaffected.

The *forward* algorithm is chosen the same way (`forward_algorithm`): `"direct"` (default: XLA's
convolution), `"winograd"` (every 3x3 stride-1 float32 convolution by `ops.winograd`) or `"auto"`
(Winograd on the CPU backend for the layers where it was measured to pay, `winograd.winograd_pays`;
direct elsewhere: cuDNN picks its own algorithms on GPUs). The inference stages trace under
`config.magnet.conv_algorithm` (default "auto"); training keeps the direct forward.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp

from magnet_jax.field_checks import CONV_ALGORITHMS, check_choice
from magnet_jax.ops.winograd import conv3x3_winograd, winograd_eligible, winograd_pays

_DN = ("NHWC", "HWIO", "NHWC")
_CHUNK_BYTES = 8 * 1024 * 1024  # im2col chunk: 8 MB measured ~15-25% faster than 32 MB (cache)
_RULES = ("auto", "im2col", "native")
_rule: contextvars.ContextVar[str] = contextvars.ContextVar("magnet_jax_conv_weight_gradient", default="auto")
FORWARD_ALGORITHMS = CONV_ALGORITHMS
_forward: contextvars.ContextVar[str] = contextvars.ContextVar("magnet_jax_conv_forward", default="direct")

Padding = tuple[tuple[int, int], tuple[int, int]]


@contextlib.contextmanager
def trace_setting(var: contextvars.ContextVar, value) -> Iterator[None]:
    """`var` holds `value` within the block (read by the layers while a function is traced)."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


@contextlib.contextmanager
def weight_gradient_rule(rule: str) -> Iterator[None]:
    """Within the block, convolutions traced by `conv2d` use `rule` ("auto", "im2col", "native")."""
    if rule not in _RULES:
        raise ValueError(f"convolution weight-gradient rule must be one of {_RULES}, got {rule!r}")
    with trace_setting(_rule, rule):
        yield


@contextlib.contextmanager
def forward_algorithm(name: str) -> Iterator[None]:
    """Within the block, convolutions traced by `conv2d` compute their forward value with `name`
    ("auto", "direct", "winograd"; see the module docstring)."""
    check_choice(name, FORWARD_ALGORITHMS, "magnet.conv_algorithm")
    with trace_setting(_forward, name):
        yield


def _use_winograd(x_shape, w_shape, stride, padding, dilation, groups: int) -> bool:
    name = _forward.get()
    if name == "direct" or not winograd_eligible(w_shape, stride, dilation, groups):
        return False
    return name == "winograd" or (jax.default_backend() == "cpu" and winograd_pays(x_shape, w_shape, padding))


def _use_im2col() -> bool:
    rule = _rule.get()
    return rule == "im2col" or (rule == "auto" and jax.default_backend() == "cpu")


def _native(x: jax.Array, w: jax.Array, stride, padding, dilation, groups: int = 1, out_dtype=None) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, w, window_strides=stride, padding=padding, rhs_dilation=dilation, dimension_numbers=_DN,
        feature_group_count=groups, preferred_element_type=out_dtype,
    )


def _pointwise(x: jax.Array, w: jax.Array, stride: tuple[int, int], out_dtype=None) -> jax.Array:
    """1x1 convolution `[B, H, W, Cin]` x `[1, 1, Cin, Cout]` as a channel contraction."""
    if stride != (1, 1):
        x = x[:, :: stride[0], :: stride[1], :]
    b, h, wd, c = x.shape
    # One 2-D product (its gradients are 2-D products too); XLA's CPU backend runs this faster than a
    # 4-D einsum in training.
    flat = jnp.dot(x.reshape(b * h * wd, c), w.reshape(c, -1), preferred_element_type=out_dtype)
    return flat.reshape(b, h, wd, -1)


def _weight_grad(x, g, kernel_hw, stride, padding, dilation) -> jax.Array:
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
        taps = [
            jax.lax.slice(xc, (0, i * dh, j * dw, 0), (b, i * dh + span_h, j * dw + span_w, cin), (1, sh, sw, 1))
            for i in range(kh)
            for j in range(kw)
        ]
        cols = jnp.concatenate(taps, axis=-1).reshape(-1, kh * kw * cin)
        return acc + jnp.dot(cols.T, gc), None

    acc, _ = jax.lax.scan(chunk, jnp.zeros((kh * kw * cin, cout), jnp.float32), jnp.arange(n_chunks))
    return acc.reshape(kh, kw, cin, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_im2col_grad(x, w, stride, padding, dilation):
    return _native(x, w, stride, padding, dilation)


def _conv_im2col_grad_fwd(x, w, stride, padding, dilation):
    return _native(x, w, stride, padding, dilation), (x, w)


def _conv_im2col_grad_bwd(stride, padding, dilation, residuals, g):
    x, w = residuals
    _, vjp_x = jax.vjp(lambda xx: _native(xx, w, stride, padding, dilation), x)
    (gx,) = vjp_x(g)
    gw = _weight_grad(x.astype(jnp.float32), g.astype(jnp.float32), w.shape[:2], stride, padding, dilation)
    return gx, gw.astype(w.dtype)


_conv_im2col_grad.defvjp(_conv_im2col_grad_fwd, _conv_im2col_grad_bwd)


def conv2d(
    x: jax.Array,
    w: jax.Array,
    *,
    stride: tuple[int, int] = (1, 1),
    padding: Padding = ((0, 0), (0, 0)),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
    out_dtype=None,
) -> jax.Array:
    """`x [B, H, W, Cin]`, `w [kh, kw, Cin/groups, Cout]` -> `[B, H', W', Cout]`, no bias.

    The forward value of `lax.conv_general_dilated` (up to float32 rounding where the forward algorithm
    is Winograd's); see the module docstring for the algorithms and the gradient.
    `out_dtype` (e.g. float32 for bfloat16 operands: accumulate and return float32) is for inference:
    it skips the im2col weight-gradient rule.
    """
    stride, dilation = tuple(stride), tuple(dilation)
    padding = tuple(tuple(p) for p in padding)
    if out_dtype is not None:
        if groups == 1 and w.shape[:2] == (1, 1) and padding == ((0, 0), (0, 0)):
            return _pointwise(x, w, stride, out_dtype)
        return _native(x, w, stride, padding, dilation, groups, out_dtype)
    if groups != 1:
        return _native(x, w, stride, padding, dilation, groups)
    if w.shape[:2] == (1, 1) and padding == ((0, 0), (0, 0)):
        return _pointwise(x, w, stride)
    if x.dtype == jnp.float32 and _use_winograd(x.shape, w.shape, stride, padding, dilation, groups):
        return conv3x3_winograd(x, w, padding)
    if _use_im2col():
        return _conv_im2col_grad(x, w, stride, padding, dilation)
    return _native(x, w, stride, padding, dilation)
