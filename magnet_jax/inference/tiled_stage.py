"""One refinement stage of tiled inference, tile by tile, with its maps on the host.

Passes over the tiles (`tiling.py`), x-major:
1. (MagNet-Fast only, `k < N`) patch scores: upsample P, uncertainty, mean RoI Align per patch; the
   `k` most uncertain patches are selected globally (stable descending sort, as the whole-image stage).
2. refine: per tile, upsample P on the tile's region, refine its selected patches (backbone + coarse
   crops + refiner, the batch split over the device mesh), average the covering patches on the owned
   pixels (E, kept on the host) and sample `certainty(E) * U` where the input-size error map samples.
3. the error map `[ih, iw]` is median-smoothed; `points.point_rule` finds the exact budget threshold.
4. write: per tile, P is upsampled again and `where(chosen, E, P)` replaces E on the host (or, at the
   last stage, only its argmax is kept).
Resident memory: one tile's region and patches, the patches kept for overlapping neighbours and the
`[ih, iw]` maps; the stage maps themselves live in `host_maps.HostMap` files.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from magnet_jax.inference import kernels, tile_ops
from magnet_jax.inference.host_maps import HostMap, ScaledImage
from magnet_jax.inference.plan import MagNetPlan, StagePlan
from magnet_jax.inference.points import point_rule
from magnet_jax.inference.result import StageResult
from magnet_jax.inference.tiling import StageTiling, Tile
from magnet_jax.ops.resize import resize_bilinear
from magnet_jax.progress import tile_progress
from magnet_jax.sharding import data_sharding, replicated

__all__ = ["StageContext", "run_stage"]


@dataclasses.dataclass
class StageContext:
    """What a stage needs besides its plan: models, mesh, image, storage options."""

    plan: MagNetPlan
    mesh: jax.sharding.Mesh
    refine: object  # jitted kernels.make_refine_fn(...) for this stage's refiner
    backbone_state: object  # replicated on the mesh
    refiner_state: object
    image: ScaledImage  # the image at this stage's scale
    store_dtype: np.dtype
    folder: str | None
    preview_hw: tuple[int, int]
    ram_bytes: int  # maps up to this size stay in RAM
    progress: bool = False  # tiles done / total on stderr (progress.py)
    tissue: np.ndarray | None = None  # [N] bool: patches over tissue, the only ones refined (rasters/tissue.py)
    after_tile: Callable[[], None] | None = None  # the caller's hook after each tile (StreamOptions.after_tile)


class _Upsampler:
    """Upsampled P of any region of the stage, from the previous stage's host map."""

    def __init__(self, tiling: StageTiling, prev: HostMap):
        self.tiling, self.prev = tiling, prev
        self.skip = (tiling.prev_hw[0] == tiling.size_hw[0], tiling.prev_hw[1] == tiling.size_hw[1])
        self.whole = None
        if max(tiling.prev_hw) <= 64:  # tiny maps: resize_bilinear's matrix form, done once on the whole map
            whole = prev.read(0, prev.shape[0], 0, prev.shape[1]).astype(np.float32)
            self.whole = np.asarray(resize_bilinear(jnp.asarray(whole)[None], tiling.size_hw, align_corners=False)[0])

    def __call__(self, y0: int, y1: int, x0: int, x1: int, length_hw: tuple[int, int]) -> jax.Array:
        if self.whole is not None:
            return jnp.asarray(tile_ops.pad_to(self.whole[y0:y1, x0:x1], (*length_hw, self.whole.shape[2])))
        rows, cols = self.tiling.upsample_taps(y0, y1, x0, x1, length_hw)
        ph, pw = self.tiling.prev_extent(length_hw)
        (lo_r, *rt), (lo_c, *ct) = rows, cols
        window = self.prev.read(lo_r, min(lo_r + ph, self.prev.shape[0]), lo_c, min(lo_c + pw, self.prev.shape[1]))
        window = tile_ops.pad_to(window, (ph, pw, window.shape[2]))
        return kernels.upsample_region(window, tuple(rt), tuple(ct), skip_h=self.skip[0], skip_w=self.skip[1])


