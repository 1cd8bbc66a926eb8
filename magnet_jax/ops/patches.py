"""Patch grid, certainty and patch ensembling of MagNet (magnet/utils/geometry.py semantics), NHWC.

Patch geometry is static (it depends only on the scales and the crop size), so grids and pixel boxes
are NumPy arrays computed at trace time; only patch contents (and optionally which patches were
refined) are traced.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from magnet_jax.ops.resize import resize_bilinear

__all__ = ["certainty", "ensemble_patches", "patch_boxes_int", "patch_boxes_px", "patch_grid"]

_MASK_MARGIN = 10  # the original counts a patch only on its box shrunk by 10 px per side


def certainty(probs: jax.Array) -> jax.Array:
    """Top-1 minus top-2 probability over the last (class) axis: ``[..., C]`` -> ``[...]``."""
    top2 = jax.lax.top_k(probs, 2)[0]
    return top2[..., 0] - top2[..., 1]


def patch_grid(scale_wh: tuple[int, int], crop_wh: tuple[int, int]) -> np.ndarray:
    """Patch grid of a scale as ratios, x-major (``for x: for y:``), like the original's ``get_patch_coords``.

    Per axis ``n = ceil(S / C)``, ``step = int(C - (n * C - S) / max(n - 1, 1))``, origins ``i * step``.

    Args:
        scale_wh: image size ``(S_w, S_h)`` at this scale.
        crop_wh: patch size ``(C_w, C_h)``.

    Returns:
        ``[N, 4]`` float64 rows ``(x0 / S_w, y0 / S_h, (x0 + C_w) / S_w, (y0 + C_h) / S_h)``.
    """
    sw, sh = int(scale_wh[0]), int(scale_wh[1])
    cw, ch = int(crop_wh[0]), int(crop_wh[1])
    n_x = math.ceil(sw / cw)
    n_y = math.ceil(sh / ch)
    step_x = int(cw - (n_x * cw - sw) / max(n_x - 1, 1.0))
    step_y = int(ch - (n_y * ch - sh) / max(n_y - 1, 1.0))
    rows = [
        (x * step_x / sw, y * step_y / sh, (x * step_x + cw) / sw, (y * step_y + ch) / sh)
        for x in range(n_x)
        for y in range(n_y)
    ]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def patch_boxes_px(ratios: np.ndarray | jax.Array, size_wh: tuple[int, int]) -> np.ndarray | jax.Array:
    """Float32 pixel boxes ``(x0, y0, x1, y1)`` = ratios x ``(W, H, W, H)``, as the original feeds roi_align.

    The original keeps the ratios as a float32 tensor and multiplies in float32; so does this.

    Args:
        ratios: ``[N, 4]`` ratios (NumPy gives NumPy, a JAX array gives a JAX array).
        size_wh: map size ``(W, H)``.

    Returns:
        ``[N, 4]`` float32 boxes.
    """
    w, h = int(size_wh[0]), int(size_wh[1])
    if isinstance(ratios, np.ndarray):
        scale = np.array([w, h, w, h], dtype=np.float32)
        return np.asarray(ratios, dtype=np.float32).reshape(-1, 4) * scale
    scale = jnp.array([w, h, w, h], dtype=jnp.float32)
    return jnp.asarray(ratios, dtype=jnp.float32).reshape(-1, 4) * scale


def patch_boxes_int(ratios: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Integer pixel boxes of the original's ``ensemble``: ``round(float32(ratio) * size)``, half to even.

    Args:
        ratios: ``[N, 4]`` ratios (static).
        size_wh: map size ``(W, H)``.

    Returns:
        ``[N, 4]`` int64 boxes ``(x0, y0, x1, y1)``.
    """
    return np.round(patch_boxes_px(np.asarray(ratios), size_wh)).astype(np.int64)


def _put(arr: jax.Array, y0: int, x0: int, value: jax.Array) -> jax.Array:
    """``arr[y0:y0+h, x0:x0+w] = value`` as an in-place ``dynamic_update_slice`` (static offsets)."""
    start = (y0, x0) + (0,) * (arr.ndim - 2)
    return jax.lax.dynamic_update_slice(arr, value.astype(arr.dtype), start)


def _add_region(arr: jax.Array, rows: slice, cols: slice, value: jax.Array | float) -> jax.Array:
    """``arr[rows, cols] += value`` with Python slice semantics (negative bounds wrap, empty is a no-op)."""
    r0, r1, _ = rows.indices(arr.shape[0])
    c0, c1, _ = cols.indices(arr.shape[1])
    if r1 <= r0 or c1 <= c0:
        return arr
    return _put(arr, r0, c0, arr[r0:r1, c0:c1] + value)


def _is_concrete(x: object) -> bool:
    return not isinstance(x, jax.core.Tracer)


