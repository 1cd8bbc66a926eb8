"""The label outputs of `--mode=predict` that other tools read, written the same way for whole-image and tiled
prediction (by the one writer, `inference.outputs.save_prediction`), from the last stage's argmax map:

- `labels.tif` (TIFF inputs; streamed prediction always): the map at the last MagNet scale as a tiled,
  pyramidal TIFF carrying the input's georeferencing, resolution, class names (`label_map.py`);
- `<image stem>_ids.png` with `config.predict.label_format=ids`: the map resized (nearest) to the input
  size in the dataset's label ids (Cityscapes labelIds, the benchmark scorer's input; datasets without
  such a table write their train ids), named so that scorers matching on the image name find it;
- `labels.geojson` with `config.predict.polygons=True`: class polygons (`polygons.py`), in map
  coordinates when the input is georeferenced, else in input-image pixels.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import cv2
import numpy as np

from magnet_jax.preprocess import write_image
from magnet_jax.rasters.image_meta import ImageMetadata, tiff_file_metadata
from magnet_jax.rasters.label_map import write_label_map
from magnet_jax.rasters.polygons import label_polygons

__all__ = ["LABEL_FORMATS", "OutputOptions", "write_label_outputs"]

LABEL_FORMATS = ("none", "ids")
TIFF_EXTENSIONS = (".tif", ".tiff", ".btf", ".tf8", ".svs")


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """What to write besides the pictures (see the module docstring); `from_config` reads `config.predict`.

    label_ids: the dataset's label id of each train id (`ResolvedDataset.train_to_label_id`); empty: the
    train ids are written as they are.
    """

    label_format: str = "none"
    polygons: bool = False
    label_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if self.label_format not in LABEL_FORMATS:
            raise ValueError(
                f"config.predict.label_format: expected one of {', '.join(LABEL_FORMATS)}, got {self.label_format!r}"
            )

    @classmethod
    def from_config(cls, config, dataset) -> OutputOptions:
        p = config.get("predict") or {}
        return cls(str(p.get("label_format", "none")), bool(p.get("polygons", False)), dataset.train_to_label_id)


def _rows(labels):
    """`read_rows(y0, y1)` of a `[H, W]` array or of a map with `shape` and `read(y0, y1, x0, x1)` (HostMap)."""
    if isinstance(labels, np.ndarray):
        return lambda a, b: labels[a:b]
    return lambda a, b: labels.read(a, b, 0, labels.shape[1])


def write_label_outputs(
    out_dir: str,
    labels,
    *,
    image_path: str | None,
    image_hw: tuple[int, int],
    palette: np.ndarray | None,
    class_names: Sequence[str] | None = None,
    options: OutputOptions | None = None,
    metadata: ImageMetadata | None = None,
    tiff: bool | None = None,
) -> list[str]:
    """Writes the label outputs of one image into `out_dir`; returns the files written.

    labels: the last stage's argmax `[H, W]` uint8 (an array, or a `HostMap`). image_hw: the input's size.
    metadata: the input's (default: read from `image_path` when it is a TIFF). tiff: write `labels.tif`
    (default: when `image_path` is a TIFF).
    """
    options = options or OutputOptions()
    names = list(class_names or [])
    is_tiff = bool(image_path) and str(image_path).lower().endswith(TIFF_EXTENSIONS)
    if metadata is None and is_tiff:
        metadata = tiff_file_metadata(image_path)
    size_hw = tuple(int(s) for s in labels.shape[:2])
    read_rows, written = _rows(labels), []
    if is_tiff if tiff is None else tiff:
        path = os.path.join(out_dir, "labels.tif")
        write_label_map(path, read_rows, size_hw, palette, metadata, names)
        written.append(path)
    if options.label_format == "ids" or options.polygons:
        whole = read_rows(0, size_hw[0])
    if options.label_format == "ids":
        ids = whole
        if options.label_ids:
            lut = np.arange(256, dtype=np.uint8)
            lut[: len(options.label_ids)] = options.label_ids
            ids = lut[whole]
        ids = cv2.resize(ids, (int(image_hw[1]), int(image_hw[0])), interpolation=cv2.INTER_NEAREST)
        stem = os.path.splitext(os.path.basename(image_path or "image"))[0]
        path = os.path.join(out_dir, f"{stem}_ids.png")
        write_image(path, ids)
        written.append(path)
    if options.polygons:
        meta = metadata if metadata is not None and metadata.georeferenced else None
        collection = label_polygons(whole, names, image_hw=image_hw, metadata=meta)
        path = os.path.join(out_dir, "labels.geojson")
        with open(path, "w") as f:
            json.dump(collection, f)
        written.append(path)
    return written
