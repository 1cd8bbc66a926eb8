"""Prepare Gleason 2019 for magnet-jax: one label per pixel from the pathologists' maps, in the original's layout.

    python data/prepare_gleason.py --download data/gleason2019 --root data/gleason

--download is a folder holding the challenge's training download, unzipped (registration needed at
https://gleason2019.grand-challenge.org; nothing is downloaded automatically): `Train Imgs/<core>.jpg`
(244 TMA cores, slideXXX_coreYYY) and the six pathologists' annotation maps `Maps1_T/ ... Maps6_T/`
`<core>_classimg_nonconvex.png` (raw grades per pixel; not every pathologist annotated every core).

Written under --root, as the original MagNet's lists expect them (data/list/gleason, its 195 train / 49
val cores; `--split-from DIR` for other lists with the same naming):
  images/{train,validation}/<core>.jpg                         (hard link, else copy, of the image)
  gt/{train,validation}/<core>_classimg_nonconvex.png          (class ids 0..4, uint8)

Fusion (what this script reproduces and what it cannot): each map's raw grades go to classes as the
original's 0 / 1 / 3 / 4 / 5 -> 0..4 (background, benign, Gleason 3, 4, 5); raw values above 5 are
annotation mistakes for benign and count as class 1 (the correction published with an analysis of the
public release); any other value (2) is an error naming the file. Each pixel takes the class most of the
available maps give it (majority vote); a tie goes to the LOWEST class id among the tied ones (numpy's
argmax over the vote counts, the rule of the published consensus scripts). The original MagNet shipped
its labels pre-made (a gleason.zip on public.vinai.io, not in its repository): which pathologists or
which fusion it used is unknown, so numbers on these labels need not match its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import prepare_common as common  # noqa: E402

from magnet_jax.data.datasets import download_hint  # noqa: E402
from magnet_jax.data.datasets.gleason import GRADE_TO_CLASS  # noqa: E402
from magnet_jax.data.errors import DataError, MissingDataError, first_few  # noqa: E402
from magnet_jax.preprocess import decode_image_file, write_image  # noqa: E402

SPLITS = ("train", "val")
IMAGES = "Train Imgs"
MAPS = tuple(f"Maps{k}_T" for k in range(1, 7))
NUM_CLASSES = 5
INVALID = 255
# Raw grade -> class (INVALID for values no grade map should hold); > 5 -> benign.
GRADE_LUT = np.full(256, INVALID, np.uint8)
for _grade, _cls in GRADE_TO_CLASS.items():
    GRADE_LUT[_grade] = _cls
GRADE_LUT[6:] = GRADE_TO_CLASS[1]


def grades_to_classes(raw: np.ndarray, where: str) -> np.ndarray:
    """`[H, W]` raw grades -> class ids 0..4; DataError naming `where` and the values that are not grades."""
    classes = GRADE_LUT[raw]
    if (classes == INVALID).any():
        bad = sorted(set(np.unique(raw[classes == INVALID]).tolist()))
        raise DataError(f"{where}: values {bad} are not Gleason grades (expected 0, 1, 3, 4, 5; > 5 = benign)")
    return classes


def fuse(maps: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Majority vote of class maps `[H, W]` (ids 0..4) -> (`[H, W]` uint8 labels, pixels with a tie).

    A tie goes to the lowest class id among the most voted (argmax takes the first maximum)."""
    votes = np.zeros((NUM_CLASSES,) + maps[0].shape, np.uint8)
    for m in maps:
        for c in range(NUM_CLASSES):
            votes[c] += m == c
    label = votes.argmax(axis=0).astype(np.uint8)
    top = votes.max(axis=0)
    ties = int(((votes == top).sum(axis=0) > 1).sum())
    return label, ties


def _core(image_rel: str) -> str:
    return os.path.splitext(os.path.basename(image_rel))[0]


