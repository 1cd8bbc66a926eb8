"""Unpacking a dataset's downloaded zip once, for the preparation scripts in `data/`."""

from __future__ import annotations

import os
import zipfile

from magnet_jax.data.errors import MissingDataError


def extract_once(zip_path: str, root: str, folder: str, hint: str) -> list[str] | None:
    """Extracts `zip_path` into `root` unless `root/folder` already exists.

    Returns the archive's member names, or None when it was skipped (already unpacked). A missing
    zip is a `MissingDataError` naming it, then `hint` (what to download: `data.datasets.download_hint`).
    """
    if not os.path.isfile(zip_path):
        raise MissingDataError(f"{zip_path!r} does not exist. {hint}")
    if os.path.isdir(os.path.join(root, folder)):
        print(f"{folder}/ already in {root}, not unzipping {os.path.basename(zip_path)} again")
        return None
    os.makedirs(root, exist_ok=True)
    print(f"unzipping {zip_path} into {root} ...")
    with zipfile.ZipFile(zip_path) as z:
        names = z.namelist()
        z.extractall(root)
    return names