def _refine_tile(ctx, stage, tiling, probs_region, origin, ids) -> np.ndarray:
    """Refined patches of `ids`, resized to the box: `[n, bh, bw, C]` float32 on the host.

    Calls of `kernels.patch_batch x devices` patches (the last one padded with a selected patch, as the
    whole-image stage pads), the tile's P region replicated once on the mesh.
    """
    g = kernels.patch_batch(stage, ctx.plan) * ctx.mesh.devices.size
    padded = ids + [ids[0]] * (-len(ids) % g)
    data, rep = data_sharding(ctx.mesh), replicated(ctx.mesh)
    probs_rep, origin_rep = jax.device_put((probs_region, origin), rep)
    out = []
    for start in range(0, len(padded), g):
        chunk = padded[start : start + g]
        images = jax.device_put(kernels.patch_inputs(ctx.image.read, stage, ctx.plan, chunk), data)
        ids_d = jax.device_put(np.asarray(chunk, np.int32), data)
        refined = ctx.refine(ctx.backbone_state, ctx.refiner_state, probs_rep, origin_rep, images, ids_d)
        out.append(np.asarray(kernels.resize_to_box(np.asarray(refined), box_hw=tiling.box_hw)))
    return np.concatenate(out)[: len(ids)]


def _select(ctx, stage, tiling, up) -> tuple[np.ndarray, np.ndarray | None]:
    """`(selected [N] bool, order [k] or None)`: every patch, or MagNet-Fast's `k` most uncertain."""
    n = stage.n_total
    if stage.k >= n:
        return np.ones(n, bool), None
    scores = np.zeros(n, np.float32)
    static = {"input_hw": ctx.plan.input_hw, "max_samples": tiling.max_samples, "full_hw": tiling.size_hw}
    everything = np.ones(n, bool)
    width = max(2, tiling.t * tiling.t)  # >= 2 boxes: RoI Align maps over them as on the whole grid
    for tile in tiling.tiles:
        ids = tiling.own_patches(tile, everything)
        y0, _, x0, _ = region = tiling.region(tile, everything)
        boxes = tiling.boxes_f[ids + [ids[0]] * (width - len(ids))]
        unc = kernels.uncertainty(up(*region, tiling.region_max))
        got = kernels.patch_scores(unc, boxes, np.array([y0, x0], np.int32), **static)
        scores[ids] = np.asarray(got)[: len(ids)]
    order = np.argsort(-scores, kind="stable")[: stage.k].astype(np.int32)
    selected = np.zeros(n, bool)
    selected[order] = True
    return selected, order


def _release(cache: dict, tiling: StageTiling, done: int) -> None:
    """Drops kept patches that no tile after tile `done` reaches."""
    later = tiling.tiles[done + 1 :]
    for n in list(cache):
        ix, iy = divmod(n, tiling.ny)
        if not any(t.a0 - 1 <= ix < t.a1 and t.b0 - 1 <= iy < t.b1 for t in later):
            del cache[n]


def _keep(cache: dict, tiling: StageTiling, tile: Tile, ids: list[int], refined: np.ndarray) -> None:
    right, down = tiling.needed_later(tile)
    for n, r in zip(ids, refined, strict=True):
        ix, iy = divmod(n, tiling.ny)
        if (right and ix == tile.a1 - 1) or (down and iy == tile.b1 - 1):
            cache[n] = r.copy()  # a copy: a view would keep the tile's whole batch alive


def _preview_rows(size: int, n: int) -> np.ndarray:
    return (np.arange(n, dtype=np.int64) * size) // n


