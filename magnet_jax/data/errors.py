"""Errors raised by the data layer before (and while) reading, with messages a user can act on."""

from __future__ import annotations

from collections.abc import Sequence


class DataError(ValueError):
    """A dataset, file list, image or label that cannot be used as it is."""


class MissingDataError(DataError, FileNotFoundError):
    """A dataset folder, file list or listed file that does not exist."""


# What to download for each known dataset, and where to put it. Nothing is downloaded automatically.
DOWNLOAD_HINTS = {
    "cityscapes": (
        "Cityscapes needs registration: download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
        "https://www.cityscapes-dataset.com/downloads/ into data/, then run "
        "`python data/prepare_cityscapes.py --zips data --root data/cityscapes` (unzips and writes "
        "data/list/cityscapes/{train,val,test}.txt). For the TFDS source put the two zips in "
        "config.data.tfds_manual_dir instead."
    ),
    "deepglobe": (
        "DeepGlobe land cover needs registration: download the land-train data (land-train.zip, 803 images "
        "2448x2448 with RGB masks) of the DeepGlobe 2018 Land Cover challenge into data/, then run "
        "`python data/prepare_deepglobe.py --zip data/land-train.zip --root data/deepglobe` (unzips and writes "
        "data/list/deepglobe/{train,val,test}.txt)."
    ),
    "synthetic": (
        "the synthetic dataset is generated on first use into <workdir>/synthetic_data (or config.data.root); "
        "delete that folder to regenerate it."
    ),
    "custom": (
        "put your images and labels under config.data.root and write file lists with one "
        "`image<TAB>label` line per sample, paths relative to config.data.root (see data/README.md)."
    ),
}

NOTHING_DOWNLOADED = "Nothing is downloaded automatically."


def download_hint(name: str) -> str:
    return DOWNLOAD_HINTS.get(name, DOWNLOAD_HINTS["custom"]) + " " + NOTHING_DOWNLOADED


def first_few(items: Sequence[str], n: int = 5) -> str:
    """'a, b, c (and 7 more)' for error messages."""
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")
