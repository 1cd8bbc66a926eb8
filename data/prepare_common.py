"""Shared by the data/prepare_*.py scripts: the standard split lists shipped under data/list/<dataset>/,
checked against a dataset folder (every listed file must exist) and copied where the user wants them."""

from __future__ import annotations

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from magnet_jax.data.datasets import download_hint, get_spec  # noqa: E402
from magnet_jax.data.errors import DataError, MissingDataError, first_few  # noqa: E402
from magnet_jax.data.lists import read_file_list  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def standard_dir(dataset: str) -> str:
    """The folder of the dataset's shipped standard lists (absolute)."""
    return os.path.join(REPO, get_spec(dataset).list_dir)


def same_folder(a: str, b: str) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def read_lists(list_dir: str, splits, dataset: str) -> dict[str, list[tuple[str, str]]]:
    """{split: [(image, label) relative paths]} of `<list_dir>/<split>.txt`, files not checked yet."""
    out = {}
    for split in splits:
        try:
            pairs = read_file_list(os.path.join(list_dir, f"{split}.txt"), list_dir, check_files=False)
        except MissingDataError as e:
            raise MissingDataError(f"{e} {download_hint(dataset)}") from None
        out[split] = [(os.path.relpath(i, list_dir), os.path.relpath(lb, list_dir)) for i, lb in pairs]
    return out


def check_listed(lists: dict[str, list[tuple[str, str]]], root: str, dataset: str, what: str) -> None:
    """MissingDataError naming the missing listed files (split, line, path) before anything is written."""
    missing = []
    for split, pairs in lists.items():
        for number, pair in enumerate(pairs, start=1):
            missing += [f"{p} ({split}.txt:{number})" for p in pair if not os.path.isfile(os.path.join(root, p))]
    if missing:
        total = sum(2 * len(p) for p in lists.values())
        raise MissingDataError(
            f"{len(missing)} of the {total} files listed by {what} are missing under {root!r}: "
            f"{first_few(missing)}. {download_hint(dataset)}"
        )


def install_lists(src_dir: str, dst_dir: str, splits) -> None:
    """Copies `<src_dir>/<split>.txt` to `dst_dir` byte for byte (nothing to do when it is the same folder)."""
    if same_folder(src_dir, dst_dir):
        return
    os.makedirs(dst_dir, exist_ok=True)
    for split in splits:
        shutil.copyfile(os.path.join(src_dir, f"{split}.txt"), os.path.join(dst_dir, f"{split}.txt"))


def run(main_body, argv=None) -> int:
    """Runs a script's body; a DataError / ValueError becomes `error: ...` on stderr and exit status 1."""
    try:
        for line in main_body(argv):
            print(line)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
