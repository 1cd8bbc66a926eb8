"""Raster files as users have them: images read by region with their georeferencing and pixel size
(`large_io`, `image_meta`), and the label files a prediction leaves (`label_outputs`: the label TIFF with a
pyramid viewers read, `label_map`; the dataset's label ids; GeoJSON polygons, `polygons`)."""
