"""Patch ensembling of MagNet (magnet/utils/geometry.py `ensemble` semantics), NHWC.

Patch geometry is static, so boxes are NumPy arrays computed at trace time; only patch contents
(and optionally which patches were refined, and in which order) are traced.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from magnet_jax.ops.patches import patch_boxes_int
from magnet_jax.ops.resize import resize_bilinear

__all__ = ["ensemble_patches"]

_MASK_MARGIN = 10  # the original counts a patch only on its box shrunk by 10 px per side


def _clip_slice(a: int, b: int, n: int) -> tuple[int, int]:
    """Python slice ``[a:b]`` on a length-``n`` axis as concrete bounds (negative ends count from the end)."""
    start, stop, _ = slice(a, b).indices(n)
    return start, max(start, stop)


def _is_concrete(x: object) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _regular_grid(boxes: np.ndarray, size_wh: tuple[int, int]):
    """``(x_starts, y_starts, (bh, bw))`` when the int ``boxes`` form an x-major product grid of equal boxes
    inside the map (every grid the original builds), else None."""
    w, h = size_wh
    xs, ys = np.unique(boxes[:, 0]), np.unique(boxes[:, 1])
    bw, bh = int(boxes[0, 2] - boxes[0, 0]), int(boxes[0, 3] - boxes[0, 1])
    if len(xs) * len(ys) != len(boxes) or bw <= 0 or bh <= 0:
        return None
    want = np.array([[x, y, x + bw, y + bh] for x in xs for y in ys])
    if not np.array_equal(want, boxes) or want[:, :2].min() < 0 or want[:, 2].max() > w or want[:, 3].max() > h:
        return None
    return xs, ys, (bh, bw)


def _axis_cover(starts: np.ndarray, size: int, length: int, shrink: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[s, s + size)`` (or shrunk by ``shrink`` on both sides, Python-slice semantics) along one axis ->
    ``(box [length, m] int32, -1 where none; offset [length, m] int32 inside the unshrunk box)``."""
    cover = np.zeros((len(starts), length), bool)
    for i, s0 in enumerate(starts):
        a, b = _clip_slice(int(s0) + shrink, int(s0) + size - shrink, length)
        cover[i, a:b] = True
    m = max(1, int(cover.sum(0).max()))
    order = np.argsort(~cover, axis=0, kind="stable")[:m].T  # [length, m] covering boxes first
    valid = np.take_along_axis(cover.T, order, axis=1)
    box = np.where(valid, order, -1).astype(np.int32)
    offset = np.where(valid, np.arange(length)[:, None] - np.asarray(starts)[order], 0).astype(np.int32)
    return box, offset


def _ensemble_grid(resized: jax.Array, slots: jax.Array, grid, size_wh: tuple[int, int], mode: str):
    """Regular grids: every output pixel gathers from the (at most a few) boxes covering it, one gather per
    overlap combination instead of one masked update per box."""
    w, h = size_wh
    xs, ys, (bh, bw) = grid
    k, c = resized.shape[0], resized.shape[-1]
    ny = len(ys)
    flat = resized.reshape(k * bh * bw, c)
    xb, xo = _axis_cover(xs, bw, w, 0)
    yb, yo = _axis_cover(ys, bh, h, 0)

    def pairs(xbox, ybox):
        for a in range(xbox.shape[1]):
            for b in range(ybox.shape[1]):
                ix, iy = jnp.asarray(xbox[:, a]), jnp.asarray(ybox[:, b])
                valid = (ix >= 0)[None, :] & (iy >= 0)[:, None]
                pos = jnp.clip(ix, 0)[None, :] * ny + jnp.clip(iy, 0)[:, None]
                yield a, b, jnp.where(valid, slots[pos], -1)

    def gather(rank, ly, lx):
        idx = (jnp.clip(rank, 0) * bh + ly) * bw + lx
        return jnp.where((rank >= 0)[..., None], jnp.take(flat, idx, axis=0), 0.0)

    if mode == "reference":
        best = jnp.full((h, w), -1, jnp.int32)
        ly = jnp.zeros((h, w), jnp.int32)
        lx = jnp.zeros((h, w), jnp.int32)
        for a, b, rank in pairs(xb, yb):
            take = rank > best
            best = jnp.where(take, rank, best)
            ly = jnp.where(take, jnp.asarray(yo[:, b])[:, None], ly)
            lx = jnp.where(take, jnp.asarray(xo[:, a])[None, :], lx)
        canvas = gather(best, ly, lx)
        xs_b, _ = _axis_cover(xs, bw, w, _MASK_MARGIN)
        ys_b, _ = _axis_cover(ys, bh, h, _MASK_MARGIN)
        count = sum((rank >= 0).astype(jnp.float32) for _, _, rank in pairs(xs_b, ys_b))
    else:
        canvas = jnp.zeros((h, w, c), resized.dtype)
        count = jnp.zeros((h, w), jnp.float32)
        for a, b, rank in pairs(xb, yb):
            canvas = canvas + gather(rank, jnp.asarray(yo[:, b])[:, None], jnp.asarray(xo[:, a])[None, :])
            count = count + (rank >= 0).astype(jnp.float32)
    return canvas, count


