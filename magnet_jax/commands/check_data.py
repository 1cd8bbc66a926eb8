"""`main.py --mode=check`: read and validate every sample of the dataset's splits before any training.

For each listed sample of `train`, `val` and `test` (the splits whose list exists): the image decodes
strictly (a truncated JPEG is an error, not a grey fill), the label decodes with the dataset's label
format (no unknown colour / id), label and image have the same size, and every label id is a class
or the ignore label; a listed file that is missing is that sample's failure. Shows a progress bar, prints
a report (each split's count; a split without a list is "skipped", one whose data is not there "not
read"), writes `WORKDIR/check_report.json`, and exits with status 1 when a sample failed or a split
could not be read, 2 (one line naming the folder or list and what to download) when there is no data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from magnet_jax.commands.checks import Checked, check_config
from magnet_jax.evaluation import write_json_atomic


class DataCheckFailed(RuntimeError):
    """Some samples failed the check (the report lists them)."""


def check_sample(sample: dict, num_classes: int, ignore_label: int | None) -> str | None:
    """None if the decoded sample is usable, else what is wrong with it."""
    image, label = np.asarray(sample["image"]), np.asarray(sample["label"])
    if image.ndim != 3 or image.shape[2] != 3:
        return f"image is {image.shape}, expected [H, W, 3]"
    if label.shape[:2] != image.shape[:2]:
        return f"label is {label.shape[1]}x{label.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}"
    ids = np.unique(label)
    bad = [int(i) for i in ids if i >= num_classes and (ignore_label is None or i != ignore_label)]
    if bad:
        return f"label ids {bad[:8]} are neither classes 0..{num_classes - 1} nor the ignore label {ignore_label}"
    return None


def _open(config, split: str, workdir: str | Path, dataset):
    """`(source, None)`, `(None, "skipped: why")` for a split without a list, or `(None, problem)`. A list
    whose files are partly missing opens without its file check, so each missing sample is reported."""
    from magnet_jax.data import (
        DataError,
        FileListSource,
        build_source,
        make_label_decoder,
        read_file_list,
    )

    listed = dict(dataset.lists).get(split)
    if dataset.source == "file_list" and not str(listed or "").strip():
        return None, f"skipped: config.data.{split}_list is empty"
    try:
        return build_source(config, split, workdir=str(workdir), validate=0), None
    except DataError as e:
        problem = str(e)
    if dataset.source != "file_list" or not os.path.isfile(listed) or not os.path.isdir(str(config.data.root)):
        return None, problem
    try:
        pairs = read_file_list(listed, str(config.data.root), check_files=False)
    except DataError:
        return None, problem
    if not any(os.path.isfile(p) for pair in pairs for p in pair):
        return None, problem  # nothing of this split is there: not downloaded (the hint says what to get)
    return FileListSource(pairs, make_label_decoder(config)), None


def run_check(config, workdir: str | Path, checked: Checked | None = None) -> dict:
    """Checks every sample of every split with a list; returns the report. Raises `DataError` (exit 2) when
    no split could be read at all, `DataCheckFailed` (exit 1) when a sample failed or a split could not be read.
    `checked`: the config's specs (`check_config`, run here when not given)."""
    from tqdm.auto import tqdm

    from magnet_jax.data import DataError

    checked = checked if checked is not None else check_config(config, "check")
    dataset = checked.dataset
    report: dict = {"dataset": dataset.name, "splits": {}, "failures": []}
    unreadable = {}
    for split in ("train", "val", "test"):
        source, problem = _open(config, split, workdir, dataset)
        if source is None:
            key = "skipped" if problem.startswith("skipped: ") else "unreadable"
            report["splits"][split] = {"checked": 0, key: problem.removeprefix("skipped: ")}
            if key == "unreadable":
                unreadable[split] = problem
            continue
        failed = 0
        for i in tqdm(range(len(source)), desc=f"check {split}", dynamic_ncols=True):
            try:
                problem = check_sample(source[i], dataset.num_classes, dataset.ignore_label)
            except (DataError, OSError, ValueError) as e:
                problem = str(e)
            if problem:
                failed += 1
                report["failures"].append({"split": split, "index": i, "problem": problem})
        report["splits"][split] = {"checked": len(source), "failed": failed}
    path = write_json_atomic(Path(workdir) / "check_report.json", report)
    for split, info in report["splits"].items():
        if "checked" in info and "failed" in info:
            print(f"{split}: {info['checked']} samples, {info['failed']} failed", flush=True)
        else:
            print(f"{split}: skipped ({info['skipped']})" if "skipped" in info else f"{split}: not read: "
                  f"{info['unreadable']}", flush=True)  # fmt: skip
    for f in report["failures"][:20]:
        print(f"  {f['split']}[{f['index']}]: {f['problem']}", flush=True)
    checked = sum(info["checked"] for info in report["splits"].values())
    if not checked:  # no data at all: the first split's reason names the folder or list and what to download
        first = next(iter(unreadable.items()), None)
        raise DataError(f"{first[0]}: {first[1]}" if first else "no split has a list to check (config.data.*_list)")
    if report["failures"] or unreadable:
        splits = f"; {len(unreadable)} split(s) could not be read ({', '.join(unreadable)})" if unreadable else ""
        failed = len(report["failures"])
        raise DataCheckFailed(f"{failed} of {checked} samples failed the check{splits}; the report is {path}")
    print(f"every sample is usable ({checked} checked); report: {path}", flush=True)
    return report
