"""Planning exports: vectorise and area statistics with exact values on a tiny raster."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import fiona
import numpy as np
import pytest
from helpers.synthetic import pixel_box, write_raster

from terraseg.core.export import area_statistics, vectorise
from terraseg.protocol.errors import OutputError, RasterError

CLASSES = [{"id": 1, "name": "sealed", "colour": "#ff0000"},
           {"id": 2, "name": "unsealed", "colour": "#00ff00"}]


@pytest.fixture()
def classes_tif(tmp_path: Path) -> Path:
    """10 x 10 px (10 m): left 4 columns sealed, rest unsealed, one nodata pixel, one
    isolated sealed pixel at (8, 8)."""
    a = np.full((1, 10, 10), 2, dtype=np.uint8)
    a[0, :, :4] = 1
    a[0, 0, 9] = 0
    a[0, 8, 8] = 1
    return write_raster(tmp_path / "classes.tif", a, nodata=0)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_areas_overall_exact(tmp_path: Path, classes_tif: Path) -> None:
    res = area_statistics(classes_tif, tmp_path / "a.csv", classes=CLASSES)
    rows = {r["class_name"]: r for r in _rows(tmp_path / "a.csv")}
    assert float(rows["sealed"]["area_m2"]) == 41 * 100.0
    assert float(rows["unsealed"]["area_m2"]) == 58 * 100.0
    assert float(rows["sealed"]["percent"]) == pytest.approx(100 * 41 / 99, abs=1e-3)
    assert res["csv"] == str(tmp_path / "a.csv")


def test_areas_per_zone_exact(tmp_path: Path, classes_tif: Path) -> None:
    zones = tmp_path / "zones.gpkg"
    schema = {"geometry": "Polygon", "properties": {"name": "str"}}
    with fiona.open(zones, "w", driver="GPKG", crs="EPSG:32632", schema=schema) as dst:
        dst.write({"geometry": pixel_box(0, 0, 5, 5), "properties": {"name": "west"}})
        dst.write({"geometry": pixel_box(5, 5, 10, 10), "properties": {"name": "east"}})
    area_statistics(classes_tif, tmp_path / "z.csv", zones=str(zones), zone_field="name",
                    out_zones=tmp_path / "z.gpkg", classes=CLASSES)
    rows = {(r["zone"], r["class_name"]): float(r["area_m2"]) for r in _rows(tmp_path / "z.csv")}
    assert rows[("west", "sealed")] == 20 * 100.0  # 5 rows x 4 sealed columns
    assert rows[("west", "unsealed")] == 5 * 100.0
    assert rows[("east", "sealed")] == 1 * 100.0  # the isolated pixel
    assert rows[("east", "unsealed")] == 24 * 100.0
    with fiona.open(tmp_path / "z.gpkg") as layer:
        feats = {f.properties["name"]: f.properties for f in layer}
    assert feats["west"]["sealed_m2"] == 2000.0
    assert feats["east"]["sealed_pct"] == pytest.approx(4.0)


def test_vectorise_with_min_area_sieves_small_regions(tmp_path: Path, classes_tif: Path) -> None:
    res = vectorise(classes_tif, tmp_path / "p.gpkg", min_area_m2=0.0, classes=CLASSES)
    with fiona.open(tmp_path / "p.gpkg") as layer:
        polys = [f.properties for f in layer]
    assert res["n_polygons"] == len(polys) == 3  # strip, isolated pixel, unsealed
    assert sorted(p["area_m2"] for p in polys if p["class_name"] == "sealed") == [100.0, 4000.0]
    vectorise(classes_tif, tmp_path / "q.gpkg", min_area_m2=250.0, classes=CLASSES)
    with fiona.open(tmp_path / "q.gpkg") as layer:
        polys = [f.properties for f in layer]
    assert len(polys) == 2  # the 100 m2 pixel merged into its neighbour
    assert {p["class_name"]: p["area_m2"] for p in polys} == {"sealed": 4000.0,
                                                              "unsealed": 5900.0}


def test_class_names_from_predict_tags(tmp_path: Path) -> None:
    import rasterio

    a = np.ones((1, 4, 4), dtype=np.uint8)
    path = write_raster(tmp_path / "c.tif", a, nodata=0)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(TERRASEG_CLASSES=json.dumps(CLASSES))
    area_statistics(path, tmp_path / "a.csv")
    assert _rows(tmp_path / "a.csv")[0]["class_name"] == "sealed"


def test_refuses_geographic_crs_and_existing_outputs(tmp_path: Path, classes_tif: Path) -> None:
    from rasterio.transform import from_origin

    geo = write_raster(tmp_path / "geo.tif", np.ones((1, 4, 4), np.uint8), crs="EPSG:4326",
                       transform=from_origin(5.0, 52.0, 0.001, 0.001))
    with pytest.raises(RasterError, match="geographic"):
        area_statistics(geo, tmp_path / "g.csv")
    (tmp_path / "exists.csv").write_text("keep")
    with pytest.raises(OutputError, match="overwrite"):
        area_statistics(classes_tif, tmp_path / "exists.csv")
    assert (tmp_path / "exists.csv").read_text() == "keep"
