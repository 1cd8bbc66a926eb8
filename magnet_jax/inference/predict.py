"""`--mode=predict`: MagNet on image files, one output folder per image.

The command itself is `magnet_jax/commands/predict.py`; this module writes one image's outputs.
Writes, for every image, `OUT/<image stem>/`:
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
and `OUT/predict_summary.json` (plan, timings per image and stage).
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence

import numpy as np

from magnet_jax.inference import visualize
from magnet_jax.inference.engine import MagNetPredictor

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


def save_prediction(
    predictor: MagNetPredictor,
    result,
    image: np.ndarray,
    out_dir: str,
    palette: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    figures: bool = True,
) -> None:
    """Writes predictions.npz, the overlay per stage, the uncertainty / error heat maps and, with
    `figures`, the captioned figures (`figures.save_stage_figures`; classes named `class_names`,
    default `class 0`, `class 1`...)."""
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
    if figures:
        from magnet_jax.inference.figures import save_stage_figures  # matplotlib, only when figures are asked for

        names = list(class_names) if class_names else [f"class {i}" for i in range(plan.num_classes)]
        save_stage_figures(result, plan, image, out_dir, names, palette)
