"""Tiled MagNet prediction for images whose stage maps do not fit in memory (gigapixel images).

`MagNetPredictor.predict` (`predictor.py`) comes here when `needs_streaming` says so. Every refinement
stage runs tile by tile (`tiled_stage.py`: a tile is `tile_patches x tile_patches` patches), its maps kept
on the host in `host_maps.HostMap` files; the image is read by region (`large_io.open_image`: BigTIFF /
tiled TIFF without loading it, other formats in memory). Each tile's patch batch is split over the
predictor's devices. Resident memory is bounded by one tile's working set plus the `[ih, iw]` coarse maps,
not by the image size.

Results equal the whole-image run (`compat="paper"`) pixel for pixel on XLA:CPU with float32 stage maps:
both call the same region kernels (`kernels.py`) on the same pixels (tested). Each scale of the image is
resized by region where OpenCV's coefficients allow it exactly (power-of-two-denominator ratios,
`rasters/scaled.py`), else the whole image is resized once in memory, within `memory_budget_mb` only (which
also sizes the tiles, `memory_budget.py`); `input_pyramid` resizes from the input's pyramid levels (not
pixel-equal). `stream_dtype="float16"` halves
the disk traffic; measured on a 1024 px image with random weights, its last stage agreed on 99.986% of the
pixels, so float32 is the default. Point budgets are exact (`points.py`; ties go to the lower row-major
pixel index, as in the whole-image stage). `compat="reference"` is not tiled (its PyTorch tie-breaking
replay needs the whole score map).

`needs_streaming`: `streamed="auto"` tiles when the largest stage map `[H, W, C]` in float32 exceeds
`STREAM_AUTO_BYTES` (1 GiB; e.g. 7 classes above ~6200 x 6200 px, 19 classes above ~3760 x 3760 px),
`"on"` / `"off"` force it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from magnet_jax.field_checks import STORE_DTYPES, STREAM_MODES, check_choice, check_integer_at_least
from magnet_jax.inference import kernels
from magnet_jax.inference.host_maps import HostMap, ScaledImage
from magnet_jax.inference.plan import MagNetPlan
from magnet_jax.inference.result import MagNetResult, StageResult
from magnet_jax.inference.tiled_stage import StageContext, run_stage
from magnet_jax.inference.tiling import StageTiling, taps_for
from magnet_jax.memory_budget import DEFAULT_BUDGET_MB, tile_patches_for
from magnet_jax.progress import progress_enabled
from magnet_jax.rasters.large_io import ImageSource
from magnet_jax.rasters.scaled import check_scales
from magnet_jax.rasters.tissue import mark_ignored, patches_with_tissue, tissue_mask

__all__ = ["STREAM_AUTO_BYTES", "StreamOptions", "argmax_bands", "needs_streaming", "predict_tiled"]


STREAM_AUTO_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class StreamOptions:
    """How to stream (see the module docstring); `from_config` reads `config.magnet.*`."""

    mode: str = "auto"  # auto | on | off
    tile_patches: int = 0  # a tile is tile_patches x tile_patches patches; 0: from memory_budget_mb
    memory_budget_mb: int = DEFAULT_BUDGET_MB  # sets tile_patches (memory_budget.py) and caps whole-image resizes
    progress: bool = False  # tiles done / total per stage on stderr (tqdm)
    pyramid: bool = False  # resize each scale from the input's nearest pyramid level (rasters/scaled.py)
    tissue_mask: bool = False  # refine only patches over tissue, label the rest 255 (rasters/tissue.py)
    store_dtype: str = "float32"  # float32 (exact) | float16 (half the disk traffic)
    work_dir: str | None = None  # where the stage map files go (default: the system temporary folder)
    preview_max: int = 2048  # longest side of the preview pictures
    ram_bytes: int = 64 << 20  # stage maps up to this size stay in RAM, larger ones go to files
    # called after each tile, once its buffers are dropped: the entry point's allocator hook (main.py's commands
    # pass `allocator.release_heap`: freed per-tile buffers fragment the tuned heap, +16% peak RSS at 10k px)
    after_tile: Callable[[], None] | None = None

    def __post_init__(self):
        check_choice(self.mode, STREAM_MODES, "magnet.streamed")
        check_integer_at_least(self.tile_patches, 0, "magnet.tile_patches")
        check_choice(self.store_dtype, STORE_DTYPES, "magnet.stream_dtype")

    @classmethod
    def from_config(cls, config, **overrides) -> StreamOptions:
        m = config.magnet
        kw = {"mode": str(m.streamed), "tile_patches": int(m.tile_patches), "store_dtype": str(m.stream_dtype),
              "memory_budget_mb": int(m.memory_budget_mb), "progress": progress_enabled(config.predict.progress),
              "pyramid": bool(m.input_pyramid), "tissue_mask": bool(config.predict.tissue_mask)}
        kw.update(overrides)
        return cls(**kw)


def largest_map_bytes(plan: MagNetPlan) -> int:
    """Bytes of the largest stage map `[H, W, C]` float32 of the plan."""
    return max(w * h for w, h in plan.scales) * plan.num_classes * 4


def needs_streaming(plan: MagNetPlan, options: StreamOptions) -> bool:
    """Whether prediction runs tile by tile (see the module docstring for the `auto` threshold)."""
    if options.mode != "auto":
        return options.mode == "on"
    return largest_map_bytes(plan) > STREAM_AUTO_BYTES


def predict_tiled(
    predictor, refine_fns: list, source: ImageSource, *, keep_probs: bool, keep_labels: bool, work_dir: str | None
) -> MagNetResult:
    """One image tile by tile (see the module docstring): `predictor` gives the plan, weights, mesh and
    options, `refine_fns` the jitted refine kernel of each stage. Map files go to `work_dir` (default:
    `predictor.stream.work_dir`); the caller closes the result to remove them."""
    t_start = time.perf_counter()
    plan, opts = predictor.plan, predictor.stream
    ih, iw = plan.input_hw
    longest = max(plan.last_hw)
    preview_hw = tuple(max(1, int(round(s * min(1.0, opts.preview_max / longest)))) for s in plan.last_hw)
    check_scales(source, plan.scales, opts.memory_budget_mb << 20, pyramid=opts.pyramid)  # before any work
    t0 = time.perf_counter()
    mask = tissue_mask(source) if opts.tissue_mask else None
    scale0 = ScaledImage(source, plan.scales[0], pyramid=opts.pyramid)
    probs0, am0 = predictor.stage0(kernels.stage0_input(scale0.read, plan))
    folder = work_dir or opts.work_dir  # stage 0's maps too: never the system temporary folder's orphans
    prev = HostMap((ih, iw, plan.num_classes), np.float32, folder=folder, ram_bytes=opts.ram_bytes)
    prev.write(0, 0, np.asarray(probs0))
    labels0 = HostMap((ih, iw), np.uint8, folder=folder, ram_bytes=opts.ram_bytes)
    labels0.write(0, 0, np.asarray(am0))
    zeros = np.zeros((ih, iw), np.float32)
    stages = [
        StageResult(0, (ih, iw), prev, labels0, zeros, zeros, seconds=time.perf_counter() - t0,
                    preview=np.asarray(am0))
    ]  # fmt: skip
    prev_hw = (ih, iw)
    keep_maps = keep_probs or keep_labels
    for i, st in enumerate(plan.stages):
        ctx = StageContext(
            plan, predictor.mesh, refine_fns[i], predictor.backbone_state, predictor.refiner_state(i),
            ScaledImage(source, st.scale_wh, pyramid=opts.pyramid), np.dtype(opts.store_dtype), folder, preview_hw,
            opts.ram_bytes, opts.progress, None if mask is None else patches_with_tissue(mask, st.boxes, st.size_hw),
            opts.after_tile,
        )  # fmt: skip
        tiling = StageTiling(st, plan, opts.tile_patches or tile_patches_for(
            plan.crop_wh[::-1], plan.num_classes, st.size_hw, opts.memory_budget_mb, np.dtype(opts.store_dtype).itemsize
        ), prev_hw)  # fmt: skip
        last = i == len(plan.stages) - 1
        out = run_stage(ctx, st, tiling, prev, last=last, keep_probs=keep_probs, keep_labels=keep_labels)
        ctx.image.release()
        if not keep_maps:
            prev.close()  # the previous stage's P is no longer needed
            stages[-1].probs = None
        out.tile_patches = tiling.t
        stages.append(out)
        prev, prev_hw = out.probs, st.size_hw
    if mask is not None and plan.stages:  # pixels no refined patch covers were not predicted
        mark_ignored(stages[-1].argmax, (tiling.x0, tiling.x1), (tiling.y0, tiling.y1), ctx.tissue)
    return MagNetResult(stages, stages[-1].probs, seconds=time.perf_counter() - t_start, tiled=True)


def argmax_bands(probs: HostMap, out_hw: tuple[int, int], band_rows: int = 256) -> np.ndarray:
    """`argmax(bilinear(ac=False)(probs -> out_hw))` `[H, W]` uint8 of a host map, `band_rows` output rows at
    a time (the taps of the whole map, as `kernels.make_argmax_fn`)."""
    (h, w, _), (oh, ow) = probs.shape, out_hw
    cols = taps_for(w, ow, 0, ow, ow)
    out = np.zeros((oh, ow), np.uint8)
    for r0 in range(0, oh, band_rows):
        r1 = min(oh, r0 + band_rows)
        lo, *rows = taps_for(h, oh, r0, r1, r1 - r0)
        window = probs.read(lo, min(h, lo + int(max(rows[1])) + 1), 0, w)
        up = kernels.upsample_region(window, tuple(rows), tuple(cols[1:]), skip_h=h == oh, skip_w=w == ow)
        out[r0:r1] = np.asarray(up).argmax(axis=-1)
    return out
