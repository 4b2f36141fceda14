"""Tiny learnable scenes with real CRSs for engine tests.

A scene is a 4-band uint8 raster (EPSG:32632, 10 m pixels) of noisy "unsealed" ground
(high NIR) with bright grey "sealed" rectangles (low NIR), plus training polygons
drawn inside both kinds of surface, written as a GeoPackage in EPSG:4326 (so labels are
reprojected), with a text class field ``klass`` and a category field ``cat``.

Engine side only (numpy, rasterio, fiona). QGIS-side tests write a scene through
:func:`helpers.paths.run_engine_python`; tests/plugin mirrors the label boxes in QGIS
geometries (helpers.qgis_support).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import fiona
import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform_geom

CRS_UTM = "EPSG:32632"
ORIGIN = (500000.0, 5200000.0)
PIXEL_M = 10.0


@dataclass(frozen=True)
class Scene:
    """Paths and truth of a synthetic scene."""

    raster: Path
    labels: Path
    truth: np.ndarray  # uint8 (H, W): 1 sealed, 2 unsealed
    height: int
    width: int


def write_raster(path: Path, data: np.ndarray, crs: str | None = CRS_UTM,
                 nodata: float | None = None, descriptions: tuple[str, ...] | None = None,
                 transform=None) -> Path:
    """Write (C, H, W) data as a GeoTIFF with the scene's geotransform."""
    c, h, w = data.shape
    profile = {"driver": "GTiff", "height": h, "width": w, "count": c, "dtype": data.dtype.name,
               "transform": transform or from_origin(*ORIGIN, PIXEL_M, PIXEL_M)}
    if crs:
        profile["crs"] = CRS.from_user_input(crs)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
    return path


def pixel_box(r0: int, c0: int, r1: int, c1: int) -> dict:
    """GeoJSON polygon (in the scene CRS) covering pixel rows r0..r1-1, cols c0..c1-1."""
    x0, y0 = ORIGIN[0] + c0 * PIXEL_M, ORIGIN[1] - r0 * PIXEL_M
    x1, y1 = ORIGIN[0] + c1 * PIXEL_M, ORIGIN[1] - r1 * PIXEL_M
    return {"type": "Polygon", "coordinates": [[(x0, y0), (x1, y0), (x1, y1), (x0, y1),
                                                (x0, y0)]]}


def write_polygons(path: Path, features: list[tuple[dict, str, str]],
                   crs: str = "EPSG:4326") -> Path:
    """Write (geometry in scene CRS, class name, category) polygons, reprojected to crs."""
    schema = {"geometry": "Polygon", "properties": {"klass": "str", "cat": "str"}}
    with fiona.open(path, "w", driver="GPKG", crs=crs, schema=schema) as dst:
        for geom, klass, cat in features:
            g = transform_geom(CRS_UTM, crs, geom) if crs != CRS_UTM else geom
            dst.write({"geometry": g, "properties": {"klass": klass, "cat": cat}})
    return path


def make_scene(folder: Path, size: int = 96, seed: int = 0) -> Scene:
    """A size x size scene with sealed rectangles on a 32-px pattern and labels inside."""
    rng = np.random.default_rng(seed)
    truth = np.full((size, size), 2, dtype=np.uint8)
    for r in range(4, size - 12, 32):
        for c in range(4, size - 12, 32):
            truth[r : r + 14, c : c + 14] = 1
    data = np.empty((4, size, size), dtype=np.uint8)
    sealed = truth == 1
    base = {0: (150, 60), 1: (150, 90), 2: (150, 50), 3: (70, 190)}  # band: (sealed, unsealed)
    for b, (vs, vu) in base.items():
        noise = rng.normal(0, 12, (size, size))
        data[b] = np.clip(np.where(sealed, vs, vu) + noise, 0, 255).astype(np.uint8)
    raster = write_raster(folder / "scene.tif", data,
                          descriptions=("red", "green", "blue", "nir"))
    feats = []
    for r in range(4, size - 12, 32):
        for c in range(4, size - 12, 32):
            feats.append((pixel_box(r + 3, c + 3, r + 11, c + 11), "sealed", "roof"))
            feats.append((pixel_box(r + 18, c + 18, r + 26, c + 26), "unsealed", "meadow"))
    labels = write_polygons(folder / "labels.gpkg", feats)
    return Scene(raster, labels, truth, size, size)
