"""Label decoding: raw label files -> class-id maps `[H, W]` uint8 (ignore label included).

Every decoder is a small picklable object (it travels to grain worker processes) whose
`__call__` maps a raw label array to class ids with table look-ups, no per-class Python loop
over the pixels. Raw labels are `[H, W]` uint8 for id formats (`mode == "gray"`) and
`[H, W, 3]` uint8 RGB for colour formats (`mode == "color"`). Decoding commutes with
nearest-neighbour resizing and cropping, so the training transforms decode only the
final crop (see `transforms.py`).
"""

from __future__ import annotations

import cv2
import numpy as np

from magnet_jax.data.errors import DataError, first_few

# The formats any dataset can use; dataset files add their own (cityscapes_label_ids, deepglobe_rgb).
GENERIC_FORMATS = ("color_table", "id_table", "train_ids", "mask_0_255")


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
                listing = first_few([f"{v} ({c} px)" for v, c in zip(values.tolist(), counts.tolist(), strict=True)])
                raise DataError(
                    f"label {where}: {int(bad.sum())} pixels have ids outside the {self.name}: {listing}. "
                    "Check config.data.num_classes / ignore_label / label_format."
                )
        return self.lut[raw]


class ColorLabelDecoder:
    """RGB colours -> classes; colours outside the table are errors (counted, most frequent listed)."""

    mode = "color"

    def __init__(self, colors: list[tuple[int, int, int]], classes: list[int], *, binarize: bool = False,
                 name: str = "colour table", hint: str = "", bgr: bool = False):
        self.init_args = (list(colors), list(classes), binarize, name, hint)
        self.is_bgr = bgr  # raw labels in OpenCV's B, G, R order (saves a conversion of full-size masks)
        if bgr:
            colors = [tuple(c)[::-1] for c in colors]
        codes = _pack_rgb(np.asarray(colors, np.uint8).reshape(-1, 3))
        if len(np.unique(codes)) != len(codes):
            raise DataError(f"{name}: the same colour is listed twice")
        self.codes = codes
        self.classes = np.asarray(classes, np.uint8)
        # Hash table: code % modulus is distinct for every table colour; a pixel's colour is in the
        # table iff the entry at its hash holds exactly its code. Two gathers, no per-colour loop.
        self.modulus = next(m for m in range(max(len(codes), 1), 1 << 16) if len(np.unique(codes % m)) == len(codes))
        self.hash_codes = np.full(self.modulus, np.uint32(0xFFFFFFFF), np.uint32)  # never a packed RGB
        self.hash_classes = np.zeros(self.modulus, np.uint8)
        self.hash_codes[codes % self.modulus] = codes
        self.hash_classes[codes % self.modulus] = self.classes
        # Fast path (tables whose colours use few distinct values per channel, DeepGlobe: {0, 255}):
        # per-channel look-up to a small index, combined into one uint8 index, then a class look-up; all
        # OpenCV SIMD passes over uint8 images.
        rgb = np.asarray(colors, np.uint8).reshape(-1, 3)
        values = [np.unique(rgb[:, c]) for c in range(3)]
        radix = [len(v) + 1 for v in values]  # the last index of each channel = a value not in the table
        self.fast = radix[0] * radix[1] * radix[2] <= 256
        if self.fast:
            lut = np.empty((1, 256, 3), np.uint8)
            for c in range(3):
                lut[0, :, c] = len(values[c])
                lut[0, values[c], c] = np.arange(len(values[c]))
            self.channel_lut = lut
            self.mix = np.array([[radix[1] * radix[2], radix[2], 1]], np.float32)
            index = (lut[0, rgb[:, 0], 0].astype(int) * radix[1] * radix[2] + lut[0, rgb[:, 1], 1] * radix[2]
                     + lut[0, rgb[:, 2], 2])
            self.index_classes = np.zeros((1, 256), np.uint8)
            self.index_classes[0, index] = self.classes
            self.index_valid = np.zeros((1, 256), np.uint8)
            self.index_valid[0, index] = 1
        self.binarize = binarize
        self.name = name
        self.hint = hint

    def for_bgr(self) -> ColorLabelDecoder:
        """The same table for raw labels in B, G, R order (as cv2.imread returns them)."""
        colors, classes, binarize, name, hint = self.init_args
        return ColorLabelDecoder(colors, classes, binarize=binarize, name=name, hint=hint, bgr=True)

    def __call__(self, raw: np.ndarray, where: str = "") -> np.ndarray:
        raw = np.asarray(raw)
        if raw.ndim != 3 or raw.shape[-1] != 3:
            raise DataError(f"label {where}: expected an RGB colour mask [H, W, 3], got shape {raw.shape}")
        if self.binarize:
            raw = cv2.threshold(np.ascontiguousarray(raw, np.uint8), 127, 255, cv2.THRESH_BINARY)[1]
        if self.fast:
            raw = np.ascontiguousarray(raw, np.uint8)
            if raw.size == 0:
                return np.zeros(raw.shape[:2], np.uint8)
            index = cv2.transform(cv2.LUT(raw, self.channel_lut), self.mix)
            index = index.reshape(raw.shape[:2])
            if cv2.countNonZero(cv2.LUT(index, self.index_valid)) == index.size:
                return cv2.LUT(index, self.index_classes).reshape(raw.shape[:2])
        code = _pack_rgb(raw)
        slot = code % np.uint32(self.modulus)
        found = self.hash_codes[slot] == code
        if not found.all():
            bad = code[~found]
            values, counts = np.unique(bad, return_counts=True)
            top = np.argsort(-counts)
            rgb = [((v >> 16) & 255, (v >> 8) & 255, v & 255) for v in values[top].tolist()]
            if self.is_bgr:
                rgb = [c[::-1] for c in rgb]
            listing = first_few([f"({r},{g},{b}) x{c}" for (r, g, b), c in zip(rgb, counts[top].tolist(), strict=True)])
            raise DataError(
                f"label {where}: {bad.size} pixels in {len(values)} colours are not in the {self.name}: {listing}."
                + (f" {self.hint}" if self.hint else "")
            )
        return self.hash_classes[slot]


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


def generic_decoder(config, fmt: str) -> IdLabelDecoder | ColorLabelDecoder:
    """The decoder of a format in `GENERIC_FORMATS`, from the tables and sizes in `config.data`.

    - color_table: `config.data.color_table` colours -> classes;
    - id_table: `config.data.id_table` raw ids -> classes, unlisted ids -> ignore;
    - train_ids: class ids 0..num_classes-1 as stored (+ the ignore label); other values are errors;
    - mask_0_255: binary masks stored as 0 / 255 (Inria Aerial's gt): 0 -> class 0, 255 -> class 1; other
      values are errors.
    """
    d = config.data
    ignore = int(d.ignore_label)
    if fmt == "color_table":
        colors, classes = parse_color_table(d.color_table)
        return ColorLabelDecoder(colors, classes, binarize=bool(d.binarize_masks), name="config.data.color_table")
    if fmt == "id_table":
        return IdLabelDecoder(parse_id_table(d.id_table), ignore, name="config.data.id_table")
    if fmt == "train_ids":
        n = int(d.num_classes)
        return IdLabelDecoder({i: i for i in range(n)}, ignore, strict=True,
                              name=f"class ids 0..{n - 1} (+ ignore {ignore})")
    if fmt == "mask_0_255":
        return IdLabelDecoder({0: 0, 255: 1}, ignore, strict=True, name="0/255 mask values")
    raise DataError(f"config.data.label_format: {fmt!r} is not one of {', '.join(GENERIC_FORMATS)}")
