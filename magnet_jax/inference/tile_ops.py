"""The tile-only steps of a tiled refinement stage (NHWC): ensemble and error samples of a tile's owned
pixels, the input-size median, and the point write with the global threshold.

Each computes, for the pixels of one tile, exactly the numbers the whole-image stage
(`stages.make_refine_stage_fn`, `compat="paper"`) computes for them, with every index taken from the full
map (cover tables), so tile results are whole-image results bit for bit. Shapes are the stage's padded
tile shapes (`tiling.StageTiling`): each compiles once per stage. The steps both runs share (upsampling,
uncertainty, patch scores, refinement) are the region kernels of `kernels.py`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from magnet_jax.ops.median import median_filter
from magnet_jax.ops.patches import certainty

__all__ = ["ensemble_error", "finish_tile", "median_small", "pad_to"]


def _ranks(lut, xi, yi, slots_h: int):
    """Per x-cover slot a, y-cover slot b (the ensemble's order): the local patch slot of each pixel, -1 if none."""
    for a in range(2):
        for b in range(2):
            ix, iy = xi[:, a], yi[:, b]
            valid = (ix >= 0)[None, :] & (iy >= 0)[:, None]
            yield a, b, jnp.where(valid, lut[jnp.clip(ix, 0)[None, :] * slots_h + jnp.clip(iy, 0)[:, None]], -1)


def _ensemble(stack, lut, xi, xo, yi, yo, slots_h: int):
    """Average of the covering refined patches (`ensemble_patches(mode="average")`) -> (E [OH, OW, C], mask)."""
    m, bh, bw, c = stack.shape
    flat = stack.reshape(m * bh * bw, c)
    canvas = jnp.zeros((yi.shape[0], xi.shape[0], c), stack.dtype)
    count = jnp.zeros((yi.shape[0], xi.shape[0]), jnp.float32)
    for a, b, rank in _ranks(lut, xi, yi, slots_h):
        idx = (jnp.clip(rank, 0) * bh + yo[:, b][:, None]) * bw + xo[:, a][None, :]
        canvas = canvas + jnp.where((rank >= 0)[..., None], jnp.take(flat, idx, axis=0), 0.0)
        count = count + (rank >= 0).astype(jnp.float32)
    return canvas / jnp.maximum(count, 1.0)[..., None].astype(stack.dtype), count > 0


@functools.partial(jax.jit, static_argnames=("slots_h", "owned_hw"))
def ensemble_error(stack, lut, xi, xo, yi, yo, unc_region, offset, srows, scols, *, slots_h: int, owned_hw):
    """Ensemble of a tile's owned pixels and the error score `certainty(E) * U` at the sampled pixels.

    Args:
        stack: `[M, bh, bw, C]` refined patches (resized to the box) in the tile's local slots.
        lut, xi, xo, yi, yo: cover tables (`tiling.StageTiling.cover_tables`).
        unc_region: `[RH, RW]` uncertainty of the tile's region; `offset`: `[2]` owned origin inside it.
        srows, scols: `[SR]`, `[SC]` owned-relative rows / columns of the input-size error map's samples.

    Returns:
        `(E [OH, OW, C], error samples [SR, SC], uncertainty samples [SR, SC])`.
    """
    ens, _ = _ensemble(stack, lut, xi, xo, yi, yo, slots_h)
    unc = jax.lax.dynamic_slice(unc_region, (offset[0], offset[1]), owned_hw)
    e_s = jnp.take(jnp.take(ens, srows, axis=0), scols, axis=1)
    u_s = jnp.take(jnp.take(unc, srows, axis=0), scols, axis=1)
    return ens, certainty(e_s) * u_s, u_s


@functools.partial(jax.jit, static_argnames=("kernel",))
def median_small(error: jax.Array, *, kernel: int) -> jax.Array:
    """The error map at input size, median-smoothed (the middle step of `stages.smooth_error`)."""
    return median_filter(error, kernel)


@functools.partial(jax.jit, static_argnames=("slots_h",))
def finish_tile(probs, ens, lut, xi, yi, brow, bcol, smooth, t, yx, gy, gx, *, slots_h: int):
    """Writes the chosen points of a tile: `P' = where(chosen, E, P)` on the owned pixels.

    `brow` / `bcol`: input-size error rows / columns of each owned pixel (nearest upsampling); `smooth`:
    the smoothed error `[ih, iw]`. A pixel inside the refined patches is chosen if its score is above `t`,
    or equal to it and before `yx = (y*, x*)` in row-major order (`gy`, `gx`: global coordinates).
    Returns `(P' [OH, OW, C], argmax [OH, OW] uint8, points)`.
    """
    mask = jnp.zeros(probs.shape[:2], bool)
    for _, _, rank in _ranks(lut, xi, yi, slots_h):
        mask = mask | (rank >= 0)
    score = jnp.where(mask, smooth[brow[:, None], bcol[None, :]], -1.0)
    before = (gy[:, None] < yx[0]) | ((gy[:, None] == yx[0]) & (gx[None, :] < yx[1]))
    chosen = mask & ((score > t) | ((score == t) & before))
    out = jnp.where(chosen[..., None], ens, probs)
    return out, jnp.argmax(out, axis=-1).astype(jnp.uint8), jnp.sum(chosen).astype(jnp.int32)


def pad_to(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-pads `a` at the end of each axis to `shape`."""
    if a.shape == tuple(shape):
        return a
    out = np.zeros(shape, a.dtype)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out
