"""Tiled prediction within a memory budget: the tile size from the budget, scaled images read in exact bands,
whole-image resizes refused above the budget, and tile progress on stderr."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from magnet_jax.config import default_config, validate_config
from magnet_jax.data.synthetic import generate_sample
from magnet_jax.inference.plan import make_plan
from magnet_jax.inference.predictor import MagNetPredictor
from magnet_jax.inference.tiled import StreamOptions
from magnet_jax.memory_budget import estimate_mb, tile_patches_for
from magnet_jax.models import build_model
from magnet_jax.progress import progress_enabled
from magnet_jax.rasters.large_io import ImageSource
from magnet_jax.rasters.scaled import ScaledImage, check_scales, exact_scales

C = 5


def test_tile_patches_from_the_budget():
    # 20000 px, 5 classes: a 1250 px patch is 31 MB of float32 P, a 512 px one 5 MB
    assert tile_patches_for((1250, 1250), C, (20000, 20000), 4096) == 1
    assert tile_patches_for((512, 512), C, (20000, 20000), 4096) == 6
    # more classes or a smaller budget: smaller tiles; float16 maps: never larger than float32 ones
    assert tile_patches_for((512, 512), 19, (20000, 20000), 4096) == 2
    assert tile_patches_for((512, 512), C, (20000, 20000), 2048) == 3
    assert tile_patches_for((512, 512), C, (20000, 20000), 4096, map_itemsize=2) >= 6
    for t in (1, 6):
        assert estimate_mb(t, (512, 512), C, (20000, 20000)) <= 4096
    assert estimate_mb(7, (512, 512), C, (20000, 20000)) > 4096
    # nothing fits: one patch per tile, the least a stage can run on
    assert tile_patches_for((4096, 4096), 19, (20000, 20000), 1024) == 1


def test_config_budget_fields():
    c = default_config()
    assert c.magnet.tile_patches == 0 and c.magnet.memory_budget_mb == 4096 and c.predict.progress == "auto"
    for field, value, want in (
        ("magnet.memory_budget_mb", 100, "config.magnet.memory_budget_mb: expected an integer >= 1024"),
        ("magnet.tile_patches", -2, "config.magnet.tile_patches: expected an integer >= 0, got -2"),
        ("predict.progress", "yes", "config.predict.progress: expected one of auto, on, off, got 'yes'"),
        ("predict.reader", "gdal", "config.predict.reader: expected one of auto, tifffile, openslide"),
    ):
        c = default_config()
        section, name = field.split(".")
        c[section][name] = value
        with pytest.raises(ValueError, match=want.replace("(", r"\(")):
            validate_config(c)


def test_scaled_image_bands_are_exact_and_bounded():
    image = np.random.default_rng(0).integers(0, 256, (640, 640, 3), dtype=np.uint8)
    reads = []
    counting = ImageSource("counting", (640, 640), lambda y0, y1, x0, x1: reads.append((y1 - y0) * (x1 - x0)) or
                           image[y0:y1, x0:x1])  # fmt: skip
    for scale in ((160, 160), (320, 320), (512, 512), (1280, 1280)):  # ratios 4, 2, 5/4, 1/2: exact
        whole = cv2.resize(image, scale, interpolation=cv2.INTER_LINEAR)
        reads.clear()
        banded = ScaledImage(counting, scale, band_bytes=3 * 640 * 40)  # ~40 source rows per band
        assert banded.exact_regions
        np.testing.assert_array_equal(banded.read(0, scale[1], 0, scale[0]), whole)
        np.testing.assert_array_equal(banded.read(7, scale[1] - 3, 5, scale[0] - 9), whole[7:-3, 5:-9])
        assert max(reads) <= 640 * 80, (scale, max(reads))  # a band and its margin, never the whole image


def test_whole_image_resize_refused_above_the_budget():
    src = ImageSource.from_array(np.zeros((4000, 3000, 3), np.uint8), "big.tif")
    assert exact_scales(src.size_hw, 3) == ["3000-4000", "1500-2000", "750-1000", "375-500"]
    check_scales(src, [(750, 1000), (1500, 2000)], budget_bytes=1 << 20)  # exact: read by region at any budget
    check_scales(src, [(700, 900)], budget_bytes=64 << 20)  # 3/10-ish ratio, but 38 MB fit in 64 MB
    with pytest.raises(ValueError) as e:
        check_scales(src, [(750, 1000), (700, 900)], budget_bytes=16 << 20)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("config.magnet.scales: scale 700-900 is not a power-of-two fraction")
    assert "of the 3000x4000 image big.tif, so it needs the whole image resized in memory" in msg
    assert "(36 MB > config.magnet.memory_budget_mb=16)" in msg and "1500-2000, 750-1000, 375-500" in msg


@pytest.fixture(scope="module")
def tiny():
    backbone = build_model("small", C, seed=1)
    refiner = build_model("refinement", C, seed=2)
    plan = make_plan([(128, 128), (256, 256)], (80, 80), (80, 80), C)
    return generate_sample(1234, "test", 0, 256)[0], plan, backbone, refiner


def test_budget_sets_tiles_and_explicit_value_wins(tiny, capfd):
    image, plan, backbone, refiner = tiny
    budget = MagNetPredictor(plan, backbone, refiner, stream=StreamOptions(mode="on", progress=True))
    res = budget.predict(image)
    assert res.stages[1].tile_patches == tile_patches_for((80, 80), C, (256, 256), 4096) == 16
    err = capfd.readouterr().err
    assert "stage 1 refine" in err and "1/1" in err  # tqdm's count: the 4x4 patch grid in one tile
    explicit = MagNetPredictor(plan, backbone, refiner, stream=StreamOptions(mode="on", tile_patches=2))
    res2 = explicit.predict(image)
    assert res2.stages[1].tile_patches == 2
    np.testing.assert_array_equal(res2.labels.read(0, 256, 0, 256), res.labels.read(0, 256, 0, 256))
    res.close()
    res2.close()
    assert "stage 1 refine" not in capfd.readouterr().err  # off unless asked (stderr is not a terminal here)
    assert progress_enabled("on") and not progress_enabled("off") and not progress_enabled("auto")


def test_workdir_records_from_before_the_budget_fields_still_match():
    """A training record written with `tile_patches = 4` and without the budget / pyramid fields continues
    (tile size and budget change memory, not results); only turning pyramids on is a difference."""
    from magnet_jax.commands.workdir import differences

    old = {"seed": 3, "magnet.tile_patches": 4}
    new = {"seed": 3, "magnet.tile_patches": 0, "magnet.memory_budget_mb": 4096, "magnet.input_pyramid": False}
    assert differences(old, new) == []
    assert differences(old, {**new, "magnet.input_pyramid": True}) == ["magnet.input_pyramid: False -> True"]
