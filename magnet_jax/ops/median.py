"""Median filter with zero padding, equal to the original's ``MedianBlur`` (magnet/utils/blur.py).

The original gathers every ``k x k`` window with an identity convolution (zero padding
``(k - 1) // 2``) and takes ``torch.median`` over the window, which for an even count returns the
lower of the two middle values: element ``(k * k - 1) // 2`` of the sorted window. Padded positions
count as zeros.

Even ``k``: the original's convolution output is one pixel smaller than the input, so its reshape
fails (it cannot run). Here an even window covers rows ``[i - (k - 1) // 2, i + k // 2]`` (the
original's window for every pixel it does produce, extended by one at the bottom/right) and the
lower median is taken, so the output keeps the input size.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["median_filter"]


def _median_rows(padded: jax.Array, row0: jax.Array, rows: int, width: int, kernel: int) -> jax.Array:
    """Medians of output rows ``[row0, row0 + rows)`` from the zero-padded image ``padded [Hp, Wp]``."""
    band = jax.lax.dynamic_slice_in_dim(padded, row0, rows + kernel - 1, axis=0)  # [rows + k - 1, Wp]
    offsets = np.arange(kernel)
    cols = jnp.take(band, np.arange(width)[:, None] + offsets, axis=1)  # [rows + k - 1, W, k]
    windows = jnp.take(cols, np.arange(rows)[:, None] + offsets, axis=0)  # [rows, k(dy), W, k(dx)]
    windows = jnp.moveaxis(windows, 1, 2).reshape(rows, width, kernel * kernel)
    return jnp.sort(windows, axis=-1)[..., (kernel * kernel - 1) // 2]


def _median_bisect(x: jax.Array, kernel: int) -> jax.Array:
    """Exact windowed order statistic by per-pixel bisection over the image's sorted values.

    The median of every window is one of the image's values or a padding zero. With those candidates
    sorted (``N = H * W + 1``), ``ceil(log2 N)`` bisection steps each count, per pixel, the window
    elements ``<= candidate`` with ``k * k`` shifted comparisons (fused, no ``[H, W, k*k]`` buffer).
    The answer is the smallest candidate whose count exceeds the rank ``(k * k - 1) // 2``.
    """
    h, w = x.shape
    before, after = (kernel - 1) // 2, kernel // 2
    padded = jnp.pad(x, ((before, after), (before, after)))
    values = jnp.sort(jnp.concatenate([x.reshape(-1), jnp.zeros((1,), x.dtype)]))
    n = values.shape[0]
    need = (kernel * kernel - 1) // 2 + 1

    def count_le(t: jax.Array) -> jax.Array:
        # `t` is per pixel `[H, W]`. All k * k shifted comparisons unrolled with static slices: XLA
        # fuses them into one pass (a loop over the k rows was ~2x slower at 508 px, k = 11).
        # Integer counts, so the order of the sum does not matter: bit-exact either way.
        acc = jnp.zeros((h, w), jnp.int32)
        for dy in range(kernel):
            for dx in range(kernel):
                acc = acc + (padded[dy : dy + h, dx : dx + w] <= t).astype(jnp.int32)
        return acc

    def step(_: int, lo_hi: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        lo, hi = lo_hi
        mid = (lo + hi) // 2
        enough = count_le(values[mid]) >= need
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    lo = jnp.zeros((h, w), jnp.int32)
    hi = jnp.full((h, w), n - 1, jnp.int32)
    lo, _ = jax.lax.fori_loop(0, max(1, (n - 1).bit_length()), step, (lo, hi))
    return values[lo]


@functools.partial(jax.jit, static_argnames=("kernel", "method", "chunk_rows"))
def median_filter(
    x: jax.Array, kernel: int, *, method: Literal["bisect", "sort"] = "bisect", chunk_rows: int | None = 64
) -> jax.Array:
    """``k x k`` median filter with zero padding (lower median for even ``k * k``).

    Args:
        x: ``[H, W]`` or ``[B, H, W]`` image(s).
        kernel: static window size ``k >= 1`` (odd in the original; even sizes see the module docstring).
        method: ``"bisect"`` (default; exact selection by bisection over the image's values, memory
            ``O(H * W)``, ``~log2(H * W) * k * k`` comparisons per pixel) or ``"sort"`` (sorts every
            window; simple, but XLA's CPU sort makes it slow for large ``k``).
        chunk_rows: ``"sort"`` only: output rows per chunk (bounds memory to ``chunk_rows * W * k * k``
            values; chunks run sequentially with ``jax.lax.map``). ``None`` = whole image at once.

    Returns:
        Array of the same shape and dtype as ``x``.
    """
    kernel = int(kernel)
    if kernel < 1:
        raise ValueError(f"median_filter: kernel must be >= 1, got {kernel}")
    if x.ndim == 3:
        return jax.vmap(lambda im: median_filter(im, kernel, method=method, chunk_rows=chunk_rows))(x)
    if x.ndim != 2:
        raise ValueError(f"median_filter: expected [H, W] or [B, H, W], got shape {x.shape}")
    if kernel == 1:
        return x
    if method == "bisect":
        return _median_bisect(x, kernel)
    if method != "sort":
        raise ValueError(f"median_filter: unknown method {method!r} (use 'bisect' or 'sort')")
    h, w = x.shape
    before, after = (kernel - 1) // 2, kernel // 2
    rows = h if chunk_rows is None else max(1, min(int(chunk_rows), h))
    n_chunks = -(-h // rows)
    h_pad = n_chunks * rows  # pad extra zero rows at the bottom so every chunk has the same shape
    padded = jnp.pad(x, ((before, after + h_pad - h), (before, after)))
    if n_chunks == 1:
        return _median_rows(padded, jnp.int32(0), rows, w, kernel)[:h]
    starts = jnp.arange(n_chunks, dtype=jnp.int32) * rows
    out = jax.lax.map(lambda r0: _median_rows(padded, r0, rows, w, kernel), starts)
    return out.reshape(h_pad, w)[:h]
