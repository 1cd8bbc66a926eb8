"""Segmentation metrics as the original MagNet defines them (MAGNET_SPEC.md section 3).

- Confusion matrix: rows = ground truth, columns = prediction, over the pixels whose label is
  `>= 0`, `< num_classes` and `!= ignore_label`.
- IoU per class: `diag / max(1, row_sum + col_sum - diag)` (a class absent from both the labels
  and the predictions scores 0, as in the original).
- mIoU: the mean of the IoU over a dataset-specific set of classes: Cityscapes averages all 19,
  DeepGlobe classes 1..6 (class 0 "unknown" is excluded). The dataset registry resolves the set
  (`magnet_jax.data.dataset_spec(config).miou_classes`). Classes absent from both the labels and the
  predictions follow the benchmark's scorer (`ABSENT_RULES`): "zero" counts them as IoU 0 (the original
  MagNet, kept for DeepGlobe, Gleason, Inria), "skip" leaves them out of the mean (the official
  Cityscapes scorer, whose IoU is NaN for them).
- Frequency-weighted IoU (the original's per-image progress-bar number, and its overall Gleason
  number `get_freq_iou`): IoU weighted by the ground-truth pixel share of each averaged class.
- The overall metric of a benchmark (`overall_score`), one of `METRICS`:
  `"miou"` (Cityscapes, DeepGlobe), `"fwiou"` (Gleason: the original's `get_freq_iou` over classes
  1..4), `"iou_class:K"` (the IoU of class K alone: Inria Aerial's building IoU, class 1, which the
  field reports as its "mIoU").

NumPy functions work on host arrays (evaluation); `confusion_matrix_jax` is the jit-able twin for
training-time validation on device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "ConfusionMatrix",
    "confusion_matrix",
    "confusion_matrix_jax",
    "freq_weighted_iou",
    "iou_per_class",
    "mean_iou",
    "METRICS",
    "overall_score",
    "parse_metric",
    "format_iou_table",
    "ABSENT_RULES",
]

METRICS = ("miou", "fwiou", "iou_class:K")
ABSENT_RULES = {
    "zero": "classes absent from both ground truth and prediction score IoU 0 in the mean (the original MagNet)",
    "skip": "classes absent from both ground truth and prediction are left out of the mean "
    "(NaN in the official Cityscapes scorer, cityscapesscripts)",
}


def confusion_matrix(
    label: np.ndarray, pred: np.ndarray, num_classes: int, ignore_label: int | None = None
) -> np.ndarray:
    """`[n, n]` int64 confusion matrix (rows = ground truth, columns = prediction).

    Args:
        label: integer ground truth of any shape.
        pred: integer prediction, same shape as `label`.
        num_classes: n.
        ignore_label: label value to skip (e.g. 255); labels outside `[0, n)` are skipped too.
    """
    label = np.asarray(label)
    pred = np.asarray(pred)
    if label.shape != pred.shape:
        raise ValueError(f"confusion_matrix: label shape {label.shape} != prediction shape {pred.shape}")
    label = label.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    valid = (label >= 0) & (label < num_classes) & (pred >= 0) & (pred < num_classes)
    if ignore_label is not None:
        valid &= label != ignore_label
    idx = num_classes * label[valid] + pred[valid]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).astype(np.int64)


def confusion_matrix_jax(label, pred, num_classes: int, ignore_label: int | None = None):
    """jit-able confusion matrix: same definition as `confusion_matrix`, returns `[n, n]` int32
    (used inside the training steps; one bincount with an overflow bin for the pixels left out)."""
    import jax.numpy as jnp

    n = int(num_classes)
    label = jnp.asarray(label).astype(jnp.int32).ravel()
    pred = jnp.asarray(pred).astype(jnp.int32).ravel()
    valid = (label >= 0) & (label < n) & (pred >= 0) & (pred < n)
    if ignore_label is not None:
        valid &= label != ignore_label
    idx = jnp.where(valid, n * label + pred, n * n)
    return jnp.bincount(idx, length=n * n + 1)[: n * n].reshape(n, n).astype(jnp.int32)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """`[n]` IoU per class: `diag / max(1, row + col - diag)`."""
    conf = np.asarray(conf, dtype=np.float64)
    diag = np.diag(conf)
    union = np.maximum(1.0, conf.sum(axis=1) + conf.sum(axis=0) - diag)
    return diag / union


def _classes(conf: np.ndarray, classes: Sequence[int] | None) -> np.ndarray:
    n = conf.shape[0]
    if classes is None or len(classes) == 0:
        return np.arange(n)
    cls = np.asarray(list(classes), dtype=np.int64)
    if cls.min() < 0 or cls.max() >= n:
        raise ValueError(f"mIoU classes {list(classes)} out of range for {n} classes")
    return cls


def mean_iou(conf: np.ndarray, classes: Sequence[int] | None = None, absent: str = "zero") -> float:
    """mIoU over `classes` (all when None or empty), absent classes by the rule `absent` (`ABSENT_RULES`);
    0 for an empty matrix."""
    conf = np.asarray(conf)
    if absent not in ABSENT_RULES:
        raise ValueError(f"absent-class rule: expected one of {', '.join(ABSENT_RULES)}, got {absent!r}")
    if conf.sum() == 0:
        return 0.0
    cls = _classes(conf, classes)
    iou = iou_per_class(conf)[cls]
    if absent == "skip":
        present = (conf.sum(axis=0) + conf.sum(axis=1))[cls] > 0
        return float(iou[present].mean()) if present.any() else 0.0
    return float(iou.mean())


def freq_weighted_iou(conf: np.ndarray, classes: Sequence[int] | None = None) -> float:
    """IoU weighted by each class's ground-truth pixel share, over `classes` (the original's per-image number)."""
    conf = np.asarray(conf, dtype=np.float64)
    if conf.sum() == 0:
        return 0.0
    cls = _classes(conf, classes)
    freq = conf.sum(axis=1) / conf.sum()
    total = freq[cls].sum()
    if total == 0:
        return 0.0
    return float((iou_per_class(conf)[cls] * freq[cls]).sum() / total)


def parse_metric(metric: str, num_classes: int, field: str = "config.data.metric") -> tuple[str, int | None]:
    """`"miou"` | `"fwiou"` | `"iou_class:K"` -> (kind, K or None); ValueError naming `field` otherwise."""
    text = str(metric).strip()
    if text in ("miou", "fwiou"):
        return text, None
    kind, _, k = text.partition(":")
    if kind == "iou_class" and k.strip().isdigit() and 0 <= int(k) < int(num_classes):
        return kind, int(k)
    raise ValueError(
        f"{field}: expected 'miou', 'fwiou' or 'iou_class:K' with K in 0..{int(num_classes) - 1}, got {metric!r}"
    )


def overall_score(conf: np.ndarray, classes: Sequence[int] | None, metric: str, absent: str = "zero") -> float:
    """A benchmark's overall number from a summed confusion matrix `[n, n]` (a fraction, 0..1).

    - "miou": `mean_iou(conf, classes, absent)`;
    - "fwiou": `freq_weighted_iou(conf, classes)` (the original's `get_freq_iou`, Gleason);
    - "iou_class:K": the IoU of class K (`classes` unused; Inria: K = 1, building).
    An empty matrix scores 0.
    """
    conf = np.asarray(conf)
    kind, k = parse_metric(metric, conf.shape[0], field="metric")
    if kind == "miou":
        return mean_iou(conf, classes, absent)
    if kind == "fwiou":
        return freq_weighted_iou(conf, classes)
    return float(iou_per_class(conf)[k]) if conf.sum() else 0.0


class ConfusionMatrix:
    """Accumulates confusion matrices over images; `update` returns the image's own matrix."""

    def __init__(self, num_classes: int, ignore_label: int | None = None, classes: Sequence[int] | None = None):
        self.num_classes = int(num_classes)
        self.ignore_label = ignore_label
        self.classes = list(classes) if classes else list(range(num_classes))
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, label: np.ndarray, pred: np.ndarray) -> np.ndarray:
        mat = confusion_matrix(label, pred, self.num_classes, self.ignore_label)
        self.matrix += mat
        return mat

    def iou(self) -> np.ndarray:
        return iou_per_class(self.matrix)

    def miou(self) -> float:
        return mean_iou(self.matrix, self.classes)

    def freq_iou(self) -> float:
        return freq_weighted_iou(self.matrix, self.classes)


def format_iou_table(
    class_names: Sequence[str], columns: dict[str, np.ndarray], classes: Sequence[int], summary: dict[str, float]
) -> str:
    """Plain-text table: one row per class (IoU in % per column), `*` marks classes not averaged, then the mIoU row."""
    names = list(class_names)
    width = max([len("mIoU")] + [len(n) for n in names]) + 2
    heads = list(columns)
    lines = ["class".ljust(width) + "".join(h.rjust(10) for h in heads)]
    averaged = set(classes)
    for i, name in enumerate(names):
        mark = "" if i in averaged else " *"
        lines.append((name + mark).ljust(width) + "".join(f"{100.0 * float(columns[h][i]):10.2f}" for h in heads))
    lines.append("-" * (width + 10 * len(heads)))
    lines.append("mIoU".ljust(width) + "".join(f"{100.0 * float(summary[h]):10.2f}" for h in heads))
    if len(averaged) != len(names):
        lines.append("(* not averaged into mIoU)")
    return "\n".join(lines)
