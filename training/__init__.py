"""Training runs (no QGIS): cache, split, datasets, losses, Lightning; train, grid, cv, compare."""
