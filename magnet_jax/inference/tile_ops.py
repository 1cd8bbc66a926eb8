"""Jit-compiled pieces of a refinement stage on one tile (streamed inference), NHWC.

Each piece computes, for the pixels or patches of one tile, exactly the numbers the whole-image
stage (`stages.make_refine_stage_fn`, `compat="paper"`) computes for them: the same operations in the
same order, with every index and weight taken from the full map (taps, RoI Align positions, cover
tables), so the tile results are the whole-image results bit for bit. Shapes are the stage's padded
tile shapes (`tiling.StageTiling`), so each piece compiles once per stage; index arrays are arguments.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from magnet_jax.ops.conv import forward_algorithm
from magnet_jax.ops.median import median_filter
from magnet_jax.ops.patches import certainty
from magnet_jax.ops.resize import resize_bilinear
from magnet_jax.ops.roi_align import required_samples, roi_align
from magnet_jax.sharding import DATA_AXIS

__all__ = [
    "ensemble_error",
    "finish_tile",
    "make_refine_fn",
    "median_small",
    "patch_scores",
    "resize_to_box",
    "uncertainty",
    "upsample_region",
]


def _lerp(x: jax.Array, i0, i1, w0, w1, axis: int) -> jax.Array:
    """`ops.resize._lerp_axis` with the taps as arrays: two gathers and a lerp along `axis`."""
    shape = [1] * x.ndim
    shape[axis] = i0.shape[0]
    return jnp.take(x, i0, axis=axis) * w0.reshape(shape) + jnp.take(x, i1, axis=axis) * w1.reshape(shape)


@functools.partial(jax.jit, static_argnames=("skip_h", "skip_w"))
def upsample_region(prev, rows, cols, *, skip_h: bool, skip_w: bool) -> jax.Array:
    """Bilinear (align_corners=False) upsampling of a region: `prev [ph, pw, C]` window -> `[RH, RW, C]` float32.

    `rows` / `cols`: `(i0, i1, w0, w1)` taps relative to the window (`tiling.taps_for`); rows first, then
    columns, an axis whose size does not change is left alone (as `ops.resize.resize_bilinear`).
    """
    x = prev.astype(jnp.float32)
    if not skip_h:
        x = _lerp(x, *rows, axis=0)
    if not skip_w:
        x = _lerp(x, *cols, axis=1)
    return x


@jax.jit
def uncertainty(probs: jax.Array) -> jax.Array:
    """`1 - certainty(P)`: `[h, w, C]` -> `[h, w]`."""
    return 1.0 - certainty(probs)


@functools.partial(jax.jit, static_argnames=("input_hw", "max_samples", "full_hw"))
def patch_scores(probs, boxes, origin, *, input_hw, max_samples, full_hw) -> jax.Array:
    """The selection score per patch, mean RoI Align of `1 - certainty(P)` (as the whole-image select phase).

    `probs`: the P region at `origin`; `boxes [n, 4]` in full-map pixels -> `[n]`.
    """
    unc = 1.0 - certainty(probs)
    crops = roi_align(unc[..., None], boxes, input_hw, max_samples=max_samples, full_hw=full_hw, origin=origin)
    return crops.mean(axis=(1, 2, 3))


def make_refine_fn(
    backbone_graphdef, refiner_graphdef, mesh: Mesh, *, batch: int, boxes: np.ndarray, input_hw, full_hw,
    conv_algorithm: str = "auto",
):  # fmt: skip
    """`refine(bb_state, rf_state, probs_region, origin, patches [G, ih, iw, 3], ids [G]) -> R [G, ih, iw, C]`.

    `R = softmax(refiner(softmax(backbone(patch)), RoI Align(P, box)))` for the grid patches `ids`, the
    coarse crops taken from the tile's P region at `origin` (`boxes`: the stage's `[N, 4]` float32 boxes in
    full-map pixels). Each device runs its share of the batch (`G` a multiple of `batch` x devices;
    `shard_map` over the mesh's `data` axis) with the whole-image stage's program
    (`stages.make_refine_stage_fn`): a `lax.map` over sub-batches of `batch`, the boxes gathered from the
    constant box table and cropped in the loop body. XLA:CPU contracts multiply-adds into FMAs
    differently in other arrangements, so the same program is what gives the same numbers (and the same
    `conv_algorithm`, `plan.conv_algorithm`).
    """
    spec = jax.sharding.PartitionSpec
    max_samples = required_samples(boxes, input_hw)

    def per_device(backbone_state, refiner_state, probs, origin, patches, ids):
        n = patches.shape[0]
        table = jnp.asarray(boxes)

        def body(xs):
            local, grid_ids = xs
            with forward_algorithm(conv_algorithm):
                fine = nnx.merge(backbone_graphdef, backbone_state)(jnp.take(patches, local, axis=0))
            fine = jax.nn.softmax(fine.astype(jnp.float32), -1)
            coarse = roi_align(
                probs, jnp.take(table, grid_ids, axis=0), input_hw, max_samples=max_samples, full_hw=full_hw,
                origin=origin,
            )  # fmt: skip
            with forward_algorithm(conv_algorithm):
                logits = nnx.merge(refiner_graphdef, refiner_state)(fine, coarse)
            return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

        local = jnp.arange(n, dtype=jnp.int32).reshape(n // batch, batch)
        out = jax.lax.map(body, (local, ids.reshape(n // batch, batch)))
        return out.reshape((n,) + out.shape[2:])

    sharded = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(spec(), spec(), spec(), spec(), spec(DATA_AXIS), spec(DATA_AXIS)),
        out_specs=spec(DATA_AXIS),
    )
    return jax.jit(sharded)


@functools.partial(jax.jit, static_argnames=("box_hw",))
def resize_to_box(refined: jax.Array, *, box_hw: tuple[int, int]) -> jax.Array:
    """Refined patches `[n, ih, iw, C]` resized to the patch box `[n, bh, bw, C]` (as the ensemble does)."""
    return resize_bilinear(refined, box_hw, align_corners=False)


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
