"""`main.py --mode=predict --image ...`: MagNet on image files, one output folder per image.

    python main.py --config configs/deepglobe.py --mode=predict --image 'images/*.jpg' --workdir out \
        --config.checkpoint.backbone=fpn.pth --config.checkpoint.refiners=refine.pth

Outputs per image: see `magnet_jax/inference/outputs.py`. An image that cannot be read (missing,
truncated, corrupt) is skipped with one line naming it; the others are predicted, and
`OUT/predict_summary.json` lists the skipped files; the command then exits with status 1. A rerun of
the same command skips the images already complete (`predict_resume.py`) and says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from absl import logging

from magnet_jax.allocator import release_heap
from magnet_jax.commands.errors import on_disk_error, write_partial_summary
from magnet_jax.commands.predict_resume import Completion
from magnet_jax.commands.workdir import flat_config
from magnet_jax.evaluation import write_json_atomic
from magnet_jax.inference.outputs import expand_images, output_dirs, predict_file
from magnet_jax.inference.predictor import MagNetPredictor
from magnet_jax.preprocess import ImageDecodeError, shown_path
from magnet_jax.rasters.label_outputs import OutputOptions
from magnet_jax.rasters.large_io import TIFF_EXTENSIONS, open_image
from magnet_jax.rasters.scaled import check_scales
from magnet_jax.rasters.slide_io import SLIDE_EXTENSIONS


def refuse_whole_resizes(predictor: MagNetPredictor, paths: Sequence[str], reader: str) -> None:
    """Before any image runs: ValueError (one line, `rasters.scaled.check_scales`) when a scale of a TIFF or
    slide input would need the whole image resized in memory above `config.magnet.memory_budget_mb`."""
    opts = predictor.stream
    for path in paths:
        if not path.lower().endswith(TIFF_EXTENSIONS + SLIDE_EXTENSIONS):
            continue  # other formats are decoded in memory anyway
        try:
            source = open_image(path, reader)
        except (OSError, ValueError):
            continue  # unreadable: skipped with its reason in the loop
        check_scales(source, predictor.plan.scales, opts.memory_budget_mb << 20, pyramid=opts.pyramid)


class SkippedImagesError(RuntimeError):
    """Some images could not be read; the rest were predicted (the summary lists them)."""


def run_predict(config, workdir: str, images: Sequence[str]) -> list[str]:
    """Predicts every image of `images` (files, globs, folders); returns the output folders written.

    Raises SkippedImagesError (after predicting the readable ones) when some images could not be read.
    """
    from magnet_jax.compile_cache import enable_compilation_cache
    from magnet_jax.data import dataset_spec

    paths = expand_images(images)  # fail on inputs that match nothing before loading models and compiling
    enable_compilation_cache()
    os.makedirs(workdir, exist_ok=True)
    dataset = dataset_spec(config)
    t = time.perf_counter()
    predictor = MagNetPredictor.from_config(config, after_tile=release_heap)  # freed tile buffers: back to the OS
    setup_s = time.perf_counter() - t
    print(predictor.plan.describe(), flush=True)
    summary: dict = {"plan": predictor.plan.describe(), "model_setup_s": setup_s, "images": [], "skipped": [],
                     "config": flat_config(config)}  # fmt: skip
    written = []
    outputs = OutputOptions.from_config(config, dataset)
    if predictor.tiled:
        print("tiled prediction: stage maps tile by tile on disk (config.magnet.streamed)", flush=True)
        refuse_whole_resizes(predictor, paths, str(config.predict.reader))
    done = Completion(config)
    on_disk_error(lambda e: write_partial_summary(e, summary, workdir, output_dirs(paths, workdir)))  # full disk
    for path, out_dir in zip(paths, output_dirs(paths, workdir), strict=True):
        earlier, why = done.check(path, out_dir)
        if earlier is not None:
            summary["images"].append(earlier | {"complete_before": True})
            written.append(out_dir)
            print(f"{shown_path(os.path.basename(path))}: complete in an earlier run, skipped ({shown_path(out_dir)})",
                  flush=True)  # fmt: skip
            continue
        if why:
            print(f"{shown_path(os.path.basename(path))}: predicted again: {why}", flush=True)
        try:
            done.start(out_dir)
            info = predict_file(predictor, path, out_dir, palette=dataset.palette, class_names=dataset.class_names,
                                outputs=outputs, reader=str(config.predict.reader))  # fmt: skip
        except (FileNotFoundError, ImageDecodeError, ValueError) as e:
            logging.error("skipped: %s", e)
            print(f"skipped: {e}", flush=True)
            summary["skipped"].append({"image": path, "error": str(e)})
            continue
        summary["images"].append({"image": path, "output": out_dir, **info})
        done.finish(path, out_dir, summary["images"][-1])
        written.append(out_dir)
        seconds = info["seconds"] if "seconds" in info else info["tiled"]["seconds"]
        stages = ", ".join(f"{k} {v:.2f}" for k, v in seconds.items() if k.startswith("stage"))
        total = sum(v for k, v in seconds.items() if k.startswith("stage"))
        print(f"{shown_path(os.path.basename(path))}: {total:.2f} s ({stages}) -> {shown_path(out_dir)}", flush=True)
    write_json_atomic(os.path.join(workdir, "predict_summary.json"), summary)
    print(f"predicted {len(written)} of {len(paths)} images; summary: {os.path.join(workdir, 'predict_summary.json')}")
    if summary["skipped"]:
        names = ", ".join(shown_path(os.path.basename(s["image"])) for s in summary["skipped"])
        raise SkippedImagesError(f"{len(summary['skipped'])} of {len(paths)} images could not be read: {names}")
    return written

