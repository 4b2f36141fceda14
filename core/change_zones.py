"""From-to areas per zone feature (``terraseg change --zones``).

Zones (polygons in any CRS) are burnt onto the first date's grid (a pixel belongs to the
zone its centre lies in; later features win where zones overlap) and the compared pixels
of each zone are counted per (from, to) pair. The table is long: one row per zone and
pair that occurs, with m2 and % of the zone's compared area.
"""

from __future__ import annotations

import fiona
import numpy as np
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.warp import transform_geom

from terraseg.core.change_legend import ChangeClasses
from terraseg.core.grid import Grid
from terraseg.core.label_extent import crs_name, fmt_ext, intersects
from terraseg.core.layer_spec import split_layer_spec
from terraseg.protocol.errors import InputError


def zone_rows(zones: str, zone_field: str | None, fromto: np.ndarray, grid: Grid,
              classes: ChangeClasses, px_area_m2: float) -> list[dict]:
    """The per-zone from-to table (module docstring).

    Args:
        zones: Polygon layer (``file`` or ``file|layername=NAME``).
        zone_field: Attribute naming the zones (default: feature number from 1).
        fromto: From-to codes on ``grid`` (0 = not compared).
        grid: The first date's grid.
        classes: The compared classes.
        px_area_m2: Area of one pixel.

    Raises:
        InputError: No CRS, no polygons, an unknown field, or zones that miss the maps.
    """
    feats, labels = _read_zones(zones, zone_field, grid)
    zid = rasterize(((g, i + 1) for i, g in enumerate(feats)), out_shape=fromto.shape,
                    transform=grid.transform, fill=0, dtype="int32")
    k = classes.k
    counts = np.zeros((len(feats) + 1, k * k + 1), dtype=np.int64)
    np.add.at(counts, (zid.ravel(), fromto.ravel().astype(np.int64)), 1)
    rows = []
    for zi, label in enumerate(labels, start=1):
        total = int(counts[zi, 1:].sum())
        for code in np.nonzero(counts[zi, 1:])[0] + 1:
            i, j = divmod(int(code) - 1, k)
            n = int(counts[zi, code])
            rows.append({"zone": label, "from_code": classes.codes[i],
                         "from_class": classes.name(classes.codes[i]),
                         "to_code": classes.codes[j], "to_class": classes.name(classes.codes[j]),
                         "changed": int(i != j), "area_m2": round(n * px_area_m2, 3),
                         "percent": round(100.0 * n / total, 4) if total else 0.0})
    return rows


def _read_zones(zones: str, zone_field: str | None, grid: Grid
                ) -> tuple[list[dict], list[object]]:
    """Zone geometries in the grid's CRS and their labels."""
    path, layer_name = split_layer_spec(zones)
    with fiona.open(path, layer=layer_name) as layer:
        if not layer.crs:
            raise InputError(f"Zone layer {zones} has no CRS.",
                             "Assign its CRS in QGIS and save it.")
        zcrs = CRS.from_wkt(layer.crs_wkt)
        feats, labels = [], []
        for n, f in enumerate(layer, start=1):
            if f.geometry is None:
                continue
            props = dict(f.properties)
            if zone_field and zone_field not in props:
                raise InputError(f"Zone layer {zones} has no field '{zone_field}'.",
                                 f"Use one of: {', '.join(props)}.")
            feats.append(transform_geom(zcrs, grid.crs, f.geometry))
            labels.append(props[zone_field] if zone_field else n)
    if not feats:
        raise InputError(f"Zone layer {zones} has no features with a geometry.",
                         "Give a polygon layer, or leave out --zones.")
    from shapely.geometry import shape

    bounds = np.array([shape(g).bounds for g in feats], dtype=float)
    ext = (bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max())
    if not intersects(ext, grid.bounds):
        raise InputError(
            f"The zones in {zones} do not overlap the maps: zones {fmt_ext(ext)}, maps "
            f"{fmt_ext(grid.bounds)} (both in {crs_name(grid.crs)}).",
            "Use zones that cover the compared area, or check both layers' CRS.")
    return feats, labels
