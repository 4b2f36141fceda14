"""Planning exports of a class raster: polygons (vectorise) and area per class (and zone).

Areas are pixel counts times the pixel area in the raster's CRS units squared, so the
raster must be in a projected CRS with metre units (areas in m2); a geographic CRS is
refused with a hint to reproject. Small regions are removed before vectorising by
GDAL's sieve filter (they merge into their largest neighbour), so the polygons tile the
map without holes.

Both refuse what would be a wrong success: a raster that is not one band of class ids (a
``probability.tif`` or the input image), and zones that do not overlap the raster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fiona
import numpy as np
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.features import rasterize, shapes, sieve
from rasterio.warp import transform_geom
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from shapely.geometry import shape

from terraseg.core.atomic import atomic_path, write_csv_atomic
from terraseg.core.grid import projected_pixel_area_m2
from terraseg.core.label_extent import crs_name, fmt_ext, intersects
from terraseg.core.layer_spec import split_layer_spec
from terraseg.core.output_targets import check_output_targets
from terraseg.core.raster import open_raster
from terraseg.protocol.errors import InputError, RasterError

#: Class ids a class raster may hold (uint8 ``classes.tif``: 0 = nodata, 1..255).
MAX_CLASS_VALUE = 255


def _class_names(ds: rasterio.DatasetReader, classes: list[dict] | None) -> dict[int, str]:
    if not classes:
        try:  # written by terraseg predict
            classes = json.loads(ds.tags().get("TERRASEG_CLASSES", "null"))
        except json.JSONDecodeError:
            classes = None
    if classes:
        return {int(c["id"]): str(c["name"]) for c in classes}
    names = {}
    try:
        cmap = ds.colormap(1)
        names = {int(k): f"class_{k}" for k in cmap if k != 0 and any(cmap[k][:3])}
    except ValueError:
        pass
    return names


def open_class_raster(path: str | Path) -> rasterio.DatasetReader:
    """Open a class raster: one band of integer class ids, such as predict's classes.tif.

    Raises:
        RasterError: It cannot be read, has several bands or holds non-integer values (a
            probability raster); the hint says what to pass instead.
    """
    ds = open_raster(path)
    dtype, count = np.dtype(ds.dtypes[0]), ds.count
    if count != 1 or not np.issubdtype(dtype, np.integer):
        what = ("probabilities, not class ids" if np.issubdtype(dtype, np.floating)
                else "several bands, not one band of class ids")
        ds.close()
        raise RasterError(
            f"{path} has {count} band(s) of {dtype} values: {what}.",
            "Pass the classes.tif that predict wrote next to probability.tif (one band of "
            "class ids, 0 = nodata) as --classes.")
    return ds


def _check_class_values(data: np.ndarray, path: str | Path) -> None:
    """Class ids must lie in 0..255 (``classes.tif`` is uint8; areas counts them per id)."""
    if data.size and (int(data.min()) < 0 or int(data.max()) > MAX_CLASS_VALUE):
        raise RasterError(f"{path} holds values {int(data.min())}..{int(data.max())}; class "
                          f"ids are 0..{MAX_CLASS_VALUE}.",
                          "Pass the classes.tif that predict wrote (0 = nodata, 1..K).")


def pixel_area_m2(ds: rasterio.DatasetReader) -> float:
    """Area of one pixel in m2; refuses geographic or unit-less CRSs."""
    if ds.crs is None:
        raise RasterError(f"{ds.name} has no CRS, so areas cannot be measured.",
                          "Assign the raster's CRS (QGIS: Layer properties > Source).")
    if ds.crs.is_geographic:
        raise RasterError(f"{ds.name} is in a geographic CRS ({ds.crs}); pixel areas in "
                          "degrees are not areas.", "Reproject it to a projected CRS in metres.")
    return projected_pixel_area_m2(ds.crs, ds.transform)


def vectorise(classes_tif: str | Path, out_path: str | Path, min_area_m2: float = 0.0,
              classes: list[dict] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Polygons of a class raster (GeoPackage): fields class_id, class_name, area_m2.

    Args:
        classes_tif: uint8 class raster, 0 = nodata.
        out_path: GeoPackage to write (atomically).
        min_area_m2: Regions smaller than this merge into their neighbour first (sieve).
        classes: Class dicts (id, name) for the names; default from the model-less raster.
        overwrite: Replace an existing ``out_path``.
    """
    out = Path(out_path)
    check_output_targets([out], overwrite)
    with open_class_raster(classes_tif) as ds:
        data = ds.read(1)
        px_area = pixel_area_m2(ds)
        names = _class_names(ds, classes)
        transform, crs = ds.transform, ds.crs
    _check_class_values(data, classes_tif)
    data = data.astype(np.uint8, copy=False)
    min_px = int(np.ceil(min_area_m2 / px_area)) if min_area_m2 > 0 else 0
    if min_px > 1:
        data = sieve(data, size=min_px, connectivity=8, mask=data != 0)
    schema = {"geometry": "Polygon",
              "properties": {"class_id": "int", "class_name": "str", "area_m2": "float"}}
    n = 0
    with atomic_path(out, suffix=".gpkg") as tmp, fiona.open(
            tmp, "w", driver="GPKG", crs=crs.to_wkt(), schema=schema, layer=out.stem) as dst:
        for geom, value in shapes(data, mask=data != 0, connectivity=8, transform=transform):
            v = int(value)
            dst.write({"geometry": geom, "properties": {
                "class_id": v, "class_name": names.get(v, f"class_{v}"),
                "area_m2": _polygon_area(geom)}})
            n += 1
    return {"polygons": str(out), "n_polygons": n, "min_area_m2": min_area_m2}


