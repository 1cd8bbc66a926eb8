"""What makes up a dataset (`DatasetSpec`, one per file of this folder) and a config's view of it
(`ResolvedDataset`, what training, evaluation and pictures read).

A dataset file declares, once: class names, palette, the classes averaged into the mIoU, the
benchmark's overall metric, its label formats (and the default one), the standard split lists it
ships under `data/list/<name>/` (with their sha256, so a result can say it used them), what to
download, and how its sources are built (`file_list` for every dataset; `tfds` for Cityscapes,
`synthetic` for the generated set).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from magnet_jax.data.lists import count_lines, list_sha256, read_file_list
from magnet_jax.data.sources import SPLITS, FileListSource, Source, list_path_for
from magnet_jax.metrics import ABSENT_RULES

# A source builder: (config, split, root, workdir, label decoder) -> Source.
SourceBuilder = Callable[..., Source]


def default_palette(num_classes: int) -> np.ndarray:
    """A fixed, well-spread palette `[n, 3]` uint8 (RGB) for datasets without their own colours."""
    base = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
                     [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
                     [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128]], np.uint8)  # fmt: skip
    if num_classes <= len(base):
        return base[:num_classes].copy()
    extra = np.random.default_rng(12345).integers(0, 256, size=(num_classes - len(base), 3), dtype=np.uint8)
    return np.concatenate([base, extra])


def file_list_source(config, split: str, *, root: str | None, workdir: str | None, decoder) -> Source:
    """`config.data.{split}_list` read relative to `root` (default `config.data.root`), decoded with `decoder`."""
    del workdir
    pairs = read_file_list(list_path_for(config, split), root or str(config.data.root))
    return FileListSource(pairs, decoder)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset, declared once (see the module docstring).

    class_names / palette: empty for datasets whose classes the config defines (custom).
    miou_classes: None = all classes. label_format: the default of `config.data.label_format` ("" = chosen
    from the tables the config gives: custom). label_formats: {format: factory(config) -> decoder} this
    dataset adds to the generic ones (`labels.GENERIC_FORMATS`). standard_lists: {split: sha256} of the
    lists shipped under `list_dir` (relative to the repository root). sources: {config.data.source: builder}.
    """

    name: str
    description: str
    download_hint: str
    class_names: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    miou_classes: tuple[int, ...] | None = None
    metric: str = "miou"
    label_format: str = "train_ids"
    label_formats: Mapping[str, Callable[[Any], Any]] = dataclasses.field(default_factory=dict)
    sources: Mapping[str, SourceBuilder] = dataclasses.field(default_factory=lambda: {"file_list": file_list_source})
    list_dir: str = ""
    standard_lists: Mapping[str, str] = dataclasses.field(default_factory=dict)
    standard_split: str = ""  # where the standard lists come from, for results and docs
    # the dataset's own label id of each train id, for scorer-ready predictions; empty: train ids are the ids
    train_to_label_id: tuple[int, ...] = ()
    # classes absent from both ground truth and prediction in the mIoU, as the benchmark's scorer does:
    # "zero" (the original MagNet) | "skip" (the official Cityscapes scorer); metrics.ABSENT_RULES
    absent_classes: str = "zero"


@dataclasses.dataclass(frozen=True)
class ResolvedDataset:
    """A config's dataset: everything below the config reads these fields, never `config.data`.

    palette: `[num_classes, 3]` uint8 RGB. miou_classes: the classes averaged into the mIoU.
    metric: the benchmark's overall metric (`metrics.overall_score`). lists: ((split, list path), ...) of
    file-list sources. standard_lists: ((split, sha256), ...) of the dataset's standard split.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: np.ndarray = dataclasses.field(compare=False, repr=False)
    miou_classes: tuple[int, ...]
    ignore_label: int | None
    metric: str
    label_format: str
    source: str
    lists: tuple[tuple[str, str], ...] = ()
    standard_lists: tuple[tuple[str, str], ...] = ()
    standard_split: str = ""
    train_to_label_id: tuple[int, ...] = ()  # see DatasetSpec
    absent_classes: str = "zero"  # see DatasetSpec

    def list_path(self, split: str, workdir: str | None = None) -> str | None:
        """The list file of `split` (synthetic: `<folder>/<split>.txt`, needs `workdir` unless config.data.root)."""
        path = dict(self.lists).get(split)
        if path is None and self.source == "synthetic" and workdir:
            path = os.path.join(workdir, "synthetic_data", f"{split}.txt")
        return path

    def list_checksum(self, split: str, workdir: str | None = None) -> str | None:
        """sha256 of the list file of `split` (None: no list, or the list does not exist yet)."""
        path = self.list_path(split, workdir)
        return list_sha256(path) if path else None

    def protocol(self, split: str, workdir: str | None = None) -> dict:
        """The evaluation protocol of `split`, for results.json and the printed table: dataset, split, the list
        file, its sha256 and line count, whether it is the dataset's standard split, the classes averaged
        into the mIoU (ids and names) and the overall metric."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        path = self.list_path(split, workdir)
        sha = list_sha256(path) if path else None
        standard = dict(self.standard_lists).get(split)
        # True / False: the list is / is not the dataset's standard one; None: no standard list is shipped.
        is_standard = (sha == standard) if standard else None
        if self.source == "tfds":
            is_standard = True  # TFDS splits are the official ones by construction
        out = {
            "dataset": self.name,
            "split": split,
            "source": self.source,
            "list": path,
            "list_sha256": sha,
            "list_images": count_lines(path) if sha else None,
            "standard_split": is_standard,
            "standard_split_source": self.standard_split if is_standard else "",
            "classes_averaged": list(self.miou_classes),
            "class_names_averaged": [self.class_names[c] for c in self.miou_classes],
            "metric": self.metric,
            "absent_classes": self.absent_classes,
            "absent_classes_rule": ABSENT_RULES[self.absent_classes],
        }
        if self.source == "tfds":
            out["list"] = f"tfds:cityscapes/semantic_segmentation[{'validation' if split == 'val' else split}]"
        return out

    def describe(self, split: str, workdir: str | None = None) -> str:
        """One line naming the protocol, e.g. 'deepglobe test (standard split, list sha256 d3a2d41d...,
        142 images), mIoU over classes 1..6, overall metric miou'."""
        p = self.protocol(split, workdir)
        where = {True: "standard split", False: "NOT the standard split", None: "split"}[p["standard_split"]]
        listed = f"list sha256 {p['list_sha256'][:8]}..., {p['list_images']} images" if p["list_sha256"] else p["list"]
        cls = list(self.miou_classes)
        ranged = cls == list(range(cls[0], cls[-1] + 1)) and len(cls) > 2
        averaged = f"classes {cls[0]}..{cls[-1]}" if ranged else "classes " + ",".join(map(str, cls))
        return f"{self.name} {split} ({where}, {listed}), mIoU over {averaged}, overall metric {self.metric}"
