"""Pyramidal inputs: scales resized from the nearest pyramid level (opt-in), and whole-slide reading through
OpenSlide (a generic tiled pyramidal TIFF: no vendor slides are available offline)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile

from magnet_jax.inference.plan import make_plan
from magnet_jax.inference.predictor import MagNetPredictor
from magnet_jax.inference.tiled import StreamOptions
from magnet_jax.models import build_model
from magnet_jax.rasters.large_io import open_image, uses_slide_reader
from magnet_jax.rasters.scaled import ScaledImage, check_scales


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    """A 1024 px RGB TIFF, 256 px deflate tiles, reduced levels 512 and 256 in the main IFD chain (the form
    OpenSlide reads), with each level's own content (not a downsample) so a test sees which level was read."""
    rng = np.random.default_rng(0)
    levels = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for s in (1024, 512, 256)]
    path = tmp_path_factory.mktemp("pyr") / "slide.tif"
    with tifffile.TiffWriter(path) as tw:
        for i, data in enumerate(levels):
            tw.write(data, tile=(256, 256), compression="zlib", photometric="rgb", subfiletype=1 if i else 0)
    return path, levels


def test_scales_resize_from_the_nearest_level(pyramid):
    path, levels = pyramid
    src = open_image(path)
    assert [lv.size_hw for lv in src.levels] == [(1024, 1024), (512, 512), (256, 256)]
    for scale, level in (((256, 256), 2), ((300, 200), 1), ((512, 512), 1), ((600, 600), 0), ((128, 128), 2)):
        scaled = ScaledImage(src, scale, pyramid=True)
        assert scaled.source.size_hw == levels[level].shape[:2]
        want = cv2.resize(levels[level], scale, interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(scaled.read(0, scale[1], 0, scale[0]), want)
        # off (the default): always OpenCV's resize of full resolution, as the whole-image run
        off = ScaledImage(src, scale).read(0, scale[1], 0, scale[0])
        np.testing.assert_array_equal(off, cv2.resize(levels[0], scale, interpolation=cv2.INTER_LINEAR))
    # 300 x 200 from level 1 is not exact by region, but 512 px fit any budget; from level 0 they would not
    check_scales(src, [(300, 200)], 1 << 20, pyramid=True)
    with pytest.raises(ValueError, match="config.magnet.scales: scale 300-200 is not a power-of-two"):
        check_scales(src, [(300, 200)], 1 << 20)


def test_tiled_prediction_reads_the_pyramid(pyramid):
    path, _ = pyramid
    plan = make_plan([(256, 256), (1024, 1024)], (256, 256), (64, 64), 3)
    models = build_model("small", 3, seed=0), build_model("refinement", 3, seed=1)
    runs = {}
    for flag in (False, True):
        predictor = MagNetPredictor(plan, *models, stream=StreamOptions(mode="on", pyramid=flag))
        res = predictor.predict(open_image(path))
        runs[flag] = res.stages[0].probs.read(0, 64, 0, 64)  # stage 0's P [64, 64, 3]
        res.close()
    whole = MagNetPredictor(plan, *models).predict(tifffile.imread(path, level=0))
    np.testing.assert_array_equal(runs[False], np.asarray(whole.stages[0].probs))  # off: the whole-image run
    assert np.abs(runs[True] - runs[False]).max() > 1e-3  # on: stage 0 saw level 2's own content


def test_slide_reader_reads_tiled_tiff_levels(pyramid):
    path, levels = pyramid
    slide = open_image(path, reader="openslide")
    assert slide.kind == "slide (openslide)" and [lv.size_hw for lv in slide.levels] == [(1024, 1024), (512, 512),
                                                                                          (256, 256)]  # fmt: skip
    np.testing.assert_array_equal(slide.read(10, 500, 300, 1024), levels[0][10:500, 300:1024])
    np.testing.assert_array_equal(slide.levels[2].read(0, 256, 0, 256), levels[2])
    np.testing.assert_array_equal(slide.levels[1].read(100, 140, 7, 300), levels[1][100:140, 7:300])
    # the same scale through either reader: the same pixels
    np.testing.assert_array_equal(ScaledImage(slide, (512, 512)).read(0, 512, 0, 512),
                                  ScaledImage(open_image(path), (512, 512)).read(0, 512, 0, 512))  # fmt: skip
    assert uses_slide_reader("a.SVS") and uses_slide_reader("b.ndpi") and uses_slide_reader("c.mrxs")
    assert not uses_slide_reader("d.tif") and uses_slide_reader("d.tif", "openslide")
    assert not uses_slide_reader("e.svs", "tifffile")
    with pytest.raises(ValueError, match="config.predict.reader: expected one of auto, tifffile, openslide"):
        uses_slide_reader("d.tif", "gdal")
    not_a_slide = path.with_name("notes.ndpi")
    not_a_slide.write_text("not a slide")
    with pytest.raises(ValueError, match=r"notes.ndpi: OpenSlide cannot read it \(OpenSlide"):
        open_image(not_a_slide)
