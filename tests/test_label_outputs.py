"""Label outputs of `--mode=predict` that GIS, slide viewers and scorers read: labels.tif with the input's
georeferencing / resolution / OME pixel size and a pyramid, the ids PNG, GeoJSON polygons."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest
import tifffile

from magnet_jax.config import default_config, validate_config
from magnet_jax.data import dataset_spec
from magnet_jax.inference.outputs import predict_file, save_prediction
from magnet_jax.inference.plan import make_plan
from magnet_jax.inference.predictor import MagNetPredictor
from magnet_jax.inference.tiled import StreamOptions
from magnet_jax.models import build_model
from magnet_jax.preprocess import ImageDecodeError
from magnet_jax.rasters.image_meta import ImageMetadata
from magnet_jax.rasters.label_outputs import OutputOptions
from magnet_jax.rasters.large_io import open_image
from magnet_jax.rasters.polygons import label_polygons

C = 5
HELPERS = Path(__file__).resolve().parent / "helpers"
UTM_ORIGIN = (500000.0, 5000000.0)
# GeoKeyDirectory: version 1.1.0, 3 keys: model type projected, raster PixelIsArea, EPSG:32633 (UTM 33N)
GEOKEYS = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)


def _geotiff_tags(pixel: float = 0.5) -> list[tuple]:
    return [(33550, "d", 3, (pixel, pixel, 0.0), True), (33922, "d", 6, (0, 0, 0, *UTM_ORIGIN, 0), True),
            (34735, "H", len(GEOKEYS), GEOKEYS, True)]  # fmt: skip


def _models():
    backbone = build_model("small", C, seed=1)
    backbone.classify.kernel[...] = backbone.classify.kernel[...] * 30.0  # real decisions from random weights
    return backbone, build_model("refinement", C, seed=2)


def _image(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    rgb = np.stack([(xx * 255 // size), (yy * 255 // size), ((xx // 97 + yy // 131) % 2) * 200], -1)
    return rgb.astype(np.uint8)


def test_geotiff_4096px_streamed_labels_keep_crs_scaled_transform_and_levels(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    openslide = pytest.importorskip("openslide")
    path = tmp_path / "utm.tif"
    tifffile.imwrite(path, _image(4096), tile=(512, 512), compression="zlib", extratags=_geotiff_tags())
    plan = make_plan([(512, 512), (2048, 2048)], (512, 512), (128, 128), C, n_points=0.25)
    backbone, refiner = _models()
    streamed = MagNetPredictor(plan, backbone, refiner, stream=StreamOptions(mode="on"))
    names = [f"c{i}" for i in range(C)]
    predict_file(streamed, str(path), str(tmp_path / "out"), class_names=names)
    with rasterio.open(tmp_path / "out" / "labels.tif") as r:
        assert r.crs.to_epsg() == 32633
        assert (r.width, r.height) == (2048, 2048)
        # the label map is at the last scale (2048 px for 4096 px): 1 m pixels over the same extent
        assert tuple(r.transform)[:6] == (1.0, 0.0, UTM_ORIGIN[0], 0.0, -1.0, UTM_ORIGIN[1])
        assert r.nodata == 255 and r.overviews(1) == [2, 4]
        assert r.tags()["CLASS_3"] == "c3" and r.descriptions == ("class id",)
        labels = r.read(1)
    assert labels.max() < C and len(np.unique(labels)) > 1
    slide = openslide.OpenSlide(str(tmp_path / "out" / "labels.tif"))
    assert slide.level_count >= 3, slide.level_dimensions
    assert slide.level_dimensions[:3] == ((2048, 2048), (1024, 1024), (512, 512))


@pytest.fixture(scope="module")
def small_predictor():
    plan = make_plan([(64, 64), (128, 128)], (64, 64), (64, 64), C, n_points=0.5)
    backbone, refiner = _models()
    return MagNetPredictor(plan, backbone, refiner)


def _predict_tiff(predictor, tmp_path, size: int = 256, outputs=None, **tiff_kw):
    image = _image(size)
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, image, **tiff_kw)
    result = predictor.predict(image)
    out = tmp_path / "out"
    save_prediction(predictor, result, image, str(out), np.eye(C, 3, dtype=np.uint8) * 255, [f"c{i}" for i in range(C)],
                    figures=False, image_path=str(path), outputs=outputs)  # fmt: skip
    return result, out


def test_in_memory_tiff_input_writes_labels_tif_with_geotiff_tags(small_predictor, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    result, out = _predict_tiff(small_predictor, tmp_path, extratags=_geotiff_tags(0.25))
    with rasterio.open(out / "labels.tif") as r:  # 256 px input, 128 px map: 0.5 m pixels
        assert r.crs.to_epsg() == 32633
        assert tuple(r.transform)[:6] == (0.5, 0.0, UTM_ORIGIN[0], 0.0, -0.5, UTM_ORIGIN[1])
        np.testing.assert_array_equal(r.read(1), result.stages[-1].argmax)


def test_ome_physical_size_scaled_to_the_label_map(small_predictor, tmp_path):
    _, out = _predict_tiff(small_predictor, tmp_path, ome=True, metadata={"PhysicalSizeX": 0.25,
                           "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.3, "PhysicalSizeYUnit": "µm"})  # fmt: skip
    with tifffile.TiffFile(out / "labels.tif") as tif:
        assert tif.is_ome
        pixels = ElementTree.fromstring(tif.ome_metadata).find(".//{*}Pixels").attrib
        assert (pixels["SizeX"], pixels["PhysicalSizeX"], pixels["PhysicalSizeY"]) == ("128", "0.5", "0.6")
        assert pixels["PhysicalSizeXUnit"] == pixels["PhysicalSizeYUnit"] == "µm"
        page = tif.pages[0]
        # the same size as TIFF resolution tags: 1 / 0.5 µm = 20000 pixels per cm
        assert page.resolution == pytest.approx((20000.0, 1e4 / 0.6)) and page.resolutionunit == 3
    openslide = pytest.importorskip("openslide")
    props = openslide.OpenSlide(str(out / "labels.tif")).properties
    assert float(props["openslide.mpp-x"]) == pytest.approx(0.5) and float(props["openslide.mpp-y"]) == 0.6


def test_plain_resolution_tags_scaled_to_the_label_map(small_predictor, tmp_path):
    _, out = _predict_tiff(small_predictor, tmp_path, resolution=(300, 150), resolutionunit="INCH")
    with tifffile.TiffFile(out / "labels.tif") as tif:
        page = tif.pages[0]
        assert page.resolution == pytest.approx((150.0, 75.0)) and page.resolutionunit == 2
        assert not tif.is_ome and 33550 not in page.tags


def test_pixel_is_point_and_transformation_matrix_scaling():
    keys = (1, 1, 0, 1, 1025, 0, 1, 2)  # PixelIsPoint: the tiepoint is the centre of pixel (0, 0)
    meta = ImageMetadata((100, 200), ((33550, (2.0, 3.0, 0.0)), (33922, (0, 0, 0, 10.0, 20.0, 0)), (34735, keys)))
    # pixel-corner affine: centre of pixel 0 at x = 10 -> its left edge at 9; y: 20 + 1.5
    assert meta.transform() == (2.0, 0.0, 9.0, 0.0, -3.0, 21.5)
    half = meta.scaled((50, 100))
    assert half.transform() == (4.0, 0.0, 9.0, 0.0, -6.0, 21.5)  # same corner, pixels twice as big
    matrix = (2.0, 0.0, 0.0, 10.0, 0.0, -3.0, 0.0, 20.0, 0, 0, 0, 0, 0, 0, 0, 1)
    area = ImageMetadata((100, 200), ((34264, matrix),))
    assert area.scaled((25, 50)).transform() == (8.0, 0.0, 10.0, 0.0, -12.0, 20.0)


def test_label_polygons_of_a_hand_made_map():
    labels = np.zeros((10, 12), np.uint8)
    labels[2:8, 3:9] = 1  # a 6x6 square of class 1 ...
    labels[4:6, 5:7] = 2  # ... with a 2x2 hole holding class 2
    fc = label_polygons(labels, ["bg", "field", "pond"])
    by_class = {f["properties"]["class_id"]: f for f in fc["features"]}
    assert sorted(by_class) == [0, 1, 2] and len(fc["features"]) == 3
    field = by_class[1]
    assert field["properties"]["class_name"] == "field"
    outer, hole = field["geometry"]["coordinates"]
    assert outer[0] == outer[-1] and sorted(map(tuple, outer[:-1])) == [(3.5, 2.5), (3.5, 7.5), (8.5, 2.5), (8.5, 7.5)]
    # the hole's ring runs through the centres of the class-1 pixels around it (8-connected: corners cut)
    assert sorted(map(tuple, hole[:-1])) == [(4.5, 4.5), (4.5, 5.5), (5.5, 3.5), (5.5, 6.5), (6.5, 3.5), (6.5, 6.5),
                                             (7.5, 4.5), (7.5, 5.5)]  # fmt: skip
    assert len(by_class[0]["geometry"]["coordinates"]) == 2  # the background, with the square as its hole
    assert sorted(map(tuple, by_class[2]["geometry"]["coordinates"][0][:-1])) == [(5.5, 4.5), (5.5, 5.5), (6.5, 4.5),
                                                                                  (6.5, 5.5)]  # fmt: skip
    # a map at half the input size, georeferenced: pixel centres scaled to the input, then to UTM metres
    meta = ImageMetadata((20, 24), tuple((t[0], t[3]) for t in _geotiff_tags(0.5)))
    geo = label_polygons(labels, ["bg", "field", "pond"], image_hw=(20, 24), metadata=meta)
    pond = next(f for f in geo["features"] if f["properties"]["class_id"] == 2)
    xs = sorted({x for x, _ in pond["geometry"]["coordinates"][0]})
    assert xs == [UTM_ORIGIN[0] + 5.5, UTM_ORIGIN[0] + 6.5]  # x pixel 5.5 -> input 11 -> 5.5 m
    assert geo["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"


def test_ids_png_and_geojson_from_predict(small_predictor, tmp_path):
    cityscapes = dataset_spec(default_config())
    outputs = OutputOptions("ids", True, cityscapes.train_to_label_id)
    result, out = _predict_tiff(small_predictor, tmp_path, outputs=outputs)
    ids = cv2.imread(str(out / "in_ids.png"), cv2.IMREAD_UNCHANGED)
    train = cv2.resize(result.stages[-1].argmax, (256, 256), interpolation=cv2.INTER_NEAREST)
    assert ids.shape == (256, 256) and ids.dtype == np.uint8
    np.testing.assert_array_equal(ids, np.array([7, 8, 11, 12, 13], np.uint8)[train])  # road 7, sidewalk 8...
    fc = json.loads((out / "labels.geojson").read_text())
    assert {f["properties"]["class_id"] for f in fc["features"]} <= set(range(C)) and fc["features"]
    assert "crs" not in fc  # not georeferenced: input pixels


def test_predict_label_format_is_checked():
    c = default_config()
    c.predict.label_format = "labelIds"
    with pytest.raises(ValueError, match="config.predict.label_format: expected 'none' or 'ids'"):
        validate_config(c)


@pytest.mark.slow
def test_map_files_of_a_killed_run_are_removed_by_the_next(tmp_path):
    """A SIGKILLed streamed run leaves OUT/.magnet_tmp_<pid> with its map files; the next run in OUT removes it."""
    path, out = tmp_path / "in.tif", tmp_path / "out"
    tifffile.imwrite(path, _image(256))
    child = subprocess.Popen([sys.executable, str(HELPERS / "stream_child.py"), str(path), str(out)],
                             stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob(".magnet_tmp_*/magnet_map_*.raw")):
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child never wrote a map file"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    left = list(out.glob(".magnet_tmp_*"))
    assert [p.name for p in left] == [f".magnet_tmp_{child.pid}"] and list(left[0].glob("magnet_map_*.raw"))
    live = out / f".magnet_tmp_{os.getppid()}"  # a live process's folder (this test's parent) is kept
    live.mkdir()
    plan = make_plan([(64, 64), (256, 256)], (64, 64), (64, 64), C, n_points=0.5)
    backbone, refiner = _models()
    streamed = MagNetPredictor(plan, backbone, refiner, stream=StreamOptions(mode="on", ram_bytes=0))
    predict_file(streamed, str(path), str(out))
    assert sorted(p.name for p in out.glob(".magnet_tmp_*")) == [live.name]
    assert (out / "labels.tif").is_file()


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_png_jpeg_above_the_pixel_limit_say_convert_to_tiled_tiff(tmp_path, ext):
    """A valid 14000x13000 image (zeros: cheap to write) is refused in one line with the conversion command."""
    path = tmp_path / f"big{ext}"
    assert cv2.imwrite(str(path), np.zeros((13000, 14000), np.uint8))
    with pytest.raises(ImageDecodeError) as info:
        open_image(path)
    message = str(info.value)
    assert "\n" not in message and "corrupt" not in message
    assert f"14000x13000 {'PNG' if ext == '.png' else 'JPEG'} (182 Mpx) is above the 179 Mpx limit" in message
    assert f"vips tiffsave {path} out.tif --tile --pyramid" in message and "tifffile.imwrite('out.tif'" in message


def test_workdir_records_without_the_predict_fields_continue():
    """predict.* only adds output files: a record written before the fields existed is the same config."""
    from magnet_jax.commands.workdir import differences, flat_config

    new = flat_config(default_config())
    old = {k: v for k, v in new.items() if not k.startswith("predict.")}
    assert differences(old, new) == [] and differences(old, {**new, "predict.label_format": "ids"}) == []


def test_a_16_bit_tiff_is_refused_whole_as_tiled(small_predictor, tmp_path):
    """A 16-bit TIFF is not squashed to 8 bits when it fits in memory: the same one-line refusal as tiled."""
    from magnet_jax.inference.outputs import predict_file

    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, (_image(128).astype(np.uint16) * 257))
    with pytest.raises(ValueError, match="expected an 8-bit image, got uint16 samples"):
        predict_file(small_predictor, str(path), str(tmp_path / "out"))
    assert not (tmp_path / "out" / "labels.tif").exists()

