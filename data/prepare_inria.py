"""Prepare Inria Aerial Image Labeling for magnet-jax: unzip and check FCtL's split.

    python data/prepare_inria.py --zip data/NEW2-AerialImageDataset.zip --root data/inria

The dataset needs registration (https://project.inria.fr/aerialimagelabeling/); nothing is downloaded
automatically. Its training part, `AerialImageDataset/train/images/<city><n>.tif` (RGB, 5000x5000) with
`AerialImageDataset/train/gt/<city><n>.tif` (building masks, single channel, 0 = background, 255 =
building), holds 180 tiles (austin, chicago, kitsap, tyrol-w, vienna; 1..36 each); its test part has no
public masks. The standard split of the UHR papers is FCtL's (liqiokkk/FCtL txt_1/train.txt,
crossvali.txt, test.txt: 126 / 27 / 27 tiles), shipped in data/list/inria/{train,val,test}.txt
(val = crossvali). The masks are read as they are (label_format mask_0_255): nothing is converted.
This script unzips (--zip, when --root has no AerialImageDataset/ yet), checks that every listed tile
and mask exists (an error names the missing ones), that the first mask holds only 0 and 255, and
copies the lists to --lists when that is another folder (`--split-from DIR`: other lists).
"""

from __future__ import annotations

import argparse
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import prepare_common as common  # noqa: E402

from magnet_jax.data.archives import extract_once  # noqa: E402
from magnet_jax.data.datasets import download_hint  # noqa: E402
from magnet_jax.data.errors import DataError, MissingDataError  # noqa: E402
from magnet_jax.preprocess import decode_image_file  # noqa: E402

SPLITS = ("train", "val", "test")
FOLDER = "AerialImageDataset"


def unzip(zip_path: str, root: str) -> None:
    if extract_once(zip_path, root, FOLDER, download_hint("inria")) is None:
        return
    if not os.path.isdir(os.path.join(root, FOLDER)):
        raise DataError(f"{zip_path!r} holds no {FOLDER}/ folder: is it the Inria Aerial download?")


def check_mask(path: str) -> None:
    """DataError unless `path` is a single-channel mask of 0 and 255 only."""
    mask = decode_image_file(path, cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
        got = "unreadable" if mask is None else f"shape {mask.shape}, {mask.dtype}"
        raise DataError(f"{path}: expected a single-channel 8-bit building mask, got {got}")
    values = set(np.unique(mask).tolist())
    if not values <= {0, 255}:
        raise DataError(f"{path}: expected mask values 0 and 255 only, got {sorted(values)[:10]}")


def prepare(root: str, lists_dir: str | None = None, zip_path: str | None = None,
            split_from: str | None = None) -> dict[str, int]:
    """Unzips (when `zip_path`), checks the listed tiles and installs the lists; returns {split: count}."""
    if zip_path:
        unzip(zip_path, root)
    if not os.path.isdir(os.path.join(root, FOLDER)):
        raise MissingDataError(f"{os.path.join(root, FOLDER)!r} does not exist: pass --zip. {download_hint('inria')}")
    src = split_from or common.standard_dir("inria")
    what = f"the lists in {src!r}" if split_from else "FCtL's Inria split (data/list/inria)"
    lists = common.read_lists(src, SPLITS, "inria")
    common.check_listed(lists, root, "inria", what)
    check_mask(os.path.join(root, lists["train"][0][1]))
    common.install_lists(src, lists_dir or common.standard_dir("inria"), SPLITS)
    return {s: len(lists[s]) for s in SPLITS}


def _main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", default=None, help="the download zip (leave out if --root has AerialImageDataset/)")
    parser.add_argument("--root", default="data/inria", help="dataset folder (config.data.root)")
    parser.add_argument("--lists", default=None, help="where train/val/test.txt go (default: data/list/inria)")
    parser.add_argument("--split-from", default=None, help="folder with other train/val/test.txt lists to use")
    args = parser.parse_args(argv)
    written = prepare(args.root, args.lists, args.zip, args.split_from)
    lists = args.lists or common.standard_dir("inria")
    return [f"{s}: {n} tiles -> {os.path.join(lists, s + '.txt')}" for s, n in written.items()]


def main(argv: list[str] | None = None) -> int:
    return common.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
