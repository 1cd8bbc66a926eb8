"""Class polygons of a label map as a GeoJSON FeatureCollection (`labels.geojson` of `--mode=predict`).

One Polygon feature per connected region of a class (OpenCV contours, `RETR_CCOMP`: outer boundaries with
their holes), properties `class_id` and `class_name`. Rings pass through the centres of the region's
boundary pixels (`CHAIN_APPROX_SIMPLE` keeps the corners), so a region narrower than two pixels along
every direction gives no ring and is left out.

Coordinates: input-image pixels (x right, y down, the image spanning 0..W, 0..H; a label map at another
size is scaled to the input), or, for a georeferenced input, map coordinates through its geotransform,
with a `crs` member naming the EPSG code when the GeoKeyDirectory gives one (read by GDAL / QGIS).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from magnet_jax.rasters.image_meta import ImageMetadata

__all__ = ["label_polygons"]


def _ring(points: np.ndarray, to_xy) -> list[list[float]] | None:
    """A closed GeoJSON ring from a `[n, 1, 2]` OpenCV contour (pixel indices), or None if degenerate."""
    pts = points.reshape(-1, 2).astype(np.float64)
    if len(np.unique(pts, axis=0)) < 3:
        return None
    xy = to_xy(pts + 0.5)  # pixel index -> the pixel's centre
    coords = [[round(float(x), 6), round(float(y), 6)] for x, y in xy]
    return coords + [coords[0]]


def label_polygons(
    labels: np.ndarray,
    class_names: Sequence[str] = (),
    *,
    image_hw: tuple[int, int] | None = None,
    metadata: ImageMetadata | None = None,
) -> dict:
    """A GeoJSON FeatureCollection of the class regions of `labels` `[h, w]` (integer class ids).

    image_hw: the input image's size `(H, W)` the coordinates refer to (default: the label map's).
    metadata: the input's, when georeferenced: coordinates are then map coordinates (see the module docstring).
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    ih, iw = image_hw or (h, w)
    sx, sy = iw / w, ih / h
    affine = metadata.transform() if metadata is not None else None

    def to_xy(pts: np.ndarray) -> np.ndarray:
        x, y = pts[:, 0] * sx, pts[:, 1] * sy
        if affine is None:
            return np.stack([x, y], 1)
        a, b, c, d, e, f = affine
        return np.stack([a * x + b * y + c, d * x + e * y + f], 1)

    features = []
    for cls in np.unique(labels).tolist():
        mask = (labels == cls).astype(np.uint8)
        contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        if hierarchy is None:
            continue
        hierarchy = hierarchy[0]
        name = class_names[cls] if cls < len(class_names) else f"class {cls}"
        for i, contour in enumerate(contours):
            if hierarchy[i][3] != -1:
                continue  # a hole: added to its outer boundary below
            outer = _ring(contour, to_xy)
            if outer is None:
                continue
            rings = [outer]
            child = hierarchy[i][2]
            while child != -1:
                hole = _ring(contours[child], to_xy)
                if hole is not None:
                    rings.append(hole)
                child = hierarchy[child][0]
            features.append({
                "type": "Feature",
                "properties": {"class_id": int(cls), "class_name": str(name)},
                "geometry": {"type": "Polygon", "coordinates": rings},
            })  # fmt: skip
    out: dict = {"type": "FeatureCollection", "features": features}
    epsg = metadata.epsg() if metadata is not None else None
    if affine is not None and epsg is not None:
        out["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}}
    return out
