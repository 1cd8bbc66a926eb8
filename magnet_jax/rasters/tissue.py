"""Tissue masks for whole slides: which patches hold any foreground, and which label pixels none touched.

`tissue_mask(source)`: Otsu's threshold on the grey image at the lowest pyramid level (or, without a
pyramid, the image sampled to at most `MASK_SIDE` px): tissue is darker than the bright glass, dilated by
one mask pixel so that edges are kept; an image without contrast is all tissue. `patches_with_tissue`
says, per patch box of a stage, whether the mask has a foreground pixel under it; tiled prediction
refines only those. `mark_ignored` sets the final label map to `IGNORE` (255, the label TIFF's nodata
value, never a class) where every covering patch was skipped: those pixels were not predicted.
"""

from __future__ import annotations

import cv2
import numpy as np

from magnet_jax.rasters.large_io import ImageSource, read_sampled

__all__ = ["IGNORE", "mark_ignored", "patches_with_tissue", "tissue_mask"]

IGNORE = 255
MASK_SIDE = 2048


def tissue_mask(source: ImageSource) -> np.ndarray:
    """`[h, w]` bool foreground of the image at a low resolution (see the module docstring)."""
    level = source.levels[-1]
    h, w = level.size_hw
    step = max(1, -(-max(h, w) // MASK_SIDE))
    rgb = read_sampled(level, np.arange(0, h, step), np.arange(0, w, step))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if int(grey.max()) - int(grey.min()) < 8:
        return np.ones(grey.shape, bool)
    _, fg = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    return cv2.dilate(fg, np.ones((3, 3), np.uint8)).astype(bool)


def patches_with_tissue(mask: np.ndarray, boxes: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """`[N]` bool: whether any mask pixel under each `(x0, y0, x1, y1)` box of a `size_hw` map is tissue."""
    (mh, mw), (h, w) = mask.shape, size_hw
    integral = cv2.integral(mask.astype(np.uint8))  # [mh + 1, mw + 1]
    b = np.asarray(boxes, np.float64)
    x0 = np.clip(np.floor(b[:, 0] * mw / w), 0, mw - 1).astype(int)
    y0 = np.clip(np.floor(b[:, 1] * mh / h), 0, mh - 1).astype(int)
    x1 = np.clip(np.ceil(b[:, 2] * mw / w), x0 + 1, mw).astype(int)
    y1 = np.clip(np.ceil(b[:, 3] * mh / h), y0 + 1, mh).astype(int)
    return (integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]) > 0


def mark_ignored(labels, xs: tuple[np.ndarray, np.ndarray], ys: tuple[np.ndarray, np.ndarray], kept: np.ndarray,
                 band_rows: int = 256) -> int:  # fmt: skip
    """Sets `IGNORE` in `labels` (`read(y0, y1, x0, x1)` / `write(y0, x0, block)`, `[H, W]`) where no kept
    patch covers a pixel. The grid: patch columns `[xs[0][i], xs[1][i])`, rows `[ys[0][j], ys[1][j])`, `kept`
    `[nx * ny]` bool, x-major. Returns the number of pixels set."""
    h, w = labels.shape
    nx, ny = len(xs[0]), len(ys[0])
    cols = np.arange(w)
    cover_x = ((cols[:, None] >= xs[0][None]) & (cols[:, None] < xs[1][None])).astype(np.float32)  # [W, nx]
    kept_xy = kept.reshape(nx, ny).astype(np.float32)
    count = 0
    for r0 in range(0, h, band_rows):
        r1 = min(h, r0 + band_rows)
        rows = np.arange(r0, r1)
        cover_y = ((rows[:, None] >= ys[0][None]) & (rows[:, None] < ys[1][None])).astype(np.float32)  # [b, ny]
        ignored = (cover_y @ kept_xy.T @ cover_x.T) == 0  # [b, W]: no kept patch covers the pixel
        if ignored.any():
            band = labels.read(r0, r1, 0, w)
            band[ignored] = IGNORE
            labels.write(r0, 0, band)
            count += int(ignored.sum())
    return count
