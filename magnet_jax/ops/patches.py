"""Patch grid, pixel boxes and certainty of MagNet (magnet/utils/geometry.py semantics), NHWC.

Patch geometry is static (it depends only on the scales and the crop size), so grids and pixel boxes
are NumPy arrays computed at trace time. Pasting refined patches back into a map is `ops.ensemble`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["certainty", "patch_boxes_int", "patch_boxes_px", "patch_grid", "patch_grid_px"]


def certainty(probs: jax.Array) -> jax.Array:
    """Top-1 minus top-2 probability over the last (class) axis: ``[..., C]`` -> ``[...]`` (a repeated maximum gives 0).

    The values of ``topk(probs, 2)``, computed with a running (max, second max) over the classes:
    elementwise ops only, which XLA fuses and vectorises (far faster than ``lax.top_k`` on CPU).
    """
    top1 = probs[..., 0]
    top2 = jnp.full_like(top1, -jnp.inf)
    for c in range(1, probs.shape[-1]):
        x = probs[..., c]
        top2 = jnp.maximum(top2, jnp.minimum(top1, x))
        top1 = jnp.maximum(top1, x)
    return top1 - top2


def patch_grid_px(scale_wh: tuple[int, int], crop_wh: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Integer crop boxes ``(x0, y0, x1, y1)`` in scale pixels, x-major (``for x: for y:``), the original's grid.

    Per axis ``n = ceil(S / C)``, ``step = int(C - (n * C - S) / max(n - 1, 1))``, origins ``i * step``.
    """
    cw, ch = int(crop_wh[0]), int(crop_wh[1])

    def axis(s: int, c: int) -> list[int]:
        n = math.ceil(s / c)
        step = int(c - (n * c - s) / max(n - 1, 1.0))
        return [i * step for i in range(n)]

    xs, ys = axis(int(scale_wh[0]), cw), axis(int(scale_wh[1]), ch)
    return [(x, y, x + cw, y + ch) for x in xs for y in ys]


def patch_grid(scale_wh: tuple[int, int], crop_wh: tuple[int, int]) -> np.ndarray:
    """Patch grid of a scale as ratios, x-major, like the original's ``get_patch_coords``.

    Args:
        scale_wh: image size ``(S_w, S_h)`` at this scale.
        crop_wh: patch size ``(C_w, C_h)``.

    Returns:
        ``[N, 4]`` float64 rows ``(x0 / S_w, y0 / S_h, x1 / S_w, y1 / S_h)`` of :func:`patch_grid_px`.
    """
    sw, sh = int(scale_wh[0]), int(scale_wh[1])
    rows = [(x0 / sw, y0 / sh, x1 / sw, y1 / sh) for x0, y0, x1, y1 in patch_grid_px(scale_wh, crop_wh)]
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
