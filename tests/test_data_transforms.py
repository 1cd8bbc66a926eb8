"""Transforms against MAGNET_SPEC section 4 (refiner pairs, backbone samples) and section 2 (patch grid)."""

import numpy as np
import pytest
from helpers.fakes import blob_label, fake_photo

from magnet_jax.data import backbone_sample, eval_sample, patch_grid, refiner_pair
from magnet_jax.data.datasets.deepglobe import COLORS as DEEPGLOBE_COLORS
from magnet_jax.data.labels import ColorLabelDecoder
from magnet_jax.preprocess import normalize, resize_image, resize_label

SCALES = [(48, 24), (96, 48), (192, 96)]
CROP, INPUT = (48, 24), (40, 20)


def _example(seed=0, h=96, w=192):
    rng = np.random.default_rng(seed)
    label = blob_label(rng, h, w, [0, 1, 2, 3, 255]).astype(np.uint8)
    return {"image": fake_photo(rng, h, w, np.minimum(label, 4)), "label": label, "name": "x"}


def test_refiner_pair_matches_spec():
    ex = _example()
    in_w, in_h = INPUT
    seen_scales = set()
    for seed in range(12):
        out = refiner_pair(ex, scales=SCALES, crop_wh=CROP, input_wh=INPUT, rng=np.random.default_rng(seed))
        assert out["coarse_image"].shape == (in_h, in_w, 3) and out["coarse_image"].dtype == np.float32
        assert out["fine_image"].shape == (in_h, in_w, 3) and out["fine_image"].dtype == np.float32
        assert out["label"].shape == (in_h, in_w) and out["label"].dtype == np.int32
        assert out["box"].shape == (4,) and out["box"].dtype == np.float32
        np.testing.assert_array_equal(out["coarse_image"], normalize(resize_image(ex["image"], INPUT)))
        # Recover the scale from the box width: C_w / S_w * in_w.
        x0, y0, x1, y1 = out["box"].astype(np.float64)
        sw = round(CROP[0] * in_w / (x1 - x0))
        sh = round(CROP[1] * in_h / (y1 - y0))
        assert (sw, sh) in SCALES[1:]
        seen_scales.add((sw, sh))
        x, y = round(x0 * sw / in_w), round(y0 * sh / in_h)
        assert 0 <= x < sw - CROP[0] and 0 <= y < sh - CROP[1]
        np.testing.assert_allclose(out["box"], [x / sw * in_w, y / sh * in_h, (x + CROP[0]) / sw * in_w,
                                                (y + CROP[1]) / sh * in_h], rtol=1e-6)
        fine = resize_image(resize_image(ex["image"], (sw, sh))[y : y + CROP[1], x : x + CROP[0]].copy(), INPUT)
        np.testing.assert_array_equal(out["fine_image"], normalize(fine))
        label = resize_label(resize_label(ex["label"], (sw, sh))[y : y + CROP[1], x : x + CROP[0]].copy(), INPUT)
        np.testing.assert_array_equal(out["label"], label)
        assert set(np.unique(out["label"]).tolist()) <= {0, 1, 2, 3, 255}
    assert seen_scales == set(SCALES[1:])  # scale 0 is never drawn


def test_refiner_pair_deterministic_per_seed():
    ex = _example()
    a = refiner_pair(ex, scales=SCALES, crop_wh=CROP, input_wh=INPUT, rng=np.random.default_rng(5))
    b = refiner_pair(ex, scales=SCALES, crop_wh=CROP, input_wh=INPUT, rng=np.random.default_rng(5))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    boxes = {tuple(refiner_pair(ex, scales=SCALES, crop_wh=CROP, input_wh=INPUT,
                                rng=np.random.default_rng(s))["box"].tolist()) for s in range(10)}
    assert len(boxes) > 5


def test_refiner_pair_decodes_raw_colour_labels_like_decoded_ones():
    rng = np.random.default_rng(1)
    label = blob_label(rng, 96, 192, list(range(7))).astype(np.uint8)
    colors = np.asarray(DEEPGLOBE_COLORS, np.uint8)
    decoder = ColorLabelDecoder(list(DEEPGLOBE_COLORS), list(range(7)))
    image = fake_photo(rng, 96, 192)
    for seed in range(4):
        a = refiner_pair({"image": image, "label": label}, scales=SCALES, crop_wh=CROP, input_wh=INPUT,
                         rng=np.random.default_rng(seed))
        b = refiner_pair({"image": image, "raw_label": colors[label]}, scales=SCALES, crop_wh=CROP, input_wh=INPUT,
                         rng=np.random.default_rng(seed), label_decoder=decoder)
        np.testing.assert_array_equal(a["label"], b["label"])
        np.testing.assert_array_equal(a["box"], b["box"])


