"""Label decoding: raw label files -> class-id maps `[H, W]` uint8 (ignore label included).

Every decoder is a small picklable object (it travels to grain worker processes) whose
`__call__` maps a raw label array to class ids with table look-ups, no per-class Python loop
over the pixels. Raw labels are `[H, W]` uint8 for id formats (`mode == "gray"`) and
`[H, W, 3]` uint8 RGB for colour formats (`mode == "color"`). Decoding commutes with
nearest-neighbour resizing and cropping, so the training transforms decode only the
final crop (see `transforms.py`).
"""

from __future__ import annotations

import numpy as np

from magnet_jax.data.errors import DataError, first_few

# Cityscapes gtFine labelIds -> the 19 train ids (everything else -> ignore).
CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
# Colours of the train ids, for pictures.
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

# DeepGlobe land cover: RGB mask colour -> class (no ignore; class 0 is left out of the mIoU).
DEEPGLOBE_COLORS = (
    (0, 0, 0), (0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255),
)  # fmt: skip
DEEPGLOBE_CLASSES = ("unknown", "urban", "agriculture", "rangeland", "forest", "water", "barren")

LABEL_FORMATS = ("cityscapes_label_ids", "deepglobe_rgb", "color_table", "id_table", "train_ids")


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """`[..., 3]` uint8 -> `[...]` uint32 code r<<16 | g<<8 | b."""
    rgb = np.asarray(rgb)
    return (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2].astype(np.uint32)


class IdLabelDecoder:
    """Single-channel ids -> classes through a 256-entry table.

    `strict`: ids whose table entry is `None` are errors (counted); otherwise unlisted ids map to `ignore_label`.
    """

    mode = "gray"

    def __init__(self, table: dict[int, int], ignore_label: int, *, strict: bool = False, name: str = "id table"):
        if not 0 <= int(ignore_label) <= 255:
            raise DataError(f"config.data.ignore_label must be in 0..255 (labels are uint8), got {ignore_label}")
        lut = np.full(256, ignore_label, np.uint8)
        valid = np.zeros(256, bool)
        for raw, cls in table.items():
            if not 0 <= int(raw) <= 255:
                raise DataError(f"{name}: raw id {raw} is outside 0..255 (labels are 8-bit images)")
            lut[int(raw)] = int(cls)
            valid[int(raw)] = True
        valid[ignore_label] = True  # the ignore label itself is a valid raw value
        self.lut = lut
        self.valid = valid
        self.strict = strict
        self.name = name

    def __call__(self, raw: np.ndarray, where: str = "") -> np.ndarray:
        raw = _as_gray(raw, where)
        if self.strict:
            bad = ~self.valid[raw]
            if bad.any():
                values, counts = np.unique(raw[bad], return_counts=True)
                listing = first_few([f"{v} ({c} px)" for v, c in zip(values.tolist(), counts.tolist())])
                raise DataError(
                    f"label {where}: {int(bad.sum())} pixels have ids outside the {self.name}: {listing}. "
                    "Check config.data.num_classes / ignore_label / label_format."
                )
        return self.lut[raw]


class ColorLabelDecoder:
    """RGB colours -> classes; colours outside the table are errors (counted, most frequent listed)."""

    mode = "color"

    def __init__(self, colors: list[tuple[int, int, int]], classes: list[int], *, binarize: bool = False,
                 name: str = "colour table", hint: str = ""):
        codes = _pack_rgb(np.asarray(colors, np.uint8).reshape(-1, 3))
        if len(np.unique(codes)) != len(codes):
            raise DataError(f"{name}: the same colour is listed twice")
        order = np.argsort(codes)
        self.codes = codes[order]
        self.classes = np.asarray(classes, np.uint8)[order]
        self.binarize = binarize
        self.name = name
        self.hint = hint

    def __call__(self, raw: np.ndarray, where: str = "") -> np.ndarray:
        raw = np.asarray(raw)
        if raw.ndim != 3 or raw.shape[-1] != 3:
            raise DataError(f"label {where}: expected an RGB colour mask [H, W, 3], got shape {raw.shape}")
        if self.binarize:
            raw = np.where(raw >= 128, np.uint8(255), np.uint8(0))
        code = _pack_rgb(raw)
        idx = np.searchsorted(self.codes, code)
        np.minimum(idx, len(self.codes) - 1, out=idx)
        found = self.codes[idx] == code
        if not found.all():
            bad = code[~found]
            values, counts = np.unique(bad, return_counts=True)
            top = np.argsort(-counts)
            listing = first_few(
                [f"({v >> 16},{(v >> 8) & 255},{v & 255}) x{c}" for v, c in zip(values[top].tolist(), counts[top].tolist())]
            )
            raise DataError(
                f"label {where}: {bad.size} pixels in {len(values)} colours are not in the {self.name}: {listing}."
                + (f" {self.hint}" if self.hint else "")
            )
        return self.classes[idx]


