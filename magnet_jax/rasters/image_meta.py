"""Where an image lies and how big its pixels are: GeoTIFF georeferencing, TIFF resolution tags, OME sizes.

`read_tiff_metadata(tif)` reads them from the first page of a `tifffile.TiffFile`; `ImageMetadata.scaled`
gives the same metadata for a resampled copy of the image (the label map is at the last MagNet scale, not
necessarily the input size); `tiff_tags` / `ome_xml` give what `label_map.write_label_map` writes back.
Tags are copied as numbers: no GDAL / PROJ is needed to carry a CRS through, it stays the input's
GeoKeyDirectory (with its GeoDoubleParams / GeoAsciiParams).
"""

from __future__ import annotations

import dataclasses
import re
from xml.sax.saxutils import escape

__all__ = ["GEO_TAGS", "ImageMetadata", "read_tiff_metadata", "tiff_file_metadata"]

# GeoTIFF tag code -> (name, TIFF data type for writing)
GEO_TAGS = {
    33550: ("ModelPixelScale", "d"),
    33922: ("ModelTiepoint", "d"),
    34264: ("ModelTransformation", "d"),
    34735: ("GeoKeyDirectory", "H"),
    34736: ("GeoDoubleParams", "d"),
    34737: ("GeoAsciiParams", "s"),
}
GDAL_METADATA, GDAL_NODATA = 42112, 42113
_RASTER_TYPE_KEY, _PIXEL_IS_POINT = 1025, 2
_UNIT_TO_CM = {"nm": 1e-7, "µm": 1e-4, "um": 1e-4, "mm": 0.1, "cm": 1.0, "m": 100.0}  # OME length units


@dataclasses.dataclass(frozen=True)
class ImageMetadata:
    """Metadata of an image of `size_hw` pixels.

    geo: ((tag code, value), ...) of the GeoTIFF tags present (values as tuples of numbers, or a str).
    resolution: TIFF (XResolution, YResolution) in pixels per `resolution_unit` (TIFF code: 1 none,
    2 inch, 3 centimeter), or None. physical_size: OME (PhysicalSizeX, PhysicalSizeY) of one pixel in
    `physical_unit`, or None.
    """

    size_hw: tuple[int, int]
    geo: tuple[tuple[int, tuple | str], ...] = ()
    resolution: tuple[float, float] | None = None
    resolution_unit: int = 1
    physical_size: tuple[float, float] | None = None
    physical_unit: str = "µm"

    @property
    def georeferenced(self) -> bool:
        tags = dict(self.geo)
        return 34264 in tags or (33550 in tags and 33922 in tags)

    def _pixel_is_point(self) -> bool:
        keys = dict(self.geo).get(34735, ())
        for i in range(4, len(keys) - 3, 4):
            if keys[i] == _RASTER_TYPE_KEY and keys[i + 1] == 0:
                return keys[i + 3] == _PIXEL_IS_POINT
        return False

    def scaled(self, size_hw: tuple[int, int]) -> ImageMetadata:
        """The metadata of this image resampled to `size_hw` `(H, W)`: same extent on the ground, larger pixels."""
        h, w = int(size_hw[0]), int(size_hw[1])
        sx, sy = self.size_hw[1] / w, self.size_hw[0] / h  # old pixels per new pixel
        # a raster coordinate u (pixel corners at integers; PixelIsPoint: centres) is s * u' + c * (s - 1)
        c = 0.5 if self._pixel_is_point() else 0.0
        geo = []
        for code, value in self.geo:
            if code == 33550:  # ModelPixelScale: (sx, sy, sz) ground units per pixel
                value = (value[0] * sx, value[1] * sy, *value[2:])
            elif code == 33922:  # ModelTiepoint: (I, J, K, X, Y, Z) per point
                value = list(value)
                for i in range(0, len(value) - 5, 6):
                    value[i] = (value[i] + c) / sx - c
                    value[i + 1] = (value[i + 1] + c) / sy - c
                value = tuple(value)
            elif code == 34264:  # ModelTransformation: 4x4 row-major, x = m0 u + m1 v + m3, y = m4 u + m5 v + m7
                m = list(value)
                for row in (0, 4, 8):
                    m[row + 3] += c * ((sx - 1) * m[row] + (sy - 1) * m[row + 1])
                    m[row], m[row + 1] = m[row] * sx, m[row + 1] * sy
                value = tuple(m)
            geo.append((code, value))
        resolution = None if self.resolution is None else (self.resolution[0] / sx, self.resolution[1] / sy)
        physical = None if self.physical_size is None else (self.physical_size[0] * sx, self.physical_size[1] * sy)
        return dataclasses.replace(self, size_hw=(h, w), geo=tuple(geo), resolution=resolution, physical_size=physical)

    def transform(self) -> tuple[float, float, float, float, float, float] | None:
        """The affine `(a, b, c, d, e, f)` from pixel-corner coordinates `(x, y)` (0..W, 0..H) to map
        coordinates: `X = a x + b y + c`, `Y = d x + e y + f` (None when not georeferenced)."""
        tags = dict(self.geo)
        c = 0.5 if self._pixel_is_point() else 0.0  # PixelIsPoint rasters map pixel centres
        if 34264 in tags:
            m = tags[34264]
            a, b, d, e = m[0], m[1], m[4], m[5]
            return a, b, m[3] - c * (a + b), d, e, m[7] - c * (d + e)
        if 33550 in tags and 33922 in tags:
            (px, py, *_), t = tags[33550], tags[33922]
            return px, 0.0, t[3] - (t[0] + c) * px, 0.0, -py, t[4] + (t[1] + c) * py
        return None

    def epsg(self) -> int | None:
        """The EPSG code of the projected (else geographic) CRS in the GeoKeyDirectory, if given as a code."""
        keys = dict(self.geo).get(34735, ())
        found = {}
        for i in range(4, len(keys) - 3, 4):
            if keys[i + 1] == 0:
                found[keys[i]] = keys[i + 3]
        for key in (3072, 2048):  # ProjectedCSTypeGeoKey, GeographicTypeGeoKey
            if 1024 <= found.get(key, 0) < 32767:
                return int(found[key])
        return None

    def resolution_for_tiff(self) -> tuple[tuple[float, float], int] | None:
        """(XResolution, YResolution) and ResolutionUnit to write: the TIFF tags, else from the OME sizes."""
        if self.resolution is not None:
            return self.resolution, self.resolution_unit
        cm = _UNIT_TO_CM.get(self.physical_unit)
        if self.physical_size is not None and cm and min(self.physical_size) > 0:
            return (1.0 / (self.physical_size[0] * cm), 1.0 / (self.physical_size[1] * cm)), 3
        return None

    def tiff_tags(self, nodata: int | None = None, class_names=()) -> list[tuple]:
        """tifffile `extratags`: the GeoTIFF tags, GDAL_NODATA and a GDAL_METADATA naming the classes."""
        tags = [(code, GEO_TAGS[code][1], 0 if code == 34737 else len(v), v, True) for code, v in self.geo]
        if nodata is not None:
            tags.append((GDAL_NODATA, "s", 0, str(int(nodata)), True))
        if class_names:
            items = "".join(f'<Item name="CLASS_{i}">{escape(str(n))}</Item>' for i, n in enumerate(class_names))
            text = f'<GDALMetadata><Item name="DESCRIPTION" sample="0" role="description">class id</Item>{items}'
            text += "</GDALMetadata>"
            tags.append((GDAL_METADATA, "s", 0, text.encode("ascii", "xmlcharrefreplace").decode(), True))
        return tags

    def ome_xml(self) -> str | None:
        """An OME-XML description of a `[H, W]` uint8 image with this pixel size (None without OME sizes)."""
        if self.physical_size is None:
            return None
        (h, w), (px, py), unit = self.size_hw, self.physical_size, escape(self.physical_unit)
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
            '<Image ID="Image:0" Name="labels"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" '
            f'SizeX="{w}" SizeY="{h}" SizeC="1" SizeZ="1" SizeT="1" PhysicalSizeX="{px!r}" '
            f'PhysicalSizeXUnit="{unit}" PhysicalSizeY="{py!r}" PhysicalSizeYUnit="{unit}">'
            '<Channel ID="Channel:0:0" SamplesPerPixel="1"/><TiffData IFD="0" PlaneCount="1"/></Pixels></Image></OME>'
        )
        return xml.encode("ascii", "xmlcharrefreplace").decode()  # TIFF strings are 7-bit ASCII


