"""Processing's 'Change between two class maps' and 'Change between two dates' (issue 13).

Run with processing.run through the real engine on the two 40x40 class rasters of
test_panel_change (EPSG:32632, 10 m; a 10x10 block unsealed -> sealed = 10 000 m2 of
160 000 m2), with zones (west and east halves) and a transition of interest; the model
variant predicts the scene and a copy of it with the legacy 4-band model. The styler that
Processing applies to the loaded from-to layer names its codes from the raster's tag.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers.paths import ROOT
from helpers.qgis_support import needs_engine
from qgis.core import (
    QgsFeature,
    QgsField,
    QgsGeometry,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QVariant

pytestmark = needs_engine

SIZE, PIXEL_M = 40, 10.0
ORIGIN = (500000.0, 5200000.0)
CLASSES = [{"id": 1, "name": "unsealed"}, {"id": 2, "name": "sealed"}]
CHANGED_M2 = 100 * PIXEL_M * PIXEL_M
COMPARED_M2 = SIZE * SIZE * PIXEL_M * PIXEL_M
LEGACY_MODEL = ROOT / "tests" / "data" / "legacy_v0_1" / "legacy_patch.tsm"
COMMON = ["MAX_SHIFT", "CORRECT_SHIFT", "BORDER", "TRANSITIONS", "ZONES", "ZONE_FIELD",
          "THRESHOLD", "OUTPUT_FOLDER"]
OUTPUTS = ["OUTPUT_FOLDER", "FROMTO", "CHANGE_MASK", "CHANGE_PROBABILITY", "TRANSITIONS",
           "AREA_CSV", "ZONES_CSV", "CHANGED_M2", "COMPARED_M2"]


@pytest.fixture(scope="module")
def processing(terraseg_provider):
    import processing as qgis_processing

    return qgis_processing


def write_classes(path: Path, changed: bool) -> Path:
    """Left half unsealed (1), right half sealed (2); ``changed``: rows/cols 5..14 sealed."""
    from osgeo import gdal, osr

    ds = gdal.GetDriverByName("GTiff").Create(str(path), SIZE, SIZE, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((ORIGIN[0], PIXEL_M, 0.0, ORIGIN[1], 0.0, -PIXEL_M))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    ds.SetProjection(srs.ExportToWkt())
    data = bytearray()
    for r in range(SIZE):
        row = bytearray(1 if c < SIZE // 2 else 2 for c in range(SIZE))
        if changed and 5 <= r < 15:
            row[5:15] = bytes([2] * 10)
        data += row
    ds.GetRasterBand(1).WriteRaster(0, 0, SIZE, SIZE, bytes(data))
    ds.SetMetadataItem("TERRASEG_CLASSES", json.dumps(CLASSES))
    ds = None
    return path


def write_zones(path: Path) -> Path:
    """Two polygons, 'west' and 'east' halves of the maps (EPSG:32632)."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:32632", "zones", "memory")
    layer.dataProvider().addAttributes([QgsField("zone", QVariant.String)])
    layer.updateFields()
    half = SIZE * PIXEL_M / 2
    for name, x0 in (("west", ORIGIN[0]), ("east", ORIGIN[0] + half)):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromRect(
            QgsRectangle(x0, ORIGIN[1] - 2 * half, x0 + half, ORIGIN[1])))
        feature["zone"] = name
        layer.dataProvider().addFeature(feature)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    err = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(path), layer.transformContext(),
                                                    options)
    assert err[0] == QgsVectorFileWriter.NoError, err
    return path


def test_listed_by_the_provider(terraseg_provider):
    from terraseg.plugin.processing.change import ChangeBetweenClassMaps, ChangeBetweenDates
    from terraseg.plugin.processing.provider import ALGORITHMS

    assert {ChangeBetweenDates, ChangeBetweenClassMaps} <= set(ALGORITHMS)
    dates = terraseg_provider.algorithm("change_dates")
    maps = terraseg_provider.algorithm("change_class_maps")
    assert (dates.displayName(), maps.displayName()) == (
        "Change between two dates", "Change between two class maps")
    assert [p.name() for p in dates.parameterDefinitions()] == [
        "MODEL", "RASTER_A", "RASTER_B", "BANDS", *COMMON]
    assert [p.name() for p in maps.parameterDefinitions()] == [
        "CLASSES_A", "CLASSES_B", "PROBABILITY_A", "PROBABILITY_B", "LEGEND", *COMMON]
    for alg in (dates, maps):
        assert [o.name() for o in alg.outputDefinitions()] == OUTPUTS
        params = {p.name(): p for p in alg.parameterDefinitions()}
        assert (params["MAX_SHIFT"].defaultValue(), params["BORDER"].defaultValue(),
                params["THRESHOLD"].defaultValue(), params["CORRECT_SHIFT"].defaultValue()
                ) == (1.0, 0, 0.5, False)
        assert "fromto_area.csv" in alg.shortHelpString()