def _ensemble_boxes(resized: dict, slots: jax.Array, boxes: np.ndarray, size_wh: tuple[int, int], mode: str):
    """Arbitrary boxes: one masked update per box (``resized`` maps a box size ``(h, w)`` to ``[k, h, w, C]``)."""
    w, h = size_wh
    any_r = next(iter(resized.values()))
    k, c = any_r.shape[0], any_r.shape[-1]
    canvas = jnp.zeros((h, w, c), any_r.dtype)
    count = jnp.zeros((h, w), jnp.float32)
    best = jnp.full((h, w), -1, jnp.int32)
    for n in range(boxes.shape[0]):
        x0, y0, x1, y1 = (int(v) for v in boxes[n])
        slot = slots[n]
        sel = slot >= 0
        patch = resized[(y1 - y0, x1 - x0)][jnp.clip(slot, 0, k - 1)]
        if mode == "reference":
            region_best = best[y0:y1, x0:x1]
            take = sel & (slot > region_best)
            canvas = canvas.at[y0:y1, x0:x1].set(jnp.where(take[..., None], patch, canvas[y0:y1, x0:x1]))
            best = best.at[y0:y1, x0:x1].set(jnp.where(take, slot, region_best))
            ma, mb = _clip_slice(y0 + _MASK_MARGIN, y1 - _MASK_MARGIN, h)
            na, nb = _clip_slice(x0 + _MASK_MARGIN, x1 - _MASK_MARGIN, w)
            count = count.at[ma:mb, na:nb].add(sel.astype(jnp.float32))
        else:
            canvas = canvas.at[y0:y1, x0:x1].add(jnp.where(sel, patch, 0.0))
            count = count.at[y0:y1, x0:x1].add(sel.astype(jnp.float32))
    return canvas, count