def run_stage(
    ctx: StageContext, stage: StagePlan, tiling: StageTiling, prev: HostMap, *, last: bool, keep_probs: bool,
    keep_labels: bool,
) -> StageResult:  # fmt: skip
    """Runs stage `stage` tile by tile (see the module docstring). Its P map is kept unless this is the last
    stage and not `keep_probs`; its argmax map at the last stage or with `keep_labels`."""
    t0 = time.perf_counter()
    h, w = tiling.size_hw
    ih, iw = ctx.plan.input_hw
    up = _Upsampler(tiling, prev)
    selected, order = _select(ctx, stage, tiling, up)
    selected = selected if ctx.tissue is None else selected & ctx.tissue
    c = ctx.plan.num_classes
    store = HostMap((h, w, c), ctx.store_dtype, folder=ctx.folder, ram_bytes=ctx.ram_bytes)
    error_raw = np.zeros((ih, iw), np.float32)
    unc_small = np.zeros((ih, iw), np.float32)
    (oh, ow), (sr, sc) = tiling.owned_max, tiling.samples_max
    bh, bw = tiling.box_hw
    slots_h = tiling.slots_hw[1]
    cache: dict[int, np.ndarray] = {}
    for ti, tile in enumerate(tile_progress(tiling.tiles, f"stage {stage.index} refine", ctx.progress)):
        ids = tiling.own_patches(tile, selected)
        ry0, _, rx0, _ = region = tiling.region(tile, selected)
        probs_r = up(*region, tiling.region_max)
        unc_r = kernels.uncertainty(probs_r)
        origin = np.array([ry0, rx0], np.int32)
        refined = _refine_tile(ctx, stage, tiling, probs_r, origin, ids) if ids else np.zeros((0, bh, bw, c))
        stack = np.zeros((tiling.slots_hw[0] * slots_h, bh, bw, c), np.float32)
        slots = {}
        for lx in range(tiling.slots_hw[0]):
            for ly in range(slots_h):
                n = tiling.patch_index(tile.a0 - 1 + lx, tile.b0 - 1 + ly)
                if not (0 <= tile.a0 - 1 + lx < tiling.nx and 0 <= tile.b0 - 1 + ly < tiling.ny):
                    continue
                src = refined[ids.index(n)] if n in ids else cache.get(n)
                if src is not None:
                    stack[lx * slots_h + ly] = src
                    slots[n] = lx * slots_h + ly
        tables = tiling.cover_tables(tile, selected, slots)
        rows, cols = tiling.samples_in(tile)
        y0, y1, x0, x1 = tile.owned
        srows = tile_ops.pad_to((tiling.down_y[rows] - y0).astype(np.int32), (sr,))
        scols = tile_ops.pad_to((tiling.down_x[cols] - x0).astype(np.int32), (sc,))
        offset = np.array([y0 - ry0, x0 - rx0], np.int32)
        ens, err_s, unc_s = tile_ops.ensemble_error(
            stack, *tables, unc_r, offset, srows, scols, slots_h=slots_h, owned_hw=(oh, ow)
        )
        store.write(y0, x0, np.asarray(ens)[: y1 - y0, : x1 - x0])
        error_raw[np.ix_(rows, cols)] = np.asarray(err_s)[: len(rows), : len(cols)]
        unc_small[np.ix_(rows, cols)] = np.asarray(unc_s)[: len(rows), : len(cols)]
        _keep(cache, tiling, tile, ids, refined)
        _release(cache, tiling, ti)
        del probs_r, unc_r, refined, stack, ens
        if ctx.after_tile is not None:
            ctx.after_tile()
    smooth = np.asarray(tile_ops.median_small(jnp.asarray(error_raw), kernel=stage.smooth_kernel))
    rule = point_rule(smooth, tiling, selected, stage.budget)
    labels = HostMap((h, w), np.uint8, folder=ctx.folder, ram_bytes=ctx.ram_bytes) if (last or keep_labels) else None
    ph, pw = ctx.preview_hw
    prow, pcol = _preview_rows(h, ph), _preview_rows(w, pw)
    preview = np.zeros((ph, pw), np.uint8)
    points = 0
    smooth_j = jnp.asarray(smooth)
    keep_p = keep_probs or not last
    for tile in tiling.tiles:
        y0, y1, x0, x1 = tile.owned
        lut, xi, _, yi, _ = tiling.cover_tables(tile, selected, {n: 0 for n in np.nonzero(selected)[0]})
        probs_o = up(y0, y1, x0, x1, (oh, ow))
        ens = tile_ops.pad_to(store.read(y0, y1, x0, x1), (oh, ow, c))
        gy = np.arange(y0, y0 + oh, dtype=np.int32)
        gx = np.arange(x0, x0 + ow, dtype=np.int32)
        brow = tiling.up_y[np.minimum(gy, h - 1)].astype(np.int32)
        bcol = tiling.up_x[np.minimum(gx, w - 1)].astype(np.int32)
        out, am, n_pts = tile_ops.finish_tile(
            probs_o, ens, lut, xi, yi, brow, bcol, smooth_j, np.float32(rule.t),
            np.array([rule.y_star, rule.x_star], np.int32), gy, gx, slots_h=slots_h,
        )  # fmt: skip
        points += int(n_pts)
        am = np.asarray(am)[: y1 - y0, : x1 - x0]
        if keep_p:
            store.write(y0, x0, np.asarray(out)[: y1 - y0, : x1 - x0])
        if labels is not None:
            labels.write(y0, x0, am)
        pr = np.nonzero((prow >= y0) & (prow < y1))[0]
        pc = np.nonzero((pcol >= x0) & (pcol < x1))[0]
        preview[np.ix_(pr, pc)] = am[np.ix_(prow[pr] - y0, pcol[pc] - x0)]
        del probs_o, ens, out
        if ctx.after_tile is not None:
            ctx.after_tile()
    if points != rule.points:
        raise RuntimeError(f"stage {stage.index}: wrote {points} points, the budget rule expected {rule.points}")
    if not keep_p:
        store.close()
    return StageResult(
        stage.index, (h, w), store if keep_p else None, labels, unc_small, smooth, selected=order, points=points,
        seconds=time.perf_counter() - t0, preview=preview,
    )  # fmt: skip
