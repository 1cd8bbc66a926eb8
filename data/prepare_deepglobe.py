"""Prepare DeepGlobe land cover for magnet-jax: unzip land-train.zip and write train/val/test lists.

    python data/prepare_deepglobe.py --zip data/land-train.zip --root data/deepglobe --lists data/list/deepglobe

land-train.zip is the DeepGlobe 2018 Land Cover challenge's training data (803 RGB satellite images
2448x2448 `<id>_sat.jpg` with RGB masks `<id>_mask.png`); it needs registration and is not downloaded
automatically. The challenge's own validation and test images have no public masks, so the original MagNet
split land-train into 453 train / 207 val / 142 test images (802 of the 803) and evaluates on test.
This script reproduces those sizes with a seeded shuffle of the ids (--seed, --counts). To use the
original's exact split instead, pass --split-from with the folder of its list files (train.txt, val.txt,
test.txt from the MagNet repository's data/list/deepglobe): their lines are checked and copied.
Lists hold `land-train/<id>_sat.jpg<TAB>land-train/<id>_mask.png` lines, relative to --root.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from magnet_jax.data.errors import DataError, MissingDataError, download_hint, first_few  # noqa: E402
from magnet_jax.data.lists import read_file_list, write_file_list  # noqa: E402

SPLITS = ("train", "val", "test")
ORIGINAL_COUNTS = (453, 207, 142)
FOLDER = "land-train"


def unzip(zip_path: str, root: str) -> None:
    if not os.path.isfile(zip_path):
        raise MissingDataError(f"{zip_path!r} does not exist. {download_hint('deepglobe')}")
    if os.path.isdir(os.path.join(root, FOLDER)):
        print(f"{FOLDER}/ already in {root}, not unzipping again")
        return
    os.makedirs(root, exist_ok=True)
    print(f"unzipping {zip_path} into {root} ...")
    with zipfile.ZipFile(zip_path) as z:
        names = z.namelist()
        z.extractall(root)
    # Some copies of the zip hold the files at the top level instead of inside land-train/.
    if not os.path.isdir(os.path.join(root, FOLDER)) and any(n.endswith("_sat.jpg") and "/" not in n for n in names):
        os.makedirs(os.path.join(root, FOLDER))
        for n in names:
            if "/" not in n:
                os.replace(os.path.join(root, n), os.path.join(root, FOLDER, n))


def find_pairs(root: str) -> list[tuple[str, str]]:
    folder = os.path.join(root, FOLDER)
    if not os.path.isdir(folder):
        raise MissingDataError(
            f"{folder!r} does not exist: pass --zip with land-train.zip. {download_hint('deepglobe')}"
        )
    images = glob.glob(os.path.join(folder, "*_sat.jpg"))
    if not images:
        raise DataError(f"no <id>_sat.jpg images in {folder!r}")

    def key(path: str):
        stem = os.path.basename(path)[: -len("_sat.jpg")]
        return (0, int(stem), stem) if stem.isdigit() else (1, 0, stem)

    pairs, missing = [], []
    for image in sorted(images, key=key):
        stem = os.path.basename(image)[: -len("_sat.jpg")]
        label = f"{FOLDER}/{stem}_mask.png"
        if not os.path.isfile(os.path.join(root, label)):
            missing.append(label)
        pairs.append((f"{FOLDER}/{stem}_sat.jpg", label))
    if missing:
        raise MissingDataError(f"{len(missing)} masks are missing under {root!r}: {first_few(missing)}")
    return pairs


def split_pairs(pairs: list[tuple[str, str]], counts: tuple[int, int, int], seed: int) -> dict[str, list]:
    if sum(counts) > len(pairs):
        raise DataError(
            f"the split {'/'.join(map(str, counts))} needs {sum(counts)} images but {len(pairs)} were found; "
            "pass --counts for a smaller split"
        )
    order = np.random.default_rng(seed).permutation(len(pairs))
    out, start = {}, 0
    for split, n in zip(SPLITS, counts, strict=True):
        out[split] = [pairs[i] for i in sorted(order[start : start + n].tolist())]
        start += n
    return out


def prepare(root: str, lists_dir: str, zip_path: str | None = None, *, counts=ORIGINAL_COUNTS, seed: int = 0,
            split_from: str | None = None) -> dict[str, int]:
    """Unzips (when `zip_path`) and writes the lists; returns {split: count}."""
    if zip_path:
        unzip(zip_path, root)
    if split_from:
        splits = {s: [(os.path.relpath(i, root), os.path.relpath(lb, root))
                      for i, lb in read_file_list(os.path.join(split_from, f"{s}.txt"), root, dataset="deepglobe")]
                  for s in SPLITS}
    else:
        splits = split_pairs(find_pairs(root), tuple(counts), seed)
    return {s: write_file_list(os.path.join(lists_dir, f"{s}.txt"), splits[s]) for s in SPLITS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", default=None, help="land-train.zip (leave out if --root already has land-train/)")
    parser.add_argument("--root", default="data/deepglobe", help="dataset folder (config.data.root)")
    parser.add_argument("--lists", default="data/list/deepglobe", help="where to write {train,val,test}.txt")
    parser.add_argument("--counts", default="453,207,142", help="train,val,test sizes (the original's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle that assigns images to splits")
    parser.add_argument("--split-from", default=None, help="folder with the original's train/val/test.txt to copy")
    args = parser.parse_args(argv)
    try:
        counts = tuple(int(v) for v in args.counts.split(","))
        if len(counts) != 3 or min(counts) < 1:
            raise DataError(f"--counts: expected three positive integers 'train,val,test', got {args.counts!r}")
        written = prepare(args.root, args.lists, args.zip, counts=counts, seed=args.seed, split_from=args.split_from)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split, n in written.items():
        print(f"{split}: {n} images -> {os.path.join(args.lists, split + '.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
