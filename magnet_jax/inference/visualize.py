"""Pictures of predictions: colour palettes, the original demo's overlay, heat maps, side-by-side panels.

All functions take and return RGB uint8 arrays (`[H, W, 3]`); `save_png` writes them with OpenCV.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

__all__ = [
    "colorize",
    "default_palette",
    "heatmap",
    "overlay",
    "palette_for_config",
    "save_png",
    "side_by_side",
]


def default_palette(num_classes: int) -> np.ndarray:
    """A fixed, well-spread palette `[n, 3]` uint8 for datasets without their own colours."""
    rng = np.random.default_rng(12345)
    base = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
                     [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
                     [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128]], np.uint8)  # fmt: skip
    if num_classes <= len(base):
        return base[:num_classes].copy()
    extra = rng.integers(0, 256, size=(num_classes - len(base), 3), dtype=np.uint8)
    return np.concatenate([base, extra])


def palette_for_config(config) -> np.ndarray:
    """The dataset's class colours `[n, 3]` uint8 (RGB): Cityscapes' and DeepGlobe's official ones, the
    synthetic set's, a custom `config.data.color_table`, else `default_palette`."""
    n = int(config.data.num_classes)
    name = str(config.data.name)
    pal = None
    try:
        from magnet_jax.data import labels

        if name == "cityscapes":
            pal = np.array(labels.CITYSCAPES_PALETTE, np.uint8)
        elif name == "deepglobe":
            pal = np.array(labels.DEEPGLOBE_COLORS, np.uint8)
        elif name == "synthetic":
            from magnet_jax.data import synthetic

            pal = np.array(synthetic.PALETTE, np.uint8)
        elif str(config.data.color_table or "").strip():
            colors, classes = labels.parse_color_table(str(config.data.color_table))
            pal = default_palette(n)
            for color, cls in zip(colors, classes, strict=False):
                if 0 <= cls < n:
                    pal[cls] = color
    except (ImportError, AttributeError, ValueError):
        pal = None
    if pal is None or pal.shape[0] < n:
        pal = default_palette(n) if pal is None else np.concatenate([pal, default_palette(n)[pal.shape[0] :]])
    return pal[:n]


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
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"cannot write image {path}")
