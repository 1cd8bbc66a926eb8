"""Tiles of a refinement stage for streamed inference: which pixels each tile owns and what it reads.

A tile is a block of `t x t` patches of the stage's grid (index `ix * ny + iy`, x-major). Tile (tx, ty)
covers patch columns `[a0, a1)` and rows `[b0, b1)` and *owns* the pixels `x in [X0[a0], X0[a1])`,
`y in [Y0[b0], Y0[b1])` (`X0` / `Y0`: patch origins, the last tile owns up to the map's edge). A pixel
is covered by at most two patches per axis (MagNet's grids overlap by less than half a patch), the
later of which belongs to the owning tile, so every patch covering an owned pixel lies in the
columns `[a0 - 1, a1)` and rows `[b0 - 1, b1)`: the tile's own patches plus, where patches overlap, the
last column of the previous tile column and the last row of the previous tile. Tiles run x-major, so
those have been refined already and are kept until no later tile needs them.

Per-axis cover tables reproduce `ops.patches.ensemble_patches`'s averaging order exactly: the
covering patches of a pixel in increasing grid index.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from magnet_jax.field_checks import check_integer_at_least
from magnet_jax.inference.plan import MagNetPlan, StagePlan
from magnet_jax.ops.patches import patch_boxes_int
from magnet_jax.ops.resize import bilinear_taps, nearest_indices
from magnet_jax.ops.roi_align import required_samples

__all__ = ["StageTiling", "Tile", "axis_cover", "taps_for"]


@dataclasses.dataclass(frozen=True)
class Tile:
    a0: int  # patch columns [a0, a1)
    a1: int
    b0: int  # patch rows [b0, b1)
    b1: int
    owned: tuple[int, int, int, int]  # (y0, y1, x0, x1) pixels this tile writes

    @property
    def owned_hw(self) -> tuple[int, int]:
        y0, y1, x0, x1 = self.owned
        return y1 - y0, x1 - x0


def axis_cover(starts: np.ndarray, ends: np.ndarray, p0: int, p1: int) -> tuple[np.ndarray, np.ndarray]:
    """Patches covering each pixel of `[p0, p1)` along one axis, lower grid index first.

    Returns `(index [L, 2] int32, -1 where none; offset [L, 2] int32 inside the patch)`.
    """
    pos = np.arange(p0, p1)
    hi = np.searchsorted(starts, pos, side="right") - 1  # the last patch starting at or before pos
    hi_ok = (hi >= 0) & (pos < ends[np.clip(hi, 0, None)])
    lo = hi - 1
    lo_ok = hi_ok & (lo >= 0) & (pos < ends[np.clip(lo, 0, None)])
    if (lo >= 1).any() and (pos < ends[np.clip(lo - 1, 0, None)])[lo >= 1].any():
        raise ValueError("streamed inference: a pixel is covered by more than two patches along an axis")
    first = np.where(lo_ok, lo, np.where(hi_ok, hi, -1))
    second = np.where(lo_ok, hi, -1)
    index = np.stack([first, second], 1).astype(np.int32)
    offset = np.where(index >= 0, pos[:, None] - starts[np.clip(index, 0, None)], 0).astype(np.int32)
    return index, offset


def taps_for(in_size: int, out_size: int, p0: int, p1: int, length: int):
    """Bilinear (align_corners=False) taps of output pixels `[p0, p1)`, padded to `length` with the last one.

    Returns `(lo, i0, i1, w0, w1)`: `lo` is the first input index read; `i0`, `i1` are relative to it.
    """
    i0, i1, w0, w1 = bilinear_taps(in_size, out_size, False)
    sel = np.minimum(np.arange(p0, p0 + length), p1 - 1)
    lo = int(i0[p0])
    return lo, (i0[sel] - lo).astype(np.int32), (i1[sel] - lo).astype(np.int32), w0[sel], w1[sel]


class StageTiling:
    """Geometry of one stage for streamed inference (host-side, NumPy)."""

    def __init__(self, stage: StagePlan, plan: MagNetPlan, tile_patches: int, prev_hw: tuple[int, int]):
        check_integer_at_least(tile_patches, 1, "magnet.tile_patches")  # 0 (from the budget) is resolved above
        self.stage, self.prev_hw = stage, (int(prev_hw[0]), int(prev_hw[1]))
        self.size_hw = stage.size_hw
        h, w = self.size_hw
        ih, iw = plan.input_hw
        boxes = patch_boxes_int(stage.ratios, stage.scale_wh)
        ny = len(np.unique(boxes[:, 1]))
        nx = boxes.shape[0] // ny
        self.nx, self.ny = nx, ny
        self.x0, self.x1 = boxes[::ny, 0], boxes[::ny, 2]
        self.y0, self.y1 = boxes[:ny, 1], boxes[:ny, 3]
        grid = np.array(
            [
                [x0, y0, x1, y1]
                for x0, x1 in zip(self.x0, self.x1, strict=True)
                for y0, y1 in zip(self.y0, self.y1, strict=True)
            ]
        )
        if nx * ny != boxes.shape[0] or not np.array_equal(grid, boxes):
            raise ValueError("streamed inference: the stage's patches do not form a regular x-major grid")
        self.box_hw = (int(self.y1[0] - self.y0[0]), int(self.x1[0] - self.x0[0]))
        self.boxes_f = stage.boxes  # [N, 4] float32, as RoI Align sees them
        self.max_samples = required_samples(self.boxes_f, (ih, iw))
        win_h, win_w = min(h, self.max_samples[0] * ih + 4), min(w, self.max_samples[1] * iw + 4)
        # RoI Align's read window per patch (ops.roi_align._window on the full map, in float32 as there)
        sy = np.clip(np.floor(np.maximum(self.boxes_f[:, 1], 0)).astype(np.int64), 0, h - win_h)
        sx = np.clip(np.floor(np.maximum(self.boxes_f[:, 0], 0)).astype(np.int64), 0, w - win_w)
        self.windows = np.stack([sy, sy + win_h, sx, sx + win_w], 1)  # [N, 4] (y0, y1, x0, x1)
        self.down_y, self.down_x = nearest_indices(h, ih), nearest_indices(w, iw)  # error map -> input size
        self.up_y, self.up_x = nearest_indices(ih, h), nearest_indices(iw, w)  # and back
        t = int(tile_patches)
        self.t = t
        self.tiles = []
        for a0 in range(0, nx, t):
            a1 = min(nx, a0 + t)
            for b0 in range(0, ny, t):
                b1 = min(ny, b0 + t)
                oy0 = 0 if b0 == 0 else int(self.y0[b0])
                oy1 = h if b1 == ny else int(self.y0[b1])
                ox0 = 0 if a0 == 0 else int(self.x0[a0])
                ox1 = w if a1 == nx else int(self.x0[a1])
                self.tiles.append(Tile(a0, a1, b0, b1, (oy0, oy1, ox0, ox1)))
        self.owned_max = tuple(max(tl.owned_hw[i] for tl in self.tiles) for i in range(2))
        self.samples_max = tuple(
            max(int(np.sum((d >= lo) & (d < hi))) for lo, hi in spans)
            for d, spans in (
                (self.down_y, {tl.owned[:2] for tl in self.tiles}),
                (self.down_x, {tl.owned[2:] for tl in self.tiles}),
            )
        )
        self.slots_hw = (t + 1, t + 1)  # local patch slots: (ix - (a0 - 1), iy - (b0 - 1))
        # the padded P region of a tile: its region (all patches selected: the largest), and room for the
        # padded owned block inside it
        regions = [(self.region(tl, np.ones(nx * ny, bool)), tl.owned) for tl in self.tiles]
        self.region_max = (
            max(max(r[1] - r[0], o[0] - r[0] + self.owned_max[0]) for r, o in regions),
            max(max(r[3] - r[2], o[2] - r[2] + self.owned_max[1]) for r, o in regions),
        )
        self.prev_max = self.prev_extent(self.region_max)

    def patch_index(self, ix: int, iy: int) -> int:
        return ix * self.ny + iy

    def own_patches(self, tile: Tile, selected: np.ndarray) -> list[int]:
        """Grid indices of the tile's selected patches, x-major."""
        return [
            self.patch_index(ix, iy)
            for ix in range(tile.a0, tile.a1)
            for iy in range(tile.b0, tile.b1)
            if selected[self.patch_index(ix, iy)]
        ]

    def region(self, tile: Tile, selected: np.ndarray) -> tuple[int, int, int, int]:
        """Pixels whose upsampled P the tile needs: its owned pixels and its patches' RoI windows."""
        y0, y1, x0, x1 = tile.owned
        for n in self.own_patches(tile, selected):
            wy0, wy1, wx0, wx1 = (int(v) for v in self.windows[n])
            y0, y1, x0, x1 = min(y0, wy0), max(y1, wy1), min(x0, wx0), max(x1, wx1)
        return y0, y1, x0, x1

    def prev_extent(self, length_hw: tuple[int, int]) -> tuple[int, int]:
        """Largest span of previous-map rows / columns that `length` consecutive output pixels read."""
        out = []
        for axis in (0, 1):
            n_in, n_out, n = self.prev_hw[axis], self.size_hw[axis], min(length_hw[axis], self.size_hw[axis])
            if n_in == n_out:  # an unchanged axis is not resampled: the window is the region itself
                out.append(int(length_hw[axis]))
                continue
            i0, i1, _, _ = bilinear_taps(n_in, n_out, False)
            span = i1[n - 1 :] - i0[: n_out - n + 1] + 1 if n_out > 1 else np.ones(1, np.int64)
            out.append(int(span.max()))
        return out[0], out[1]

    def upsample_taps(self, y0: int, y1: int, x0: int, x1: int, length_hw: tuple[int, int]):
        """Row and column taps (see `taps_for`) of the region, padded to `length_hw`."""
        return (
            taps_for(self.prev_hw[0], self.size_hw[0], y0, y1, length_hw[0]),
            taps_for(self.prev_hw[1], self.size_hw[1], x0, x1, length_hw[1]),
        )

    def cover_tables(self, tile: Tile, selected: np.ndarray, slots: dict[int, int]):
        """Ensemble tables of the tile's owned pixels, padded to `owned_max`.

        `slots` maps a grid index to its row in the local patch stack. Returns `(lut [(t+1)*(t+1)]` slot or
        -1 per local patch, `xi [OW, 2]`, `xo [OW, 2]`, `yi [OH, 2]`, `yo [OH, 2])` with local patch
        coordinates `ix - (a0 - 1)` / `iy - (b0 - 1)` (-1: none).
        """
        y0, y1, x0, x1 = tile.owned
        (oh, ow), (sh, sw) = self.owned_max, self.slots_hw
        xi, xo = axis_cover(self.x0, self.x1, x0, x1)
        yi, yo = axis_cover(self.y0, self.y1, y0, y1)
        xi = np.where(xi >= 0, xi - (tile.a0 - 1), -1)
        yi = np.where(yi >= 0, yi - (tile.b0 - 1), -1)
        if xi.max() >= sw or yi.max() >= sh or (xi[xi >= 0].min(initial=0) < 0) or (yi[yi >= 0].min(initial=0) < 0):
            raise ValueError("streamed inference: an owned pixel is covered by a patch outside the tile's reach")
        lut = np.full((sw, sh), -1, np.int32)
        for lx in range(sw):
            for ly in range(sh):
                ix, iy = tile.a0 - 1 + lx, tile.b0 - 1 + ly
                if 0 <= ix < self.nx and 0 <= iy < self.ny:
                    n = self.patch_index(ix, iy)
                    if selected[n] and n in slots:
                        lut[lx, ly] = slots[n]

        def pad(a, n):
            return np.concatenate([a, np.full((n - a.shape[0], 2), -1, np.int32)]) if a.shape[0] < n else a

        return lut.reshape(-1), pad(xi, ow), pad(xo, ow).clip(0), pad(yi, oh), pad(yo, oh).clip(0)

    def samples_in(self, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
        """Indices `r` (rows) and `c` (columns) of the input-size error map whose sampled pixel the tile owns."""
        y0, y1, x0, x1 = tile.owned
        rows = np.nonzero((self.down_y >= y0) & (self.down_y < y1))[0]
        cols = np.nonzero((self.down_x >= x0) & (self.down_x < x1))[0]
        return rows, cols

    def needed_later(self, tile: Tile) -> tuple[bool, bool]:
        """Whether the tile's last patch column / row overlaps the next one (so must be kept)."""
        right = tile.a1 < self.nx and self.x1[tile.a1 - 1] > self.x0[tile.a1]
        down = tile.b1 < self.ny and self.y1[tile.b1 - 1] > self.y0[tile.b1]
        return bool(right), bool(down)