def plan(download: str, lists: dict) -> dict[str, list[str]]:
    """{core: [its map files]} for every listed core; MissingDataError naming the missing cores first."""
    if not os.path.isdir(os.path.join(download, IMAGES)):
        raise MissingDataError(
            f"{os.path.join(download, IMAGES)!r} does not exist: --download must hold the unzipped training "
            f"images ('{IMAGES}/') and maps ({', '.join(MAPS[:2])}, ...). {download_hint('gleason')}"
        )
    maps, missing, unmapped = {}, [], []
    for split, pairs in lists.items():
        for number, (image_rel, _) in enumerate(pairs, start=1):
            core = _core(image_rel)
            if not os.path.isfile(os.path.join(download, IMAGES, f"{core}.jpg")):
                missing.append(f"{core} ({split}.txt:{number})")
            found = [os.path.join(download, m, f"{core}_classimg_nonconvex.png") for m in MAPS]
            maps[core] = [f for f in found if os.path.isfile(f)]
            if not maps[core]:
                unmapped.append(core)
    if missing:
        raise MissingDataError(
            f"{len(missing)} listed cores have no image in {os.path.join(download, IMAGES)!r}: {first_few(missing)}. "
            + download_hint("gleason")
        )
    if unmapped:
        raise MissingDataError(
            f"{len(unmapped)} listed cores have no annotation map in any of {', '.join(MAPS)} under {download!r}: "
            f"{first_few(unmapped)}"
        )
    return maps


def _place_image(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.exists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links
        shutil.copyfile(src, dst)


def prepare(download: str, root: str, lists_dir: str | None = None, split_from: str | None = None) -> dict:
    """Lays out images/ and gt/ under `root` for the lists; returns a summary (counts, maps per core, ties)."""
    src = split_from or common.standard_dir("gleason")
    lists = common.read_lists(src, SPLITS, "gleason")
    maps = plan(download, lists)
    ties = pixels = 0
    for pairs in lists.values():
        for image_rel, label_rel in pairs:
            core = _core(image_rel)
            image_src = os.path.join(download, IMAGES, f"{core}.jpg")
            image = decode_image_file(image_src, cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise DataError(f"cannot read image {image_src}: not an image file OpenCV can decode, or corrupt")
            size = image.shape
            classes = []
            for f in maps[core]:
                raw = decode_image_file(f, cv2.IMREAD_UNCHANGED)
                if raw is None or raw.ndim != 2 or raw.shape != size:
                    got = "unreadable" if raw is None else f"shape {raw.shape}"
                    raise DataError(f"{f}: expected a single-channel grade map of the image's size {size}, got {got}")
                classes.append(grades_to_classes(raw, f))
            label, n_ties = fuse(classes)
            ties, pixels = ties + n_ties, pixels + label.size
            _place_image(image_src, os.path.join(root, image_rel))
            os.makedirs(os.path.dirname(os.path.join(root, label_rel)), exist_ok=True)
            write_image(os.path.join(root, label_rel), label)
    common.install_lists(src, lists_dir or common.standard_dir("gleason"), SPLITS)
    per_core = [len(m) for m in maps.values()]
    return {"counts": {s: len(p) for s, p in lists.items()}, "maps_per_core": (min(per_core), max(per_core)),
            "tie_fraction": ties / max(pixels, 1)}


def _main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--download", required=True, help="folder with 'Train Imgs/' and Maps1_T/ ... Maps6_T/")
    parser.add_argument("--root", default="data/gleason", help="dataset folder to write (config.data.root)")
    parser.add_argument("--lists", default=None, help="where train/val.txt go (default: data/list/gleason, in place)")
    parser.add_argument("--split-from", default=None, help="folder with other train/val.txt lists to use")
    args = parser.parse_args(argv)
    summary = prepare(args.download, args.root, args.lists, args.split_from)
    lo, hi = summary["maps_per_core"]
    return [f"{s}: {n} cores" for s, n in summary["counts"].items()] + [
        f"fused {lo} to {hi} pathologists' maps per core (majority vote, ties to the lowest class: "
        f"{100 * summary['tie_fraction']:.2f}% of the pixels) into {os.path.join(args.root, 'gt')}"
    ]


def main(argv: list[str] | None = None) -> int:
    return common.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
