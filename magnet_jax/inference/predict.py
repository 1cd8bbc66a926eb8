"""`--mode=predict`: MagNet on image files, one output folder per image.

    python main.py --config configs/deepglobe.py --mode=predict --image 'images/*.jpg' --workdir out \
        --config.checkpoint.backbone=fpn.pth --config.checkpoint.refiners=refine.pth

Writes, for every image, `OUT/<image stem>/`:
- `predictions.npz`: `stage{i}` = argmax (uint8) at that stage's own resolution (stage 0 at the
  input size, stage i at scale i);
- `stage{i}_{W}x{H}_overlay.png`: the original demo's picture (P resized to the last scale, argmax,
  colourised, resized to the image, blended 50/50 with it);
- `stage{i}_uncertainty.png`, `stage{i}_error.png` (stages >= 1): heat maps of the uncertainty of
  the stage's input and of the smoothed error score that chose the refined points (each scaled to
  its own maximum).
and `OUT/predict_summary.json` (plan, timings per image and stage).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from collections.abc import Sequence

import cv2
import numpy as np

from magnet_jax.inference import visualize
from magnet_jax.inference.engine import MagNetPredictor, enable_compilation_cache
from magnet_jax.preprocess import read_image_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

log = logging.getLogger(__name__)


def expand_images(items: Sequence[str]) -> list[str]:
    """Files, globs and folders (their image files, sorted) -> unique existing paths, in order.

    Raises FileNotFoundError naming every item that matched nothing, and ValueError for a file that
    OpenCV cannot decode.
    """
    paths: list[str] = []
    missing = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS))
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
    unique = list(dict.fromkeys(os.path.abspath(p) for p in paths))
    for p in unique:
        if not cv2.haveImageReader(p):
            raise ValueError(f"cannot read image {p}: not an image file OpenCV can decode")
    return unique


def _output_dirs(paths: Sequence[str], workdir: str) -> list[str]:
    """`workdir/<stem>`, with `_2`, `_3`... appended when two images share a stem."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0] or "image"
        seen[stem] = seen.get(stem, 0) + 1
        out.append(os.path.join(workdir, stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"))
    return out


def save_prediction(predictor: MagNetPredictor, result, image: np.ndarray, out_dir: str, palette: np.ndarray) -> None:
    """Writes predictions.npz, the overlay per stage and the uncertainty / error heat maps."""
    os.makedirs(out_dir, exist_ok=True)
    np.savez_compressed(
        os.path.join(out_dir, "predictions.npz"), **{f"stage{s.index}": s.argmax for s in result.stages}
    )
    plan = predictor.plan
    last_hw = plan.last_hw
    for s in result.stages:
        scale_w, scale_h = plan.scales[s.index]
        pred = s.argmax if tuple(s.argmax.shape) == tuple(last_hw) else predictor.argmax_at(s.probs, last_hw)
        visualize.save_png(
            os.path.join(out_dir, f"stage{s.index}_{scale_w}x{scale_h}_overlay.png"),
            visualize.overlay(image, pred, palette),
        )
        if s.uncertainty is not None:
            visualize.save_png(
                os.path.join(out_dir, f"stage{s.index}_uncertainty.png"), visualize.heatmap(np.asarray(s.uncertainty))
            )
        if s.error is not None:
            visualize.save_png(
                os.path.join(out_dir, f"stage{s.index}_error.png"), visualize.heatmap(np.asarray(s.error))
            )


def run_predict(config, workdir: str, images: Sequence[str]) -> list[str]:
    """Predicts every image of `images` (files, globs, folders); returns the output folders."""
    paths = expand_images(images)  # fail on bad inputs before loading models and compiling
    cache = enable_compilation_cache()
    os.makedirs(workdir, exist_ok=True)
    t = time.perf_counter()
    predictor = MagNetPredictor.from_config(config)
    setup_s = time.perf_counter() - t
    print(predictor.plan.describe(), flush=True)
    if cache:
        log.info("JAX compilation cache: %s", cache)
    palette = visualize.palette_for_config(config)
    out_dirs = _output_dirs(paths, workdir)
    summary = {"plan": predictor.plan.describe(), "model_setup_s": setup_s, "images": []}
    for path, out_dir in zip(paths, out_dirs, strict=False):
        image = read_image_rgb(path)
        result = predictor.predict(image)
        save_prediction(predictor, result, image, out_dir, palette)
        timings = {k: round(v, 4) for k, v in result.timings.items()}
        points = {f"stage{s.index}": s.points for s in result.stages if s.index > 0}
        summary["images"].append({"image": path, "output": out_dir, "seconds": timings, "points": points})
        print(
            f"{os.path.basename(path)}: {result.seconds:.2f} s ("
            + ", ".join(f"{k} {v:.2f}" for k, v in timings.items() if k.startswith("stage"))
            + f") -> {out_dir}",
            flush=True,
        )
    with open(os.path.join(workdir, "predict_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return out_dirs
