"""Whole-slide images (SVS, NDPI, MRXS, SCN, ... and generic tiled TIFF) read by region through OpenSlide.

`slide_levels(path)` gives, per pyramid level (full resolution first), its `(height, width)` and a reader
`(y0, y1, x0, x1) -> [h, w, 3] uint8` in that level's pixels; `large_io.open_image(path, reader=...)`
wraps them as `ImageSource`s (kind `slide (openslide)`). OpenSlide returns RGBA: pixels outside the
scanned area (alpha 0) take the slide's background colour (`openslide.background-color`, white if
unset), partly transparent ones are blended onto it. `openslide-python` and `openslide-bin` (the
library itself, no system package needed) are in requirements.txt.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["SLIDE_EXTENSIONS", "slide_levels"]

SLIDE_EXTENSIONS = (".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide")

Reader = Callable[[int, int, int, int], np.ndarray]


def _background(slide) -> np.ndarray:
    hexa = str(slide.properties.get("openslide.background-color", "FFFFFF"))
    try:
        return np.array([int(hexa[i : i + 2], 16) for i in (0, 2, 4)], np.float32)
    except ValueError:
        return np.full(3, 255, np.float32)


def slide_levels(path: str) -> list[tuple[tuple[int, int], Reader]]:
    """`[((h, w), reader), ...]` per level of the slide at `path` (see the module docstring).

    Raises ValueError (one line) when OpenSlide cannot open the file."""
    import openslide

    try:
        slide = openslide.OpenSlide(path)
    except (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError) as e:
        raise ValueError(f"{path}: OpenSlide cannot read it ({type(e).__name__}: {e})") from None
    background = _background(slide)

    def reader_of(level: int, downsample: float) -> Reader:
        def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            if y1 <= y0 or x1 <= x0:
                return np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)
            origin = (int(round(x0 * downsample)), int(round(y0 * downsample)))  # level-0 coordinates
            rgba = np.asarray(slide.read_region(origin, level, (x1 - x0, y1 - y0)))
            alpha = rgba[..., 3:4]
            if alpha.min() == 255:
                return np.ascontiguousarray(rgba[..., :3])
            a = alpha.astype(np.float32) / 255.0
            return np.rint(rgba[..., :3] * a + background * (1.0 - a)).astype(np.uint8)

        return read

    return [
        ((int(h), int(w)), reader_of(i, float(ds)))
        for i, ((w, h), ds) in enumerate(zip(slide.level_dimensions, slide.level_downsamples, strict=True))
    ]
