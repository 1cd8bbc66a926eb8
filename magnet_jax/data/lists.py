"""File lists in the original's format: one `image<TAB>label` line per sample, paths relative to a root."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from magnet_jax.data.errors import DataError, MissingDataError, first_few


def read_file_list(list_path: str, root: str, *, check_files: bool = True) -> list[tuple[str, str]]:
    """Reads a list -> [(image path, label path)] joined with `root`.

    Raises before any work starts: `MissingDataError` when the root folder, the list or any listed
    file is missing (how many, the first few; the registry's `build_source` adds what to download);
    `DataError` for an empty list or a malformed line (line number and content).
    """
    if not os.path.isdir(root):
        raise MissingDataError(f"dataset folder {root!r} (config.data.root) does not exist.")
    if not os.path.isfile(list_path):
        raise MissingDataError(
            f"file list {list_path!r} does not exist. Lists hold one `image<TAB>label` line per sample, "
            f"paths relative to {root!r}."
        )
    pairs: list[tuple[str, str]] = []
    with open(list_path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            tokens = line.split("\t")
            if len(tokens) != 2 or not tokens[0].strip() or not tokens[1].strip():
                raise DataError(
                    f"{list_path}:{number}: expected `image<TAB>label` (two paths separated by one tab), "
                    f"got {line!r}"
                )
            pairs.append((os.path.join(root, tokens[0].strip()), os.path.join(root, tokens[1].strip())))
    if not pairs:
        raise DataError(f"file list {list_path!r} is empty: no `image<TAB>label` lines")
    if check_files:
        missing = [p for pair in pairs for p in pair if not os.path.isfile(p)]
        if missing:
            raise MissingDataError(
                f"{len(missing)} of the {2 * len(pairs)} files listed in {list_path!r} are missing "
                f"(root {root!r}): {first_few(missing)}."
            )
    return pairs


def write_file_list(list_path: str, pairs: Iterable[tuple[str, str]]) -> int:
    """Writes `image<TAB>label` lines (paths relative to the dataset root); returns the count."""
    pairs = list(pairs)
    os.makedirs(os.path.dirname(os.path.abspath(list_path)), exist_ok=True)
    with open(list_path, "w", encoding="utf-8") as f:
        for image, label in pairs:
            if "\t" in image or "\t" in label:
                raise DataError(f"paths with tabs cannot be written to a file list: {image!r}, {label!r}")
            f.write(f"{image}\t{label}\n")
    return len(pairs)


def list_sha256(list_path: str) -> str | None:
    """sha256 (hex) of a list file's bytes, None when it does not exist: names the exact split in results."""
    if not os.path.isfile(list_path):
        return None
    with open(list_path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def count_lines(list_path: str) -> int:
    """Non-empty lines of a list (a last line without a newline counts, unlike `wc -l`)."""
    with open(list_path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())
