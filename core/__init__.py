"""TerraSeg engine core: raster and vector I/O, labels, cache, models, inference, metrics (no QGIS)."""
