"""Host-side storage for streamed inference: stage maps by region, and the image at a scale by region.

`HostMap` holds a `[H, W, C]` (or `[H, W]`) array in RAM when it is small, else in a file that every
`read` / `write` maps (`np.memmap`) only for that call: the pages leave the process's resident set when
the call returns (dirty ones are written back by the kernel), so the resident memory stays at one
region whatever the map's size.

`scratch_dir(parent)` is a run's folder for map files, `parent/.magnet_tmp_<pid>`, removed when the run ends;
a run killed before that leaves it behind, and the next run in `parent` removes it (its pid is dead).

`ScaledImage` is `cv2.resize(image, scale, INTER_LINEAR)` read by region without resizing the whole
image. A region is resized from a crop of the source aligned to the scale's ratio (`p / q` per axis:
crop origins at multiples of `q` output and `p` input pixels, plus a margin), which gives OpenCV the
same per-pixel coefficients as for the whole image, so the result is the same bit for bit, when the
ratio is a dyadic fraction with few bits (`m / 2^d`, `d <= 8`, and the source coordinates exact in
float32): every power-of-two ratio and e.g. 20000 -> 512 (625/16). Other ratios resize the whole
image once (in memory) and serve regions from it.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from fractions import Fraction

import cv2
import numpy as np

from magnet_jax.rasters.large_io import ImageSource

__all__ = ["HostMap", "ScaledImage", "region_resize_exact", "scratch_dir"]

RAM_BYTES = 64 << 20  # maps up to this size stay in RAM
SCRATCH_PREFIX = ".magnet_tmp_"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_scratch(parent: str) -> list[str]:
    """Removes the `parent/.magnet_tmp_<pid>` folders of processes no longer running; returns them."""
    removed = []
    for name in os.listdir(parent) if os.path.isdir(parent) else ():
        pid = name[len(SCRATCH_PREFIX) :]
        if name.startswith(SCRATCH_PREFIX) and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed.append(os.path.join(parent, name))
    return removed


@contextlib.contextmanager
def scratch_dir(parent: str) -> Iterator[str]:
    """`parent/.magnet_tmp_<pid>` for this run's map files (stale ones removed first), removed on exit."""
    os.makedirs(parent, exist_ok=True)
    remove_stale_scratch(parent)
    path = os.path.join(parent, f"{SCRATCH_PREFIX}{os.getpid()}")
    os.makedirs(path, exist_ok=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class HostMap:
    """A host array read and written by rectangular region (see the module docstring).

    Args:
        shape: `(H, W)` or `(H, W, C)`.
        dtype: storage dtype (e.g. float32, float16, uint8); reads return it unchanged.
        folder: where the file goes (default: the system temporary folder); removed by `close()`.
        ram_bytes: maps up to this size live in RAM instead.
    """

    def __init__(self, shape: tuple[int, ...], dtype, *, folder: str | None = None, ram_bytes: int = RAM_BYTES):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._array = None
        self.path = None
        if self.nbytes <= ram_bytes:
            self._array = np.zeros(self.shape, self.dtype)
            return
        fd, self.path = tempfile.mkstemp(prefix="magnet_map_", suffix=".raw", dir=folder)
        os.ftruncate(fd, self.nbytes)  # sparse: no disk used until written
        os.close(fd)

    def _view(self, mode: str) -> np.ndarray:
        if self._array is not None:
            return self._array
        if self.path is None:
            raise ValueError("HostMap: used after close()")
        return np.memmap(self.path, dtype=self.dtype, mode=mode, shape=self.shape)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """A copy of `[y0:y1, x0:x1]`."""
        view = self._view("r")
        out = np.array(view[y0:y1, x0:x1])
        del view
        return out

    def write(self, y0: int, x0: int, block: np.ndarray) -> None:
        """`map[y0:y0 + h, x0:x0 + w] = block` (cast to the storage dtype)."""
        view = self._view("r+")
        view[y0 : y0 + block.shape[0], x0 : x0 + block.shape[1]] = block
        if isinstance(view, np.memmap):
            view.flush()
        del view

    def close(self) -> None:
        self._array = None
        if self.path is not None and os.path.exists(self.path):
            os.remove(self.path)
        self.path = None

    def __del__(self):  # the file is scratch data
        try:  # noqa: SIM105 (contextlib may be gone at interpreter exit)
            self.close()
        except Exception:
            pass


def _axis_exact(n_in: int, n_out: int) -> bool:
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


class ScaledImage:
    """The source image resized (cv2 INTER_LINEAR) to `scale_wh`, read by region (see the module docstring)."""

    def __init__(self, source: ImageSource, scale_wh: tuple[int, int]):
        self.source = source
        self.scale_wh = (int(scale_wh[0]), int(scale_wh[1]))
        h, w = source.size_hw
        self.identity = self.scale_wh == (w, h)
        self.exact_regions = self.identity or (_axis_exact(h, self.scale_wh[1]) and _axis_exact(w, self.scale_wh[0]))
        self._whole = None

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """`[y1 - y0, x1 - x0, 3]` uint8 of the resized image."""
        if self.identity:
            return self.source.read(y0, y1, x0, x1)
        if self.exact_regions:
            return region_resize_exact(self.source, self.scale_wh, y0, y1, x0, x1)
        if self._whole is None:
            self._whole = cv2.resize(self.source.whole(), self.scale_wh, interpolation=cv2.INTER_LINEAR)
        return self._whole[y0:y1, x0:x1].copy()

    def release(self) -> None:
        self._whole = None
