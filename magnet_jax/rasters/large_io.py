"""Large images in and out: region reads of big (Big)TIFF files, tiled label TIFFs, small previews.

`open_image(path)` gives an `ImageSource` whose `read(y0, y1, x0, x1)` returns RGB uint8 `[h, w, 3]`
without loading the whole image when the file allows it:
- uncompressed contiguous TIFF / BigTIFF: a `np.memmap` view, opened per read (its pages leave the
  resident set when the read returns);
- tiled or striped TIFF (any codec tifffile decodes, e.g. deflate, LZW, JPEG): only the tiles / strips
  that overlap the region are read and decoded;
- whole-slide formats (SVS, NDPI, MRXS, ...; any file with `reader="openslide"`): OpenSlide, by region
  and level (`slide_io.py`);
- other TIFF layouts (planar, exotic samples) and ordinary images (PNG, JPEG, ...): decoded once in memory.
A pyramidal TIFF's reduced levels (tifffile's series levels: SubIFDs or reduced pages) that can be read
by region are `ImageSource.levels[1:]` (`scaled.ScaledImage(..., pyramid=True)` resizes from them).
Grey images are repeated to RGB, an alpha channel is dropped; anything but 8 bits per sample is refused.

TIFF inputs also carry their metadata (`ImageSource.metadata`, `image_meta.ImageMetadata`: GeoTIFF
georeferencing, resolution tags, OME pixel sizes), which `label_map.write_label_map` writes back on the
label map; other inputs have `metadata = None`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import cv2
import numpy as np

from magnet_jax.preprocess import write_image
from magnet_jax.rasters.image_meta import ImageMetadata, read_tiff_metadata
from magnet_jax.rasters.label_map import write_label_map
from magnet_jax.rasters.slide_io import SLIDE_EXTENSIONS, slide_levels

__all__ = ["ImageSource", "open_image", "uses_slide_reader", "read_sampled", "save_rgb_png", "write_label_tiff"]

TIFF_EXTENSIONS = (".tif", ".tiff", ".btf", ".tf8", ".svs", ".ome.tif")
READERS = ("auto", "tifffile", "openslide")


def _to_rgb(block: np.ndarray, path: str) -> np.ndarray:
    """`[h, w]`, `[h, w, 1|3|4]` uint8 -> `[h, w, 3]` uint8."""
    if block.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit image, got {block.dtype} samples")
    if block.ndim == 2:
        block = block[..., None]
    if block.ndim != 3 or block.shape[2] not in (1, 3, 4):
        raise ValueError(f"{path}: expected a grey, RGB or RGBA image, got samples of shape {block.shape}")
    if block.shape[2] == 1:
        return np.repeat(block, 3, axis=2)
    return np.ascontiguousarray(block[..., :3])


class ImageSource:
    """An RGB image that can be read by region: `size_hw`, `read(y0, y1, x0, x1) -> [h, w, 3] uint8`."""

    def __init__(self, path: str, size_hw: tuple[int, int], reader: Callable[[int, int, int, int], np.ndarray]):
        self.path = path
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self._reader = reader
        self.kind = "array"
        self.metadata: ImageMetadata | None = None  # TIFF inputs: georeferencing, resolution (image_meta.py)
        self.levels: list[ImageSource] = [self]  # pyramid levels, full resolution first (tiled pyramidal TIFFs)

    @classmethod
    def from_array(cls, image: np.ndarray, name: str = "<array>") -> ImageSource:
        image = _to_rgb(np.asarray(image), name)
        return cls(name, image.shape[:2], lambda y0, y1, x0, x1: image[y0:y1, x0:x1])

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """`[y1 - y0, x1 - x0, 3]` uint8 (a copy); bounds must lie inside the image."""
        h, w = self.size_hw
        if not (0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w):
            raise ValueError(f"{self.path}: region y {y0}:{y1}, x {x0}:{x1} outside the {h}x{w} image")
        return np.array(self._reader(int(y0), int(y1), int(x0), int(x1)), dtype=np.uint8, copy=True)

    def whole(self) -> np.ndarray:
        """The whole image `[H, W, 3]` uint8 in memory."""
        return self.read(0, self.size_hw[0], 0, self.size_hw[1])


def _tiff_source(path: str) -> ImageSource:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        metadata = read_tiff_metadata(tif)
        n_levels = len(tif.series[0].levels)
    src = _tiff_level(path, 0)
    src.metadata = metadata
    if src.kind != "tiff (in memory)":  # the reduced levels that can be read by region too
        src.levels += [lv for lv in (_tiff_level(path, i) for i in range(1, n_levels)) if lv is not None]
    return src


def _tiff_level(path: str, level: int) -> ImageSource:
    """Level `level` of the first series: memory-mapped, by segments, or (other layouts) decoded in memory
    (`None` for a reduced level in such a layout: it is not used)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        first = tif.series[0].levels[level].pages[0]
        key = first.keyframe
        shape = tuple(int(s) for s in tif.series[0].levels[level].shape)
        dtype = key.dtype
        memmap_offset = int(first.dataoffsets[0]) if first.is_memmappable else None
        contig = key.planarconfig == 1 or len(shape) == 2
    if dtype != np.uint8:
        if level:
            return None
        raise ValueError(f"{path}: expected an 8-bit image, got {dtype} samples")
    if len(shape) not in (2, 3) or (len(shape) == 3 and not contig):
        if level:
            return None
        # planar or multi-sample layouts: decoded once
        src = ImageSource.from_array(_to_rgb(tifffile.imread(path, series=0, level=0), path), path)
        src.kind = "tiff (in memory)"
        return src
    h, w = shape[:2]
    if memmap_offset is not None:

        def read_memmap(y0, y1, x0, x1):
            mm = np.memmap(path, dtype=np.uint8, mode="r", offset=memmap_offset, shape=shape)
            try:
                return _to_rgb(np.array(mm[y0:y1, x0:x1]), path)
            finally:
                del mm

        src = ImageSource(path, (h, w), read_memmap)
        src.kind = "tiff (memory-mapped)"
        return src
    src = ImageSource(path, (h, w), _SegmentReader(path, shape, level))
    src.kind = "tiff (tiles / strips)"
    return src


