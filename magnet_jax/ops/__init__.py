"""Jit-able building blocks of MagNet (NHWC): resizing, RoI Align, point sampling, median filter, patch ensembling."""

from magnet_jax.ops.ensemble import ensemble_patches
from magnet_jax.ops.median import median_filter
from magnet_jax.ops.patches import certainty, patch_boxes_int, patch_boxes_px, patch_grid
from magnet_jax.ops.point_sample import point_sample, point_sample_batched
from magnet_jax.ops.resize import adaptive_avg_pool, resize_bilinear, resize_nearest
from magnet_jax.ops.roi_align import required_samples, roi_align, roi_align_batched

__all__ = [
    "adaptive_avg_pool",
    "certainty",
    "ensemble_patches",
    "median_filter",
    "patch_boxes_int",
    "patch_boxes_px",
    "patch_grid",
    "point_sample",
    "point_sample_batched",
    "required_samples",
    "resize_bilinear",
    "resize_nearest",
    "roi_align",
    "roi_align_batched",
]
