"""The static MagNet plan: patch grids, k, point budgets, and the errors for bad settings."""

from __future__ import annotations

import numpy as np
import pytest

from magnet_jax.commands.checks import check_config
from magnet_jax.config import default_config, validate_config
from magnet_jax.inference.plan import make_plan, plan_from_config, point_budget
from magnet_jax.inference.predictor import MagNetPredictor


def test_deepglobe_plan():
    plan = make_plan(
        [(612, 612), (1224, 1224), (2448, 2448)],
        (612, 612),
        (508, 508),
        7,
        n_points=0.75,
        smooth_kernel=11,
        compat="reference",
    )
    assert [(s.n_total, s.k) for s in plan.stages] == [(4, 4), (16, 16)]
    assert [s.budget for s in plan.stages] == [int(1224 * 1224 * 0.75), int(2448 * 2448 * 0.75)]
    assert not any(s.zero_error_in_mask or s.filter_points_by_mask for s in plan.stages)
    assert plan.input_hw == (508, 508) and plan.last_hw == (2448, 2448)
    np.testing.assert_array_equal(plan.stages[0].boxes[3], [612, 612, 1224, 1224])


def test_fast_plan_and_budgets():
    plan = make_plan(
        [(256, 128), (512, 256), (1024, 512)], (256, 128), (256, 128), 19, n_patches=3, n_points=0.9, compat="reference"
    )
    assert [(s.n_total, s.k) for s in plan.stages] == [(4, 3), (16, 3)]
    assert plan.stages[0].budget == int(512 * 256 * 0.9 * 3 / 4)
    assert all(s.zero_error_in_mask and s.filter_points_by_mask for s in plan.stages)
    paper = make_plan([(256, 128), (512, 256)], (256, 128), (256, 128), 19, n_patches=3, n_points=0.9)
    assert not paper.stages[0].zero_error_in_mask and paper.stages[0].filter_points_by_mask
    assert point_budget((512, 256), 32768, 4, 4) == 32768
    assert point_budget((512, 256), 1e9, 2, 4) == 512 * 256 // 2
    assert point_budget((10, 10), 1.0, 1, 1) == 100
    # n_patches == 0: the original skips refinement
    assert make_plan([(64, 64), (128, 128)], (64, 64), (64, 64), 2, n_patches=0).stages == ()


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("scales", "512-256,256-128", "increase"),
        ("scales", "256-128,512-128", "increase"),
        ("n_patches", -2, "n_patches"),
        ("n_patches", 5, "n_patches"),  # more than the largest grid (4 patches)
        ("n_points", 0.0, "n_points"),
        ("n_points", -3.0, "n_points"),
        ("n_points", float("nan"), "n_points"),
        ("n_points", 1.5, "whole number"),
        ("smooth_kernel", 0, "smooth_kernel"),
        ("compat", "exact", "compat"),
    ],
)
def test_bad_settings_are_refused(field, value, match):
    c = default_config()
    c.magnet.scales = "256-128,512-256"
    setattr(c.magnet, field, value)
    with pytest.raises(ValueError, match=match):
        check_config(c)  # every check a command runs before any work
    if field != "scales":
        with pytest.raises(ValueError, match=match):
            plan_from_config(c)


def test_refiner_count_is_checked():
    c = default_config()
    c.magnet.scales = "256-128,512-256,1024-512"
    c.checkpoint.refiners = "a.pth,b.pth,c.pth"
    with pytest.raises(ValueError, match="refiners"):
        validate_config(c)
    c.checkpoint.refiners = "a.pth,b.pth"
    validate_config(c)
    plan = plan_from_config(c)
    with pytest.raises(ValueError, match="expected 1 .shared. or 2"):
        MagNetPredictor(plan, None, [object(), object(), object()])


def test_default_configs_validate():
    import importlib.util
    from pathlib import Path

    for name in ("cityscapes", "deepglobe"):
        path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        c = mod.get_config()
        validate_config(c)
        plan = plan_from_config(c)
        assert len(plan.stages) == len(plan.scales) - 1


def test_check_config_returns_the_specs_it_checked():
    from magnet_jax.allocator import release_heap
    from magnet_jax.data.sample_spec import BackboneSampleSpec
    from magnet_jax.inference.tiled import StreamOptions
    from magnet_jax.training import spec

    c = default_config()
    c.magnet.scales, c.train.target, c.train.shared_refiner = "256-128,512-256,1024-512", "all", False
    checked = check_config(c, "train")  # what main.py hands to the command, which checks nothing again
    assert repr(checked.plan) == repr(plan_from_config(c))  # (its arrays make == ambiguous)
    # the commands' streaming options hand freed tile buffers back to the OS after each tile (an entry point's
    # allocator setting, kept out of the tiled algorithm)
    assert checked.stream == StreamOptions.from_config(c, after_tile=release_heap)
    assert checked.dataset.miou_classes == tuple(range(19))
    assert checked.backbone_run == spec.backbone_run(c, checked.dataset.miou_classes, phase_overrides=True)
    assert [r.name for r in checked.refiner_runs] == ["refiner_stage1", "refiner_stage2"]
    assert checked.backbone_sample == BackboneSampleSpec((256, 128), None, (0.5, 2.0), 255)
    c.train.target = "refiner"
    assert check_config(c, "train").backbone_sample is None  # no backbone trained: its samples are not read
    other = check_config(c, "evaluate")
    assert other.backbone_run is None and other.refiner_runs == () and other.mode == "evaluate"
