"""Tile size of tiled prediction from a memory budget (`config.magnet.memory_budget_mb`).

A tiled refinement stage holds, per tile of `t x t` patches, float32 maps of `(t + 1)^2` patch areas a few
times over (the upsampled P region and its uncertainty, the local patch stack, the refined patches, the
owned block's ensemble, P and output, XLA's temporaries), plus, for the whole stage, the refined patches
kept for the next tile column (one column of the grid). With `A = crop_h * crop_w * classes * 4` bytes:

    peak ~ BASE_MB + (grid rows + t) * A + (TILE_FACTOR + 2 * map_itemsize / 4) * (t + 1)^2 * A

(the last term's `2 * map_itemsize / 4`: the windows read from the host maps, stored as float32 or float16).

`TILE_FACTOR` was measured (peak RSS of `benchmarks/large.py` on a 20000 px image at crop 1250, 5
classes, float32 maps, `tile_patches=4`: 7.9 GB, i.e. ~8.2 patch areas per `(t + 1)^2`) and rounded up; `BASE_MB` is the
JAX runtime and the compiled stages. `tile_patches_for` picks the largest `t` whose estimate fits (at
least 1: a stage cannot run on less than one patch).
"""

from __future__ import annotations

__all__ = ["BASE_MB", "DEFAULT_BUDGET_MB", "TILE_FACTOR", "estimate_mb", "tile_patches_for"]

DEFAULT_BUDGET_MB = 4096
BASE_MB = 1024
TILE_FACTOR = 8
MAX_TILE_PATCHES = 16


def estimate_mb(
    t: int, crop_hw: tuple[int, int], num_classes: int, stage_hw: tuple[int, int], map_itemsize: int = 4
) -> float:
    """Estimated peak resident MB of a tiled stage `stage_hw` with tiles of `t x t` patches (see above)."""
    area_mb = crop_hw[0] * crop_hw[1] * num_classes * 4 / 2**20
    grid_rows = -(-stage_hw[0] // crop_hw[0]) + 1
    per_tile = (TILE_FACTOR + 2 * map_itemsize / 4) * (t + 1) ** 2 * area_mb
    return BASE_MB + (grid_rows + t) * area_mb + per_tile


def tile_patches_for(
    crop_hw: tuple[int, int], num_classes: int, stage_hw: tuple[int, int], budget_mb: float, map_itemsize: int = 4
) -> int:
    """The largest `t` in `[1, MAX_TILE_PATCHES]` with `estimate_mb(t, ...) <= budget_mb` (1 if none fits)."""
    t = 1
    while t < MAX_TILE_PATCHES and estimate_mb(t + 1, crop_hw, num_classes, stage_hw, map_itemsize) <= budget_mb:
        t += 1
    return t
