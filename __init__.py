"""TerraSeg: QGIS plugin entry point and the root of the ``terraseg`` package.

QGIS calls :func:`classFactory`. Nothing here imports the engine (torch, rasterio, ...):
the engine runs in its own environment as a worker process (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:  # noqa: N802 - QGIS plugin API
    """Create the plugin object for QGIS (imports only QGIS and the standard library)."""
    from .plugin.main import TerraSegPlugin

    return TerraSegPlugin(iface)
