"""data/prepare_cityscapes.py and data/prepare_deepglobe.py on small fake downloads."""

import os
import sys
import zipfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data"))

import prepare_cityscapes  # noqa: E402
import prepare_deepglobe  # noqa: E402

from magnet_jax.data import MissingDataError, read_file_list  # noqa: E402
from magnet_jax.data.fakes import write_cityscapes_zips, write_deepglobe  # noqa: E402


def test_prepare_cityscapes_unzips_and_writes_lists(tmp_path, capsys):
    write_cityscapes_zips(str(tmp_path / "zips"), h=16, w=32)
    root, lists = tmp_path / "cityscapes", tmp_path / "lists"
    assert prepare_cityscapes.main(["--zips", str(tmp_path / "zips"), "--root", str(root), "--lists", str(lists)]) == 0
    assert "train: 2 images" in capsys.readouterr().out
    lines = (lists / "train.txt").read_text().splitlines()
    assert lines[0] == ("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png\t"
                        "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png")
    assert len(read_file_list(str(lists / "val.txt"), str(root))) == 1
    # Missing zip: an actionable error, exit code 1.
    os.remove(tmp_path / "zips" / "gtFine_trainvaltest.zip")
    assert prepare_cityscapes.main(["--zips", str(tmp_path / "zips"), "--root", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "gtFine_trainvaltest.zip" in err and "Nothing is downloaded automatically" in err


def test_prepare_deepglobe_split_sizes_and_zip(tmp_path):
    write_deepglobe(str(tmp_path / "src"), 12, size=8)
    with zipfile.ZipFile(tmp_path / "land-train.zip", "w") as z:
        for name in sorted(os.listdir(tmp_path / "src" / "land-train")):
            z.write(tmp_path / "src" / "land-train" / name, f"land-train/{name}")
    root, lists = tmp_path / "deepglobe", tmp_path / "lists"
    counts = prepare_deepglobe.prepare(str(root), str(lists), str(tmp_path / "land-train.zip"), counts=(6, 3, 2))
    assert counts == {"train": 6, "val": 3, "test": 2}
    splits = {s: read_file_list(str(lists / f"{s}.txt"), str(root)) for s in ("train", "val", "test")}
    names = [p for s in splits.values() for p in s]
    assert len(set(names)) == 11  # disjoint, one image left out like the original's 802 of 803
    assert all(img.endswith("_sat.jpg") and lab.endswith("_mask.png") for img, lab in names)
    again = prepare_deepglobe.prepare(str(root), str(tmp_path / "lists2"), counts=(6, 3, 2))
    assert again == counts and (lists / "test.txt").read_text() == (tmp_path / "lists2" / "test.txt").read_text()
    # The original's own lists can be copied instead.
    prepare_deepglobe.prepare(str(root), str(tmp_path / "lists3"), split_from=str(lists))
    assert (lists / "val.txt").read_text() == (tmp_path / "lists3" / "val.txt").read_text()
    assert prepare_deepglobe.prepare.__defaults__ is not None
    assert prepare_deepglobe.ORIGINAL_COUNTS == (453, 207, 142)


def test_prepare_deepglobe_errors(tmp_path, capsys):
    with pytest.raises(MissingDataError, match="land-train.zip"):
        prepare_deepglobe.prepare(str(tmp_path / "dg"), str(tmp_path / "l"), str(tmp_path / "land-train.zip"))
    write_deepglobe(str(tmp_path / "dg"), 4, size=8)
    assert prepare_deepglobe.main(["--root", str(tmp_path / "dg"), "--lists", str(tmp_path / "l")]) == 1
    assert "needs 802 images but 4 were found" in capsys.readouterr().err