def _ome_sizes(description: str) -> tuple[tuple[float, float] | None, str]:
    """(PhysicalSizeX, PhysicalSizeY) and their unit from the first `<Pixels>` element of an OME-XML text."""
    pixels = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", description)
    if pixels is None:
        return None, "µm"
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', pixels.group(0)))
    try:
        size = (float(attrs["PhysicalSizeX"]), float(attrs["PhysicalSizeY"]))
    except (KeyError, ValueError):
        return None, "µm"
    return size, attrs.get("PhysicalSizeXUnit", "µm")


def read_tiff_metadata(tif) -> ImageMetadata:
    """The `ImageMetadata` of the first image of an open `tifffile.TiffFile`."""
    page = tif.pages[0]
    tags = page.tags
    geo = []
    for code in GEO_TAGS:
        tag = tags.get(code)
        if tag is not None:
            value, cast = tag.value, int if code == 34735 else float
            geo.append((code, value if isinstance(value, str) else tuple(cast(v) for v in value)))
    resolution, unit = None, 1
    if 282 in tags and 283 in tags:
        (xn, xd), (yn, yd) = tags[282].value, tags[283].value
        unit = int(tags[296].value) if 296 in tags else 2  # the TIFF default is inch
        if xd and yd and xn and yn and not (xn == xd == yn == yd == 1 and unit == 1):
            resolution = (xn / xd, yn / yd)
    physical, physical_unit = None, "µm"
    if tif.is_ome and tif.ome_metadata:
        physical, physical_unit = _ome_sizes(tif.ome_metadata)
    shape = (int(page.imagelength), int(page.imagewidth))
    return ImageMetadata(shape, tuple(geo), resolution, unit, physical, physical_unit)


def tiff_file_metadata(path: str) -> ImageMetadata | None:
    """`read_tiff_metadata` of a TIFF file, or None when tifffile cannot parse it (read as another format)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return read_tiff_metadata(tif)
    except Exception:  # noqa: BLE001 - not a TIFF after all: the image reader decides what it is
        return None