def ensemble_patches(
    patches: jax.Array,
    ratios: np.ndarray,
    size_wh: tuple[int, int],
    mode: Literal["reference", "average"] = "reference",
    *,
    valid: jax.Array | np.ndarray | None = None,
    indices: jax.Array | np.ndarray | None = None,
    method: Literal["auto", "grid", "boxes"] = "auto",
) -> tuple[jax.Array, jax.Array]:
    """Paste refined patches back into a ``size_wh`` map.

    ``mode="reference"`` is the original's ``ensemble``: every patch is resized (bilinear,
    ``align_corners=False``) to the rounded pixel size of the first box and written at its rounded box
    with overwrite (later patches win); a count mask gets +1 on each box shrunk by 10 px per side; the
    map is divided by ``max(count, 1)`` (so overlaps are halved, a known defect) and the mask is
    ``count > 0``. ``mode="average"`` is the correct blend: each patch is resized to its own box, overlaps
    are averaged over the number of patches covering each pixel, and the mask is "covered by a patch".

    Which patches take part (MagNet-Fast refines only some), in one of three ways:

    * pass only the refined patches with their own ratios (``ratios[sel]``, static) — the original's call;
    * ``valid``: ``[N]`` bool (may be traced); ``patches`` and ``ratios`` hold all ``N`` grid patches in grid
      order and patches with ``valid == False`` contribute nothing (their content is ignored);
    * ``indices``: ``[K]`` int grid indices (may be traced) of ``patches [K, ...]`` into ``ratios [N, 4]``:
      exactly the original's ``ensemble(patches, ratios[indices])``, overlaps overwritten in ``indices``
      order (MagNet's selection order).

    Implementation: every patch gets a rank (its overwrite order, -1 if it takes no part). Grids of equal
    boxes on a product lattice (all of MagNet's) are assembled with one gather per overlap combination
    (``method="grid"``); other box sets with one masked update per box (``method="boxes"``, which works for
    any boxes). ``method="auto"`` picks the first that applies; both give the same result.

    Args:
        patches: ``[N, h, w, C]`` (or ``[K, h, w, C]`` with ``indices``) patch predictions.
        ratios: ``[N, 4]`` static patch ratios ``(x0, y0, x1, y1)`` (see :func:`patch_grid`).
        size_wh: output map size ``(W, H)``.
        mode: ``"reference"`` or ``"average"``.
        valid: optional ``[N]`` bool participation mask.
        indices: optional ``[K]`` int selection (exclusive with ``valid``).
        method: ``"auto"``, ``"grid"`` (a ValueError unless the boxes form a regular grid) or ``"boxes"``.

    Returns:
        ``(map [H, W, C], mask [H, W] bool)``.
    """
    if mode not in ("reference", "average"):
        raise ValueError(f"ensemble_patches: unknown mode {mode!r} (use 'reference' or 'average')")
    if method not in ("auto", "grid", "boxes"):
        raise ValueError(f"ensemble_patches: unknown method {method!r} (use 'auto', 'grid' or 'boxes')")
    ratios = np.asarray(ratios, dtype=np.float64).reshape(-1, 4)
    if valid is not None and indices is not None:
        raise ValueError("ensemble_patches: pass either valid or indices, not both")
    n_total = ratios.shape[0]
    slots: jax.Array | np.ndarray | None = None  # [n_total] rank of each box's patch, -1: not taking part
    if indices is not None:
        if _is_concrete(indices):
            ratios = ratios[np.asarray(indices, dtype=np.int64).reshape(-1)]
        else:
            idx = jnp.asarray(indices, dtype=jnp.int32).reshape(-1)
            slots = jnp.full((n_total,), -1, jnp.int32).at[idx].set(jnp.arange(idx.shape[0], dtype=jnp.int32))
    elif valid is not None:
        if patches.shape[0] != n_total:
            raise ValueError(f"ensemble_patches: {patches.shape[0]} patches but {n_total} boxes")
        if _is_concrete(valid):
            keep = np.asarray(valid, dtype=bool).reshape(-1)
            patches = patches[np.nonzero(keep)[0]]
            ratios = ratios[keep]
        else:
            slots = jnp.where(jnp.asarray(valid, bool).reshape(-1), jnp.arange(n_total, dtype=jnp.int32), -1)
    if slots is None:
        if patches.shape[0] != ratios.shape[0]:
            raise ValueError(f"ensemble_patches: {patches.shape[0]} patches but {ratios.shape[0]} boxes")
        slots = np.arange(ratios.shape[0], dtype=np.int32)
    width, height = int(size_wh[0]), int(size_wh[1])
    n, _, _, c = patches.shape
    dtype = patches.dtype if jnp.issubdtype(patches.dtype, jnp.floating) else jnp.float32
    if n == 0 or ratios.shape[0] == 0:
        return jnp.zeros((height, width, c), dtype), jnp.zeros((height, width), bool)
    boxes = patch_boxes_int(ratios, (width, height))
    if (boxes[:, :2] < 0).any() or (boxes[:, 2] > width).any() or (boxes[:, 3] > height).any():
        raise ValueError("ensemble_patches: a patch box lies outside the output map")
    sizes = np.stack([boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1)  # (h, w)
    if (sizes <= 0).any():
        raise ValueError("ensemble_patches: empty patch box")
    if mode == "reference" and not (sizes == sizes[0]).all():
        raise ValueError("ensemble_patches: reference mode writes every patch at the first box's size")
    patches = patches.astype(dtype)
    slots = jnp.asarray(slots, jnp.int32)
    grid = None if method == "boxes" else _regular_grid(boxes, (width, height))
    if method == "grid" and grid is None:
        raise ValueError("ensemble_patches: method='grid' needs equal boxes on a product grid inside the map")
    if grid is not None:
        resized = resize_bilinear(patches, grid[2], align_corners=False)
        canvas, count = _ensemble_grid(resized, slots, grid, (width, height), mode)
    else:
        resized = {
            (bh, bw): resize_bilinear(patches, (bh, bw), align_corners=False)
            for bh, bw in sorted({(int(a), int(b)) for a, b in sizes})
        }
        canvas, count = _ensemble_boxes(resized, slots, boxes, (width, height), mode)
    out = canvas / jnp.maximum(count, 1.0)[..., None].astype(dtype)
    return out, count > 0
