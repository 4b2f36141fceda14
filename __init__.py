"""TerraSeg: QGIS plugin entry point and the root of the ``terraseg`` package.

QGIS calls :func:`classFactory`. Nothing here imports the engine (torch, rasterio, ...):
the engine runs in its own environment as a worker process (docs/architecture.md).
"""
