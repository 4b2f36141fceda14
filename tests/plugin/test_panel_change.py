"""The panel's 'Change' section (issue 13) in real QGIS, through the real engine.

Two 40x40 class rasters in EPSG:32632 (10 m pixels) with TerraSeg's class tag (1 unsealed,
2 sealed): the left half unsealed, the right half sealed; on the second date a 10x10 block
of the unsealed half became sealed (100 px = 10 000 m2 = 6.25 % of 160 000 m2). The panel
compares them ('Two class layers'), adds the from-to layer (named from its tag), the change
mask and the transition of interest's polygons, and lists the transition in m2, ha and %.
A pair that does not overlap is refused with a message and adds no layer; a second date
moved by 3 px is refused by the engine with the figure in the panel's words, then mapped
with 'Correct the shift'; the last model predicting both dates runs too (the legacy 4-band
model on the scene and a copy of it).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers.paths import ROOT
from helpers.qgis_support import needs_engine
from qgis.core import QgsPalettedRasterRenderer, QgsProject, QgsRasterLayer, QgsVectorLayer

pytestmark = needs_engine

SIZE, PIXEL_M = 40, 10.0
ORIGIN = (500000.0, 5200000.0)
CLASSES = [{"id": 1, "name": "unsealed"}, {"id": 2, "name": "sealed"}]
BLOCK = (5, 15, 5, 15)  # rows r0:r1, cols c0:c1 that change unsealed -> sealed
CHANGED_M2 = 100 * PIXEL_M * PIXEL_M
COMPARED_M2 = SIZE * SIZE * PIXEL_M * PIXEL_M
LEGACY_MODEL = ROOT / "tests" / "data" / "legacy_v0_1" / "legacy_patch.tsm"  # 4 bands


def write_classes(path: Path, changed: bool, origin: tuple[float, float] = ORIGIN) -> Path:
    """A class raster of the scene above (``changed``: the second date), with its tag."""
    from osgeo import gdal, osr

    ds = gdal.GetDriverByName("GTiff").Create(str(path), SIZE, SIZE, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((origin[0], PIXEL_M, 0.0, origin[1], 0.0, -PIXEL_M))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    ds.SetProjection(srs.ExportToWkt())
    rows = []
    for r in range(SIZE):
        row = bytearray(1 if c < SIZE // 2 else 2 for c in range(SIZE))
        if changed and BLOCK[0] <= r < BLOCK[1]:
            row[BLOCK[2]:BLOCK[3]] = bytes([2] * (BLOCK[3] - BLOCK[2]))
        rows.append(bytes(row))
    ds.GetRasterBand(1).WriteRaster(0, 0, SIZE, SIZE, b"".join(rows))
    ds.SetMetadataItem("TERRASEG_CLASSES", json.dumps(CLASSES))
    ds.FlushCache()
    ds = None
    return path


@pytest.fixture
def two_dates(tmp_path) -> tuple[QgsRasterLayer, QgsRasterLayer]:
    """The two class layers in the project."""
    a = QgsRasterLayer(str(write_classes(tmp_path / "2018.tif", False)), "2018", "gdal")
    b = QgsRasterLayer(str(write_classes(tmp_path / "2023.tif", True)), "2023", "gdal")
    assert a.isValid() and b.isValid()
    QgsProject.instance().addMapLayers([a, b])
    return a, b


def compare_class_layers(panel, a: QgsRasterLayer, b: QgsRasterLayer) -> None:
    panel.change_source_combo.setCurrentText("Two class layers")
    panel.change_classes_a_combo.setLayer(a)
    panel.change_classes_b_combo.setLayer(b)


def test_class_layers_change_layers_and_table(panel, two_dates, tmp_path) -> None:
    a, b = two_dates
    compare_class_layers(panel, a, b)
    assert panel.change_raster_combo.isHidden() and not panel.change_classes_a_combo.isHidden()
    assert panel.change_button.isEnabled(), panel.change_button.toolTip()
    # transitions of interest: picked from the task's classes (sealed preset) with Add
    assert [panel.change_from_combo.itemText(i) for i in range(panel.change_from_combo.count())
            ] == ["sealed", "unsealed", "*"]
    assert panel.add_transition("unsealed", "sealed") == "unsealed=sealed"
    assert panel.add_transition("sealed", "sealed") == "unsealed=sealed"  # no change: refused
    assert panel.add_transition("unsealed", "sealed") == "unsealed=sealed"  # listed once
    before = set(QgsProject.instance().mapLayers())

    assert panel.map_change(wait=True, timeout_s=60), panel.log_text()

    args = panel.last_jobs["change"]["args"]
    assert (args["classes_a"], args["classes_b"]) == (a.source(), b.source())
    assert args["transition"] == ["unsealed=sealed"] and "model" not in args
    assert Path(args["out_dir"]).parent == Path(a.source()).parent / "change"
    added = set(QgsProject.instance().mapLayers()) - before
    fromto, mask, polygons = (panel.change_layer(k) for k in ("fromto", "mask", "transitions"))
    assert {fromto.id(), mask.id(), polygons.id()} == added
    # the from-to codes named from the TERRASEG_CLASSES tag, in the engine's colours
    renderer = fromto.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert {int(c.value): c.label for c in renderer.classes()} == {
        1: "unsealed -> unsealed", 2: "unsealed -> sealed", 3: "sealed -> unsealed",
        4: "sealed -> sealed"}
    colours = {int(c.value): c.color.name() for c in renderer.classes()}
    assert colours[1] == colours[4] == "#d7d7d7" != colours[2]  # unchanged pale grey
    assert [c.label for c in mask.renderer().classes()] == ["unchanged", "changed"]
    # the transition's polygon: the 10x10 block, 10 000 m2
    assert isinstance(polygons, QgsVectorLayer) and polygons.featureCount() == 1
    feature = next(polygons.getFeatures())
    assert feature["transition"] == "unsealed -> sealed"
    assert feature["area_m2"] == pytest.approx(CHANGED_M2)
    assert feature.geometry().area() == pytest.approx(CHANGED_M2)
    # the table: the one transition, m2 exactly, ha, % of the compared area
    table = panel.change_table
    assert table.rowCount() == 1
    assert [table.item(0, c).text() for c in range(table.columnCount())] == [
        "unsealed", "sealed", "10,000.0", "1.00", "6.25"]
    assert panel.last_change["rows"][0]["area_m2"] == CHANGED_M2
    assert panel.last_change["result"]["compared_m2"] == COMPARED_M2
    assert "Changed 1.00 ha of 16.00 ha compared (6.25 %)" in panel.change_summary.text()
    assert "unsealed -> sealed: 1.00 ha" in panel.change_summary.text()
    # Export table: the engine's CSV (rows from, columns to) where the analyst chose
    assert panel.change_export_button.isEnabled()
    out = panel.export_change_table(tmp_path / "export" / "areas")
    assert out == tmp_path / "export" / "areas.csv"
    with out.open(newline="") as fh:
        rows = {r["from_class"]: r for r in csv.DictReader(fh)}
    assert float(rows["unsealed"]["sealed_m2"]) == CHANGED_M2
    assert float(rows["unsealed"]["unsealed_m2"]) == COMPARED_M2 / 2 - CHANGED_M2
    assert float(rows["unsealed"]["sealed_pct"]) == 6.25
    assert float(rows["sealed"]["sealed_pct"]) == 50.0

    # a second run replaces the first one's layers
    first_ids = {fromto.id(), mask.id(), polygons.id()}
    assert panel.map_change(wait=True, timeout_s=60), panel.log_text()
    assert set(QgsProject.instance().mapLayers()) - before == {
        panel.change_layer(k).id() for k in ("fromto", "mask", "transitions")}
    assert not first_ids & set(QgsProject.instance().mapLayers())


def test_pair_that_does_not_overlap_is_refused(panel, two_dates, tmp_path) -> None:
    a, _ = two_dates
    far = QgsRasterLayer(str(write_classes(tmp_path / "far.tif", True,
                                           origin=(600000.0, 5200000.0))), "far", "gdal")
    QgsProject.instance().addMapLayer(far)
    compare_class_layers(panel, a, far)
    before = set(QgsProject.instance().mapLayers())
    assert not panel.map_change(wait=True, timeout_s=60)
    kind, message, hint = panel.last_error
    assert kind == "Refused"
    assert message == "'far' does not overlap '2018': the two dates must cover the same place."
    assert "same area" in hint and message in panel.status_label.text()
    assert set(QgsProject.instance().mapLayers()) == before
    assert "change" not in panel.last_jobs and panel.last_change is None
    assert not (tmp_path / "change").exists()


def test_engine_refusal_is_shown_in_panel_words(panel, two_dates, tmp_path) -> None:
    """A shift above Largest shift: the engine's figure, its flags as the panel's controls."""
    a, _ = two_dates
    # the second date moved by 3 pixels east
    moved = QgsRasterLayer(str(write_classes(tmp_path / "moved.tif", True,
                                             origin=(ORIGIN[0] + 3 * PIXEL_M, ORIGIN[1]))),
                           "moved", "gdal")
    QgsProject.instance().addMapLayer(moved)
    compare_class_layers(panel, a, moved)
    before = set(QgsProject.instance().mapLayers())
    assert not panel.map_change(wait=True, timeout_s=60)
    kind, message, hint = panel.last_error
    assert kind == "RasterError"  # the engine's refusal, with the figure
    assert "misregistered against the first by 3.000 px" in message
    assert "more than the Largest shift in Change = 1 px" in message
    assert "Set 'Correct the shift' in Change" in hint and "--" not in message + hint
    assert set(QgsProject.instance().mapLayers()) == before and panel.last_change is None
    # 'Correct the shift': the block's change is found where it is, nothing else changes
    panel.change_correct_shift_check.setChecked(True)
    assert panel.map_change(wait=True, timeout_s=60), panel.log_text()
    result = panel.last_change["result"]
    assert result["shift"]["corrected"] and result["shift"]["dx_px"] == pytest.approx(3, abs=0.1)
    assert result["changed_m2"] == CHANGED_M2
    assert "(corrected, residual" in panel.change_summary.text()


def test_last_model_predicts_both_dates(panel, scene, tmp_path) -> None:
    """'Predict both dates': the job names the model, both rasters; the layers come back."""
    model = tmp_path / "models" / "legacy.tsm"
    model.parent.mkdir()
    shutil.copy(LEGACY_MODEL, model)
    assert panel.load_model(model) is not None
    second = tmp_path / "second.tif"
    shutil.copy(scene.raster, second)
    first = QgsRasterLayer(str(scene.raster), "first", "gdal")
    later = QgsRasterLayer(str(second), "second", "gdal")
    QgsProject.instance().addMapLayers([first, later])
    panel.set_raster_layer(first)
    assert not panel.change_button.isEnabled()
    assert "second date" in panel.change_button.toolTip()
    panel.change_raster_combo.setLayer(later)
    assert panel.change_button.isEnabled(), panel.change_button.toolTip()
    assert panel.map_change(wait=True, timeout_s=120), panel.log_text()
    args = panel.last_jobs["change"]["args"]
    assert (args["model"], args["raster_a"], args["raster_b"]) == (
        str(model), str(scene.raster), str(second))
    result = panel.last_change["result"]
    assert result["changed_by"] == "probability"  # predictions come with probabilities
    # the same image: no class differs, so no transition is listed (the mask's change
    # probability 1 - sum p1 p2 is above 0.5 only where the prediction is unsure)
    assert result["class_changed_px"] == 0 and panel.change_table.rowCount() == 0
    assert result["changed_m2"] < 0.01 * result["compared_m2"]
    assert result["compared_m2"] == pytest.approx(96 * 96 * 100.0)
    assert panel.change_layer("fromto") is not None and panel.change_layer("mask") is not None
    assert panel.change_layer("transitions") is None
    names = {c.label for c in panel.change_layer("fromto").renderer().classes()}
    model_names = [c["name"] for c in panel.result_classes()]
    assert f"{model_names[0]} -> {model_names[1]}" in names
