"""Pixel selection of a MagNet stage: the smoothed error score and its top-`budget` points (NHWC, one image).

`smooth_error` (step 7's median smoothing at input resolution), `select_top_mask` (steps 8-9: the
`budget` largest scores as a mask of static shape, with PyTorch's CPU `topk` tie-breaking replayed in
reference mode, see `topk.py`) and `sampled_mask` (the original's cast of a mask sampled at pixel
centres). Used by `stages.make_refine_stage_fn`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from magnet_jax.inference.topk import torch_topk_indices
from magnet_jax.ops.median import median_filter
from magnet_jax.ops.resize import resize_nearest

__all__ = ["sampled_mask", "select_top_mask", "smooth_error"]

# When the budget boundary splits a group of equal error scores, the reference mode replays
# PyTorch's tie-breaking if the group's undecided part exceeds this fraction of the pixels.
_TIE_REPLAY_FRACTION = 1.0 / 4096


def smooth_error(error: jax.Array, input_hw: tuple[int, int], kernel: int) -> jax.Array:
    """`[H, W]` -> nearest to `input_hw`, k x k median (zero padding), nearest back to `[H, W]`."""
    h, w = error.shape
    small = resize_nearest(error[None, :, :, None], input_hw)[0, :, :, 0]
    small = median_filter(small, kernel)
    return resize_nearest(small[None, :, :, None], (h, w))[0, :, :, 0]


def _sortable_key(v: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (negatives included)."""
    b = jax.lax.bitcast_convert_type(v.astype(jnp.float32), jnp.uint32)
    return jnp.where((b >> 31) == 1, ~b, b | jnp.uint32(0x80000000))


def _kth_largest_key(key: jax.Array, k: int) -> jax.Array:
    """The k-th largest of `key` (uint32 `[n]`, 1 <= k <= n) by a two-pass 16-bit radix select."""
    hi = (key >> 16).astype(jnp.int32)
    count_hi = jnp.zeros((65536,), jnp.int32).at[hi].add(1)
    at_least = jnp.cumsum(count_hi[::-1])[::-1]  # elements with hi >= b
    b_hi = jnp.sum(at_least >= k).astype(jnp.int32) - 1
    above = jnp.where(b_hi < 65535, at_least[jnp.minimum(b_hi + 1, 65535)], 0)
    lo = (key & jnp.uint32(0xFFFF)).astype(jnp.int32)
    count_lo = jnp.zeros((65536,), jnp.int32).at[jnp.where(hi == b_hi, lo, 65536)].add(1, mode="drop")
    at_least_lo = jnp.cumsum(count_lo[::-1])[::-1]
    b_lo = jnp.sum(at_least_lo >= k - above).astype(jnp.int32) - 1
    return (b_hi.astype(jnp.uint32) << 16) | b_lo.astype(jnp.uint32)


def select_top_mask(score: jax.Array, k: int, *, torch_ties: bool) -> jax.Array:
    """Boolean `[n]` mask of the `k` largest entries of the flat `score`.

    Entries above the k-th largest value are always in; of the entries equal to it, the lowest
    indices are taken, or with `torch_ties` the ones PyTorch's CPU `topk` takes (replayed only when
    that tie group is large enough to matter, see `_TIE_REPLAY_FRACTION`). `k >= n` selects all.
    """
    n = score.shape[0]
    if k >= n:
        return jnp.ones((n,), bool)
    if k <= 0:
        return jnp.zeros((n,), bool)
    key = _sortable_key(score)
    t = _kth_largest_key(key, k)
    above = key > t
    ties = key == t
    need = k - jnp.sum(above)
    rank = jnp.cumsum(ties.astype(jnp.int32)) - 1
    simple = above | (ties & (rank < need))
    if not torch_ties:
        return simple
    n_ties = jnp.sum(ties)
    undecided = jnp.minimum(need, n_ties - need)
    threshold = max(1, int(n * _TIE_REPLAY_FRACTION))

    def replay():
        idx = torch_topk_indices(score, k)
        return jnp.zeros((n,), bool).at[idx].set(True)

    return jax.lax.cond(undecided > threshold, replay, lambda: simple)


@functools.lru_cache(maxsize=64)
def _pixel_centre_axis(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-axis bilinear corners of the original's pixel-centre points, through grid_sample (static, NumPy).

    The original samples at `p = step/2 + i*step` (float32, `step = 1/size`) with
    `grid_sample(2p - 1, align_corners=False)`; PyTorch's CPU kernel unnormalises with one fused
    multiply-add, `fma(g + 1, size / 2, -0.5)` in float32, and rounding can leave a tiny weight on the
    neighbour. Reproduced here in NumPy (the FMA as a float64 product rounded once; checked against
    PyTorch), returns `(i0, i0_weight_positive, i1, i1_weight_positive)`; out-of-range corners are
    marked non-positive.
    """
    f32 = np.float32
    step = 1.0 / float(size)
    p = (np.arange(size, dtype=f32) * f32(step)).astype(f32) + f32(step / 2.0)
    g = (f32(2.0) * p).astype(f32) - f32(1.0)
    gp1 = (g + f32(1.0)).astype(f32)
    pix = (gp1.astype(np.float64) * np.float64(f32(size / 2)) - 0.5).astype(f32)
    f0 = np.floor(pix).astype(f32)
    w1 = (pix - f0).astype(f32)
    w0 = ((f0 + f32(1.0)).astype(f32) - pix).astype(f32)
    i0 = f0.astype(np.int64)
    i1 = i0 + 1
    ok0 = (w0 > 0) & (i0 >= 0) & (i0 < size)
    ok1 = (w1 > 0) & (i1 >= 0) & (i1 < size)
    return np.clip(i0, 0, size - 1), ok0, np.clip(i1, 0, size - 1), ok1


def sampled_mask(mask: jax.Array) -> jax.Array:
    """`bool(point_sample(mask, pixel centre))` for every pixel (`[H, W]` bool), as the original casts it."""
    h, w = mask.shape
    ya, oka, yb, okb = _pixel_centre_axis(h)
    xa, okxa, xb, okxb = _pixel_centre_axis(w)
    out = jnp.zeros((h, w), bool)
    for yi, oky in ((ya, oka), (yb, okb)):
        rows = jnp.take(mask, jnp.asarray(yi), axis=0) & jnp.asarray(oky)[:, None]
        for xi, okx in ((xa, okxa), (xb, okxb)):
            out = out | (jnp.take(rows, jnp.asarray(xi), axis=1) & jnp.asarray(okx)[None, :])
    return out