class _SegmentReader:
    """Reads a region of a tiled / striped contiguous TIFF by decoding only the segments it overlaps."""

    def __init__(self, path: str, shape: tuple[int, ...], level: int = 0):
        self.path, self.shape, self.level = path, shape, level

    def __call__(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        import tifffile

        samples = self.shape[2] if len(self.shape) == 3 else 1
        out = np.zeros((y1 - y0, x1 - x0, samples), np.uint8)
        if y1 <= y0 or x1 <= x0:
            return _to_rgb(out, self.path)
        with tifffile.TiffFile(self.path) as tif:
            page = tif.series[0].levels[self.level].pages[0]
            key = page.keyframe
            seg_h, seg_w = int(key.chunks[0]), int(key.chunks[1])
            n_tx = -(-self.shape[1] // seg_w)
            fh = tif.filehandle
            decode_args = {"_fullsize": bool(key.is_tiled)}
            if key.compression in (6, 7, 34892, 33007):  # JPEG
                decode_args.update(jpegtables=page.jpegtables, jpegheader=key.jpegheader)
            for ty in range(y0 // seg_h, (y1 - 1) // seg_h + 1):
                for tx in range(x0 // seg_w, (x1 - 1) // seg_w + 1):
                    index = ty * n_tx + tx
                    offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
                    if count == 0:
                        continue  # an empty segment reads as zeros
                    with fh.lock:
                        fh.seek(offset)
                        data = fh.read(count)
                    seg, _, _ = key.decode(data, index, **decode_args)
                    seg = np.asarray(seg).reshape(seg.shape[-3], seg.shape[-2], samples)
                    sy, sx = ty * seg_h, tx * seg_w
                    a, b = max(y0, sy), min(y1, sy + seg.shape[0])
                    c, d = max(x0, sx), min(x1, sx + seg.shape[1])
                    out[a - y0 : b - y0, c - x0 : d - x0] = seg[a - sy : b - sy, c - sx : d - sx]
        return _to_rgb(out, self.path)


def _slide_source(path: str) -> ImageSource:
    sources = []
    for size_hw, reader in slide_levels(path):
        src = ImageSource(path, size_hw, reader)
        src.kind = "slide (openslide)"
        sources.append(src)
    sources[0].levels = sources
    return sources[0]


def uses_slide_reader(path: str, reader: str = "auto") -> bool:
    """Whether `open_image(path, reader)` reads through OpenSlide (`auto`: the whole-slide extensions)."""
    if reader not in READERS:
        raise ValueError(f"config.predict.reader: expected one of {', '.join(READERS)}, got {reader!r}")
    return reader == "openslide" or (reader == "auto" and str(path).lower().endswith(SLIDE_EXTENSIONS))


def open_image(path: str | os.PathLike, reader: str = "auto") -> ImageSource:
    """An `ImageSource` for a TIFF / BigTIFF (region reads), a whole slide (`reader`: `auto` = OpenSlide for
    the whole-slide extensions, `openslide` for any file it opens, `tifffile` never) or any image OpenCV
    decodes (in memory)."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    if uses_slide_reader(path, reader):
        return _slide_source(path)
    if path.lower().endswith(TIFF_EXTENSIONS):
        try:
            return _tiff_source(path)
        except ValueError:
            raise
        except Exception as e:  # not a TIFF tifffile can parse: fall back to OpenCV
            if not cv2.haveImageReader(path):
                raise ValueError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    from magnet_jax.preprocess import read_image_rgb

    src = ImageSource.from_array(read_image_rgb(path), path)
    src.kind = "decoded in memory"
    return src


def read_sampled(source: ImageSource, rows: np.ndarray, cols: np.ndarray, band: int = 256) -> np.ndarray:
    """`source[rows][:, cols]` (nearest sampling, `[len(rows), len(cols), 3]`), read in bands of `band` rows."""
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    out = np.zeros((rows.size, cols.size, 3), np.uint8)
    x0, x1 = int(cols.min()), int(cols.max()) + 1
    start = 0
    while start < rows.size:
        y0 = int(rows[start])
        stop = int(np.searchsorted(rows, y0 + band, side="left"))
        stop = max(stop, start + 1)
        y1 = int(rows[stop - 1]) + 1
        block = source.read(y0, y1, x0, x1)
        out[start:stop] = block[rows[start:stop] - y0][:, cols - x0]
        start = stop
    return out


def save_rgb_png(path: str, image_rgb: np.ndarray) -> None:
    write_image(path, cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR))


def write_label_tiff(path: str, read_rows: Callable[[int, int], np.ndarray], size_hw: tuple[int, int],
                     palette: np.ndarray | None = None, *, tile: int = 512) -> None:
    """`label_map.write_label_map` without metadata (kept for its callers)."""
    write_label_map(path, read_rows, size_hw, palette, None, (), tile=tile)