def _polygon_area(geom: dict) -> float:
    """Planar area of a GeoJSON polygon with holes (shoelace)."""
    def ring(coords: list) -> float:
        a = np.asarray(coords, dtype=np.float64)
        x, y = a[:, 0], a[:, 1]
        return 0.5 * abs(float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])))

    rings = geom["coordinates"]
    return ring(rings[0]) - sum(ring(r) for r in rings[1:])


def area_statistics(classes_tif: str | Path, out_csv: str | Path,
                    zones: str | None = None, zone_field: str | None = None,
                    out_zones: str | Path | None = None, classes: list[dict] | None = None,
                    overwrite: bool = False, block_px: int = 2048) -> dict[str, Any]:
    """Area per class (m2 and % of classified area), overall or per zone feature.

    Without zones the CSV has one row per class. With a zone layer (polygons, any CRS) it
    has one row per zone and class, and ``out_zones`` (GeoPackage) receives the zones with
    ``<class>_m2`` and ``<class>_pct`` attributes. Read block by block: memory stays flat.
    """
    out_csv = Path(out_csv)
    check_output_targets([out_csv, *([Path(out_zones)] if out_zones else [])], overwrite,
                         "--out-csv or --out-zones")
    with open_class_raster(classes_tif) as ds:
        px_area = pixel_area_m2(ds)
        names = _class_names(ds, classes)
        zone_feats: list[dict] = []
        if zones:
            zone_file, zone_layer = split_layer_spec(zones)
            with fiona.open(zone_file, layer=zone_layer) as layer:
                if layer.crs is None or not layer.crs:
                    raise InputError(f"Zone layer {zones} has no CRS.",
                                     "Assign its CRS in QGIS and save it.")
                zcrs, zschema = layer.crs, layer.schema
                for f in layer:
                    if f.geometry is None:
                        continue
                    zone_feats.append({"geom": transform_geom(zcrs, ds.crs, f.geometry),
                                       "orig": f.geometry, "props": dict(f.properties)})
                _check_zones_overlap(zone_feats, zones, CRS.from_wkt(layer.crs_wkt), ds)
            if zone_field and zone_feats and zone_field not in zone_feats[0]["props"]:
                raise InputError(f"Zone layer has no field '{zone_field}'.",
                                 f"Use one of: {', '.join(zone_feats[0]['props'])}.")
        n_z = len(zone_feats) + 1  # zone 0 = outside any zone / whole raster
        counts = np.zeros((n_z, 256), dtype=np.int64)
        for r in range(0, ds.height, block_px):
            for c in range(0, ds.width, block_px):
                win = Window(c, r, min(block_px, ds.width - c), min(block_px, ds.height - r))
                data = ds.read(1, window=win)
                _check_class_values(data, classes_tif)
                if zone_feats:
                    zid = rasterize(((z["geom"], i + 1) for i, z in enumerate(zone_feats)),
                                    out_shape=data.shape, transform=window_transform(win,
                                                                                     ds.transform),
                                    fill=0, dtype="int32")
                else:
                    zid = np.zeros(data.shape, dtype=np.int32)
                np.add.at(counts, (zid.ravel(), data.ravel()), 1)
    ids = sorted(set(names) | {int(v) for v in np.nonzero(counts[:, 1:].sum(0))[0] + 1})
    rows = []
    if zone_feats:
        for zi, z in enumerate(zone_feats, start=1):
            total = counts[zi, 1:].sum()
            label = z["props"].get(zone_field) if zone_field else zi
            for k in ids:
                rows.append({"zone": label, "class_id": k, "class_name": names.get(k, f"class_{k}"),
                             "area_m2": round(counts[zi, k] * px_area, 3),
                             "percent": round(100.0 * counts[zi, k] / total, 4) if total else 0.0})
    else:
        total = counts[0, 1:].sum()
        for k in ids:
            rows.append({"class_id": k, "class_name": names.get(k, f"class_{k}"),
                         "area_m2": round(counts[0, k] * px_area, 3),
                         "percent": round(100.0 * counts[0, k] / total, 4) if total else 0.0})
    write_csv_atomic(out_csv, rows, list(rows[0]) if rows else ["class_id"])
    result: dict[str, Any] = {"csv": str(out_csv), "rows": rows}
    if zone_feats and out_zones:
        _write_zones(Path(out_zones), zone_feats, zschema, zcrs, counts, ids, names, px_area)
        result["zones"] = str(out_zones)
    return result


