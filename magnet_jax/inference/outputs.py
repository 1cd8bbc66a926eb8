"""The one writer of `--mode=predict` outputs, one folder per image, whole-image or tiled results alike.

The command itself is `magnet_jax/commands/predict.py`. `save_prediction` writes, for every image,
`OUT/<image stem>/`; a whole-image result:
- `predictions.npz`: `stage{i}` = argmax (uint8) at that stage's own resolution (stage 0 at the
  input size, stage i at scale i);
- `stage{i}_{W}x{H}_overlay.png`: the original demo's picture (P resized to the last scale, argmax,
  colourised, resized to the image, blended 50/50 with it);
- `stage{i}_uncertainty.png`, `stage{i}_error.png` (stages >= 1): heat maps of the uncertainty of
  the stage's input and of the smoothed error score that chose the refined points (each scaled to
  its own maximum);
- `stage{i}_figure.png`, `final_figure.png`: captioned figures with a class legend and colour bars
  (`figures.py`: input at the stage's scale, uncertainty, patches chosen, error score, points refined,
  prediction; then the image, the prediction over it and alone);
a tiled result (`tiled.py`, images too large for memory): `labels.tif` (the last stage's argmax at the
last scale: tiled, deflate, palette colours, a pyramid), `labels_preview.png`, per stage
`stage{i}_preview.png` (the image blended with the stage's prediction) and the same heat maps (at the input
size), and `summary.json` (seconds and points per stage, peak resident memory). The command adds
`OUT/predict_summary.json` (plan, timings per image and stage).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import resource
import time
from collections.abc import Sequence

import numpy as np

from magnet_jax.inference.host_maps import scratch_dir
from magnet_jax.inference.predictor import MagNetPredictor
from magnet_jax.inference.result import MagNetResult
from magnet_jax.preprocess import read_image_rgb
from magnet_jax.rasters.label_outputs import OutputOptions, write_label_outputs
from magnet_jax.rasters.large_io import TIFF_EXTENSIONS, ImageSource, open_image, read_sampled, uses_slide_reader
from magnet_jax.visualization import pictures

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

log = logging.getLogger(__name__)


def expand_images(items: Sequence[str]) -> list[str]:
    """Files, globs and folders (their image files, sorted) -> unique existing paths, in order.

    Raises FileNotFoundError naming every item that matched nothing (files that do not decode are
    reported when read, one by one).
    """
    paths: list[str] = []
    missing = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        if os.path.isdir(item):
            found = sorted(p for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS)
                           and os.path.isfile(p := os.path.join(item, f)))  # not a sub-folder named x.png
            if not found:
                missing.append(f"{item} (a folder without image files)")
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item) if os.path.isfile(p))
            if not found:
                missing.append(f"{item} (no file matches)")
            paths.extend(found)
        else:
            missing.append(f"{item} (no such file)")
    if missing:
        raise FileNotFoundError("--image: " + "; ".join(missing))
    if not paths:
        raise FileNotFoundError("--image: no image given")
    return list(dict.fromkeys(os.path.abspath(p) for p in paths))


def output_dirs(paths: Sequence[str], workdir: str) -> list[str]:
    """`workdir/<stem>`, with `_2`, `_3`... appended when two images share a stem."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0] or "image"
        seen[stem] = seen.get(stem, 0) + 1
        out.append(os.path.join(workdir, stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"))
    return out


def peak_rss_mb() -> float:
    """Peak resident set of this process in MiB (Linux `ru_maxrss` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _heat_maps(result: MagNetResult, out_dir: str) -> None:
    for s in result.stages[1:]:
        for name, values in (("uncertainty", s.uncertainty), ("error", s.error)):
            if values is not None:
                path = os.path.join(out_dir, f"stage{s.index}_{name}.png")
                pictures.save_png(path, pictures.heatmap(np.asarray(values)))


def save_prediction(
    predictor: MagNetPredictor,
    result: MagNetResult,
    image: np.ndarray | ImageSource,
    out_dir: str,
    palette: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    figures: bool = True,
    image_path: str | None = None,
    outputs: OutputOptions | None = None,
) -> dict:
    """Writes one image's outputs (see the module docstring); returns what the summary records of it.

    `image`: the RGB uint8 image (whole-image results) or its `ImageSource` (either kind); `figures`: the
    captioned figures of a whole-image result (classes named `class_names`, default `class 0`, ...); the
    label files of `label_outputs.py` (`labels.tif` for a TIFF `image_path` or a tiled result, `outputs`:
    the ids PNG, polygons).
    """
    os.makedirs(out_dir, exist_ok=True)
    _heat_maps(result, out_dir)
    points = {f"stage{s.index}": s.points for s in result.stages[1:]}
    source = image if isinstance(image, ImageSource) else None
    t = time.perf_counter()
    write_label_outputs(
        out_dir, result.labels, image_path=image_path, image_hw=source.size_hw if source else image.shape[:2],
        palette=palette, class_names=class_names, options=outputs, metadata=source.metadata if source else None,
        tiff=True if result.tiled else None,
    )  # fmt: skip
    write_s = time.perf_counter() - t
    if result.tiled:
        return _save_tiled(predictor, result, image, out_dir, palette, write_s) | {"points": points}
    image = image.whole() if isinstance(image, ImageSource) else image
    np.savez_compressed(
        os.path.join(out_dir, "predictions.npz"), **{f"stage{s.index}": s.argmax for s in result.stages}
    )
    plan = predictor.plan
    for s in result.stages:
        scale_w, scale_h = plan.scales[s.index]
        last = tuple(s.argmax.shape) == tuple(plan.last_hw)
        pred = s.argmax if last else predictor.argmax_at(s.probs, plan.last_hw)
        path = os.path.join(out_dir, f"stage{s.index}_{scale_w}x{scale_h}_overlay.png")
        pictures.save_png(path, pictures.overlay(image, pred, palette))
    if figures:
        from magnet_jax.visualization.figures import save_stage_figures  # matplotlib, only when figures are asked for

        names = list(class_names) if class_names else [f"class {i}" for i in range(plan.num_classes)]
        save_stage_figures(result, plan, image, out_dir, names, palette)
    return {"seconds": {k: round(v, 4) for k, v in result.timings.items()}, "points": points}


def _save_tiled(predictor: MagNetPredictor, result: MagNetResult, source, out_dir: str, palette, write_s) -> dict:
    plan = predictor.plan
    source = source if isinstance(source, ImageSource) else ImageSource.from_array(source)
    preview = result.stages[-1].preview
    pictures.save_png(os.path.join(out_dir, "labels_preview.png"), pictures.colorize(preview, palette))
    ph, pw = preview.shape
    thumb = read_sampled(source, (np.arange(ph) * source.size_hw[0]) // ph, (np.arange(pw) * source.size_hw[1]) // pw)
    for s in result.stages:
        picture = pictures.overlay(thumb, s.preview, palette)
        pictures.save_png(os.path.join(out_dir, f"stage{s.index}_preview.png"), picture)
    summary = {
        "reader": source.kind,
        "size_hw": list(source.size_hw),
        "plan": plan.describe(),
        "tile_patches": {f"stage{s.index}": s.tile_patches for s in result.stages if s.index > 0},
        "store_dtype": predictor.stream.store_dtype,
        "devices": int(predictor.mesh.devices.size),
        "seconds": {f"stage{s.index}": round(s.seconds, 3) for s in result.stages},
        "write_seconds": round(write_s, 3),
        "total_seconds": round(result.seconds + write_s, 3),
        "points": {f"stage{s.index}": s.points for s in result.stages if s.index > 0},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return {"tiled": summary}


def predict_file(
    predictor: MagNetPredictor,
    path: str,
    out_dir: str,
    *,
    palette: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    outputs: OutputOptions | None = None,
    figures: bool = True,
    reader: str = "auto",
) -> dict:
    """Predicts the image file `path` (`large_io.open_image(path, reader)`; whole or tiled, as the predictor
    runs) and writes its outputs into `out_dir` (`save_prediction`); returns its summary entry. Tiled maps
    live in `out_dir`'s scratch folder (`host_maps.scratch_dir`: a killed run's is removed by the next)."""
    palette = pictures.default_palette(predictor.plan.num_classes) if palette is None else np.asarray(palette, np.uint8)
    kw = {"class_names": class_names, "image_path": path, "outputs": outputs, "figures": figures}
    if not predictor.tiled:
        if uses_slide_reader(path, reader):
            image = open_image(path, reader).whole()
        else:
            if path.lower().endswith(TIFF_EXTENSIONS):
                open_image(path, reader)  # not 8-bit: refused as a tiled run refuses it, never squashed to 8 bits
            image = read_image_rgb(path)
        return save_prediction(predictor, predictor.predict(image), image, out_dir, palette, **kw)
    source = open_image(path, reader)
    with scratch_dir(out_dir) as work:
        result = predictor.predict(source, work_dir=predictor.stream.work_dir or work)
        try:
            return save_prediction(predictor, result, source, out_dir, palette, **kw)
        finally:
            result.close()
