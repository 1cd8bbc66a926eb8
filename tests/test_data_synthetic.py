"""The synthetic dataset: deterministic, texture invisible at the coarse scale, written once as file lists."""

import os

import numpy as np
import pytest

from magnet_jax.config import default_config
from magnet_jax.data import DataError, build_source, dataset_spec, synthetic
from magnet_jax.preprocess import resize_image


def _config(size=64, n=(3, 2, 2)):
    c = default_config()
    c.data.name = "synthetic"
    c.data.source = "synthetic"
    c.data.root = ""
    c.data.num_classes = synthetic.NUM_CLASSES
    c.data.label_format = "train_ids"
    c.data.synthetic.size = size
    c.data.synthetic.num_train, c.data.synthetic.num_val, c.data.synthetic.num_test = n
    return c


def test_deterministic_and_every_class_appears():
    a = synthetic.generate_sample(3, "train", 5, 256)
    b = synthetic.generate_sample(3, "train", 5, 256)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], synthetic.generate_sample(3, "val", 5, 256)[0])
    seen = set()
    for i in range(8):
        image, label = synthetic.generate_sample(0, "train", i, 256)
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8 and label.dtype == np.uint8
        seen |= set(np.unique(label).tolist())
    assert seen == set(range(synthetic.NUM_CLASSES))


def test_textures_vanish_at_the_coarse_scale_only():
    """Stripes and checker have the same colour after the 4x coarse resize, not at 2x or 1x."""
    for i in range(6):
        image, label = synthetic.generate_sample(1, "train", i, 512)
        if not ((label == 1).any() and (label == 2).any()):
            continue
        import cv2

        def interior(cls, factor, label=label):
            small = cv2.resize((label == cls).astype(np.uint8), (512 // factor, 512 // factor),
                               interpolation=cv2.INTER_NEAREST)
            return cv2.erode(small, np.ones((5, 5), np.uint8)).astype(bool)

        coarse = resize_image(image, (128, 128)).astype(int)
        s, c = coarse[interior(1, 4)], coarse[interior(2, 4)]
        if len(s) == 0 or len(c) == 0:
            continue
        # Flat, and the same colour (a seam where two stripe orientations meet may differ by a pixel).
        mode = np.median(c, 0)
        assert (s == mode).all(1).mean() > 0.99 and (c == mode).all(1).mean() > 0.99
        half = resize_image(image, (256, 256)).astype(int)
        assert half[interior(1, 2)].std(0).min() > 20 and half[interior(2, 2)].std(0).min() > 20
        return
    pytest.fail("no sample with both texture classes")


def test_shapes_share_the_fill_and_differ_by_halo():
    fills, halos = {3: [], 4: []}, {3: set(), 4: set()}
    for i in range(10):
        image, label = synthetic.generate_sample(2, "train", i, 256)
        for cls in (3, 4):
            if (label == cls).sum() > 500:
                pixels = image[label == cls].astype(int)
                fills[cls].append(np.median(pixels, 0))
                halos[cls].add(tuple(pixels[pixels[:, 0] == pixels[:, 0].max()][0]))
    assert fills[3] and fills[4]
    # Fills: the same distribution (blue-ish), halos: warm (red > blue) vs cool (blue > red).
    assert all(f[2] > f[0] for f in fills[3] + fills[4])
    assert all(h[0] > h[2] for h in halos[3])


def test_written_once_and_read_through_file_lists(tmp_path):
    c = _config()
    source = build_source(c, "train", workdir=str(tmp_path))
    folder = tmp_path / "synthetic_data"
    assert len(source) == 3 and (folder / "train.txt").is_file() and (folder / "synthetic.json").is_file()
    first = (folder / "train.txt").read_text().splitlines()[0]
    assert first == "train/images/0000.png\ttrain/labels/0000.png"
    sample = source[0]
    image, label = synthetic.generate_sample(c.data.synthetic.seed, "train", 0, 64)
    np.testing.assert_array_equal(sample["image"], image)
    np.testing.assert_array_equal(sample["label"], label)
    mtime = os.path.getmtime(folder / "synthetic.json")
    assert len(build_source(c, "val", workdir=str(tmp_path))) == 2
    assert os.path.getmtime(folder / "synthetic.json") == mtime  # not regenerated
    c.data.synthetic.num_val = 1
    assert len(build_source(c, "val", workdir=str(tmp_path))) == 1  # other parameters: regenerated
    assert dataset_spec(c).class_names == synthetic.CLASS_NAMES


def test_root_overrides_workdir_and_foreign_folders_are_left_alone(tmp_path):
    c = _config(n=(1, 1, 1))
    c.data.root = str(tmp_path / "mine")
    build_source(c, "test", workdir=str(tmp_path / "ignored"))
    assert (tmp_path / "mine" / "test.txt").is_file() and not (tmp_path / "ignored").exists()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.tex").write_text("x")
    c.data.root = str(tmp_path / "foreign")
    with pytest.raises(DataError, match="not a synthetic dataset"):
        build_source(c, "train")
    c.data.root = ""
    with pytest.raises(DataError, match="needs a folder"):
        build_source(c, "train")
    c.data.root = str(tmp_path / "mine")
    c.data.num_classes = 4
    with pytest.raises(DataError, match="num_classes is 4 but there are 5 class names .*synthetic"):
        build_source(c, "train")