def ensemble_patches(
    patches: jax.Array,
    ratios: np.ndarray,
    size_wh: tuple[int, int],
    mode: Literal["reference", "average"] = "reference",
    *,
    valid: jax.Array | np.ndarray | None = None,
    indices: jax.Array | np.ndarray | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Paste refined patches back into a ``size_wh`` map.

    ``mode="reference"`` is the original's ``ensemble``: every patch is resized (bilinear,
    ``align_corners=False``) to the rounded pixel size of the FIRST box and written at its rounded box
    with overwrite (later patches win); a count mask gets +1 on each box shrunk by 10 px per side; the
    map is divided by ``max(count, 1)`` (so overlaps are halved, a known defect) and the mask is
    ``count > 0``. ``mode="average"`` is the correct blend: each patch is resized to its own box, overlaps
    are averaged over the number of patches covering each pixel, and the mask is "covered by a patch".

    Which patches take part (MagNet-Fast refines only some), in one of three ways:

    * pass only the refined patches with their own ratios (``ratios[sel]``, static) — the original's call;
    * ``valid``: ``[N]`` bool (may be traced); ``patches`` and ``ratios`` hold all ``N`` grid patches in grid
      order and patches with ``valid == False`` contribute nothing (their content is ignored);
    * ``indices``: ``[K]`` int grid indices of ``patches [K, ...]`` into ``ratios [N, 4]``. Concrete indices
      are exactly the original's ``ensemble(patches, ratios[indices])`` (overwrite order = ``indices``
      order); traced ones are scattered to a ``valid`` mask, so overlapping patches are overwritten in
      grid order (the same result whenever the selected patches do not overlap).

    In ``"reference"`` mode with a traced selection, the "first box" is the first selected one, which is
    static only if all boxes round to the same size (true for MagNet's grids); otherwise this raises.

    Args:
        patches: ``[N, h, w, C]`` (or ``[K, h, w, C]`` with ``indices``) patch predictions.
        ratios: ``[N, 4]`` static patch ratios ``(x0, y0, x1, y1)`` (see :func:`patch_grid`).
        size_wh: output map size ``(W, H)``.
        mode: ``"reference"`` or ``"average"``.
        valid: optional ``[N]`` bool participation mask.
        indices: optional ``[K]`` int selection (exclusive with ``valid``).

    Returns:
        ``(map [H, W, C], mask [H, W] bool)``.
    """
    ratios = np.asarray(ratios, dtype=np.float64).reshape(-1, 4)
    if valid is not None and indices is not None:
        raise ValueError("ensemble_patches: pass either valid or indices, not both")
    if indices is not None:
        if _is_concrete(indices):
            ratios = ratios[np.asarray(indices, dtype=np.int64).reshape(-1)]
        else:
            idx = jnp.asarray(indices, dtype=jnp.int32).reshape(-1)
            full = jnp.zeros((ratios.shape[0],) + tuple(patches.shape[1:]), patches.dtype)
            patches = full.at[idx].set(patches)
            valid = jnp.zeros((ratios.shape[0],), bool).at[idx].set(True)
    if patches.shape[0] != ratios.shape[0]:
        raise ValueError(f"ensemble_patches: {patches.shape[0]} patches but {ratios.shape[0]} boxes")
    if valid is not None and _is_concrete(valid):
        keep = np.asarray(valid, dtype=bool).reshape(-1)
        patches = patches[np.nonzero(keep)[0]]
        ratios = ratios[keep]
        valid = None
    width, height = int(size_wh[0]), int(size_wh[1])
    n, _, _, c = patches.shape
    dtype = patches.dtype if jnp.issubdtype(patches.dtype, jnp.floating) else jnp.float32
    out = jnp.zeros((height, width, c), dtype)
    count = jnp.zeros((height, width), jnp.float32)
    if n == 0:
        return out, count > 0
    boxes = patch_boxes_int(ratios, (width, height))
    if (boxes[:, :2] < 0).any() or (boxes[:, 2] > width).any() or (boxes[:, 3] > height).any():
        raise ValueError("ensemble_patches: a patch box lies outside the output map")
    sizes = np.stack([boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1)  # (h, w)
    if (sizes <= 0).any():
        raise ValueError("ensemble_patches: empty patch box")
    weights = None if valid is None else jnp.asarray(valid, dtype=bool).reshape(-1)

    if mode == "reference":
        if weights is not None and not (sizes == sizes[0]).all():
            raise ValueError(
                "ensemble_patches: with a traced selection, reference mode needs all boxes to round to one size"
            )
        bh, bw = int(sizes[0, 0]), int(sizes[0, 1])
        if not (sizes == (bh, bw)).all():
            raise ValueError("ensemble_patches: reference mode writes every patch at the first box's size")
        resized = resize_bilinear(patches.astype(dtype), (bh, bw), align_corners=False)
        m = _MASK_MARGIN
        for i in range(n):
            x0, y0, x1, y1 = (int(v) for v in boxes[i])
            # Python slice semantics for the shrunk box (negative stops wrap), as the original's tensor slicing.
            inner_rows, inner_cols = slice(y0 + m, y1 - m), slice(x0 + m, x1 - m)
            if weights is None:
                out = _put(out, y0, x0, resized[i])
                count = _add_region(count, inner_rows, inner_cols, 1.0)
            else:
                out = _put(out, y0, x0, jnp.where(weights[i], resized[i], out[y0:y1, x0:x1]))
                count = _add_region(count, inner_rows, inner_cols, weights[i].astype(jnp.float32))
        out = out / jnp.maximum(count, 1.0)[..., None].astype(dtype)
        return out, count > 0

    if mode == "average":
        total = out
        for bh, bw in sorted({(int(a), int(b)) for a, b in sizes}):
            members = np.nonzero((sizes[:, 0] == bh) & (sizes[:, 1] == bw))[0]
            resized = resize_bilinear(patches[members].astype(dtype), (bh, bw), align_corners=False)
            for j, i in enumerate(members):
                x0, y0, x1, y1 = (int(v) for v in boxes[i])
                wgt = jnp.float32(1.0) if weights is None else weights[i].astype(jnp.float32)
                total = _put(total, y0, x0, total[y0:y1, x0:x1] + resized[j] * wgt.astype(dtype))
                count = _add_region(count, slice(y0, y1), slice(x0, x1), wgt)
        out = total / jnp.maximum(count, 1.0)[..., None].astype(dtype)
        return out, count > 0

    raise ValueError(f"ensemble_patches: unknown mode {mode!r} (use 'reference' or 'average')")
