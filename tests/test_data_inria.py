"""Inria Aerial (binary): data/prepare_inria.py end to end on a fake AerialImageDataset of the real layout,
and two-class data through sources, training pairs, backbone samples and evaluation samples."""

import os
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.fakes import write_inria

from magnet_jax import metrics
from magnet_jax.data import build_source, dataset_spec, make_eval_iterator, make_train_loader, read_file_list
from magnet_jax.data.sample_spec import BackboneSampleSpec, EvalSampleSpec, LoaderSpec, RefinerPairSpec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "data"))

import prepare_inria  # noqa: E402

STANDARD = REPO / "data" / "list" / "inria"
SPLITS = ("train", "val", "test")


def _tiles(split: str) -> list[str]:
    pairs = read_file_list(str(STANDARD / f"{split}.txt"), str(REPO), check_files=False)
    return [os.path.basename(i)[: -len(".tif")] for i, _ in pairs]


def test_shipped_inria_lists_are_fctls_split_of_the_180_tiles():
    tiles = {s: _tiles(s) for s in SPLITS}
    assert {s: len(t) for s, t in tiles.items()} == {"train": 126, "val": 27, "test": 27}
    every = sorted(t for v in tiles.values() for t in v)
    cities = ("austin", "chicago", "kitsap", "tyrol-w", "vienna")
    assert every == sorted(f"{c}{i}" for c in cities for i in range(1, 37))
    assert tiles["train"][0] == "vienna27" and tiles["val"][0] == "chicago24" and tiles["test"][0] == "vienna3"


@pytest.fixture(scope="module")
def inria_zip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inria")
    write_inria(str(folder / "src"), [t for s in SPLITS for t in _tiles(s)], size=16)
    with zipfile.ZipFile(folder / "NEW2-AerialImageDataset.zip", "w") as z:
        for dirpath, _, files in os.walk(folder / "src"):
            for f in files:
                path = Path(dirpath) / f
                z.write(path, path.relative_to(folder / "src"))
    return folder


def _config(root):
    from configs.inria import get_config

    c = get_config()
    c.data.root = str(root)
    for s in SPLITS:
        c.data[f"{s}_list"] = str(STANDARD / f"{s}.txt")
    c.data.num_workers = 0
    c.magnet.scales, c.magnet.crop_size, c.magnet.input_size = "8-8,16-16", "8-8", "8-8"
    c.train.backbone_crop_sizes = "8-8,16-16"
    return c


def test_prepare_inria_and_binary_data_end_to_end(inria_zip, tmp_path, capsys):
    root, lists = tmp_path / "inria", tmp_path / "lists"
    argv = ["--zip", str(inria_zip / "NEW2-AerialImageDataset.zip"), "--root", str(root), "--lists", str(lists)]
    assert prepare_inria.main(argv) == 0
    out = capsys.readouterr().out
    assert "train: 126 tiles" in out and "val: 27 tiles" in out and "test: 27 tiles" in out
    for s in SPLITS:
        assert (lists / f"{s}.txt").read_bytes() == (STANDARD / f"{s}.txt").read_bytes()

    c = _config(root)
    ds = dataset_spec(c)
    assert (ds.num_classes, ds.class_names, ds.metric, ds.miou_classes) == (2, ("background", "building"),
                                                                            "iou_class:1", (0, 1))
    assert ds.protocol("test")["standard_split"] is True and ds.palette.tolist() == [[0, 0, 0], [255, 255, 255]]
    source = build_source(c, "test")
    sample = source[0]
    gt = cv2.imread(str(root / "AerialImageDataset" / "train" / "gt" / "vienna3.tif"), cv2.IMREAD_UNCHANGED)
    assert sample["name"] == "vienna3" and sample["image"].shape == (16, 16, 3)
    np.testing.assert_array_equal(sample["label"], gt // 255)  # 0/255 masks -> classes 0/1
    conf = metrics.confusion_matrix(sample["label"], sample["label"], 2, ds.ignore_label)
    assert metrics.overall_score(conf, ds.miou_classes, ds.metric) == 1.0

    # Two classes through training pairs, backbone samples and evaluation samples.
    train, loader = build_source(c, "train"), LoaderSpec.from_config(c, batch_size=2, seed=0, num_epochs=1)
    batch = next(iter(make_train_loader(RefinerPairSpec.from_config(c), loader, train)))
    assert batch["label"].shape[0] == 2 and set(np.unique(batch["label"]).tolist()) <= {0, 1}
    batch = next(iter(make_train_loader(BackboneSampleSpec.from_config(c), loader, train)))
    assert set(np.unique(batch["label"]).tolist()) <= {0, 1, 255}
    first = next(iter(make_eval_iterator(EvalSampleSpec.from_config(c), build_source(c, "val"))))
    assert first["name"] == "chicago24" and set(np.unique(first["label"]).tolist()) <= {0, 1}


def test_prepare_inria_refuses_missing_tiles_and_bad_masks(inria_zip, tmp_path, capsys):
    root = inria_zip / "src"
    gt = root / "AerialImageDataset" / "train" / "gt" / "kitsap30.tif"  # val.txt line 9
    os.rename(gt, tmp_path / "gt.tif")
    try:
        assert prepare_inria.main(["--root", str(root), "--lists", str(tmp_path / "l")]) == 1
    finally:
        os.rename(tmp_path / "gt.tif", gt)
    err = capsys.readouterr().err
    assert "1 of the 360 files listed by FCtL's Inria split" in err
    assert "AerialImageDataset/train/gt/kitsap30.tif (val.txt:9)" in err and not (tmp_path / "l").exists()
    first = root / "AerialImageDataset" / "train" / "gt" / "vienna27.tif"
    keep = first.read_bytes()
    cv2.imwrite(str(first), np.full((16, 16), 128, np.uint8))
    try:
        assert prepare_inria.main(["--root", str(root), "--lists", str(tmp_path / "l")]) == 1
    finally:
        first.write_bytes(keep)
    assert "vienna27.tif: expected mask values 0 and 255 only, got [128]" in capsys.readouterr().err
    assert prepare_inria.main(["--root", str(tmp_path / "none")]) == 1
    assert "AerialImageDataset" in capsys.readouterr().err
