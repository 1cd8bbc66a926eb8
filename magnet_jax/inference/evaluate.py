"""`--mode=evaluate`: MagNet over a dataset split, coarse (stage 0) vs refined (last stage) mIoU.

    python main.py --config configs/cityscapes.py --mode=evaluate --workdir runs/eval \
        --config.checkpoint.backbone=... --config.checkpoint.refiners=...

As the original's test script: the coarse prediction is stage 0's P and the refined one the final
P, each resized bilinear(align_corners=False) to the label's resolution then argmax (the original
resizes both to the last scale, which is the label's size in its settings; with another label size
the probabilities are resized straight to it). Confusion matrices are summed over the split; mIoU
averages the dataset's classes (`metrics.py`: DeepGlobe 1..6, Cityscapes all 19). The progress bar
shows the running coarse and refined mIoU; at the end a per-class table is printed and
`results.json` written to the workdir; with `config.eval.save_pictures`, the first
`config.eval.num_pictures` images get `pictures/<name>.png` (image | ground truth | coarse | refined).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from magnet_jax.inference import visualize
from magnet_jax.inference.engine import MagNetPredictor, enable_compilation_cache
from magnet_jax.metrics import ConfusionMatrix, format_iou_table, miou_classes

__all__ = ["evaluate_source", "run_evaluate"]


def _class_setup(config) -> tuple[list[str], list[int], int | None]:
    n = int(config.data.num_classes)
    names = None
    try:
        from magnet_jax.data import dataset_info

        names = list(dataset_info(config).class_names)
    except ImportError:
        pass
    if not names or len(names) != n:
        names = [f"class_{i}" for i in range(n)]
    ignore = int(config.data.ignore_label) if config.data.ignore_label is not None else None
    return names, miou_classes(config), ignore


def evaluate_source(
    predictor: MagNetPredictor,
    source,
    *,
    num_classes: int,
    miou_classes_: list[int] | None = None,
    ignore_label: int | None = 255,
    class_names: list[str] | None = None,
    max_images: int = -1,
    pictures_dir: str | None = None,
    num_pictures: int = 0,
    palette: np.ndarray | None = None,
    progress: bool = True,
) -> dict:
    """Evaluates `predictor` on `source` (`source[i] -> {"image", "label", "name"}`); returns the results dict.

    The dict holds `coarse` / `refined` (`miou`, `iou` per class, `confusion`), `num_images`,
    `seconds_per_image` (MagNet's predict time, preprocessing included), `miou_classes`, `class_names`.
    Reusable for validation during training (pass `progress=False`).
    """
    n = len(source) if max_images is None or max_images < 0 else min(len(source), int(max_images))
    names = class_names or [f"class_{i}" for i in range(num_classes)]
    classes = list(miou_classes_) if miou_classes_ else list(range(num_classes))
    coarse_cm = ConfusionMatrix(num_classes, ignore_label, classes)
    refined_cm = ConfusionMatrix(num_classes, ignore_label, classes)
    palette = palette if palette is not None else visualize.default_palette(num_classes)
    if pictures_dir and num_pictures > 0:
        os.makedirs(pictures_dir, exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, ascii=True, dynamic_ncols=True)
    seconds = 0.0
    for i in range(n):
        sample = source[i]
        image, label = sample["image"], np.asarray(sample["label"])
        result = predictor.predict(image, keep_probs=True)
        seconds += result.seconds + result.preprocess_seconds
        coarse = predictor.argmax_at(result.stages[0].probs, label.shape[:2])
        refined = predictor.argmax_at(result.final_probs, label.shape[:2])
        coarse_cm.update(label, coarse)
        refined_cm.update(label, refined)
        if pictures_dir and i < num_pictures:
            panels = [
                image,
                visualize.colorize(label, palette),
                visualize.colorize(coarse, palette),
                visualize.colorize(refined, palette),
            ]
            visualize.save_png(os.path.join(pictures_dir, f"{sample['name']}.png"), visualize.side_by_side(panels))
        if bar is not None:
            bar.update(1)
            bar.set_description(
                f"coarse mIoU {100 * coarse_cm.miou():.2f}, refined mIoU {100 * refined_cm.miou():.2f}, "
                f"{result.seconds:.2f} s/img"
            )
    if bar is not None:
        bar.close()
    return {
        "num_images": n,
        "seconds_per_image": seconds / max(n, 1),
        "class_names": names,
        "miou_classes": classes,
        "coarse": {
            "miou": coarse_cm.miou(),
            "iou": coarse_cm.iou().tolist(),
            "confusion": coarse_cm.matrix.tolist(),
        },
        "refined": {
            "miou": refined_cm.miou(),
            "iou": refined_cm.iou().tolist(),
            "confusion": refined_cm.matrix.tolist(),
        },
    }


def results_table(results: dict) -> str:
    """The per-class IoU table (coarse vs refined) of an `evaluate_source` result."""
    return format_iou_table(
        results["class_names"],
        {"coarse": np.array(results["coarse"]["iou"]), "refined": np.array(results["refined"]["iou"])},
        results["miou_classes"],
        {"coarse": results["coarse"]["miou"], "refined": results["refined"]["miou"]},
    )


def run_evaluate(config, workdir: str, *, predictor: MagNetPredictor | None = None, source=None) -> dict:
    """Evaluates on `config.data.eval_split`; prints the table, writes `<workdir>/results.json`, returns it."""
    enable_compilation_cache()
    os.makedirs(workdir, exist_ok=True)
    names, classes, ignore = _class_setup(config)
    split = str(config.data.eval_split)
    if source is None:
        from magnet_jax.data import build_source

        source = build_source(config, split, workdir=workdir)
    if predictor is None:
        predictor = MagNetPredictor.from_config(config)
    print(predictor.plan.describe(), flush=True)
    t = time.perf_counter()
    results = evaluate_source(
        predictor,
        source,
        num_classes=int(config.data.num_classes),
        miou_classes_=classes,
        ignore_label=ignore,
        class_names=names,
        max_images=int(config.eval.max_images),
        pictures_dir=os.path.join(workdir, "pictures") if config.eval.save_pictures else None,
        num_pictures=int(config.eval.num_pictures),
        palette=visualize.palette_for_config(config),
    )
    results.update(
        {
            "dataset": str(config.data.name),
            "split": split,
            "wall_seconds": time.perf_counter() - t,
            "plan": predictor.plan.describe(),
            "compat": predictor.plan.compat,
            "checkpoints": {"backbone": str(config.checkpoint.backbone), "refiners": str(config.checkpoint.refiners)},
        }
    )
    table = results_table(results)
    print(table, flush=True)
    print(
        f"{results['num_images']} images: coarse mIoU {100 * results['coarse']['miou']:.2f}, "
        f"refined mIoU {100 * results['refined']['miou']:.2f}",
        flush=True,
    )
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results
