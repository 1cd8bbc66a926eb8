"""`main.py --mode=check`: read and validate every sample of the dataset's splits before any training.

For each listed sample of `train`, `val` and `test` (the splits whose list exists): the image decodes
strictly (a truncated JPEG is an error, not a grey fill), the label decodes with the dataset's label
format (no unknown colour / id), label and image have the same size, and every label id is a class
or the ignore label. Shows a progress bar, prints a report, writes `WORKDIR/check_report.json`, and
exits with status 1 when a sample failed (the report names each file and what is wrong).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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


def run_check(config, workdir: str | Path) -> dict:
    """Checks every sample of every split with a list; returns the report (and raises if any failed)."""
    from tqdm.auto import tqdm

    from magnet_jax.data import DataError, build_source, dataset_spec

    dataset = dataset_spec(config)
    report: dict = {"dataset": dataset.name, "splits": {}, "failures": []}
    for split in ("train", "val", "test"):
        try:
            source = build_source(config, split, workdir=str(workdir))
        except DataError as e:
            report["splits"][split] = {"checked": 0, "skipped": str(e)}
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
        line = info.get("skipped") or f"{info['checked']} samples, {info['failed']} failed"
        print(f"{split}: {line}", flush=True)
    for f in report["failures"][:20]:
        print(f"  {f['split']}[{f['index']}]: {f['problem']}", flush=True)
    if report["failures"]:
        raise DataCheckFailed(f"{len(report['failures'])} samples failed the check; the report is {path}")
    print(f"every sample is usable; report: {path}", flush=True)
    return report
