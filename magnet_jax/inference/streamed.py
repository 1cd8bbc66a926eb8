"""Streamed MagNet prediction for images whose stage maps do not fit in memory (gigapixel images).

    from magnet_jax.inference.streamed import StreamOptions, needs_streaming, predict_large
    opts = StreamOptions.from_config(config)          # config.magnet.streamed / tile_patches / stream_dtype
    if needs_streaming(predictor.plan, opts):
        summary = predict_large(predictor, "slide.tif", "out/slide", options=opts, palette=palette)

Every refinement stage runs tile by tile (`stream_stage.py`: a tile is `tile_patches x tile_patches`
patches), its maps kept on the host in `host_maps.HostMap` files; the image is read by region
(`large_io.open_image`: BigTIFF / tiled TIFF without loading it, other formats in memory). Each
tile's patch batch is split over all local devices (the training mesh, `magnet_jax.sharding`).
Resident memory is bounded by one tile's working set plus the `[ih, iw]` coarse maps, not by the
image size.

Results equal the whole-image predictor's (`engine.MagNetPredictor`, `compat="paper"`) pixel for
pixel on XLA:CPU with float32 stage maps (every tile runs the whole image's programs on its pixels,
tested). Each scale of the image is resized by region where OpenCV's coefficients allow it exactly
(power-of-two-denominator ratios, `host_maps.ScaledImage`), else the whole image is resized once in
memory. `stream_dtype="float16"` halves the disk traffic; measured on a 1024 px image with random
weights, its last stage agreed on 99.986% of the pixels, so float32 is the default. Point budgets are
exact (`points.py`; ties go to the lower row-major pixel index, as in the whole-image stage).
`compat="reference"` is not streamed (its PyTorch tie-breaking replay needs the whole score map).

`needs_streaming`: `streamed="auto"` streams when the largest stage map `[H, W, C]` in float32
exceeds `STREAM_AUTO_BYTES` (1 GiB; e.g. 7 classes above ~6200 x 6200 px, 19 classes above
~3760 x 3760 px), `"on"` / `"off"` force it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import time

import jax
import numpy as np
from flax import nnx

from magnet_jax.inference import visualize
from magnet_jax.inference.host_maps import HostMap, ScaledImage, scratch_dir
from magnet_jax.inference.label_outputs import write_label_outputs
from magnet_jax.inference.large_io import ImageSource, open_image, read_sampled
from magnet_jax.inference.plan import MagNetPlan
from magnet_jax.inference.stages import make_stage0_fn
from magnet_jax.inference.stream_stage import StageContext, StreamedStage, run_stage, stage_batch
from magnet_jax.inference.tile_ops import make_refine_fn
from magnet_jax.inference.tiling import StageTiling
from magnet_jax.preprocess import normalize, resize_image
from magnet_jax.sharding import make_mesh, replicated

__all__ = ["STREAM_AUTO_BYTES", "StreamOptions", "StreamedPredictor", "needs_streaming", "predict_large"]

STREAM_AUTO_BYTES = 1 << 30
STREAM_MODES = ("auto", "on", "off")
STORE_DTYPES = ("float32", "float16")


@dataclasses.dataclass(frozen=True)
class StreamOptions:
    """How to stream (see the module docstring); `from_config` reads `config.magnet.*`."""

    mode: str = "auto"  # auto | on | off
    tile_patches: int = 4  # a tile is tile_patches x tile_patches patches
    store_dtype: str = "float32"  # float32 (exact) | float16 (half the disk traffic)
    work_dir: str | None = None  # where the stage map files go (default: the system temporary folder)
    preview_max: int = 2048  # longest side of the preview pictures
    ram_bytes: int = 64 << 20  # stage maps up to this size stay in RAM, larger ones go to files

    def __post_init__(self):
        if self.mode not in STREAM_MODES:
            raise ValueError(f"config.magnet.streamed: expected one of {', '.join(STREAM_MODES)}, got {self.mode!r}")
        if not isinstance(self.tile_patches, (int, np.integer)) or self.tile_patches < 1:
            raise ValueError(f"config.magnet.tile_patches: expected an integer >= 1, got {self.tile_patches!r}")
        if self.store_dtype not in STORE_DTYPES:
            raise ValueError(
                f"config.magnet.stream_dtype: expected one of {', '.join(STORE_DTYPES)}, got {self.store_dtype!r}"
            )

    @classmethod
    def from_config(cls, config, **overrides) -> StreamOptions:
        m = config.magnet
        kw = {"mode": str(m.streamed), "tile_patches": int(m.tile_patches), "store_dtype": str(m.stream_dtype)}
        kw.update(overrides)
        return cls(**kw)


def largest_map_bytes(plan: MagNetPlan) -> int:
    """Bytes of the largest stage map `[H, W, C]` float32 of the plan."""
    return max(w * h for w, h in plan.scales) * plan.num_classes * 4


def needs_streaming(plan: MagNetPlan, options: StreamOptions) -> bool:
    """Whether `predict_large` should run (see the module docstring for the `auto` threshold)."""
    if options.mode != "auto":
        return options.mode == "on"
    return largest_map_bytes(plan) > STREAM_AUTO_BYTES


@dataclasses.dataclass
class StreamedResult:
    stages: list[StreamedStage]  # stage 0 first; `labels` of the last stage is the prediction
    seconds: float

    @property
    def labels(self) -> HostMap:
        return self.stages[-1].labels

    def close(self) -> None:
        """Removes the result's map files."""
        for s in self.stages:
            for m in (s.probs, s.labels):
                if m is not None:
                    m.close()


