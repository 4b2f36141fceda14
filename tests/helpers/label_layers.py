"""Tiny label layers and rasters on a 10 x 10 grid of 10 m pixels in EPSG:32633.

Shared by the label tests in tests/core (test_labels, test_vector_labels, test_label_raster,
test_burn, test_layer_spec): geometries are written in grid coordinates (:func:`cells`,
:func:`px`) so every expected label array can be spelled out exactly (:func:`expected`).
"""

from __future__ import annotations

from pathlib import Path

import fiona
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping

from terraseg.core.grid import Grid

X0, Y0 = 500000.0, 5000100.0  # top-left of the 10 x 10 grid, EPSG:32633, 10 m pixels
UTM = "EPSG:32633"


def label_grid() -> Grid:
    """The 10 x 10 grid of 10 m pixels with its top-left corner at (X0, Y0)."""
    return Grid(10, 10, Affine(10, 0, X0, 0, -10, Y0), CRS.from_string(UTM).to_wkt())


def cells(r0: int, c0: int, r1: int, c1: int) -> shapely.Polygon:
    """Polygon covering rows r0..r1-1 and columns c0..c1-1 of the 10 m grid."""
    return box(X0 + 10 * c0, Y0 - 10 * r1, X0 + 10 * c1, Y0 - 10 * r0)


def px(col: float, row: float) -> tuple[float, float]:
    """Map coordinates of a (fractional) pixel position."""
    return (X0 + 10 * col, Y0 - 10 * row)


def write_vector(
    path: Path,
    features: list[tuple[shapely.Geometry | None, dict]],
    crs: str | None = "EPSG:4326",
    driver: str = "GPKG",
    props: dict[str, str] | None = None,
    geometry: str = "Unknown",
    layer: str | None = None,
) -> Path:
    """Write features given in EPSG:32633 to ``path``, reprojected to ``crs``."""
    if props is None:
        props = {"class": "str"}
    schema = {"geometry": geometry, "properties": props}
    kwargs = {"layer": layer} if layer else {}
    with fiona.open(path, "w", driver=driver, schema=schema, crs=crs, **kwargs) as dst:
        for geom, attrs in features:
            g = None
            if geom is not None:
                g = mapping(geom)
                if crs and crs != UTM:
                    g = transform_geom(UTM, crs, g)
            dst.write(fiona.Feature.from_dict({"geometry": g, "properties": attrs}))
    return path


def write_raster(path: Path, data: np.ndarray, transform: Affine, crs: str | None,
                 nodata: float | None = None) -> Path:
    with rasterio.open(
        path, "w", driver="GTiff", height=data.shape[0], width=data.shape[1], count=1,
        dtype=data.dtype, transform=transform, crs=crs, nodata=nodata,
    ) as dst:
        dst.write(data, 1)
    return path


def expected(*blocks: tuple[int, int, int, int, int]) -> np.ndarray:
    out = np.zeros((10, 10), dtype=np.uint8)
    for r0, c0, r1, c1, v in blocks:
        out[r0:r1, c0:c1] = v
    return out


TWO_SQUARES = [
    (cells(1, 1, 4, 4), {"class": "water"}),  # 9 px
    (cells(5, 5, 9, 9), {"class": "land"}),  # 16 px
]
