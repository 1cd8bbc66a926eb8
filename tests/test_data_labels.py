"""Label decoding (Cityscapes ids, DeepGlobe colours, custom tables, 0/255 masks) and class-name resolution."""

import numpy as np
import pytest

from magnet_jax.config import default_config
from magnet_jax.data import DataError, dataset_spec, make_label_decoder
from magnet_jax.data.datasets.cityscapes import ID_TO_TRAIN_ID as CITYSCAPES_ID_TO_TRAIN_ID
from magnet_jax.data.datasets.deepglobe import COLORS as DEEPGLOBE_COLORS


def _config(**data):
    c = default_config()
    for k, v in data.items():
        c.data[k] = v
    return c


def test_cityscapes_label_ids_to_train_ids():
    decode = make_label_decoder(_config(label_format="cityscapes_label_ids"))
    raw = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = decode(raw)
    assert out.dtype == np.uint8 and out.shape == (16, 16)
    expected = np.full(256, 255, np.uint8)
    for k, v in CITYSCAPES_ID_TO_TRAIN_ID.items():
        expected[k] = v
    np.testing.assert_array_equal(out.ravel(), expected)
    assert sorted(set(out.ravel().tolist())) == list(range(19)) + [255]


def test_deepglobe_exact_colours_and_unknown_colours_counted():
    decode = make_label_decoder(_config(label_format="deepglobe_rgb", num_classes=7))
    colors = np.array(DEEPGLOBE_COLORS, np.uint8)
    label = np.array([[0, 1, 2, 3], [4, 5, 6, 0]])
    np.testing.assert_array_equal(decode(colors[label]), label)
    noisy = colors[label].copy()
    noisy[0, 0] = (3, 250, 252)
    noisy[1, 1] = (3, 250, 252)
    noisy[1, 2] = (10, 0, 0)
    expected = r"3 pixels in 2 colours are not in the DeepGlobe colour table.*\(3,250,252\) x2"
    with pytest.raises(DataError, match=expected) as e:
        decode(noisy, where="mask.png")
    assert "binarize_masks" in str(e.value) and "mask.png" in str(e.value)


def test_deepglobe_binarised_at_128():
    decode = make_label_decoder(_config(label_format="deepglobe_rgb", num_classes=7, binarize_masks=True))
    raw = np.array([[[5, 250, 128], [127, 100, 200], [200, 200, 200]]], np.uint8)
    np.testing.assert_array_equal(decode(raw), [[1, 5, 6]])


def test_custom_colour_table_with_explicit_ignore_colour():
    c = _config(label_format="color_table", num_classes=2, color_table="10,20,30; 40,50,60; 255,255,255=255")
    decode = make_label_decoder(c)
    raw = np.array([[[10, 20, 30], [40, 50, 60], [255, 255, 255]]], np.uint8)
    np.testing.assert_array_equal(decode(raw), [[0, 1, 255]])
    with pytest.raises(DataError, match="color_table entry"):
        make_label_decoder(_config(label_format="color_table", color_table="1,2"))


def test_custom_id_table_and_train_ids():
    decode = make_label_decoder(_config(label_format="id_table", id_table="10:0, 20:1, 30:2"))
    np.testing.assert_array_equal(decode(np.array([[10, 20, 30, 40]], np.uint8)), [[0, 1, 2, 255]])
    decode = make_label_decoder(_config(label_format="train_ids", num_classes=3))
    np.testing.assert_array_equal(decode(np.array([[0, 1, 2, 255]], np.uint8)), [[0, 1, 2, 255]])
    with pytest.raises(DataError, match=r"2 pixels have ids outside.*3 \(1 px\), 7 \(1 px\)"):
        decode(np.array([[0, 3, 7, 255]], np.uint8))
    with pytest.raises(DataError, match="label_format"):
        make_label_decoder(_config(label_format="nope"))


def test_gray_decoder_refuses_colour_labels():
    decode = make_label_decoder(_config(label_format="cityscapes_label_ids"))
    with pytest.raises(DataError, match="single-channel"):
        decode(np.zeros((2, 2, 3), np.uint8))


def test_dataset_spec_defaults_and_custom():
    info = dataset_spec(_config(name="deepglobe", num_classes=7, miou_classes="1,2,3,4,5,6"))
    assert info.class_names[1] == "urban" and info.miou_classes == (1, 2, 3, 4, 5, 6) and info.num_classes == 7
    info = dataset_spec(_config(name="cityscapes"))
    assert len(info.class_names) == 19 and info.ignore_label == 255 and info.miou_classes == tuple(range(19))
    info = dataset_spec(_config(name="custom", num_classes=2, class_names="sea, land"))
    assert info.class_names == ("sea", "land")
    with pytest.raises(DataError, match="num_classes is 3 but there are 2 class names"):
        dataset_spec(_config(name="custom", num_classes=3, class_names="sea,land"))
    with pytest.raises(DataError, match="outside 0..6"):
        dataset_spec(_config(name="deepglobe", num_classes=7, miou_classes="1,7"))


def test_large_colour_tables_take_the_hash_path():
    rng = np.random.default_rng(0)
    colors = [tuple(int(v) for v in c) for c in rng.choice(256, (40, 3), replace=False)]
    table = ";".join(",".join(map(str, c)) for c in colors)
    decode = make_label_decoder(_config(label_format="color_table", num_classes=40, color_table=table))
    assert not decode.fast
    label = rng.integers(0, 40, (30, 20))
    np.testing.assert_array_equal(decode(np.asarray(colors, np.uint8)[label]), label)
    bad = np.asarray(colors, np.uint8)[label]
    bad[0, 0] = (255, 254, 253)
    with pytest.raises(DataError, match=r"1 pixels in 1 colours .*\(255,254,253\) x1"):
        decode(bad)


def test_binary_0_255_masks():
    decode = make_label_decoder(_config(name="inria", label_format="", num_classes=2))  # the dataset's format
    np.testing.assert_array_equal(decode(np.array([[0, 255, 255, 0]], np.uint8)), [[0, 1, 1, 0]])
    with pytest.raises(DataError, match=r"1 pixels have ids outside the 0/255 mask values: 128 \(1 px\)"):
        decode(np.array([[0, 128]], np.uint8))