class StreamedPredictor:
    """MagNet prediction tile by tile (see the module docstring), for one image at a time.

    Args:
        plan: the static plan; `compat` must be `"paper"`.
        backbone, refiners: models in eval mode (one refiner shared, or one per refinement stage).
        options: `StreamOptions` (tile size, storage dtype, work folder).
        mesh: device mesh for the patch batches (default: `sharding.make_mesh` over the local devices).
    """

    def __init__(self, plan: MagNetPlan, backbone: nnx.Module, refiners, *, options=None, mesh=None):
        if plan.compat != "paper":
            raise ValueError(
                f"config.magnet.streamed: streamed prediction implements compat='paper' only, got "
                f"{plan.compat!r}; set config.magnet.streamed=off for the reference mode"
            )
        if getattr(plan, "dtype", "float32") != "float32":
            raise ValueError(
                f"config.magnet.dtype: streamed prediction computes in float32, got {plan.dtype!r}; "
                "set config.magnet.dtype=float32 or config.magnet.streamed=off"
            )
        refiners = [refiners] if isinstance(refiners, nnx.Module) else list(refiners)
        if plan.stages and len(refiners) not in (1, len(plan.stages)):
            raise ValueError(f"{len(refiners)} refinement modules given; expected 1 or {len(plan.stages)}")
        self.plan, self.options = plan, options or StreamOptions()
        self.mesh = mesh or make_mesh(jax.local_devices())
        bb_graph, bb_state = nnx.split(backbone)
        self._bb_state = bb_state
        self._bb_rep = jax.device_put(bb_state, replicated(self.mesh))
        self._stage0 = make_stage0_fn(bb_graph, conv_algorithm=plan.conv_algorithm)
        self._per_stage = []
        states: dict[int, tuple] = {}
        for st in plan.stages:
            ref = refiners[min(len(refiners), st.index) - 1]
            if id(ref) not in states:
                graph, state = nnx.split(ref)
                states[id(ref)] = (graph, jax.device_put(state, replicated(self.mesh)))
            graph, state = states[id(ref)]
            refine = make_refine_fn(
                bb_graph, graph, self.mesh, batch=stage_batch(st, plan), boxes=st.boxes, input_hw=plan.input_hw,
                full_hw=st.size_hw, conv_algorithm=plan.conv_algorithm,
            )  # fmt: skip
            self._per_stage.append((refine, state))

    @classmethod
    def from_predictor(cls, predictor, *, options: StreamOptions | None = None, mesh=None) -> StreamedPredictor:
        """From an `engine.MagNetPredictor` (its plan and models)."""
        return cls(predictor.plan, predictor.backbone, predictor.refiners, options=options, mesh=mesh)

    def predict(self, image, *, keep_labels: bool = False, work_dir: str | None = None) -> StreamedResult:
        """Predicts an image (`ImageSource`, path or RGB uint8 array); `keep_labels`: every stage's argmax map.

        Map files go to `work_dir` (default: `options.work_dir`); the caller closes the result
        (`StreamedResult.close()`) to remove them.
        """
        t_start = time.perf_counter()
        source = image if isinstance(image, ImageSource) else None
        if source is None:
            source = open_image(image) if isinstance(image, (str, os.PathLike)) else ImageSource.from_array(image)
        plan, opts = self.plan, self.options
        ih, iw = plan.input_hw
        longest = max(plan.last_hw)
        preview_hw = tuple(max(1, int(round(s * min(1.0, opts.preview_max / longest)))) for s in plan.last_hw)
        cw, ch = plan.crop_wh
        t0 = time.perf_counter()
        first = resize_image(ScaledImage(source, plan.scales[0]).read(0, ch, 0, cw), plan.input_wh)
        probs0, am0 = self._stage0(self._bb_state, normalize(first[None]))
        folder = work_dir or opts.work_dir  # stage 0's maps too: never the system temporary folder's orphans
        prev = HostMap((ih, iw, plan.num_classes), np.float32, folder=folder, ram_bytes=opts.ram_bytes)
        prev.write(0, 0, np.asarray(probs0))
        labels0 = HostMap((ih, iw), np.uint8, folder=folder, ram_bytes=opts.ram_bytes)
        labels0.write(0, 0, np.asarray(am0))
        zeros = np.zeros((ih, iw), np.float32)
        stages = [
            StreamedStage(0, (ih, iw), prev, labels0, np.asarray(am0), zeros, zeros, None, 0, time.perf_counter() - t0)
        ]
        prev_hw = (ih, iw)
        for i, st in enumerate(plan.stages):
            refine, ref_state = self._per_stage[i]
            ctx = StageContext(
                plan, self.mesh, refine, self._bb_rep, ref_state, ScaledImage(source, st.scale_wh),
                np.dtype(opts.store_dtype), work_dir or opts.work_dir, preview_hw, opts.ram_bytes,
            )  # fmt: skip
            tiling = StageTiling(st, plan, opts.tile_patches, prev_hw)
            out = run_stage(ctx, st, tiling, prev, last=i == len(plan.stages) - 1, keep_labels=keep_labels)
            ctx.image.release()
            if not keep_labels:
                prev.close()  # the previous stage's P is no longer needed
                stages[-1].probs = None
            stages.append(out)
            prev, prev_hw = out.probs, st.size_hw
        return StreamedResult(stages, time.perf_counter() - t_start)


