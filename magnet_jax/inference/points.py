"""The exact global point budget of a streamed stage, from the input-size error map, in one pass.

The whole-image stage (`stages.py`, paper mode) writes the `budget` pixels with the largest score
`S = where(mask, up(median(down(error))), -1)` (`down` / `up`: nearest resizing to and from the input
size, `mask`: pixels inside the refined patches), then keeps those inside the mask. Ties at the
threshold go to the lowest row-major pixel index (`y * W + x`).

`S` takes one value per block `Y_r x X_c` of the nearest upsampling (`r, c` index the `[ih, iw]`
smoothed map), masked by a union of patch boxes. So the selection needs no full-size map: a histogram
of the `ih * iw` values weighted by the masked pixel count of each block gives the threshold `t` (the
budget-th largest score), and the per-row count of tied pixels gives the row-major position `(y*, x*)`
of the last tied pixel taken. A pixel is then chosen iff it is in the mask and
`S > t`, or `S == t` and `(y, x) < (y*, x*)` in row-major order: the same pixels as the whole-image rule.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from magnet_jax.inference.tiling import StageTiling, axis_cover

__all__ = ["PointRule", "point_rule"]


@dataclasses.dataclass(frozen=True)
class PointRule:
    """Chosen: in the mask and (score > t, or score == t and (y, x) < (y_star, x_star) row-major)."""

    t: float  # float32 value
    y_star: int
    x_star: int
    points: int  # pixels chosen


def _row_coverage(tiling: StageTiling, selected: np.ndarray):
    """Mask rows: `(row_key [H], cover [K, W] bool)` with one cover row per set of covering patch rows."""
    h, w = tiling.size_hw
    yi, _ = axis_cover(tiling.y0, tiling.y1, 0, h)
    keys, row_key = np.unique(yi, axis=0, return_inverse=True)
    sel = selected.reshape(tiling.nx, tiling.ny)
    cover = np.zeros((len(keys), w + 1), np.int32)
    for k, key in enumerate(keys):
        cols = sorted({int(ix) for j in key if j >= 0 for ix in np.nonzero(sel[:, j])[0]})
        for ix in cols:  # paint the patch's columns (difference array, then a cumulative sum)
            cover[k, tiling.x0[ix]] += 1
            cover[k, tiling.x1[ix]] -= 1
    return row_key.reshape(-1), np.cumsum(cover, axis=1)[:, :w] > 0


def point_rule(smooth: np.ndarray, tiling: StageTiling, selected: np.ndarray, budget: int) -> PointRule:
    """The threshold and tie cut-off of `budget` points for the smoothed error `smooth [ih, iw]` float32.

    Args:
        smooth: the median-smoothed error score at input size.
        tiling: the stage's geometry (nearest-resize indices, patch boxes).
        selected: `[N]` bool, the refined patches (their union is the mask).
        budget: the stage's point budget (`plan.StagePlan.budget`).
    """
    smooth = np.asarray(smooth, np.float32)
    ih, iw = smooth.shape
    h, _ = tiling.size_hw
    row_key, cover = _row_coverage(tiling, selected)
    # masked pixels per (row-cover key, error column c)
    per_key = np.stack([np.bincount(tiling.up_x, weights=cov, minlength=iw) for cov in cover]).astype(np.int64)
    pairs, pair_of_row = np.unique(np.stack([tiling.up_y, row_key], 1), axis=0, return_inverse=True)
    pair_of_row = pair_of_row.reshape(-1)
    rows_per_pair = np.bincount(pair_of_row, minlength=len(pairs))
    counts = np.zeros((ih, iw), np.int64)  # masked pixels per block (r, c)
    np.add.at(counts, pairs[:, 0], per_key[pairs[:, 1]] * rows_per_pair[:, None])
    total = int(counts.sum())
    if budget <= 0:
        return PointRule(float("inf"), 0, 0, 0)
    if budget >= total:  # every pixel of the mask (its scores are >= 0 > -1)
        return PointRule(-1.0, h, 0, total)
    values, inverse = np.unique(smooth.reshape(-1), return_inverse=True)  # ascending
    per_value = np.bincount(inverse.reshape(-1), weights=counts.reshape(-1), minlength=len(values))
    desc = per_value[::-1].astype(np.int64)
    cum = np.cumsum(desc)
    j = int(np.searchsorted(cum, budget, side="left"))  # first value (descending) reaching the budget
    t = np.float32(values[::-1][j])
    need = budget - int(cum[j] - desc[j])  # tied pixels to take, in row-major order
    tie = smooth == t
    ties_per_pair = (tie[pairs[:, 0]] * per_key[pairs[:, 1]]).sum(axis=1)
    cum_rows = np.cumsum(ties_per_pair[pair_of_row])
    y_star = int(np.searchsorted(cum_rows, need, side="left"))
    before = int(cum_rows[y_star - 1]) if y_star > 0 else 0
    row_ties = tie[tiling.up_y[y_star], tiling.up_x] & cover[row_key[y_star]]
    x_star = int(np.nonzero(row_ties)[0][need - before - 1]) + 1
    return PointRule(float(t), y_star, x_star, int(budget))