def _as_gray(raw: np.ndarray, where: str) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.ndim == 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    if raw.ndim != 2:
        raise DataError(
            f"label {where}: expected a single-channel id image [H, W], got shape {raw.shape}; "
            "colour masks need config.data.label_format = 'color_table' (or 'deepglobe_rgb')"
        )
    if raw.dtype != np.uint8:
        raise DataError(f"label {where}: expected 8-bit ids, got {raw.dtype}")
    return raw


def parse_color_table(text: str) -> tuple[list[tuple[int, int, int]], list[int]]:
    """'R,G,B;R,G,B;...' (class i = entry i) with optional explicit class 'R,G,B=k' -> (colours, classes)."""
    colors, classes = [], []
    entries = [e.strip() for e in str(text).split(";") if e.strip()]
    if not entries:
        raise DataError("config.data.color_table is empty; expected 'R,G,B;R,G,B;...' (one colour per class)")
    for i, entry in enumerate(entries):
        color_text, _, cls_text = entry.partition("=")
        try:
            rgb = tuple(int(v) for v in color_text.split(","))
            cls = int(cls_text) if cls_text else i
        except ValueError:
            raise DataError(f"config.data.color_table entry {entry!r}: expected 'R,G,B' or 'R,G,B=class'") from None
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb) or not 0 <= cls <= 255:
            raise DataError(f"config.data.color_table entry {entry!r}: expected 'R,G,B' (0..255) or 'R,G,B=class'")
        colors.append(rgb)
        classes.append(cls)
    return colors, classes


def parse_id_table(text: str) -> dict[int, int]:
    """'raw:class,raw:class,...' -> {raw: class}."""
    table = {}
    entries = [e.strip() for e in str(text).split(",") if e.strip()]
    if not entries:
        raise DataError("config.data.id_table is empty; expected 'raw_id:class,raw_id:class,...'")
    for entry in entries:
        try:
            raw, cls = (int(v) for v in entry.split(":"))
        except ValueError:
            raise DataError(f"config.data.id_table entry {entry!r}: expected 'raw_id:class'") from None
        table[raw] = cls
    return table


def make_label_decoder(config) -> IdLabelDecoder | ColorLabelDecoder:
    """The decoder for `config.data.label_format` (see config.py for the formats)."""
    d = config.data
    fmt = d.label_format
    ignore = int(d.ignore_label)
    if fmt == "cityscapes_label_ids":
        return IdLabelDecoder(CITYSCAPES_ID_TO_TRAIN_ID, ignore, name="Cityscapes labelIds table")
    if fmt == "deepglobe_rgb":
        return ColorLabelDecoder(
            list(DEEPGLOBE_COLORS), list(range(7)), binarize=bool(d.binarize_masks), name="DeepGlobe colour table",
            hint="DeepGlobe masks saved with lossy compression need config.data.binarize_masks=True "
            "(the challenge's convention: threshold each channel at 128).",
        )
    if fmt == "color_table":
        colors, classes = parse_color_table(d.color_table)
        return ColorLabelDecoder(colors, classes, binarize=bool(d.binarize_masks), name="config.data.color_table")
    if fmt == "id_table":
        return IdLabelDecoder(parse_id_table(d.id_table), ignore, name="config.data.id_table")
    if fmt == "train_ids":
        n = int(d.num_classes)
        return IdLabelDecoder({i: i for i in range(n)}, ignore, strict=True,
                              name=f"class ids 0..{n - 1} (+ ignore {ignore})")
    raise DataError(f"config.data.label_format: expected one of {', '.join(LABEL_FORMATS)}, got {fmt!r}")
