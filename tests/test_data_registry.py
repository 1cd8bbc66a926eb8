"""The dataset registry: one spec per dataset, resolved against a config in one place (classes, palette,
mIoU classes, overall metric, label format, standard lists, protocol)."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from magnet_jax import metrics
from magnet_jax.config import default_config
from magnet_jax.data import DATASET_NAMES, DataError, build_source, dataset_spec, get_spec, make_label_decoder
from magnet_jax.data.datasets import REGISTRY, download_hint

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = {"cityscapes": 19, "deepglobe": 7, "gleason": 5, "inria": 2, "synthetic": 5, "custom": 3}


def _config(name: str, **data):
    c = default_config()
    c.data.name = name
    c.data.num_classes = NUM_CLASSES[name]
    if name == "synthetic":
        c.data.source = "synthetic"
    for k, v in data.items():
        c.data[k] = v
    return c


def test_every_dataset_resolves_to_a_consistent_spec():
    assert DATASET_NAMES == ("cityscapes", "deepglobe", "gleason", "inria", "synthetic", "custom")
    for name in DATASET_NAMES:
        ds = dataset_spec(_config(name))
        n = NUM_CLASSES[name]
        assert ds.name == name and ds.num_classes == n and len(ds.class_names) == n
        assert ds.palette.shape == (n, 3) and ds.palette.dtype == np.uint8
        assert all(0 <= k < n for k in ds.miou_classes)
        metrics.parse_metric(ds.metric, n)
        assert download_hint(name) == get_spec(name).download_hint + " Nothing is downloaded automatically."
    assert download_hint("mine") == download_hint("custom")  # a name the registry does not hold


def test_defaults_per_dataset():
    got = {n: (dataset_spec(_config(n)).miou_classes, dataset_spec(_config(n)).metric,
               dataset_spec(_config(n)).label_format) for n in DATASET_NAMES}
    assert got["cityscapes"] == (tuple(range(19)), "miou", "cityscapes_label_ids")
    assert got["deepglobe"] == ((1, 2, 3, 4, 5, 6), "miou", "deepglobe_rgb")
    assert got["gleason"] == ((1, 2, 3, 4), "fwiou", "train_ids")  # the original's get_freq_iou over 1..4
    assert got["inria"] == ((0, 1), "iou_class:1", "mask_0_255")
    assert got["synthetic"] == (tuple(range(5)), "miou", "train_ids")
    assert got["custom"] == ((0, 1, 2), "miou", "train_ids")
    assert dataset_spec(_config("custom", color_table="1,2,3;4,5,6;7,8,9")).label_format == "color_table"
    assert dataset_spec(_config("custom", color_table="1,2,3;4,5,6;7,8,9")).palette.tolist()[2] == [7, 8, 9]
    assert dataset_spec(_config("custom", id_table="10:0,20:1")).label_format == "id_table"
    assert dataset_spec(_config("deepglobe", label_format="color_table", color_table="0,0,0")).label_format == \
        "color_table"


def test_deepglobe_empty_miou_classes_means_1_to_6_everywhere():
    c = _config("deepglobe", miou_classes="")
    assert dataset_spec(c).miou_classes == (1, 2, 3, 4, 5, 6)
    assert dataset_spec(c).protocol("test")["classes_averaged"] == [1, 2, 3, 4, 5, 6]
    assert dataset_spec(_config("deepglobe", miou_classes="0,1")).miou_classes == (0, 1)


def test_bad_configs_are_one_line_errors_naming_the_field():
    with pytest.raises(DataError, match=r"config.data.num_classes is 300: expected 1..255 \(labels are uint8"):
        dataset_spec(_config("custom", num_classes=300))
    with pytest.raises(DataError, match="config.data.num_classes is 8 but there are 7 class names"):
        dataset_spec(_config("deepglobe", num_classes=8))
    with pytest.raises(DataError, match=r"config.data.miou_classes: classes \[7\] are outside 0..6"):
        dataset_spec(_config("deepglobe", miou_classes="1,7"))
    with pytest.raises(DataError, match="config.data.miou_classes: expected comma-separated class ids"):
        dataset_spec(_config("deepglobe", miou_classes="1-6"))
    with pytest.raises(DataError, match=r"config.data.metric: expected .* K in 0..1, got 'iou_class:2'"):
        dataset_spec(_config("inria", metric="iou_class:2"))
    with pytest.raises(DataError, match="config.data.name: expected one of cityscapes, deepglobe"):
        c = _config("custom")
        c.data.name = "imagenet"
        dataset_spec(c)
    with pytest.raises(DataError, match="config.data.label_format: expected one of cityscapes_label_ids"):
        make_label_decoder(_config("custom", label_format="nope"))
    with pytest.raises(DataError, match="config.data.source 'tfds' is not available for dataset 'deepglobe'"):
        build_source(_config("deepglobe", source="tfds"), "train")
    with pytest.raises(DataError, match="config.data.source: expected 'file_list', 'tfds' or 'synthetic'"):
        dataset_spec(_config("custom", source="s3"))


def test_shipped_lists_match_the_registered_checksums():
    for name in ("deepglobe", "gleason", "inria"):
        spec = REGISTRY[name]
        assert spec.standard_lists, name
        for split, sha in spec.standard_lists.items():
            data = (REPO / spec.list_dir / f"{split}.txt").read_bytes()
            assert hashlib.sha256(data).hexdigest() == sha, (name, split)


def test_protocol_names_split_list_checksum_classes_and_metric(tmp_path):
    lists = REPO / "data" / "list" / "deepglobe"
    c = _config("deepglobe", test_list=str(lists / "test.txt"))
    p = dataset_spec(c).protocol("test")
    assert p["split"] == "test" and p["list_images"] == 142 and p["standard_split"] is True
    assert p["list_sha256"] == REGISTRY["deepglobe"].standard_lists["test"] and p["metric"] == "miou"
    assert p["class_names_averaged"] == ["urban", "agriculture", "rangeland", "forest", "water", "barren"]
    assert "standard split" in dataset_spec(c).describe("test")
    own = tmp_path / "test.txt"
    own.write_bytes((lists / "test.txt").read_bytes().splitlines(keepends=True)[0])
    c.data.test_list = str(own)
    p = dataset_spec(c).protocol("test")
    assert p["standard_split"] is False and p["list_images"] == 1 and p["standard_split_source"] == ""
    assert "NOT the standard split" in dataset_spec(c).describe("test")
    p = dataset_spec(_config("custom", test_list=str(own))).protocol("test")
    assert p["standard_split"] is None and p["list_sha256"] == hashlib.sha256(own.read_bytes()).hexdigest()
    p = dataset_spec(_config("cityscapes", source="tfds")).protocol("val")
    assert p["list"] == "tfds:cityscapes/semantic_segmentation[validation]" and p["standard_split"] is True
    p = dataset_spec(_config("synthetic", root="")).protocol("val", workdir=str(tmp_path))
    assert p["list"] == str(tmp_path / "synthetic_data" / "val.txt") and p["list_sha256"] is None


def test_missing_data_ends_with_the_registry_hint_once(tmp_path):
    c = _config("deepglobe", root=str(tmp_path / "absent"))
    with pytest.raises(DataError) as e:
        build_source(c, "train")
    msg = str(e.value)
    assert msg.startswith(f"dataset folder '{tmp_path / 'absent'}' (config.data.root) does not exist. ")
    assert msg.endswith(download_hint("deepglobe")) and msg.count("Nothing is downloaded") == 1
