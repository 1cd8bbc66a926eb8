"""Cityscapes through tensorflow-datasets (`cityscapes/semantic_segmentation`).

TFDS builds the dataset from the two zips the original also asks for, leftImg8bit_trainvaltest.zip and
gtFine_trainvaltest.zip (registration needed; nothing is downloaded automatically), found in
`config.data.tfds_manual_dir`, and writes ArrayRecord files under `config.data.tfds_data_dir`
(default ~/tensorflow_datasets) once. Samples are then read at random (`builder.as_data_source`), their
labelIds mapped to the 19 train ids, and go through the same transforms as file-list data.
Splits: train -> train, val -> validation, test -> test. Names are the TFDS image ids
(e.g. aachen_000000_000019).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from magnet_jax.data.errors import DataError, MissingDataError
from magnet_jax.data.labels import IdLabelDecoder
from magnet_jax.data.sources import Source

BUILDER = "cityscapes/semantic_segmentation"
ZIPS = ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip")
TFDS_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def default_data_dir() -> str:
    return os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def prepare(data_dir: str, manual_dir: str | None) -> Any:
    """Returns the prepared TFDS builder, building it from the zips in `manual_dir` if needed."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(BUILDER, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if not manual_dir:
        raise MissingDataError(
            f"TFDS {BUILDER} is not prepared in {data_dir!r} and config.data.tfds_manual_dir is not set: put "
            f"{' and '.join(ZIPS)} in a folder and set config.data.tfds_manual_dir to it."
        )
    if not os.path.isdir(manual_dir):
        raise MissingDataError(f"config.data.tfds_manual_dir {manual_dir!r} does not exist.")
    missing = [z for z in ZIPS if not os.path.isfile(os.path.join(manual_dir, z))]
    if missing:
        raise MissingDataError(
            f"{len(missing)} Cityscapes zip(s) missing from config.data.tfds_manual_dir {manual_dir!r}: "
            f"{', '.join(missing)}."
        )
    builder.download_and_prepare(
        download_dir=os.path.join(data_dir, "downloads"),
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
        file_format="array_record",
    )
    return builder


class TfdsCityscapesSource(Source):
    """A split of TFDS cityscapes/semantic_segmentation as a random-access source."""

    def __init__(self, data_source, label_decoder):
        self.data_source = data_source
        self.label_decoder = label_decoder
        if label_decoder.mode != "gray":
            raise DataError("the TFDS Cityscapes source holds labelIds: use label_format 'cityscapes_label_ids'")

    @classmethod
    def from_config(cls, config, split: str, label_decoder: IdLabelDecoder) -> TfdsCityscapesSource:
        """`split` of the prepared TFDS dataset (config.data.tfds_data_dir), decoded with `label_decoder`."""
        if str(config.data.name) != "cityscapes":
            raise DataError(f"config.data.source 'tfds' supports Cityscapes only, got data.name {config.data.name!r}")
        data_dir = str(config.data.tfds_data_dir or "") or default_data_dir()
        builder = prepare(data_dir, str(config.data.tfds_manual_dir or ""))
        data_source = builder.as_data_source(split=TFDS_SPLITS[split])
        if len(data_source) == 0:
            raise DataError(f"TFDS {BUILDER} split {TFDS_SPLITS[split]!r} in {data_dir!r} is empty")
        return cls(data_source, label_decoder)

    def __len__(self) -> int:
        return len(self.data_source)

    def read_raw(self, index: int) -> dict[str, Any]:
        record = self.data_source[int(index)]
        name = record["image_id"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        image = np.asarray(record["image_left"])
        raw = np.asarray(record["segmentation_label"])[..., 0]
        return {"image": image, "raw_label": raw, "name": name, "label_path": f"tfds:{name}"}
