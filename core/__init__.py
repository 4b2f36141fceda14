"""Engine core (no QGIS): raster/vector I/O, labels, models, inference, outputs, metrics."""