def _check_zones_overlap(feats: list[dict], zones: str, zone_crs: CRS,
                         ds: rasterio.DatasetReader) -> None:
    """Refuse a zone layer without polygons, or whose polygons all miss the raster.

    Args:
        feats: Zone features with ``geom`` already in the raster's CRS.
        zones: The zone layer as given (for the message).
        zone_crs: The zone layer's own CRS (for the message).
        ds: The class raster.

    Raises:
        InputError: Naming both extents and both CRSs.
    """
    if not feats:
        raise InputError(f"Zone layer {zones} has no features with a geometry.",
                         "Give a polygon layer with zones, or leave out --zones for the area "
                         "of the whole raster.")
    bounds = np.array([shapely.bounds(shape(f["geom"])) for f in feats], dtype=float)
    bounds = bounds[np.all(np.isfinite(bounds), axis=1)]
    ext = ((bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max())
           if len(bounds) else (float("nan"),) * 4)
    raster_ext = tuple(ds.bounds)
    if not intersects(ext, raster_ext):
        raise InputError(
            f"The zones in {zones} do not overlap the class raster: zones extent "
            f"{fmt_ext(ext)} (reprojected from {crs_name(zone_crs)} to {crs_name(ds.crs)}), "
            f"raster extent {fmt_ext(raster_ext)} in {crs_name(ds.crs)}.",
            "Use zones that cover the predicted area, or check that both layers have the "
            "right CRS.")


def _write_zones(path: Path, feats: list[dict], schema: dict, crs: Any, counts: np.ndarray,
                 ids: list[int], names: dict[int, str], px_area: float) -> None:
    props = dict(schema["properties"])
    safe = {k: "".join(ch if ch.isalnum() else "_" for ch in names.get(k, f"class_{k}"))
            for k in ids}
    for k in ids:
        props[f"{safe[k]}_m2"] = "float"
        props[f"{safe[k]}_pct"] = "float"
    new_schema = {"geometry": schema["geometry"], "properties": props}
    with atomic_path(path, suffix=".gpkg") as tmp, fiona.open(
            tmp, "w", driver="GPKG", crs=crs, schema=new_schema, layer=path.stem) as dst:
        for zi, f in enumerate(feats, start=1):
            total = counts[zi, 1:].sum()
            p = dict(f["props"])
            for k in ids:
                p[f"{safe[k]}_m2"] = float(counts[zi, k] * px_area)
                p[f"{safe[k]}_pct"] = float(100.0 * counts[zi, k] / total) if total else 0.0
            dst.write({"geometry": f["orig"], "properties": p})
