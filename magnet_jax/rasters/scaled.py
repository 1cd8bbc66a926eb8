"""The image at a MagNet scale, read by region: `cv2.resize(image, scale, INTER_LINEAR)` without the whole image.

`ScaledImage(source, scale_wh).read(y0, y1, x0, x1)` equals `cv2.resize(whole, scale_wh)[y0:y1, x0:x1]`. A
region is resized from a crop of the source aligned to the scale's ratio (`p / q` per axis: crop origins at
multiples of `q` output and `p` input pixels, plus a margin), which gives OpenCV the same per-pixel
coefficients as for the whole image, so the result is the same bit for bit, when the ratio is a dyadic
fraction with few bits (`m / 2^d`, `d <= 8`, and the source coordinates exact in float32): every
power-of-two ratio and e.g. 20000 -> 512 (625/16). Large regions (stage 0 reads the whole scale) are
resized in aligned bands of rows, so at most `BAND_BYTES` of source pixels are decoded at a time.

Other ratios need the whole image resized once in memory (`whole_resize_bytes`); `check_scales` refuses
them when that exceeds the memory budget, naming exact scales to use instead (`exact_scales`).

`pyramid=True` (opt-in, `config.magnet.input_pyramid`): a pyramidal input is resized from its smallest
level at least as large as the scale (`pyramid_level`) instead of from full resolution: a coarse stage then
decodes a few megapixels instead of the whole image, but its pixels are those of the file's own
downsampling followed by OpenCV's, not OpenCV's resize of level 0, so they differ slightly from the
whole-image run and from the original.
"""

from __future__ import annotations

import math
from fractions import Fraction

import cv2
import numpy as np

from magnet_jax.rasters.large_io import ImageSource

__all__ = ["ScaledImage", "check_scales", "exact_scales", "pyramid_level", "region_resize_exact", "whole_resize_bytes"]

BAND_BYTES = 128 << 20  # source pixels decoded per band of a large region read


def axis_exact(n_in: int, n_out: int) -> bool:
    """Whether OpenCV's float32 source coordinates along this axis are exact (see the module docstring)."""
    r = Fraction(n_in, n_out)
    d = int(math.log2(r.denominator)) if r.denominator & (r.denominator - 1) == 0 else None
    return d is not None and d <= 8 and n_in.bit_length() + d + 1 <= 24


