"""Evaluation used by training: periodic validation, and the three-way held-out table of the demo.

- `validate_backbone`: coarse (stage-0) mIoU of a backbone on the validation split.
- `validate_refiner`: MagNet mIoU with a refiner being trained (stages up to its own; earlier
  stages use the refiners this workdir already trained).
- `evaluate_all`: on `config.data.eval_split`, the mIoU of (1) the coarse prediction, (2) the
  backbone on the patches of the finest scale stitched together without refinement, (3) MagNet;
  saves pictures (image | ground truth | coarse | patch | MagNet).
All predictions are compared with the label at its own resolution (probabilities resized
bilinearly, align_corners=False, then argmax), as `magnet_jax.inference.evaluate` does.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.config import parse_size, parse_sizes


def _unlocked(c):
    return c.unlocked() if hasattr(c, "unlocked") else _Null()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _val_source(config, workdir: Path):
    from magnet_jax.data import build_source

    return build_source(config, "val", workdir=str(workdir))


def _classes_and_names(config):
    from magnet_jax.inference.evaluate import _class_setup

    names, classes, ignore = _class_setup(config)
    return names, classes, ignore


def _max_images(config) -> int:
    return int(config.train.eval_max_images)


def validate_backbone(config, workdir: Path, backbone: nnx.Module) -> dict:
    """{"miou": coarse mIoU} of `backbone` on the val split (whole image at the first scale / input size)."""
    from magnet_jax.inference.engine import MagNetPredictor
    from magnet_jax.inference.evaluate import evaluate_source
    from magnet_jax.inference.plan import plan_from_config

    c = copy.deepcopy(config)
    scales = parse_sizes(config.magnet.scales, "magnet.scales")
    with _unlocked(c):
        c.magnet.scales = f"{scales[0][0]}-{scales[0][1]}"
    names, classes, ignore = _classes_and_names(config)
    predictor = MagNetPredictor(plan_from_config(c), backbone, [])
    res = evaluate_source(
        predictor, _val_source(config, workdir), num_classes=int(config.data.num_classes), miou_classes_=classes,
        ignore_label=ignore, class_names=names, max_images=_max_images(config), progress=False,
    )
    return {"miou": float(res["coarse"]["miou"])}


def validate_refiner(config, workdir: Path, stage: int | None, refiner: nnx.Module) -> dict:
    """{"miou": MagNet mIoU, "coarse_miou": ...} on the val split with `refiner` at stage `stage`
    (scales truncated after it; earlier stages use `WORKDIR/weights/refiner_stageS`), or at every
    stage when shared (`stage` None)."""
    from magnet_jax.checkpoints import load_model_weights
    from magnet_jax.inference.engine import MagNetPredictor
    from magnet_jax.inference.evaluate import evaluate_source
    from magnet_jax.inference.plan import plan_from_config
    from magnet_jax.training.run import load_backbone, weights_dir

    n = int(config.data.num_classes)
    c = copy.deepcopy(config)
    refiners: list[nnx.Module] = [refiner]
    if stage is not None:
        scales = parse_sizes(config.magnet.scales, "magnet.scales")
        with _unlocked(c):
            c.magnet.scales = ",".join(f"{w}-{h}" for w, h in scales[: stage + 1])
        refiners = []
        for s in range(1, stage):
            path = weights_dir(workdir, f"refiner_stage{s}")
            if not path.is_dir():
                return {}  # earlier stages not trained in this workdir: nothing meaningful to validate
            refiners.append(load_model_weights(str(path), "refinement", n))
        refiners.append(refiner)
    names, classes, ignore = _classes_and_names(config)
    predictor = MagNetPredictor(plan_from_config(c), load_backbone(config, workdir), refiners)
    res = evaluate_source(
        predictor, _val_source(config, workdir), num_classes=n, miou_classes_=classes, ignore_label=ignore,
        class_names=names, max_images=_max_images(config), progress=False,
    )
    return {"miou": float(res["refined"]["miou"]), "coarse_miou": float(res["coarse"]["miou"])}


# ---------------------------------------------------------------- coarse / patch / MagNet


def _patch_fn(backbone: nnx.Module, crop_hw: tuple[int, int]):
    """jitted `patches [N, ih, iw, 3] -> probs [N, crop_h, crop_w, C]` (softmax, bilinear ac=False)."""
    from magnet_jax.ops.resize import resize_bilinear

    graph, state = nnx.split(backbone)

    @jax.jit
    def fn(st, patches):
        logits = nnx.merge(graph, st)(patches)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        return resize_bilinear(probs, crop_hw, align_corners=False)

    return lambda patches: fn(state, patches)


def stitch_patches(probs: np.ndarray, boxes_px, size_hw: tuple[int, int]) -> np.ndarray:
    """Pastes patch probabilities `[N, ch, cw, C]` at integer boxes (x0, y0, x1, y1); overlaps averaged."""
    h, w = size_hw
    out = np.zeros((h, w, probs.shape[-1]), np.float32)
    count = np.zeros((h, w, 1), np.float32)
    for p, (x0, y0, x1, y1) in zip(probs, boxes_px, strict=True):
        out[y0:y1, x0:x1] += p
        count[y0:y1, x0:x1] += 1
    return out / np.maximum(count, 1)


def evaluate_all(config, workdir: str | Path, *, progress: bool = True) -> dict:
    """Coarse / finest-patch / MagNet mIoU on `config.data.eval_split` with this workdir's trained models."""
    from magnet_jax.checkpoints import load_model_weights
    from magnet_jax.data import build_source
    from magnet_jax.inference import visualize
    from magnet_jax.inference.engine import MagNetPredictor, enable_compilation_cache
    from magnet_jax.inference.plan import plan_from_config
    from magnet_jax.metrics import ConfusionMatrix
    from magnet_jax.training.run import load_backbone, refiner_runs, weights_dir

    enable_compilation_cache()
    workdir = Path(workdir)
    n = int(config.data.num_classes)
    names, classes, ignore = _classes_and_names(config)
    backbone = load_backbone(config, workdir)
    given = [p for p in str(config.checkpoint.refiners or "").split(",") if p.strip()]
    if given:
        paths = given
    else:
        runs = refiner_runs(config) if config.train.shared_refiner else [
            (f"refiner_stage{s}", s) for s in range(1, len(parse_sizes(config.magnet.scales, "magnet.scales")))
        ]
        paths = [str(weights_dir(workdir, run)) for run, _ in runs]
    refiners = [load_model_weights(p, "refinement", n) for p in paths]
    plan = plan_from_config(config)
    predictor = MagNetPredictor(plan, backbone, refiners)
    crop_w, crop_h = parse_size(config.magnet.crop_size, "magnet.crop_size")
    patch_fn = _patch_fn(backbone, (crop_h, crop_w))
    last = plan.stages[-1]
    split = str(config.data.eval_split)
    source = build_source(config, split, workdir=str(workdir))
    total = len(source) if int(config.eval.max_images) < 0 else min(len(source), int(config.eval.max_images))
    cms = {k: ConfusionMatrix(n, ignore, classes) for k in ("coarse", "patch", "magnet")}
    pictures = workdir / "pictures"
    n_pics = int(config.eval.num_pictures) if config.eval.save_pictures else 0
    palette = visualize.palette_for_config(config)
    bar = None
    if progress and jax.process_index() == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"evaluate {split}", dynamic_ncols=True)
    for i in range(total):
        sample = source[i]
        image, label = sample["image"], np.asarray(sample["label"])
        result = predictor.predict(image)
        coarse = predictor.argmax_at(result.stages[0].probs, label.shape[:2])
        magnet = predictor.final_argmax(result, label.shape[:2])
        patches = predictor.prepare(image)[-1]
        stitched = stitch_patches(np.asarray(patch_fn(jnp.asarray(patches))), last.crops_px, last.size_hw)
        patch = predictor.argmax_at(jnp.asarray(stitched), label.shape[:2])
        for key, pred in (("coarse", coarse), ("patch", patch), ("magnet", magnet)):
            cms[key].update(label, pred)
        if i < n_pics and jax.process_index() == 0:
            pictures.mkdir(parents=True, exist_ok=True)
            panels = [image] + [visualize.colorize(x, palette) for x in (label, coarse, patch, magnet)]
            visualize.save_png(pictures / f"{sample['name']}.png", visualize.side_by_side(panels))
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{100 * cm.miou():.1f}" for k, cm in cms.items()}, refresh=False)
    if bar is not None:
        bar.close()
    out = {k: {"miou": float(cm.miou()), "iou": cm.iou().tolist()} for k, cm in cms.items()}
    out.update(
        {
            "split": split,
            "num_images": total,
            "class_names": list(names),
            "miou_classes": list(classes),
            "pictures": str(pictures) if n_pics else "",
            "description": {
                "coarse": "backbone on the whole image at the first scale, resized to the label",
                "patch": "backbone on the patches of the finest scale, stitched, no refinement",
                "magnet": "MagNet: all scales with the trained refinement module(s)",
            },
        }
    )
    return out


def format_results(results: dict) -> str:
    """The per-class table coarse | patch | MagNet and the mIoU row."""
    from magnet_jax.metrics import format_iou_table

    cols = ("coarse", "patch", "magnet")
    table = format_iou_table(
        results["class_names"],
        {k: np.asarray(results[k]["iou"]) for k in cols},
        results["miou_classes"],
        {k: results[k]["miou"] for k in cols},
    )
    extra = ""
    if "wall_s" in results:
        extra = "\nwall time (s): " + ", ".join(f"{k} {v}" for k, v in results["wall_s"].items())
    return f"{results['split']} split, {results['num_images']} images (IoU %)\n{table}{extra}"
