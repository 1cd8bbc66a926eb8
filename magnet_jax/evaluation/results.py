"""The one results schema (`results.json`, each line of `sweep.jsonl`) and its table printer.

    {
      "schema": "magnet-jax/results/2",
      "num_images": 16, "partial": false,
      "class_names": [...], "miou_classes": [...], "metric": "miou", "absent_classes": "zero" | "skip",
      "miou":    {"coarse": .., "stages": [stage 0, ..., last], "refined": .., "patch": .. (patch view only)},
      "overall": {"metric": "miou", "coarse": .., "stages": [...], "refined": .., "patch": ..},
      "iou":     {"coarse": [per class], "refined": [...], "patch": [...]},
      "confusion": {"coarse": [[...]], "refined": [[...]], "patch": [[...]]},
      "compute": {"backbone_passes", "refiner_passes", "points_budget": [per stage], "points_refined": [...],
                  "gflops": per image or null},
      "seconds_per_image": median, "compile_seconds": .. or null,
      "peak_memory_mb": .., "peak_memory_source": "device" | "process peak RSS ...",
      "plan": "<MagNetPlan.describe()>"
    }
Commands add what they know (dataset, split, protocol, checkpoints, config fields, wall times).
Scores are fractions (0..1); tables print percentages.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from magnet_jax.metrics import format_iou_table, iou_per_class, mean_iou, overall_score

RESULTS_SCHEMA = "magnet-jax/results/2"


def compute_counts(plan) -> dict:
    """What a MagNet run costs by construction of its plan: backbone passes (1 whole-image view plus one
    per refined patch), refiner passes (one per refined patch) and the point budget per stage."""
    ks = [int(st.k) for st in plan.stages]
    return {
        "backbone_passes": 1 + sum(ks),
        "refiner_passes": sum(ks),
        "patches_refined": ks,
        "points_budget": [int(st.budget) for st in plan.stages],
    }


def build_results(
    dataset: Any,
    plan,
    *,
    stage_matrices: Sequence[np.ndarray],
    patch_matrix: np.ndarray | None,
    num_images: int,
    seconds: Sequence[float],
    compile_seconds: float | None,
    points_refined: Sequence[float],
    memory: dict,
    partial: bool,
    gflops: float | None = None,
) -> dict:
    """The results dict (module docstring) from per-stage confusion matrices `[n, n]` summed over images."""
    classes = list(dataset.miou_classes)
    metric = str(dataset.metric)
    views = {"coarse": stage_matrices[0], "refined": stage_matrices[-1]}
    if patch_matrix is not None:
        views["patch"] = patch_matrix
    absent = dataset.absent_classes  # the benchmark scorer's rule (metrics.ABSENT_RULES)
    miou = {k: mean_iou(m, classes, absent) for k, m in views.items()}
    miou["stages"] = [mean_iou(m, classes, absent) for m in stage_matrices]
    overall = {k: overall_score(m, classes, metric, absent) for k, m in views.items()}
    overall["stages"] = [overall_score(m, classes, metric, absent) for m in stage_matrices]
    overall["metric"] = metric
    compute = compute_counts(plan)
    compute["points_refined"] = [round(float(p), 1) for p in points_refined]
    compute["gflops"] = gflops
    return {
        "schema": RESULTS_SCHEMA,
        "num_images": int(num_images),
        "partial": bool(partial),
        "class_names": list(dataset.class_names),
        "miou_classes": classes,
        "metric": metric,
        "absent_classes": absent,
        "miou": miou,
        "overall": overall,
        "iou": {k: iou_per_class(m).tolist() for k, m in views.items()},
        "confusion": {k: np.asarray(m).tolist() for k, m in views.items()},
        "compute": compute,
        "seconds_per_image": statistics.median(seconds) if seconds else None,
        "compile_seconds": compile_seconds,
        **memory,
        "plan": plan.describe(),
    }


def format_results(results: dict) -> str:
    """Per-class IoU (%) for coarse | patch | MagNet, the mIoU row, the overall metric when it is not the
    mIoU, the mIoU after each stage, and time / memory."""
    cols = [k for k in ("coarse", "patch", "refined") if k in results["iou"]]
    heads = {"coarse": "coarse", "patch": "patch", "refined": "MagNet"}
    table = format_iou_table(
        results["class_names"],
        {heads[k]: np.asarray(results["iou"][k]) for k in cols},
        results["miou_classes"],
        {heads[k]: results["miou"][k] for k in cols},
    )
    lines = []
    where = " ".join(str(results[k]) for k in ("dataset", "split") if results.get(k))
    partial = " (PARTIAL: " + str(results.get("error", "stopped early")) + ")" if results.get("partial") else ""
    lines.append(f"{where + ', ' if where else ''}{results['num_images']} images (IoU %){partial}")
    lines.append(table)
    overall = results.get("overall", {})
    if overall.get("metric", "miou") != "miou":
        lines.append(
            f"{overall['metric']} (the benchmark's overall metric): "
            + ", ".join(f"{heads[k]} {100 * overall[k]:.2f}" for k in cols)
        )
    if results.get("absent_classes") == "skip":
        conf = np.asarray(results["confusion"]["refined"])
        union = conf.sum(0) + conf.sum(1)
        skipped = [results["class_names"][c] for c in results["miou_classes"] if union[c] == 0]
        if skipped:
            lines.append("left out of the mean, absent from ground truth and prediction: " + ", ".join(skipped))
    lines.append("mIoU after each stage: " + " -> ".join(f"{100 * v:.2f}" for v in results["miou"]["stages"]))
    extra = []
    if results.get("seconds_per_image") is not None:
        extra.append(f"{results['seconds_per_image']:.3f} s/image (median)")
    if results.get("compile_seconds") is not None:
        extra.append(f"compile {results['compile_seconds']:.1f} s")
    if results.get("peak_memory_mb") is not None:
        extra.append(f"peak memory {results['peak_memory_mb']:.0f} MB ({results['peak_memory_source']})")
    gflops = results.get("compute", {}).get("gflops")
    if gflops is not None:
        extra.append(f"{gflops:.1f} GFLOP/image")
    if extra:
        lines.append(", ".join(extra))
    if "wall_s" in results:
        lines.append("wall time (s): " + ", ".join(f"{k} {v}" for k, v in results["wall_s"].items()))
    return "\n".join(lines)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes `text` to `path` through a temporary file and `os.replace`: a kill mid-write, or a full disk,
    leaves the old file (and no temporary one)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Writes JSON to `path` atomically (`write_text_atomic`)."""
    return write_text_atomic(path, json.dumps(data, indent=1) + "\n")
