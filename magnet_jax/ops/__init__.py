"""Jit-able building blocks of MagNet (NHWC): resizing, RoI Align, point sampling, median filter, patches."""

from magnet_jax.ops.resize import adaptive_avg_pool, resize_bilinear, resize_nearest

__all__ = [
    "adaptive_avg_pool",
    "resize_bilinear",
    "resize_nearest",
]
