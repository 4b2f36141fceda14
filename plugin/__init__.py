"""QGIS side of TerraSeg: imports only qgis, qgis.PyQt and the standard library."""
