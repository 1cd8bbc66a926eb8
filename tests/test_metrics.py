"""Confusion matrix, IoU and mIoU as the original defines them (MAGNET_SPEC.md section 3)."""

from __future__ import annotations

import numpy as np
import pytest

from magnet_jax import metrics
from magnet_jax.config import default_config


def test_confusion_matrix_rows_are_ground_truth_and_ignore_is_skipped():
    label = np.array([[0, 1, 1], [2, 255, 3]])
    pred = np.array([[0, 1, 2], [2, 0, 1]])
    cm = metrics.confusion_matrix(label, pred, 3, ignore_label=255)
    # label 3 is >= n and 255 is ignored
    expected = np.zeros((3, 3), np.int64)
    expected[0, 0] = 1
    expected[1, 1] = 1
    expected[1, 2] = 1
    expected[2, 2] = 1
    np.testing.assert_array_equal(cm, expected)


def test_confusion_matrix_jax_matches_numpy():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 6, (40, 50)).astype(np.uint8)
    label[rng.random((40, 50)) < 0.1] = 255
    pred = rng.integers(0, 5, (40, 50))
    np.testing.assert_array_equal(
        np.asarray(metrics.confusion_matrix_jax(label, pred, 5, 255)), metrics.confusion_matrix(label, pred, 5, 255)
    )


def test_iou_and_miou_definitions():
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    iou = metrics.iou_per_class(cm)
    np.testing.assert_allclose(iou, [5 / (6 + 7 - 5), 3 / (5 + 4 - 3), 0.0])  # absent class counts 0
    assert metrics.mean_iou(cm) == pytest.approx(iou.mean())
    assert metrics.mean_iou(cm, [1, 2]) == pytest.approx(iou[1:].mean())
    freq = cm.sum(1) / cm.sum()
    assert metrics.freq_weighted_iou(cm, [0, 1]) == pytest.approx((iou[:2] * freq[:2]).sum() / freq[:2].sum())
    assert metrics.mean_iou(np.zeros((3, 3))) == 0.0


def test_overall_scores_miou_fwiou_and_one_class_iou():
    # rows = truth: class 0 (background) 10 px, class 1 6 px, class 2 4 px
    cm = np.array([[8, 1, 1], [2, 4, 0], [0, 1, 3]])
    iou = metrics.iou_per_class(cm)
    np.testing.assert_allclose(iou, [8 / 12, 4 / 8, 3 / 5])
    assert metrics.overall_score(cm, [1, 2], "miou") == pytest.approx((0.5 + 0.6) / 2)
    # The original's get_freq_iou for Gleason: (IoU[1:] * freq[1:]).sum() / freq[1:].sum()
    freq = cm.sum(1) / cm.sum()
    assert metrics.overall_score(cm, [1, 2], "fwiou") == pytest.approx((iou[1:] * freq[1:]).sum() / freq[1:].sum())
    assert metrics.overall_score(cm, [1, 2], "fwiou") == pytest.approx((0.5 * 6 + 0.6 * 4) / 10)
    assert metrics.overall_score(cm, [0, 1, 2], "iou_class:0") == pytest.approx(8 / 12)  # classes unused
    assert metrics.overall_score(np.zeros((2, 2)), [0, 1], "iou_class:1") == 0.0
    with pytest.raises(ValueError, match=r"'miou', 'fwiou' or 'iou_class:K' with K in 0..2, got 'iou_class:3'"):
        metrics.overall_score(cm, [1], "iou_class:3")
    with pytest.raises(ValueError, match="config.data.metric"):
        metrics.parse_metric("dice", 3)


def test_accumulator_and_table():
    acc = metrics.ConfusionMatrix(3, 255, [1, 2])
    acc.update(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]))
    acc.update(np.array([1, 255]), np.array([1, 0]))
    assert acc.matrix.sum() == 5
    assert acc.miou() == pytest.approx(np.mean(metrics.iou_per_class(acc.matrix)[[1, 2]]))
    table = metrics.format_iou_table(
        ["a", "b", "c"],
        {"coarse": acc.iou(), "refined": acc.iou()},
        [1, 2],
        {"coarse": acc.miou(), "refined": acc.miou()},
    )
    assert "mIoU" in table and "a *" in table


def test_absent_classes_zero_for_the_original_skip_for_the_cityscapes_scorer():
    # class 0: 4 of 5 right; class 1: never in the ground truth but predicted once (IoU 0, present);
    # class 2: absent from both ground truth and prediction
    cm = np.array([[4, 1, 0], [0, 0, 0], [0, 0, 0]])
    assert metrics.mean_iou(cm, absent="zero") == pytest.approx((4 / 5 + 0 + 0) / 3)  # the original MagNet
    assert metrics.mean_iou(cm, absent="skip") == pytest.approx((4 / 5 + 0) / 2)  # cityscapesscripts: NaN, skipped
    assert metrics.overall_score(cm, [0, 1, 2], "miou", "skip") == pytest.approx(0.4)
    assert metrics.mean_iou(cm, [2], absent="skip") == 0.0  # nothing left to average
    with pytest.raises(ValueError, match="absent-class rule: expected one of zero, skip, got 'nan'"):
        metrics.mean_iou(cm, absent="nan")


def test_each_benchmark_names_its_absent_class_rule_in_the_protocol():
    from magnet_jax.data import dataset_spec

    rules = {}
    for name in ("cityscapes", "deepglobe", "gleason", "inria"):
        c = default_config()
        c.data.name = name
        c.data.num_classes = {"cityscapes": 19, "deepglobe": 7, "gleason": 5, "inria": 2}[name]
        p = dataset_spec(c).protocol("val")
        rules[name] = p["absent_classes"]
        assert p["absent_classes_rule"] == metrics.ABSENT_RULES[p["absent_classes"]]
    assert rules == {"cityscapes": "skip", "deepglobe": "zero", "gleason": "zero", "inria": "zero"}


def test_results_follow_the_datasets_rule_and_name_the_classes_left_out():
    from magnet_jax.data import dataset_spec
    from magnet_jax.evaluation.results import build_results, format_results
    from magnet_jax.inference.plan import make_plan

    cityscapes = dataset_spec(default_config())
    conf = np.zeros((19, 19), np.int64)
    conf[0, 0], conf[0, 1], conf[2, 2] = 3, 1, 5  # road 3/4, sidewalk predicted once, building 5/5
    plan = make_plan([(64, 32), (128, 64)], (64, 32), (64, 32), 19)
    res = build_results(
        cityscapes, plan, stage_matrices=[conf, conf], patch_matrix=None, num_images=1, seconds=[1.0],
        compile_seconds=None, points_refined=[0.0], memory={}, partial=False,
    )  # fmt: skip
    assert res["absent_classes"] == "skip"
    assert res["miou"]["refined"] == pytest.approx((3 / 4 + 0 + 1) / 3)  # 16 classes absent from both: skipped
    assert res["overall"]["refined"] == res["miou"]["refined"]
    assert "left out of the mean, absent from ground truth and prediction: wall, fence, pole" in format_results(res)
