"""Training with Lightning: datasets, task, callbacks, training and grid runs (no QGIS)."""
