"""PyTorch-equivalent layers in Flax NNX, NHWC.

Attribute names of every module in `magnet_jax.models` mirror the PyTorch
state-dict keys of the original MagNet (`layer1.0.conv1`), so the converter
maps a checkpoint by walking the module tree (see `magnet_jax.convert`). The
leaf layers below are the only ones holding variables; the converter knows
how each of them stores a PyTorch tensor.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.field_checks import DTYPES, check_choice
from magnet_jax.ops.conv import conv2d, trace_setting

IntPair = int | tuple[int, int]


def _pair(value: IntPair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _uniform(key: jax.Array, shape: tuple[int, ...], bound: float) -> jax.Array:
    """U(-bound, bound) float32. Eagerly drawn with NumPy from the key's bits: building a model
    then costs no per-shape XLA compilation (jax.random compiles once per new shape). Under
    tracing (nnx.eval_shape, jit) it falls back to jax.random."""
    if isinstance(key, jax.core.Tracer):
        return jax.random.uniform(key, shape, jnp.float32, -bound, bound)
    seed = np.asarray(jax.random.key_data(key)).astype(np.uint64).tolist()
    values = np.random.default_rng(seed).uniform(-bound, bound, shape).astype(np.float32)
    return jnp.asarray(values)


def torch_momentum(torch_value: float) -> float:
    """PyTorch BatchNorm momentum (weight of the new batch) -> Flax convention."""
    return 1.0 - torch_value


_conv_dtype: contextvars.ContextVar[str] = contextvars.ContextVar("magnet_jax_conv_dtype", default="float32")


@contextlib.contextmanager
def conv_compute_dtype(dtype: str) -> Iterator[None]:
    """Within the block, `Conv2d` / `conv_bn` trace their products with `dtype` operands (input and
    kernel cast) accumulated and returned in float32: "bfloat16" is the opt-in fast inference mode
    (`config.magnet.dtype`), "float32" (default) the exact one. Everything else (BatchNorm, ReLU,
    residuals, resizing) stays float32. Chosen at trace time."""
    check_choice(dtype, DTYPES, "magnet.dtype")
    with trace_setting(_conv_dtype, dtype):
        yield


def _conv(conv: Conv2d, x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`conv`'s geometry applied with `kernel` (HWIO), no bias, in the traced compute dtype."""
    dtype = _conv_dtype.get()
    lowp = dtype != "float32" and x.dtype == jnp.float32
    return conv2d(
        x.astype(dtype) if lowp else x,
        kernel.astype(dtype if lowp else x.dtype),
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        out_dtype=jnp.float32 if lowp else None,
    )


