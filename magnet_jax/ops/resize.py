"""Resizing ops matching PyTorch's ``F.interpolate`` and ``AdaptiveAvgPool2d`` (NHWC).

All sizes are static, so each op is expressed as two per-axis interpolation matrices built in NumPy
at trace time (one along H, one along W), reproducing PyTorch's index and weight arithmetic bit for
bit (no antialiasing, also when downsampling). Small axes apply them with ``einsum``; long axes apply
the same 2-tap rows as two gathers and a lerp, which costs O(output) instead of O(output * input).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "adaptive_avg_pool",
    "bilinear_matrix",
    "bilinear_taps",
    "nearest_indices",
    "resize_bilinear",
    "resize_nearest",
]


def _linear_sources(in_size: int, out_size: int, align_corners: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output pixel of torch's 1-D linear resampling: `(i0, i1, lam)` (float32 `lam`, see `bilinear_matrix`)."""
    dst = np.arange(out_size, dtype=np.float64)
    if align_corners:
        scale = np.float32((in_size - 1) / (out_size - 1)) if out_size > 1 else np.float32(0.0)
        src = (dst * np.float64(scale)).astype(np.float32)
    else:
        scale = np.float32(in_size / out_size)
        # PyTorch's CPU kernel evaluates ``scale * (dst + 0.5) - 0.5`` as one fused multiply-add
        # (a single float32 rounding). The float64 product of a float32 and a half-integer is exact,
        # so computing in float64 and rounding once reproduces it bit for bit.
        src = (np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32)
        src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0)).astype(np.float32)
    return i0, i1, lam