def test_refiner_pair_crop_filling_the_scale():
    ex = _example()
    out = refiner_pair(ex, scales=[(48, 24), (96, 48)], crop_wh=(96, 48), input_wh=INPUT,
                       rng=np.random.default_rng(0))
    np.testing.assert_allclose(out["box"], [0, 0, INPUT[0], INPUT[1]])


def test_backbone_sample_crops_and_flip():
    ex = _example()
    crops = [(48, 24), (96, 48), (192, 96)]
    flips = 0
    for seed in range(16):
        out = backbone_sample(ex, input_wh=INPUT, rng=np.random.default_rng(seed), crop_sizes=crops)
        assert out["image"].shape == (INPUT[1], INPUT[0], 3) and out["image"].dtype == np.float32
        assert out["label"].shape == (INPUT[1], INPUT[0]) and out["label"].dtype == np.int32
        assert set(np.unique(out["label"]).tolist()) <= {0, 1, 2, 3, 255}
        # The whole-image crop is the resized image, possibly flipped.
        whole = normalize(resize_image(ex["image"], INPUT))
        if np.array_equal(out["image"], whole[:, ::-1]) and not np.array_equal(out["image"], whole):
            flips += 1
    assert flips > 0
    a = backbone_sample(ex, input_wh=INPUT, rng=np.random.default_rng(3), crop_sizes=crops)
    b = backbone_sample(ex, input_wh=INPUT, rng=np.random.default_rng(3), crop_sizes=crops)
    np.testing.assert_array_equal(a["image"], b["image"])


def test_backbone_sample_scale_jitter_pads_with_ignore():
    ex = _example()
    pads = 0
    for seed in range(20):
        out = backbone_sample(ex, input_wh=INPUT, rng=np.random.default_rng(seed), scale_jitter=(0.5, 2.1),
                              flip=False, ignore_label=255)
        assert out["label"].shape == (INPUT[1], INPUT[0])
        black = normalize(np.zeros((1, 1, 3), np.uint8))[0, 0]
        padded = out["label"][:, -1] == 255
        if np.allclose(out["image"][:, -1], black) and padded.all():
            pads += 1
    assert pads > 0  # factors < 1 pad the right/bottom with black pixels and ignore labels


def test_patch_grid_spec():
    # Cityscapes 2048x1024 with 256x128 crops: an 8x8 grid, x-major, no overlap.
    grid = patch_grid((2048, 1024), (256, 128))
    assert len(grid) == 64 and grid[0] == (0, 0, 256, 128) and grid[1] == (0, 128, 256, 256)
    assert grid[8] == (256, 0, 512, 128) and grid[-1] == (1792, 896, 2048, 1024)
    # Overlapping grid: S=1000, C=300 -> n=4, step=int(300 - 200/3)=233.
    assert [b[0] for b in patch_grid((1000, 300), (300, 300))] == [0, 233, 466, 699]
    assert patch_grid((612, 612), (612, 612)) == [(0, 0, 612, 612)]


def test_eval_sample_patches_of_every_scale():
    ex = _example()
    out = eval_sample(ex, scales=SCALES, crop_wh=CROP, input_wh=INPUT)
    assert [p.shape for p in out["patches"]] == [(1, 20, 40, 3), (4, 20, 40, 3), (16, 20, 40, 3)]
    np.testing.assert_allclose(out["boxes"][1], [[0, 0, .5, .5], [0, .5, .5, 1], [.5, 0, 1, .5], [.5, .5, 1, 1]])
    np.testing.assert_array_equal(out["label"], ex["label"])
    np.testing.assert_array_equal(out["patches"][0][0], normalize(resize_image(resize_image(ex["image"], SCALES[0]),
                                                                              INPUT)))
    assert "patches" not in eval_sample(ex, with_patches=False)
    with pytest.raises(ValueError):
        eval_sample(ex)