def peak_rss_mb() -> float:
    """Peak resident set of this process in MiB (Linux `ru_maxrss` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def predict_large(
    predictor,
    image_path: str,
    out_dir: str,
    *,
    options: StreamOptions | None = None,
    palette: np.ndarray | None = None,
    mesh=None,
    class_names=None,
    outputs=None,
) -> dict:
    """Streamed prediction of one image file into `out_dir`; returns the summary it also writes.

    `predictor`: an `engine.MagNetPredictor` or a `StreamedPredictor` (reused across images: it keeps
    its compiled functions). Writes `labels.tif` (the last stage's argmax at the last scale: tiled,
    deflate, palette colours, a pyramid of SubIFDs), `labels_preview.png`, per stage
    `stage{i}_preview.png` (the image blended with the stage's prediction), `stage{i}_error.png` and
    `stage{i}_uncertainty.png` (input-size heat maps), and `summary.json` (seconds and points per stage,
    peak resident memory).
    """
    if not isinstance(predictor, StreamedPredictor):
        predictor = StreamedPredictor.from_predictor(predictor, options=options, mesh=mesh)
    plan = predictor.plan
    palette = visualize.default_palette(plan.num_classes) if palette is None else np.asarray(palette, np.uint8)
    os.makedirs(out_dir, exist_ok=True)
    source = open_image(image_path)
    with contextlib.ExitStack() as stack:
        work = predictor.options.work_dir or stack.enter_context(scratch_dir(out_dir))
        result = predictor.predict(source, work_dir=work)
        stack.callback(result.close)
        labels = result.labels
        t = time.perf_counter()
        write_label_outputs(out_dir, labels, image_path=image_path, image_hw=source.size_hw, palette=palette,
                            class_names=class_names, options=outputs, metadata=source.metadata, tiff=True)
        write_s = time.perf_counter() - t
        preview = result.stages[-1].preview
        visualize.save_png(os.path.join(out_dir, "labels_preview.png"), visualize.colorize(preview, palette))
        ph, pw = preview.shape
        thumb = read_sampled(
            source, (np.arange(ph) * source.size_hw[0]) // ph, (np.arange(pw) * source.size_hw[1]) // pw
        )
        for s in result.stages:
            picture = visualize.overlay(thumb, s.preview, palette)
            visualize.save_png(os.path.join(out_dir, f"stage{s.index}_preview.png"), picture)
            if s.index > 0:
                visualize.save_png(os.path.join(out_dir, f"stage{s.index}_error.png"), visualize.heatmap(s.error))
                visualize.save_png(
                    os.path.join(out_dir, f"stage{s.index}_uncertainty.png"), visualize.heatmap(s.uncertainty)
                )
    summary = {
        "image": os.path.abspath(image_path),
        "reader": source.kind,
        "size_hw": list(source.size_hw),
        "plan": plan.describe(),
        "tile_patches": predictor.options.tile_patches,
        "store_dtype": predictor.options.store_dtype,
        "devices": int(predictor.mesh.devices.size),
        "seconds": {f"stage{s.index}": round(s.seconds, 3) for s in result.stages},
        "write_seconds": round(write_s, 3),
        "total_seconds": round(result.seconds + write_s, 3),
        "points": {f"stage{s.index}": s.points for s in result.stages if s.index > 0},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
