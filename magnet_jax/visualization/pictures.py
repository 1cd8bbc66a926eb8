"""Pictures of predictions: colour palettes, the original demo's overlay, heat maps, side-by-side panels.

All functions take and return RGB uint8 arrays (`[H, W, 3]`); `save_png` writes them with OpenCV.
Captioned figures (class legend, colour bars; matplotlib) are in `figures.py`.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from magnet_jax.preprocess import write_image

__all__ = [
    "colorize",
    "default_palette",
    "heatmap",
    "overlay",
    "save_png",
    "side_by_side",
]


def default_palette(num_classes: int) -> np.ndarray:
    """A fixed, well-spread palette `[n, 3]` uint8 for datasets without their own colours (the data layer's)."""
    from magnet_jax.data.datasets.base import default_palette as palette

    return palette(num_classes)


def colorize(
    label: np.ndarray, palette: np.ndarray, ignore_color: tuple[int, int, int] = (255, 255, 255)
) -> np.ndarray:
    """Class ids `[H, W]` -> RGB `[H, W, 3]`; ids outside the palette (ignore) get `ignore_color`."""
    lut = np.empty((256, 3), np.uint8)
    lut[:] = ignore_color
    lut[: len(palette)] = palette[:256]
    return lut[np.asarray(label).astype(np.int64).clip(0, 255)]


def overlay(image: np.ndarray, pred: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """The original demo's picture: colourised prediction resized (bilinear) to the image, 50/50 blend."""
    color = colorize(pred, palette)
    h, w = image.shape[:2]
    if color.shape[:2] != (h, w):
        color = cv2.resize(color, (w, h), interpolation=cv2.INTER_LINEAR)
    return (0.5 * image.astype(np.float64) + 0.5 * color.astype(np.float64)).astype(np.uint8)


def heatmap(values: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """`[H, W]` float map -> RGB heat map (inferno), scaled to `[0, vmax]` (default: the map's maximum)."""
    v = np.asarray(values, np.float32)
    top = float(np.max(v)) if vmax is None else float(vmax)
    top = top if top > 1e-12 else 1.0
    u8 = np.clip(v / top * 255.0, 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(u8, cv2.COLORMAP_INFERNO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def side_by_side(panels: list[np.ndarray], height: int = 512, gap: int = 10) -> np.ndarray:
    """Panels (RGB) resized to one height and joined left to right with `gap`-pixel white separators."""
    out = []
    for i, p in enumerate(panels):
        h, w = p.shape[:2]
        nw = max(1, int(round(w * height / h)))
        interp = cv2.INTER_AREA if h > height else cv2.INTER_LINEAR
        out.append(cv2.resize(p, (nw, height), interpolation=interp))
        if i + 1 < len(panels):
            out.append(np.full((height, gap, 3), 255, np.uint8))
    return np.concatenate(out, axis=1)


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Writes an RGB (or single-channel) uint8 image; raises OSError if OpenCV cannot write it."""
    arr = np.asarray(rgb)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    write_image(path, arr)  # through bytes: any file name, and a full disk names the file
