"""data/prepare_cityscapes.py and data/prepare_deepglobe.py on small fake downloads in the real layouts."""

import os
import sys
import zipfile
from pathlib import Path

import pytest
from helpers.fakes import write_cityscapes_zips, write_deepglobe

from magnet_jax.data import MissingDataError, read_file_list

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "data"))

import prepare_cityscapes  # noqa: E402
import prepare_deepglobe  # noqa: E402

STANDARD = REPO / "data" / "list" / "deepglobe"
SPLITS = ("train", "val", "test")


def _standard_ids() -> dict[str, list[str]]:
    lists = {s: read_file_list(str(STANDARD / f"{s}.txt"), str(REPO), check_files=False) for s in SPLITS}
    return {s: [os.path.basename(i)[: -len("_sat.jpg")] for i, _ in pairs] for s, pairs in lists.items()}


@pytest.fixture(scope="module")
def land_train(tmp_path_factory):
    """A fake land-train/ with the 803 ids of the standard lists (4x4 images)."""
    root = tmp_path_factory.mktemp("dg")
    ids = [i for split in _standard_ids().values() for i in split]
    write_deepglobe(str(root / "src"), len(ids), size=4, ids=ids)
    with zipfile.ZipFile(root / "land-train.zip", "w") as z:
        for name in sorted(os.listdir(root / "src" / "land-train")):
            z.write(root / "src" / "land-train" / name, f"land-train/{name}")
    return root


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


def test_shipped_deepglobe_lists_are_the_standard_split():
    ids = _standard_ids()
    assert {s: len(v) for s, v in ids.items()} == {"train": 454, "val": 207, "test": 142}
    assert len({i for v in ids.values() for i in v}) == 803  # disjoint, every image of land-train
    assert not (STANDARD / "train.txt").read_bytes().endswith(b"\n")  # the original's: `wc -l` says 453
    assert prepare_deepglobe.ORIGINAL_COUNTS == (454, 207, 142)


def test_prepare_deepglobe_uses_the_standard_lists_by_default(land_train, tmp_path, capsys):
    root, lists = tmp_path / "deepglobe", tmp_path / "lists"
    argv = ["--zip", str(land_train / "land-train.zip"), "--root", str(root), "--lists", str(lists)]
    assert prepare_deepglobe.main(argv) == 0
    out = capsys.readouterr().out
    assert "train: 454 images" in out and "val: 207 images" in out and "test: 142 images" in out
    for s in SPLITS:  # exactly the original's three lists, byte for byte
        assert (lists / f"{s}.txt").read_bytes() == (STANDARD / f"{s}.txt").read_bytes()
    assert len(read_file_list(str(lists / "test.txt"), str(root))) == 142  # every listed file is there
    # Default --lists: the standard lists in place, left untouched.
    before = {s: (STANDARD / f"{s}.txt").stat().st_mtime_ns for s in SPLITS}
    assert prepare_deepglobe.main(["--root", str(root)]) == 0
    assert before == {s: (STANDARD / f"{s}.txt").stat().st_mtime_ns for s in SPLITS}


def test_prepare_deepglobe_refuses_a_missing_listed_id(land_train, tmp_path, capsys):
    root = land_train / "src"
    missing = _standard_ids()["test"][5]
    os.rename(root / "land-train" / f"{missing}_sat.jpg", tmp_path / "moved.jpg")
    try:
        assert prepare_deepglobe.main(["--root", str(root), "--lists", str(tmp_path / "l")]) == 1
    finally:
        os.rename(tmp_path / "moved.jpg", root / "land-train" / f"{missing}_sat.jpg")
    err = capsys.readouterr().err
    assert "1 of the 1606 files listed by the standard DeepGlobe split (data/list/deepglobe) are missing" in err
    assert f"land-train/{missing}_sat.jpg (test.txt:6)" in err
    assert not (tmp_path / "l").exists()  # nothing written


def test_prepare_deepglobe_random_split_is_opt_in(tmp_path, capsys):
    write_deepglobe(str(tmp_path / "dg"), 12, size=8)
    root, lists = tmp_path / "dg", tmp_path / "lists"
    counts = prepare_deepglobe.prepare(str(root), str(lists), split="random", counts=(6, 3, 2), seed=3)
    assert counts == {"train": 6, "val": 3, "test": 2}
    splits = {s: read_file_list(str(lists / f"{s}.txt"), str(root)) for s in SPLITS}
    assert len({p for s in splits.values() for p in s}) == 11  # disjoint
    again = prepare_deepglobe.prepare(str(root), str(tmp_path / "l2"), split="random", counts=(6, 3, 2), seed=3)
    assert again == counts and (lists / "test.txt").read_text() == (tmp_path / "l2" / "test.txt").read_text()
    # Other lists can be used instead of the standard ones, checked the same way.
    assert prepare_deepglobe.prepare(str(root), str(tmp_path / "l3"), split_from=str(lists)) == counts
    assert (lists / "val.txt").read_text() == (tmp_path / "l3" / "val.txt").read_text()
    # A random split never overwrites the shipped standard lists; too few images is an error.
    assert prepare_deepglobe.main(["--root", str(root), "--split", "random"]) == 1
    assert "would overwrite the standard lists" in capsys.readouterr().err
    assert prepare_deepglobe.main(["--root", str(root), "--split", "random", "--lists", str(tmp_path / "l4")]) == 1
    assert "needs 803 images but 12 were found" in capsys.readouterr().err


def test_prepare_deepglobe_errors(tmp_path):
    with pytest.raises(MissingDataError, match="land-train.zip"):
        prepare_deepglobe.prepare(str(tmp_path / "dg"), str(tmp_path / "l"), str(tmp_path / "land-train.zip"))
