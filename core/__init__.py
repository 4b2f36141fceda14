"""Engine core: raster/vector I/O, labels, cache, models, inference, metrics (no QGIS)."""