def test_class_maps_with_zones_and_a_transition(processing, tmp_path):
    a, b = write_classes(tmp_path / "a.tif", False), write_classes(tmp_path / "b.tif", True)
    zones = write_zones(tmp_path / "zones.gpkg")
    res = processing.run("terraseg:change_class_maps", {
        "CLASSES_A": str(a), "CLASSES_B": str(b), "ZONES": str(zones), "ZONE_FIELD": "zone",
        "TRANSITIONS": "unsealed = sealed", "OUTPUT_FOLDER": str(tmp_path / "out")})
    out = tmp_path / "out"
    assert Path(res["FROMTO"]) == out / "fromto.tif"
    assert Path(res["CHANGE_MASK"]) == out / "change_mask.tif"
    assert res["CHANGE_PROBABILITY"] is None  # no probability rasters
    assert res["TRANSITIONS"] == f"{out / 'transitions.gpkg'}|layername=transitions"
    assert (res["CHANGED_M2"], res["COMPARED_M2"]) == (CHANGED_M2, COMPARED_M2)
    with open(res["AREA_CSV"], newline="") as fh:
        rows = {r["from_class"]: r for r in csv.DictReader(fh)}
    assert float(rows["unsealed"]["sealed_m2"]) == CHANGED_M2
    assert float(rows["unsealed"]["sealed_pct"]) == 6.25
    with open(res["ZONES_CSV"], newline="") as fh:
        zone_rows = [(r["zone"], r["from_class"], r["to_class"], float(r["area_m2"]))
                     for r in csv.DictReader(fh)]
    assert ("west", "unsealed", "sealed", CHANGED_M2) in zone_rows
    assert not [z for z in zone_rows if z[0] == "east" and z[1] != z[2]]
    polygons = QgsVectorLayer(res["TRANSITIONS"], "t", "ogr")
    assert polygons.featureCount() == 1
    feature = next(polygons.getFeatures())
    assert feature["transition"] == "unsealed -> sealed"
    assert feature.geometry().area() == pytest.approx(CHANGED_M2)
    # the style Processing applies when it loads the from-to layer: the tag's names
    from terraseg.plugin.processing.change import FromToStyler

    layer = QgsRasterLayer(res["FROMTO"], "fromto", "gdal")
    FromToStyler.create("fromto").postProcessLayer(layer, QgsProcessingContext(),
                                                   QgsProcessingFeedback())
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    assert {int(c.value): c.label for c in layer.renderer().classes()} == {
        1: "unsealed -> unsealed", 2: "unsealed -> sealed", 3: "sealed -> unsealed",
        4: "sealed -> sealed"}


def test_bad_inputs_are_refused_before_the_engine(processing, tmp_path):
    a, b = write_classes(tmp_path / "a.tif", False), write_classes(tmp_path / "b.tif", True)
    with pytest.raises(QgsProcessingException, match="from=to"):
        processing.run("terraseg:change_class_maps", {
            "CLASSES_A": str(a), "CLASSES_B": str(b), "TRANSITIONS": "unsealed>sealed",
            "OUTPUT_FOLDER": str(tmp_path / "out")})
    with pytest.raises(QgsProcessingException, match="Only one date has a probability"):
        processing.run("terraseg:change_class_maps", {
            "CLASSES_A": str(a), "CLASSES_B": str(b), "PROBABILITY_A": str(a),
            "OUTPUT_FOLDER": str(tmp_path / "out")})
    assert not (tmp_path / "out" / "fromto.tif").exists()


def test_two_dates_predicted_by_one_model(processing, scene, tmp_path):
    second = tmp_path / "second.tif"
    shutil.copy(scene.raster, second)
    res = processing.run("terraseg:change_dates", {
        "MODEL": str(LEGACY_MODEL), "RASTER_A": str(scene.raster), "RASTER_B": str(second),
        "BORDER": 1, "OUTPUT_FOLDER": str(tmp_path / "out")})
    out = tmp_path / "out"
    assert (out / "date_a" / "classes.tif").is_file() and (out / "date_b" / "classes.tif").is_file()
    assert Path(res["CHANGE_PROBABILITY"]) == out / "change_probability.tif"
    summary = json.loads((out / "fromto.json").read_text())
    assert summary["border_px"] == 1 and summary["changed_by"] == "probability"
    assert summary["class_changed_px"] == 0  # the same image on both dates
    assert res["COMPARED_M2"] == summary["compared_m2"] < 96 * 96 * 100.0  # border not compared
    assert QgsRasterLayer(res["FROMTO"], "f", "gdal").width() == 96
