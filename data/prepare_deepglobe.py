"""Prepare DeepGlobe land cover for magnet-jax: unzip land-train.zip and check the standard split.

    python data/prepare_deepglobe.py --zip data/land-train.zip --root data/deepglobe

land-train.zip is the DeepGlobe 2018 Land Cover challenge's training data (803 RGB satellite images
2448x2448 `<id>_sat.jpg` with RGB masks `<id>_mask.png`); it needs registration and is not downloaded
automatically. The challenge's own validation and test images have no public masks, so the field splits
land-train: the standard split (GLNet's, used by MagNet, FCtL, ISDNet, ...) is 454 train / 207 val /
142 test, all 803 images, shipped as the original MagNet's lists in data/list/deepglobe/ (byte for byte;
its train.txt has no final newline, so `wc -l` says 453). By default this script checks that every listed
image and mask exists under --root (an error names the missing ids) and copies the lists to --lists
when that is another folder. `--split-from DIR` uses the train/val/test.txt of DIR instead;
`--split random --seed N [--counts a,b,c]` makes a seeded shuffle (its numbers are not comparable to
published ones) and writes it to --lists, which must then not be the standard folder.
Lists hold `land-train/<id>_sat.jpg<TAB>land-train/<id>_mask.png` lines, relative to --root.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import prepare_common as common  # noqa: E402

from magnet_jax.data.archives import extract_once  # noqa: E402
from magnet_jax.data.datasets import download_hint  # noqa: E402
from magnet_jax.data.datasets.deepglobe import STANDARD_COUNTS  # noqa: E402
from magnet_jax.data.errors import DataError, MissingDataError, first_few  # noqa: E402
from magnet_jax.data.lists import write_file_list  # noqa: E402

SPLITS = ("train", "val", "test")
ORIGINAL_COUNTS = tuple(STANDARD_COUNTS[s] for s in SPLITS)  # (454, 207, 142): all 803 images
FOLDER = "land-train"


def unzip(zip_path: str, root: str) -> None:
    names = extract_once(zip_path, root, FOLDER, download_hint("deepglobe"))
    if names is None:
        return
    # Some copies of the zip hold the files at the top level instead of inside land-train/.
    if not os.path.isdir(os.path.join(root, FOLDER)) and any(n.endswith("_sat.jpg") and "/" not in n for n in names):
        os.makedirs(os.path.join(root, FOLDER))
        for n in names:
            if "/" not in n:
                os.replace(os.path.join(root, n), os.path.join(root, FOLDER, n))


def find_pairs(root: str) -> list[tuple[str, str]]:
    """Every `<id>_sat.jpg` of root/land-train with its mask, in numeric id order."""
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


def prepare(root: str, lists_dir: str, zip_path: str | None = None, *, split: str = "standard",
            counts=ORIGINAL_COUNTS, seed: int = 0, split_from: str | None = None) -> dict[str, int]:
    """Unzips (when `zip_path`), checks the lists' files and writes the lists; returns {split: count}.

    split "standard": the shipped standard lists (or those of `split_from`), every listed file checked;
    "random": a seeded shuffle of the images found, sizes `counts`, written to `lists_dir`.
    """
    if zip_path:
        unzip(zip_path, root)
    if split == "random":
        if common.same_folder(lists_dir, common.standard_dir("deepglobe")):
            raise DataError(
                f"--split random would overwrite the standard lists in {lists_dir!r}: pass --lists with another "
                "folder (and point config.data.{train,val,test}_list at it)"
            )
        splits = split_pairs(find_pairs(root), tuple(counts), seed)
        return {s: write_file_list(os.path.join(lists_dir, f"{s}.txt"), splits[s]) for s in SPLITS}
    if split != "standard":
        raise DataError(f"--split: expected 'standard' or 'random', got {split!r}")
    src = split_from or common.standard_dir("deepglobe")
    what = f"the lists in {src!r}" if split_from else "the standard DeepGlobe split (data/list/deepglobe)"
    lists = common.read_lists(src, SPLITS, "deepglobe")
    common.check_listed(lists, root, "deepglobe", what)
    common.install_lists(src, lists_dir, SPLITS)
    return {s: len(lists[s]) for s in SPLITS}


def _main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", default=None, help="land-train.zip (leave out if --root already has land-train/)")
    parser.add_argument("--root", default="data/deepglobe", help="dataset folder (config.data.root)")
    parser.add_argument("--lists", default=None,
                        help="where the train/val/test.txt lists go (default: data/list/deepglobe, the standard "
                        "lists in place; --split random needs another folder)")
    parser.add_argument("--split", default="standard", choices=("standard", "random"),
                        help="standard (default): the shipped 454/207/142 lists; random: a seeded shuffle")
    parser.add_argument("--seed", type=int, default=0, help="--split random: seed of the shuffle")
    parser.add_argument("--counts", default=",".join(map(str, ORIGINAL_COUNTS)),
                        help="--split random: train,val,test sizes")
    parser.add_argument("--split-from", default=None, help="folder with other train/val/test.txt lists to use")
    args = parser.parse_args(argv)
    try:
        counts = tuple(int(v) for v in args.counts.split(","))
    except ValueError:
        counts = ()
    if len(counts) != 3 or min(counts) < 1:
        raise DataError(f"--counts: expected three positive integers 'train,val,test', got {args.counts!r}")
    lists = args.lists or common.standard_dir("deepglobe")
    written = prepare(args.root, lists, args.zip, split=args.split, counts=counts, seed=args.seed,
                      split_from=args.split_from)
    return [f"{s}: {n} images -> {os.path.join(lists, s + '.txt')}" for s, n in written.items()]


def main(argv: list[str] | None = None) -> int:
    return common.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