def _aligned(n_in: int, n_out: int, a: int, b: int, margin: int) -> tuple[int, int, int, int]:
    """Output range `[a, b)` widened by `margin` and aligned to the ratio -> (out0, out1, in0, in1)."""
    r = Fraction(n_in, n_out)
    p, q = r.numerator, r.denominator
    o0 = max(0, ((a - margin) // q) * q)
    o1 = min(n_out, -(-(b + margin) // q) * q)
    i0, i1 = o0 * p // q, min(n_in, -(-(o1 * p) // q))
    return o0, o1, i0, i1


def region_resize_exact(source: ImageSource, scale_wh: tuple[int, int], y0: int, y1: int, x0: int, x1: int):
    """`cv2.resize(whole, scale_wh, INTER_LINEAR)[y0:y1, x0:x1]` from an aligned crop (exact ratios only)."""
    (h, w), (sw, sh) = source.size_hw, scale_wh
    margin = 4
    oy0, oy1, iy0, iy1 = _aligned(h, sh, y0, y1, margin)
    ox0, ox1, ix0, ix1 = _aligned(w, sw, x0, x1, margin)
    crop = source.read(iy0, iy1, ix0, ix1)
    out = cv2.resize(crop, (ox1 - ox0, oy1 - oy0), interpolation=cv2.INTER_LINEAR)
    return out[y0 - oy0 : y1 - oy0, x0 - ox0 : x1 - ox0]


def whole_resize_bytes(size_hw: tuple[int, int], scale_wh: tuple[int, int]) -> int:
    """Resident bytes of resizing the whole image in memory: the decoded source and the resized copy."""
    return 3 * (size_hw[0] * size_hw[1] + scale_wh[0] * scale_wh[1])


def exact_scales(size_hw: tuple[int, int], up_to: int = 6) -> list[str]:
    """Scales `W/2^k-H/2^k` (k = 0..up_to, both sides integers) that `ScaledImage` reads by region exactly."""
    h, w = size_hw
    out = []
    for k in range(up_to + 1):
        if w % (1 << k) or h % (1 << k):
            break
        out.append(f"{w >> k}-{h >> k}")
    return out


def pyramid_level(source: ImageSource, scale_wh: tuple[int, int]) -> ImageSource:
    """The smallest level of `source.levels` at least `scale_wh` on both axes (`source` itself if none)."""
    best = source
    for level in source.levels[1:]:
        (h, w), (bh, bw) = level.size_hw, best.size_hw
        if w >= scale_wh[0] and h >= scale_wh[1] and h * w < bh * bw:
            best = level
    return best


def check_scales(
    source: ImageSource, scales: list[tuple[int, int]], budget_bytes: int | None, *, pyramid: bool = False
) -> None:
    """Raises ValueError (one line: what to change) when a scale would resize the whole image in memory
    (`ScaledImage.exact_regions` False) above `budget_bytes`; `None`: no budget."""
    for sw, sh in scales:
        scaled = ScaledImage(source, (sw, sh), pyramid=pyramid)
        need = whole_resize_bytes(scaled.source.size_hw, (sw, sh))
        if scaled.exact_regions or budget_bytes is None or need <= budget_bytes:
            continue
        h, w = source.size_hw
        raise ValueError(
            f"config.magnet.scales: scale {sw}-{sh} is not a power-of-two fraction of the {w}x{h} image "
            f"{source.path}, so it needs the whole image resized in memory ({need >> 20} MB > "
            f"config.magnet.memory_budget_mb={budget_bytes >> 20}); use scales that divide the image size by "
            f"powers of two (here: {', '.join(exact_scales(source.size_hw)) or 'none: crop the image'}) or raise "
            "config.magnet.memory_budget_mb"
        )


class ScaledImage:
    """The source image resized (cv2 INTER_LINEAR) to `scale_wh`, read by region (see the module docstring)."""

    def __init__(
        self, source: ImageSource, scale_wh: tuple[int, int], *, band_bytes: int = BAND_BYTES, pyramid: bool = False
    ):
        self.scale_wh = (int(scale_wh[0]), int(scale_wh[1]))
        self.source = pyramid_level(source, self.scale_wh) if pyramid else source  # what is resized
        self.band_bytes = int(band_bytes)
        h, w = self.source.size_hw
        self.identity = self.scale_wh == (w, h)
        self.exact_regions = self.identity or (axis_exact(h, self.scale_wh[1]) and axis_exact(w, self.scale_wh[0]))
        self._whole = None

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """`[y1 - y0, x1 - x0, 3]` uint8 of the resized image."""
        if self.identity:
            return self.source.read(y0, y1, x0, x1)
        if self.exact_regions:
            return self._read_bands(y0, y1, x0, x1)
        if self._whole is None:
            self._whole = cv2.resize(self.source.whole(), self.scale_wh, interpolation=cv2.INTER_LINEAR)
        return self._whole[y0:y1, x0:x1].copy()

    def _read_bands(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Aligned bands of output rows, each an exact region read (so their concatenation is exact too)."""
        (h, w), (sw, sh) = self.source.size_hw, self.scale_wh
        src_row_bytes = 3 * max(1, (x1 - x0) * w // sw)
        q = Fraction(h, sh).denominator  # band edges at multiples of q keep each band's crop aligned
        rows = max(q, (self.band_bytes // src_row_bytes * sh // h) // q * q)
        if y1 - y0 <= rows:
            return region_resize_exact(self.source, self.scale_wh, y0, y1, x0, x1)
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for b0 in range(y0, y1, rows):
            b1 = min(y1, b0 + rows)
            out[b0 - y0 : b1 - y0] = region_resize_exact(self.source, self.scale_wh, b0, b1, x0, x1)
        return out

    def release(self) -> None:
        self._whole = None
