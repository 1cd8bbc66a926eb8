"""File-list sources on real files, and every error path before work starts."""

import os

import cv2
import numpy as np
import pytest
from helpers.fakes import write_cityscapes_tree, write_deepglobe

from magnet_jax.config import default_config
from magnet_jax.data import DataError, MissingDataError, build_source, read_file_list, write_file_list
from magnet_jax.data.datasets.cityscapes import ID_TO_TRAIN_ID as CITYSCAPES_ID_TO_TRAIN_ID
from magnet_jax.data.datasets.deepglobe import COLORS as DEEPGLOBE_COLORS


def _deepglobe_config(root, lists, **data):
    c = default_config()
    c.data.name = "deepglobe"
    c.data.root = str(root)
    for split in ("train", "val", "test"):
        c.data[f"{split}_list"] = str(lists / f"{split}.txt")
    c.data.num_classes = 7
    c.data.label_format = "deepglobe_rgb"
    for k, v in data.items():
        c.data[k] = v
    return c


@pytest.fixture
def deepglobe(tmp_path):
    root, lists = tmp_path / "deepglobe", tmp_path / "lists"
    pairs = write_deepglobe(str(root), 3, size=40, lists_dir=str(lists))
    return root, lists, pairs


def test_deepglobe_file_list_source(deepglobe):
    root, lists, pairs = deepglobe
    source = build_source(_deepglobe_config(root, lists), "train")
    assert len(source) == 3
    sample = source[1]
    assert sample["image"].shape == (40, 40, 3) and sample["image"].dtype == np.uint8
    assert sample["label"].shape == (40, 40) and sample["label"].dtype == np.uint8
    assert sample["name"] == os.path.splitext(os.path.basename(pairs[1][0]))[0]
    mask = cv2.cvtColor(cv2.imread(str(root / pairs[1][1])), cv2.COLOR_BGR2RGB)
    for cls, color in enumerate(DEEPGLOBE_COLORS):
        assert (sample["label"][(mask == color).all(-1)] == cls).all()
    raw = source.read_raw(1)
    np.testing.assert_array_equal(source.label_decoder(raw["raw_label"]), sample["label"])


def test_cityscapes_file_list_source(tmp_path):
    root = tmp_path / "cityscapes"
    write_cityscapes_tree(str(root), h=16, w=32)
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
    from prepare_cityscapes import prepare

    prepare(str(root), str(tmp_path / "lists"))
    c = default_config()
    c.data.root = str(root)
    c.data.val_list = str(tmp_path / "lists" / "val.txt")
    source = build_source(c, "val")
    sample = source[0]
    ids = cv2.imread(read_file_list(c.data.val_list, str(root))[0][1], cv2.IMREAD_UNCHANGED)
    lut = np.full(256, 255)
    for k, v in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[k] = v
    np.testing.assert_array_equal(sample["label"], lut[ids])
    assert sample["name"] == "frankfurt_000000_000019_leftImg8bit"


def test_missing_dataset_folder_says_what_to_download(tmp_path):
    c = _deepglobe_config(tmp_path / "nowhere", tmp_path)
    with pytest.raises(MissingDataError) as e:
        build_source(c, "train")
    msg = str(e.value)
    assert "does not exist" in msg and "land-train.zip" in msg and "prepare_deepglobe.py" in msg
    assert "Nothing is downloaded automatically" in msg


def test_missing_list_and_empty_list_and_bad_line(deepglobe, tmp_path):
    root, lists, _ = deepglobe
    with pytest.raises(MissingDataError, match="file list .*nolist.txt.* does not exist"):
        build_source(_deepglobe_config(root, lists, train_list=str(tmp_path / "nolist.txt")), "train")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="is empty"):
        build_source(_deepglobe_config(root, lists, train_list=str(tmp_path / "empty.txt")), "train")
    (tmp_path / "bad.txt").write_text("a.jpg\tb.png\nonly_one_path.jpg\n")
    with pytest.raises(DataError, match=r"bad.txt:2: expected `image<TAB>label`"):
        build_source(_deepglobe_config(root, lists, train_list=str(tmp_path / "bad.txt")), "train")


def test_missing_files_counted_and_listed(deepglobe, tmp_path):
    root, lists, pairs = deepglobe
    lines = pairs + [(f"land-train/{i}_sat.jpg", f"land-train/{i}_mask.png") for i in range(7)]
    write_file_list(str(tmp_path / "l.txt"), lines)
    with pytest.raises(MissingDataError) as e:
        build_source(_deepglobe_config(root, lists, train_list=str(tmp_path / "l.txt")), "train")
    msg = str(e.value)
    assert "14 of the 20 files" in msg and "0_sat.jpg" in msg and "(and 9 more)" in msg


def test_unreadable_image(deepglobe):
    root, lists, pairs = deepglobe
    (root / pairs[0][0]).write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*_sat.jpg: not an image file"):
        build_source(_deepglobe_config(root, lists), "train")


def test_image_label_size_mismatch(deepglobe):
    root, lists, pairs = deepglobe
    cv2.imwrite(str(root / pairs[0][1]), np.zeros((20, 40, 3), np.uint8))
    with pytest.raises(DataError, match=r"is 40x40 but its label .*_mask.png is 40x20"):
        build_source(_deepglobe_config(root, lists), "train")


def test_label_colours_outside_table(deepglobe):
    root, lists, pairs = deepglobe
    mask = cv2.imread(str(root / pairs[0][1]))
    mask[:2, :5] = (1, 2, 3)
    cv2.imwrite(str(root / pairs[0][1]), mask)
    with pytest.raises(DataError, match=r"10 pixels in 1 colours are not in the DeepGlobe colour table: \(3,2,1\) x10"):
        build_source(_deepglobe_config(root, lists), "train")
    # The same mask passes when the challenge's binarisation is on.
    assert len(build_source(_deepglobe_config(root, lists, binarize_masks=True), "train")) == 3


def test_validate_reads_every_sample(deepglobe):
    root, lists, pairs = deepglobe
    (root / pairs[2][1]).write_bytes(b"broken")
    source = build_source(_deepglobe_config(root, lists), "train")  # only the first sample is read here
    with pytest.raises(DataError, match="cannot read label"):
        source.validate()
