"""Random-access sources: `len(source)`, `source[i] -> {"image", "label", "name"}`.

`source[i]`: image uint8 `[H, W, 3]` RGB, label uint8 `[H, W]` class ids (ignore label included),
name str (the image file's stem, or the TFDS image id). `source.read_raw(i)` gives the same with
the label still raw (`"raw_label"`: `[H, W]` ids, or `[H, W, 3]` colours in the source's own channel
order: B, G, R as OpenCV reads them for file lists), for transforms that decode only what they crop;
`source.label_decoder(raw)` decodes it.

Which source a config gets is the dataset registry's business (`magnet_jax.data.build_source`).
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from magnet_jax.data.errors import DataError, MissingDataError
from magnet_jax.data.labels import ColorLabelDecoder, IdLabelDecoder

SPLITS = ("train", "val", "test")


class Source:
    """Base of the random-access sources; subclasses implement `__len__` and `read_raw`."""

    label_decoder: IdLabelDecoder | ColorLabelDecoder

    def __len__(self) -> int:
        raise NotImplementedError

    def read_raw(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        raw = self.read_raw(index)
        label = self.label_decoder(raw.pop("raw_label"), where=raw.get("label_path", raw["name"]))
        raw.pop("label_path", None)
        return {"image": raw["image"], "label": label, "name": raw["name"]}

    def validate(self, indices=None) -> None:
        """Reads and decodes the samples (all by default): unreadable files, size mismatches, unknown colours."""
        for i in range(len(self)) if indices is None else indices:
            self[i]

    def raw_view(self) -> RawView:
        return RawView(self)

    def __repr__(self) -> str:  # stable: grain stores it in iterator states and checks it on restore
        return f"{type(self).__name__}(len={len(self)})"


class RawView:
    """`view[i] = source.read_raw(i)` (picklable, for grain)."""

    def __init__(self, source: Source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.source.read_raw(int(index))

    def __repr__(self) -> str:
        return f"RawView({self.source!r})"


def _check_complete(path: str) -> None:
    """Truncated / corrupt JPEG or PNG -> DataError naming the file (OpenCV would decode a grey fill)."""
    from magnet_jax.preprocess import ImageDecodeError, check_image_complete

    try:
        check_image_complete(path)
    except ImageDecodeError as e:
        raise DataError(str(e)) from None


def read_image(path: str) -> np.ndarray:
    """RGB uint8 `[H, W, 3]` (`preprocess.read_image_rgb`, strict); `DataError` naming the file when it is
    missing, truncated or not an image."""
    from magnet_jax.preprocess import ImageDecodeError, read_image_rgb

    if not os.path.isfile(path):
        raise MissingDataError(f"image not found: {path}")
    try:
        return read_image_rgb(path)
    except ImageDecodeError as e:
        raise DataError(str(e)) from None


def read_label(path: str, mode: str, *, bgr: bool = False) -> np.ndarray:
    """`mode == "gray"`: `[H, W]` uint8 ids; `"color"`: `[H, W, 3]` uint8 RGB (B, G, R with `bgr`)."""
    from magnet_jax.preprocess import decode_image_file

    if not os.path.isfile(path):
        raise MissingDataError(f"label not found: {path}")
    _check_complete(path)
    if mode == "color":
        label = decode_image_file(path, cv2.IMREAD_COLOR)
        if label is None:
            raise DataError(f"cannot read label {path}: not an image file OpenCV can decode, or corrupt")
        return label if bgr else cv2.cvtColor(label, cv2.COLOR_BGR2RGB)
    label = decode_image_file(path, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DataError(f"cannot read label {path}: not an image file OpenCV can decode, or corrupt")
    if label.ndim == 3:
        if label.shape[2] >= 3 and (label[..., 0] == label[..., 1]).all() and (label[..., 1] == label[..., 2]).all():
            label = label[..., 0]
        else:
            raise DataError(
                f"label {path} is a colour image but config.data.label_format expects single-channel ids; "
                "use label_format 'color_table' (with config.data.color_table) or 'deepglobe_rgb'"
            )
    if label.dtype != np.uint8:
        raise DataError(f"label {path}: expected 8-bit ids, got {label.dtype}")
    return label


class FileListSource(Source):
    """Samples of a file list (`lists.read_file_list`), decoded with `label_decoder`."""

    def __init__(self, pairs: list[tuple[str, str]], label_decoder: IdLabelDecoder | ColorLabelDecoder):
        self.pairs = list(pairs)
        # Colour masks stay in OpenCV's B, G, R order; the decoder's table is flipped to match.
        if isinstance(label_decoder, ColorLabelDecoder) and not label_decoder.is_bgr:
            label_decoder = label_decoder.for_bgr()
        self.label_decoder = label_decoder

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        first = os.path.basename(self.pairs[0][0]) if self.pairs else ""
        return f"FileListSource(len={len(self)}, first={first!r}, labels={self.label_decoder.name!r})"

    def read_raw(self, index: int) -> dict[str, Any]:
        image_path, label_path = self.pairs[index]
        image = read_image(image_path)
        raw = read_label(label_path, self.label_decoder.mode, bgr=True)
        if raw.shape[:2] != image.shape[:2]:
            raise DataError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its label {label_path} is "
                f"{raw.shape[1]}x{raw.shape[0]} (W x H); they must have the same size"
            )
        name = os.path.splitext(os.path.basename(image_path))[0]
        return {"image": image, "raw_label": raw, "name": name, "label_path": label_path}


def list_path_for(config, split: str) -> str:
    """`config.data.{split}_list` (split: train | val | test)."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return str(config.data[f"{split}_list"])
