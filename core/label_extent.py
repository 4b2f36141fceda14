"""Label extents: the grid must have a CRS and the labels must overlap it.

Labels that miss the raster are the most common labelling mistake (a layer in the wrong
CRS, or drawn on another image). The checks here fail early and name both extents and both
CRSs so the mismatch can be seen at a glance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds
from shapely.geometry import shape

from terraseg.core.grid import Grid
from terraseg.protocol.errors import LabelError, RasterError


def grid_crs(grid: Grid) -> CRS:
    """The grid's CRS, needed to place labels on it.

    Raises:
        RasterError: The grid has no CRS.
    """
    crs = grid.crs
    if crs is None:
        raise RasterError(
            "The raster has no coordinate reference system, so labels cannot be placed on it.",
            "Assign the raster's CRS (e.g. gdal_edit.py -a_srs EPSG:xxxx) and try again.",
        )
    return crs


def check_vector_overlap(
    geometries: Sequence[dict], grid: Grid, dst_crs: CRS, src_crs: CRS, name: str
) -> None:
    """Refuse vector labels whose extent does not overlap the grid.

    Args:
        geometries: GeoJSON-like geometries, already in the grid's CRS.
        grid: Target grid.
        dst_crs: The grid's CRS.
        src_crs: The layer's own CRS (for the message).
        name: Name of the label layer.

    Raises:
        LabelError: No overlap.
    """
    bounds = np.array([shapely.bounds(shape(g)) for g in geometries], dtype=float)
    finite = np.all(np.isfinite(bounds), axis=1)
    if finite.any():
        b = bounds[finite]
        ext = (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
    else:
        ext = (math.nan,) * 4
    if not intersects(ext, grid.bounds):
        raise LabelError(
            f"The labels in {name} do not overlap the raster: labels extent {fmt_ext(ext)} "
            f"(reprojected from {crs_name(src_crs)} to {crs_name(dst_crs)}), raster extent "
            f"{fmt_ext(grid.bounds)} in {crs_name(dst_crs)}.",
            "Use labels drawn on this raster, or check that both layers have the right CRS.",
        )


def check_raster_overlap(
    src_bounds: Sequence[float], src_crs: CRS, grid: Grid, dst_crs: CRS, name: str
) -> None:
    """Refuse a label raster whose extent does not overlap the grid.

    Args:
        src_bounds: (left, bottom, right, top) of the label raster in ``src_crs``.
        src_crs: The label raster's CRS.
        grid: Target grid.
        dst_crs: The grid's CRS.
        name: Name of the label raster.

    Raises:
        LabelError: No overlap.
    """
    try:
        ext = transform_bounds(src_crs, dst_crs, *src_bounds)
    except (RasterioError, ValueError):
        ext = (math.nan,) * 4
    if not intersects(ext, grid.bounds):
        raise LabelError(
            f"The label raster {name} does not overlap the raster: label extent "
            f"{fmt_ext(src_bounds)} in {crs_name(src_crs)} ({fmt_ext(ext)} in the raster's "
            f"CRS), raster extent {fmt_ext(grid.bounds)} in {crs_name(dst_crs)}.",
            "Use a label raster that covers this raster, or check that both CRSs are right.",
        )


def intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    """Strict overlap of (left, bottom, right, top) boxes; degenerate (point) boxes work."""
    if not all(math.isfinite(v) for v in a):
        return False
    return a[0] < b[2] and a[2] > b[0] and a[1] < b[3] and a[3] > b[1]


def crs_name(crs: CRS | None) -> str:
    """Short name of a CRS for messages: ``EPSG:xxxx`` where it has one."""
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else (crs.to_string() or "a custom CRS")


def fmt_ext(ext: Sequence[float]) -> str:
    """An extent as ``(left, bottom, right, top)`` with 6 significant digits."""
    return "(" + ", ".join(f"{v:.6g}" if math.isfinite(v) else "nan" for v in ext) + ")"
