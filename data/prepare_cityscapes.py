"""Prepare Cityscapes for magnet-jax: unzip the two official zips and write the file lists.

    python data/prepare_cityscapes.py --zips data --root data/cityscapes --lists data/list/cityscapes

--zips: folder holding leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip (download them yourself from
https://www.cityscapes-dataset.com/downloads/ after registering; nothing is downloaded automatically). Leave it
out when --root already holds the unzipped leftImg8bit/ and gtFine/ folders.
Lists: {train,val,test}.txt, one `leftImg8bit/<split>/<city>/<id>_leftImg8bit.png<TAB>gtFine/<split>/<city>/
<id>_gtFine_labelIds.png` line per image (the original's format), paths relative to --root, sorted.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from magnet_jax.data.archives import extract_once  # noqa: E402
from magnet_jax.data.datasets import download_hint  # noqa: E402
from magnet_jax.data.errors import DataError, MissingDataError, first_few  # noqa: E402
from magnet_jax.data.lists import write_file_list  # noqa: E402

ZIPS = {"leftImg8bit_trainvaltest.zip": "leftImg8bit", "gtFine_trainvaltest.zip": "gtFine"}
SPLITS = ("train", "val", "test")


def unzip(zips_dir: str, root: str) -> None:
    if not os.path.isdir(zips_dir):
        raise MissingDataError(f"--zips folder {zips_dir!r} does not exist. {download_hint('cityscapes')}")
    missing = [z for z in ZIPS if not os.path.isfile(os.path.join(zips_dir, z))]
    if missing:
        raise MissingDataError(f"missing in {zips_dir!r}: {', '.join(missing)}. {download_hint('cityscapes')}")
    for name, folder in ZIPS.items():
        extract_once(os.path.join(zips_dir, name), root, folder, download_hint("cityscapes"))


def list_split(root: str, split: str) -> list[tuple[str, str]]:
    images = sorted(glob.glob(os.path.join(root, "leftImg8bit", split, "*", "*_leftImg8bit.png")))
    pairs, missing = [], []
    for image in images:
        rel = os.path.relpath(image, root)
        city = os.path.basename(os.path.dirname(image))
        stem = os.path.basename(image)[: -len("_leftImg8bit.png")]
        label = os.path.join("gtFine", split, city, f"{stem}_gtFine_labelIds.png")
        if not os.path.isfile(os.path.join(root, label)):
            missing.append(label)
        pairs.append((rel, label))
    if missing:
        raise MissingDataError(
            f"{len(missing)} of {len(pairs)} {split} labels are missing under {root!r}: {first_few(missing)}. "
            "Is gtFine_trainvaltest.zip fully unzipped?"
        )
    return pairs


def prepare(root: str, lists_dir: str, zips_dir: str | None = None) -> dict[str, int]:
    """Unzips (when `zips_dir`) and writes the lists; returns {split: count}."""
    if zips_dir:
        unzip(zips_dir, root)
    if not os.path.isdir(os.path.join(root, "leftImg8bit")):
        raise MissingDataError(
            f"{os.path.join(root, 'leftImg8bit')!r} does not exist: pass --zips with the downloaded zips. "
            + download_hint("cityscapes")
        )
    counts = {}
    for split in SPLITS:
        pairs = list_split(root, split)
        if not pairs:
            raise DataError(f"no images found in {os.path.join(root, 'leftImg8bit', split)!r}")
        counts[split] = write_file_list(os.path.join(lists_dir, f"{split}.txt"), pairs)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zips", default=None, help="folder with the two Cityscapes zips")
    parser.add_argument("--root", default="data/cityscapes", help="dataset folder (config.data.root)")
    parser.add_argument("--lists", default="data/list/cityscapes", help="where to write {train,val,test}.txt")
    args = parser.parse_args(argv)
    try:
        counts = prepare(args.root, args.lists, args.zips)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split, n in counts.items():
        print(f"{split}: {n} images -> {os.path.join(args.lists, split + '.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