@functools.lru_cache(maxsize=256)
def bilinear_matrix(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
    """Interpolation matrix ``[out_size, in_size]`` of torch's 1-D linear resampling.

    ``align_corners=False``: ``src = max((dst + 0.5) * in / out - 0.5, 0)``;
    ``align_corners=True``: ``src = dst * (in - 1) / (out - 1)`` (0 when ``out == 1``).
    Then ``i0 = floor(src)``, ``i1 = min(i0 + 1, in - 1)``, weights ``1 - l, l`` with ``l = src - i0``.
    Source positions and weights are rounded to float32 exactly as PyTorch's CPU kernel does.
    """
    i0, i1, lam = _linear_sources(in_size, out_size, align_corners)
    mat = np.zeros((out_size, in_size), dtype=np.float32)
    rows = np.arange(out_size)
    np.add.at(mat, (rows, i0), np.float32(1.0) - lam)
    np.add.at(mat, (rows, i1), lam)
    return mat


@functools.lru_cache(maxsize=256)
def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source indices ``[out_size]`` of torch's default ``nearest`` mode.

    ``src = min(floor(dst * float32(in / out)), in - 1)`` computed in float32 like PyTorch's CPU
    kernel (identity when sizes match).
    """
    if in_size == out_size:
        return np.arange(out_size, dtype=np.int32)
    scale = np.float32(in_size / out_size)
    src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1).astype(np.int32)


@functools.lru_cache(maxsize=256)
def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Averaging matrix ``[out_size, in_size]`` of ``AdaptiveAvgPool`` bins ``[floor(i*L/s), ceil((i+1)*L/s))``."""
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        mat[i, start:end] = 1.0 / (end - start)
    return mat.astype(np.float32)


def _apply_separable(x: jax.Array, mh: np.ndarray, mw: np.ndarray) -> jax.Array:
    """``out[b, i, j, c] = sum_{h, w} mh[i, h] * mw[j, w] * x[b, h, w, c]`` for ``x: [B, H, W, C]``."""
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    x = x.astype(dtype)
    mh_j = jnp.asarray(mh, dtype=dtype)
    mw_j = jnp.asarray(mw, dtype=dtype)
    prec = jax.lax.Precision.HIGHEST
    # Contract the axis that shrinks the tensor most first.
    h_in, w_in = mh.shape[1], mw.shape[1]
    h_out, w_out = mh.shape[0], mw.shape[0]
    if h_out * w_in <= h_in * w_out:
        y = jnp.einsum("ih,bhwc->biwc", mh_j, x, precision=prec)
        return jnp.einsum("jw,biwc->bijc", mw_j, y, precision=prec)
    y = jnp.einsum("jw,bhwc->bhjc", mw_j, x, precision=prec)
    return jnp.einsum("ih,bhjc->bijc", mh_j, y, precision=prec)


@functools.lru_cache(maxsize=256)
def bilinear_taps(
    in_size: int, out_size: int, align_corners: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two-tap form ``(i0, i1, w0, w1)`` of :func:`bilinear_matrix` (the same float32 weights).

    Every row of the matrix has at most two non-zeros, at ``i0`` and ``i1 = min(i0 + 1, in - 1)``;
    ``w1`` is 0 where ``i1 == i0`` (the row's single weight is then ``w0``). Computed per row, without
    the matrix (which would be ``out x in`` floats: 800 MB from 10000 to 20000 px).
    """
    i0, i1, lam = _linear_sources(in_size, out_size, align_corners)
    w0 = np.float32(1.0) - lam
    same = i1 == i0
    # the matrix sums both weights into one entry where the taps coincide (float32 addition)
    w0 = np.where(same, (w0 + lam).astype(np.float32), w0).astype(np.float32)
    w1 = np.where(same, np.float32(0.0), lam).astype(np.float32)
    return i0.astype(np.int32), i1.astype(np.int32), w0, w1


def _lerp_axis(x: jax.Array, in_size: int, out_size: int, align_corners: bool, axis: int) -> jax.Array:
    """Resample ``x`` along ``axis`` with :func:`bilinear_taps`: two gathers and a lerp (O(output))."""
    if in_size == out_size:
        return x
    i0, i1, w0, w1 = bilinear_taps(in_size, out_size, align_corners)
    shape = [1] * x.ndim
    shape[axis] = out_size
    w0_j = jnp.asarray(w0.reshape(shape), x.dtype)
    w1_j = jnp.asarray(w1.reshape(shape), x.dtype)
    return jnp.take(x, i0, axis=axis) * w0_j + jnp.take(x, i1, axis=axis) * w1_j


# Axes longer than this are interpolated with gathers (O(output)) instead of a dense matrix product
# (O(output * input)): the dense form wastes FLOPs at MagNet's sizes (e.g. 1224 -> 2448 px).
_MATRIX_MAX_IN = 64


def resize_bilinear(x: jax.Array, size_hw: tuple[int, int], align_corners: bool) -> jax.Array:
    """Bilinear resize equal to ``F.interpolate(mode='bilinear', align_corners=...)`` (no antialias).

    Args:
        x: ``[B, H, W, C]`` array.
        size_hw: static output size ``(h, w)``.
        align_corners: PyTorch's ``align_corners`` flag.

    Returns:
        ``[B, h, w, C]`` array (float dtype of ``x``; integer inputs become float32).
    """
    _, h_in, w_in, _ = x.shape
    h_out, w_out = int(size_hw[0]), int(size_hw[1])
    if (h_in, w_in) == (h_out, w_out):
        return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)
    ac = bool(align_corners)
    if max(h_in, w_in) <= _MATRIX_MAX_IN:
        return _apply_separable(x, bilinear_matrix(h_in, h_out, ac), bilinear_matrix(w_in, w_out, ac))
    x = x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)
    # Rows first, then columns (an axis whose size does not change is left alone).
    return _lerp_axis(_lerp_axis(x, h_in, h_out, ac, 1), w_in, w_out, ac, 2)


def resize_nearest(x: jax.Array, size_hw: tuple[int, int]) -> jax.Array:
    """Nearest resize equal to ``F.interpolate(x, size)`` (PyTorch's default ``nearest`` mode).

    Args:
        x: ``[B, H, W, C]`` array of any dtype (a pure gather, dtype kept).
        size_hw: static output size ``(h, w)``.

    Returns:
        ``[B, h, w, C]`` array.
    """
    _, h_in, w_in, _ = x.shape
    ih = nearest_indices(h_in, int(size_hw[0]))
    iw = nearest_indices(w_in, int(size_hw[1]))
    return jnp.take(jnp.take(x, jnp.asarray(ih), axis=1), jnp.asarray(iw), axis=2)


def adaptive_avg_pool(x: jax.Array, size_hw: tuple[int, int]) -> jax.Array:
    """``nn.AdaptiveAvgPool2d(size_hw)`` for ``x: [B, H, W, C]`` -> ``[B, h, w, C]``.

    Output bin ``i`` averages input rows ``[floor(i*H/h), ceil((i+1)*H/h))`` (same for columns).
    """
    _, h_in, w_in, _ = x.shape
    mh = adaptive_pool_matrix(h_in, int(size_hw[0]))
    mw = adaptive_pool_matrix(w_in, int(size_hw[1]))
    return _apply_separable(x, mh, mw)
