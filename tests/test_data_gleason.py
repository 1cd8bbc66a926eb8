"""Gleason 2019: label fusion, data/prepare_gleason.py end to end on a fake download of the real layout,
and the prepared data read through configs/gleason.py."""

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.fakes import write_gleason_download

from magnet_jax.data import DataError, build_source, dataset_spec, read_file_list

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "data"))

import prepare_gleason  # noqa: E402

STANDARD = REPO / "data" / "list" / "gleason"


def _cores(split: str) -> list[str]:
    pairs = read_file_list(str(STANDARD / f"{split}.txt"), str(REPO), check_files=False)
    return [os.path.basename(i)[: -len(".jpg")] for i, _ in pairs]


def test_grades_map_to_the_originals_classes_and_bad_values_are_named():
    raw = np.array([[0, 1, 3, 4, 5, 6, 7]], np.uint8)
    np.testing.assert_array_equal(prepare_gleason.grades_to_classes(raw, "m.png"), [[0, 1, 2, 3, 4, 1, 1]])
    with pytest.raises(DataError, match=r"m.png: values \[2\] are not Gleason grades"):
        prepare_gleason.grades_to_classes(np.array([[1, 2]], np.uint8), "m.png")


def test_majority_vote_with_ties_to_the_lowest_class():
    # three pathologists, raw grades per pixel; columns: majority, 3-way tie, majority, >5 = benign
    raw = [np.array([[0, 1, 3, 6]]), np.array([[1, 3, 4, 1]]), np.array([[1, 4, 4, 5]])]
    maps = [prepare_gleason.grades_to_classes(m.astype(np.uint8), "m") for m in raw]
    label, ties = prepare_gleason.fuse(maps)
    np.testing.assert_array_equal(label, [[1, 1, 3, 1]])  # benign / benign (tie 1,2,3 -> 1) / G4 / benign
    assert label.dtype == np.uint8 and ties == 1
    label, ties = prepare_gleason.fuse(maps[1:])  # two maps: every disagreement is a tie
    np.testing.assert_array_equal(label, [[1, 2, 3, 1]])
    assert ties == 2


def test_shipped_gleason_lists_are_the_originals():
    train, val = _cores("train"), _cores("val")
    assert (len(train), len(val), len(set(train) | set(val))) == (195, 49, 244)
    first = (STANDARD / "train.txt").read_text().splitlines()[0]
    assert first == "images/train/slide002_core002.jpg\tgt/train/slide002_core002_classimg_nonconvex.png"
    assert (STANDARD / "val.txt").read_text().startswith("images/validation/slide005_core057.jpg\t")


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gleason2019")
    first, second = _cores("train")[0], _cores("val")[0]
    a = np.zeros((12, 12), np.uint8)
    a[:, 6:] = 3
    b = a.copy()
    b[:6] = 4
    c = np.full((12, 12), 1, np.uint8)
    maps = {first: [a, b, c], second: [None, a, None, b]}  # second: only pathologists 2 and 4
    written = write_gleason_download(str(folder), _cores("train") + _cores("val"), size=12, maps=maps)
    return folder, written


def test_prepare_gleason_end_to_end(download, tmp_path, capsys):
    folder, _ = download
    root, lists = tmp_path / "gleason", tmp_path / "lists"
    assert prepare_gleason.main(["--download", str(folder), "--root", str(root), "--lists", str(lists)]) == 0
    out = capsys.readouterr().out
    assert "train: 195 cores" in out and "val: 49 cores" in out and "2 to 3 pathologists' maps" in out
    for s in ("train", "val"):
        assert (lists / f"{s}.txt").read_bytes() == (STANDARD / f"{s}.txt").read_bytes()
    first, second = _cores("train")[0], _cores("val")[0]
    assert (root / "images" / "train" / f"{first}.jpg").is_file()
    gt = cv2.imread(str(root / "gt" / "train" / f"{first}_classimg_nonconvex.png"), cv2.IMREAD_UNCHANGED)
    # Classes voted by (a, b, c) per quarter: top-left (0, 3, 1) three-way tie -> 0; bottom-left (0, 0, 1) -> 0;
    # top-right (2, 3, 1) tie -> 1; bottom-right (2, 2, 1) -> 2 (Gleason 3).
    expected = np.zeros((12, 12), np.uint8)
    expected[:6, 6:] = 1
    expected[6:, 6:] = 2
    np.testing.assert_array_equal(gt, expected)
    gt2 = cv2.imread(str(root / "gt" / "validation" / f"{second}_classimg_nonconvex.png"), cv2.IMREAD_UNCHANGED)
    assert np.unique(gt2).tolist() == [0, 2]  # two maps (a, b): ties (0|3 -> 0, 2|3 -> 2) and agreements

    # The prepared data through configs/gleason.py: the standard split, fwiou over classes 1..4.
    from configs.gleason import get_config

    c = get_config()
    c.data.root = str(root)
    for s, f in (("train", "train"), ("val", "val"), ("test", "val")):
        c.data[f"{s}_list"] = str(STANDARD / f"{f}.txt")
    source = build_source(c, "train")
    assert len(source) == 195 and source[0]["name"] == first
    np.testing.assert_array_equal(source[0]["label"], expected)
    ds = dataset_spec(c)
    assert ds.metric == "fwiou" and ds.miou_classes == (1, 2, 3, 4) and ds.num_classes == 5
    assert ds.protocol("val")["standard_split"] is True and ds.protocol("val")["list_images"] == 49


def test_prepare_gleason_refuses_missing_cores_and_bad_maps(download, tmp_path, capsys):
    folder, _ = download
    core = _cores("val")[3]
    image = folder / "Train Imgs" / f"{core}.jpg"
    os.rename(image, tmp_path / "x.jpg")
    try:
        assert prepare_gleason.main(["--download", str(folder), "--root", str(tmp_path / "r")]) == 1
    finally:
        os.rename(tmp_path / "x.jpg", image)
    err = capsys.readouterr().err
    assert f"1 listed cores have no image in {str(folder / 'Train Imgs')!r}: {core} (val.txt:4)" in err
    assert not (tmp_path / "r").exists()
    assert prepare_gleason.main(["--download", str(tmp_path / "nothing"), "--root", str(tmp_path / "r")]) == 1
    assert "'Train Imgs/'" in capsys.readouterr().err