class Conv2d(nnx.Module):
    """`torch.nn.Conv2d` on NHWC inputs; `kernel` is HWIO, `bias` optional.

    Call: `[B, H, W, in_channels]` -> `[B, H', W', out_channels]`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        *,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        rngs: nnx.Rngs,
    ):
        kh, kw = _pair(kernel_size)
        self.stride = _pair(stride)
        pad_h, pad_w = _pair(padding)
        self.padding = ((pad_h, pad_h), (pad_w, pad_w))
        self.dilation = _pair(dilation)
        self.groups = groups
        fan_in = in_channels // groups * kh * kw
        # PyTorch's default init (kaiming_uniform with a=sqrt(5)): U(-1/sqrt(fan_in), ..).
        bound = 1.0 / fan_in**0.5
        self.kernel = nnx.Param(_uniform(rngs.params(), (kh, kw, in_channels // groups, out_channels), bound))
        if bias:
            self.bias = nnx.Param(_uniform(rngs.params(), (out_channels,), bound))
        else:
            self.bias = None

    def __call__(self, x: jax.Array) -> jax.Array:
        # 1x1 convolutions run as channel matmuls; k x k ones get a fast weight gradient on CPU (ops.conv).
        y = _conv(self, x, self.kernel[...])
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y


class BatchNorm2d(nnx.Module):
    """`torch.nn.BatchNorm2d` on NHWC inputs (normalises over B, H, W).

    `momentum` is PyTorch's (weight of the new batch statistics). In training the
    batch's biased variance normalises and its unbiased variance updates `var`,
    as in PyTorch. Under `jax.jit` with a batch sharded over devices the mean is
    over the global batch (synchronised BatchNorm).
    """

    def __init__(self, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5):
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
        self.momentum = momentum
        self.eps = eps
        self.use_running_average = True

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            # One pass over x for both moments (XLA fuses the two reductions): ~5% faster refiner
            # training on CPU. Shifted by one sample of each channel (within a few std of the mean)
            # so that E[d^2] - E[d]^2 does not cancel when |mean| >> std; the value and gradient are
            # those of the two-pass formula for any constant shift.
            axes = tuple(range(x.ndim - 1))
            x32 = x.astype(jnp.float32)
            shift = jax.lax.stop_gradient(x32[(0,) * (x.ndim - 1)])
            d = x32 - shift
            d_mean = jnp.mean(d, axes)
            var = jnp.maximum(jnp.mean(jnp.square(d), axes) - jnp.square(d_mean), 0.0)
            mean = shift + d_mean
            count = x.size // x.shape[-1]
            unbiased = var * (count / max(count - 1, 1))
            m = self.momentum
            self.mean[...] = (1 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
            self.var[...] = (1 - m) * self.var[...] + m * jax.lax.stop_gradient(unbiased)
        inv = jax.lax.rsqrt(var + self.eps) * self.scale[...]
        return ((x - mean) * inv + self.bias[...]).astype(x.dtype)


class PReLU(nnx.Module):
    """`torch.nn.PReLU(num_parameters)`; slope `weight` broadcast over channels."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25):
        self.weight = nnx.Param(jnp.full((num_parameters,), init, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.where(x >= 0, x, self.weight[...].astype(x.dtype) * x)


class Dropout2d(nnx.Module):
    """`torch.nn.Dropout2d`: zeroes whole channels, `[B, H, W, C]` in and out."""

    def __init__(self, rate: float, *, rngs: nnx.Rngs | None = None):
        self.dropout = nnx.Dropout(rate, broadcast_dims=(1, 2), rngs=rngs)
        self.deterministic = True

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.dropout(x, deterministic=self.deterministic)


def relu(x: jax.Array) -> jax.Array:
    return jax.nn.relu(x)


# None: fold on accelerators only. On XLA:CPU folding measured no gain (benchmarks/ab_fold.py: the
# BN affine, ReLU and residual already fuse into one pass after each convolution either way); on GPUs
# a plain conv + bias (+ ReLU) is the pattern XLA hands to cuDNN as one fused convolution.
_fold_bn: contextvars.ContextVar[bool | None] = contextvars.ContextVar("magnet_jax_fold_batchnorm", default=None)


@contextlib.contextmanager
def batchnorm_folding(enabled: bool | None) -> Iterator[None]:
    """Within the block, `conv_bn` traces eval-mode BatchNorm folded into the convolution (True), as
    a separate affine pass (False: the literal layer order) or, None (the default), folded on
    accelerators only. Chosen at trace time: jit a fresh function under each setting."""
    with trace_setting(_fold_bn, None if enabled is None else bool(enabled)):
        yield


def _folding() -> bool:
    setting = _fold_bn.get()
    return jax.default_backend() != "cpu" if setting is None else setting


def conv_bn(
    conv: Conv2d, bn: BatchNorm2d, x: jax.Array, *, residual: jax.Array | None = None, act: bool = False
) -> jax.Array:
    """`relu?(bn(conv(x)) + residual?)`: `[B, H, W, Cin]` -> `[B, H', W', Cout]`.

    In eval mode (running statistics), where folding is on (`batchnorm_folding`; by default on
    accelerators), the BatchNorm is folded into the convolution: kernel scaled
    per output channel by `scale / sqrt(var + eps)`, one bias `bn.bias - mean * that (+ conv bias
    * that)`, so the conv output gets a single bias (+ residual) (+ ReLU) pass. Equal to the
    unfolded layers up to float32 rounding (~1e-7 relative). Training mode keeps the layers as they
    are (batch statistics need the raw conv output).
    """
    if bn.use_running_average and _folding():
        inv = jax.lax.rsqrt(bn.var[...] + bn.eps) * bn.scale[...]
        shift = bn.bias[...] - bn.mean[...] * inv
        if conv.bias is not None:
            shift = shift + conv.bias[...] * inv
        y = _conv(conv, x, conv.kernel[...] * inv)
        y = y + shift.astype(y.dtype)
    else:
        y = bn(conv(x))
    if residual is not None:
        y = y + residual
    return relu(y) if act else y


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """`nn.MaxPool2d(3, stride=2, padding=1)` on `[B, H, W, C]` (pads with -inf)."""
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    )


LEAF_LAYERS: Sequence[type] = (Conv2d, BatchNorm2d, PReLU)
