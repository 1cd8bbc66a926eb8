"""Point sampling equal to the original's ``point_sample`` (``F.grid_sample`` at ``2 * p - 1``), NHWC."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["point_sample", "point_sample_batched"]


@jax.jit
def point_sample(feat: jax.Array, points_xy: jax.Array) -> jax.Array:
    """Bilinear samples of ``feat`` at ``[0, 1]``-normalised points.

    Same as ``F.grid_sample(feat, 2 * p - 1, mode='bilinear', padding_mode='zeros', align_corners=False)``:
    a point ``p = (x, y)`` maps to pixel coordinates ``(x * W - 0.5, y * H - 0.5)`` (pixel centres at
    integers), and corners outside the image contribute zero.

    Args:
        feat: ``[H, W, C]`` feature map.
        points_xy: ``[P, 2]`` points ``(x, y)`` in ``[0, 1]`` (values outside are allowed).

    Returns:
        ``[P, C]`` samples (float dtype of ``feat``; integer/bool maps are sampled as float32).
    """
    h, w, c = feat.shape
    if not jnp.issubdtype(feat.dtype, jnp.floating):
        feat = feat.astype(jnp.float32)
    pts = jnp.asarray(points_xy, dtype=jnp.float32)
    grid = 2.0 * pts - 1.0  # the original's normalisation; 2 * p is exact
    # grid_sample's unnormalisation (align_corners=False): ((g + 1) * size - 1) / 2 = (g + 1) * (size / 2) - 0.5.
    ix = (grid[:, 0] + 1.0) * jnp.float32(w / 2) - 0.5
    iy = (grid[:, 1] + 1.0) * jnp.float32(h / 2) - 0.5
    x0 = jnp.floor(ix)
    y0 = jnp.floor(iy)
    wx1 = ix - x0
    wy1 = iy - y0
    wx0 = (x0 + 1.0) - ix
    wy0 = (y0 + 1.0) - iy
    x0i = x0.astype(jnp.int32)
    y0i = y0.astype(jnp.int32)
    flat = feat.reshape(h * w, c)
    out = jnp.zeros((pts.shape[0], c), dtype=feat.dtype)
    for dy, wy in ((0, wy0), (1, wy1)):
        for dx, wx in ((0, wx0), (1, wx1)):
            xx = x0i + dx
            yy = y0i + dy
            inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
            idx = jnp.clip(yy, 0, h - 1) * w + jnp.clip(xx, 0, w - 1)
            weight = jnp.where(inside, wx * wy, 0.0).astype(feat.dtype)
            out = out + weight[:, None] * jnp.take(flat, idx, axis=0)
    return out


@jax.jit
def point_sample_batched(feat: jax.Array, points_xy: jax.Array) -> jax.Array:
    """:func:`point_sample` per image: ``feat [B, H, W, C]``, ``points_xy [B, P, 2]`` -> ``[B, P, C]``."""
    return jax.vmap(point_sample)(feat, points_xy)
