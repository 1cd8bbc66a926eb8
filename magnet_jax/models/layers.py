"""PyTorch-equivalent layers in Flax NNX, NHWC.

Attribute names of every module in `magnet_jax.models` mirror the PyTorch
state-dict keys of the original MagNet (`layer1.0.conv1`), so the converter
maps a checkpoint by walking the module tree (see `magnet_jax.convert`). The
leaf layers below are the only ones holding variables; the converter knows
how each of them stores a PyTorch tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.ops.conv import conv2d

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


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """`nn.MaxPool2d(3, stride=2, padding=1)` on `[B, H, W, C]` (pads with -inf)."""
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    )


LEAF_LAYERS: Sequence[type] = (Conv2d, BatchNorm2d, PReLU)
