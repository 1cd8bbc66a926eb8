"""`labels.tif`: a label map as a tiled, pyramidal TIFF that GIS and slide viewers open with its metadata.

Layout: deflate-compressed `tile x tile` tiles, a palette colour map, and reduced-resolution levels
(nearest, by 2, 4, ... down to about one tile) as further pages of the main IFD chain marked
NewSubfileType=1 (reduced image), each tiled. Measured: OpenSlide (generic tiled TIFF) lists these pages
as levels and GDAL (rasterio) as overviews; with the levels as SubIFDs instead, GDAL still lists
overviews but OpenSlide sees a single level, so the main-chain form is the one both read.

Metadata (`image_meta.ImageMetadata` of the input, scaled to the label map's size): the GeoTIFF tags
(CRS, geotransform), XResolution / YResolution / ResolutionUnit, an OME-XML description with
PhysicalSizeX / Y when the input had one, GDAL_NODATA and a GDAL_METADATA with the class names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from magnet_jax.rasters.image_meta import ImageMetadata

__all__ = ["NODATA", "write_label_map"]

NODATA = 255  # never a predicted class (labels are uint8 class ids below 255): GIS tools may mask it


def _level_tiles(read_rows: Callable[[int, int], np.ndarray], size_hw, factor: int, tile: int) -> Iterator[np.ndarray]:
    """Tiles (row-major, each `[tile, tile]`, zero-padded) of the label map subsampled by `factor` (nearest)."""
    h, w = size_hw
    lh, lw = -(-h // factor), -(-w // factor)
    for ty in range(-(-lh // tile)):
        rows = np.arange(ty * tile, min(lh, (ty + 1) * tile)) * factor
        if factor == 1:
            band = read_rows(int(rows[0]), int(rows[-1]) + 1)
        else:  # one source row at a time: memory stays at a row whatever the factor
            band = np.stack([read_rows(int(r), int(r) + 1)[0, ::factor] for r in rows])
        for tx in range(-(-lw // tile)):
            t = np.zeros((tile, tile), np.uint8)
            part = band[:, tx * tile : (tx + 1) * tile]
            t[: part.shape[0], : part.shape[1]] = part
            yield t


def pyramid_factors(size_hw: tuple[int, int], tile: int) -> list[int]:
    """Subsampling factors 2, 4, ... of the reduced levels: down to the first level within one tile."""
    factors, f = [], 2
    while max(size_hw) / f >= tile:
        factors.append(f)
        f *= 2
    return factors


def write_label_map(
    path: str,
    read_rows: Callable[[int, int], np.ndarray],
    size_hw: tuple[int, int],
    palette: np.ndarray | None = None,
    metadata: ImageMetadata | None = None,
    class_names: Sequence[str] = (),
    *,
    nodata: int | None = NODATA,
    tile: int = 512,
) -> None:
    """Writes a `[H, W]` uint8 label map, read as row bands `read_rows(y0, y1) -> [y1 - y0, W]`, to `path`.

    palette: `[n, 3]` uint8 RGB (class ids beyond it are black), or None for grey values. metadata: the
    input image's (any size: scaled here to `size_hw`), or None. See the module docstring for the layout.
    """
    import tifffile

    h, w = int(size_hw[0]), int(size_hw[1])
    colormap, photometric = None, "minisblack"
    if palette is not None:
        pal = np.zeros((256, 3), np.uint16)
        pal[: len(palette)] = np.asarray(palette, np.uint16)[:256] * 257
        colormap, photometric = pal.T.copy(), "palette"
    opts = {"tile": (tile, tile), "compression": "zlib", "photometric": photometric, "colormap": colormap}
    first = {"extratags": [], "metadata": None}
    if metadata is not None:
        meta = metadata.scaled((h, w))
        first["extratags"] = meta.tiff_tags(nodata, class_names)
        res = meta.resolution_for_tiff()
        if res is not None:
            first["resolution"], first["resolutionunit"] = res
        if meta.ome_xml() is not None:
            first["description"] = meta.ome_xml()
    elif nodata is not None or class_names:
        first["extratags"] = ImageMetadata((h, w)).tiff_tags(nodata, class_names)
    with tifffile.TiffWriter(path, bigtiff=h * w > 2**31) as tif:
        tif.write(_level_tiles(read_rows, (h, w), 1, tile), shape=(h, w), dtype=np.uint8, **first, **opts)
        for f in pyramid_factors((h, w), tile):
            shape = (-(-h // f), -(-w // f))
            tif.write(
                _level_tiles(read_rows, (h, w), f, tile), shape=shape, dtype=np.uint8, subfiletype=1, metadata=None,
                **opts,
            )  # fmt: skip
