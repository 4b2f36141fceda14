"""The panel's Evaluate step in real QGIS, with the real engine worker.

A copy of the synthetic scene gets 8 nodata columns; reference points lie on pixel centres
over the whole raster, labelled with the scene's truth. The panel predicts the whole raster
first, so the expected confusion matrix is a hand count of (reference class, predicted class
in classes.tif) at the points, and the points on nodata are the ones without prediction.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers.paths import run_engine_python
from helpers.qgis_support import ORIGIN, PIXEL_M, needs_engine, raster_values, truth
from qgis.core import (
    QgsFeature,
    QgsField,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QVariant

NODATA_COLS = 8  # columns 0..7 of the copy are nodata (255)
GRID = [*range(0, 96, 7), 95]  # point rows and columns: the whole raster

_WITH_NODATA = """
import sys
import rasterio
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with rasterio.open(src) as s:
    data, profile, names = s.read(), s.profile, s.descriptions
data[:, :, :n] = 255
profile.update(nodata=255)
with rasterio.open(dst, "w", **profile) as d:
    d.write(data)
    for i, name in enumerate(names, start=1):
        d.set_band_description(i, name)
"""

CLASSES = ("sealed", "unsealed")


def reference_points(crs: str = "EPSG:32632") -> QgsVectorLayer:
    """Points on pixel centres of GRID x GRID, field ``klass`` = the scene's truth."""
    layer = QgsVectorLayer(f"Point?crs={crs}", "reference", "memory")
    layer.dataProvider().addAttributes([QgsField("klass", QVariant.String)])
    layer.updateFields()
    feats = []
    for row in GRID:
        for col in GRID:
            f = QgsFeature(layer.fields())
            x = ORIGIN[0] + (col + 0.5) * PIXEL_M
            y = ORIGIN[1] - (row + 0.5) * PIXEL_M
            f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
            f.setAttribute("klass", CLASSES[truth(row, col) - 1])
            feats.append(f)
    assert layer.dataProvider().addFeatures(feats)[0]
    return layer


def test_evaluate_refuses_without_reference(panel, scene, tiny_model) -> None:
    raster = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    QgsProject.instance().addMapLayer(raster)
    panel.set_raster_layer(raster)
    assert not panel.evaluate()  # no model yet
    assert "model" in panel.status_label.text().lower()
    assert panel.load_model(tiny_model.path) is not None
    assert panel.evaluate_button.isEnabled()
    assert not panel.evaluate()
    assert "reference layer" in panel.status_label.text()
    points = reference_points()
    QgsProject.instance().addMapLayer(points)
    assert not panel.evaluate(points, class_field="no_such_field")
    assert "class field" in panel.status_label.text()
    assert not panel.is_busy() and panel.last_evaluation is None


@needs_engine
def test_evaluate_shows_and_saves_the_confusion_matrix(panel, scene, tiny_model,
                                                       tmp_path: Path) -> None:
    raster_path = tmp_path / "scene_nodata.tif"
    run_engine_python(_WITH_NODATA, scene.raster, raster_path, NODATA_COLS)
    raster = QgsRasterLayer(str(raster_path), "scene with nodata", "gdal")
    assert raster.isValid()
    project = QgsProject.instance()
    project.addMapLayer(raster)
    panel.set_raster_layer(raster)
    model = tmp_path / "tiny.tsm"
    model.write_bytes(Path(tiny_model.path).read_bytes())  # results go next to the model
    assert panel.load_model(model) is not None
    assert panel.predict("whole", wait=True, timeout_s=120), panel.log_text()
    _, predicted = raster_values(panel.last_results["classes"])

    expected = [[0, 0], [0, 0]]
    no_prediction = 0
    for row in GRID:
        for col in GRID:
            pred = int(predicted[row][col])
            if pred == 0:
                no_prediction += 1
                continue
            expected[truth(row, col) - 1][pred - 1] += 1
    assert all(int(predicted[r][c]) == 0 for r in GRID for c in GRID if c < NODATA_COLS)
    assert no_prediction == 2 * len(GRID)  # columns 0 and 7, nothing else
    n_points = len(GRID) ** 2
    evaluated = n_points - no_prediction
    assert sum(map(sum, expected)) == evaluated
    assert expected[0][0] and expected[1][1]  # the model finds both classes

    points = reference_points()
    project.addMapLayer(points)
    assert panel.evaluate(points, class_field="klass", wait=True, timeout_s=120), \
        panel.log_text()
    job = panel.last_jobs["evaluate"]
    assert job["command"] == "evaluate"
    assert job["args"]["class_field"] == "klass"
    assert job["args"]["bands"] == "red=1,green=2,blue=3,nir=4"

    # the panel's tables
    assert panel.evaluation_table() == expected
    headers = [panel.confusion_table.horizontalHeaderItem(c).text() for c in range(2)]
    rows = [panel.confusion_table.verticalHeaderItem(r).text() for r in range(2)]
    assert headers == rows == list(CLASSES)
    accuracy = (expected[0][0] + expected[1][1]) / evaluated
    summary = panel.evaluation_summary.text()
    assert f"Overall accuracy {100 * accuracy:.1f} %" in summary
    assert f"on {evaluated} of {n_points} reference pixels" in summary
    assert f"{no_prediction} without prediction (nodata)" in summary
    for i, name in enumerate(CLASSES):
        tp = expected[i][i]
        fp = sum(expected[j][i] for j in range(2)) - tp
        fn = sum(expected[i]) - tp
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        assert panel.per_class_table.item(i, 0).text() == name
        assert panel.per_class_table.item(i, 3).text() == f"{f1:.3f}"

    # the saved report, next to the prediction results
    ev = panel.last_evaluation
    folder = Path(ev["folder"])
    assert folder.parent == Path(panel.last_results["folder"]).parent
    assert folder.name.endswith("_evaluation")
    assert str(folder) in panel.evaluation_files.text()
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["confusion_matrix"] == expected == ev["metrics"]["confusion_matrix"]
    assert saved["n_reference_pixels"] == n_points
    assert saved["n_outside_valid_data"] == no_prediction
    assert saved["accuracy"] == pytest.approx(accuracy)
    with open(folder / "confusion_matrix.csv", newline="") as fh:
        table = list(csv.reader(fh))
    assert [r[0] for r in table[1:]] == list(CLASSES) and table[0][1:] == list(CLASSES)
    assert [[int(v) for v in r[1:]] for r in table[1:]] == expected


@pytest.mark.slow  # three evaluations: ~10-25 s on 2 CPU cores
@needs_engine
def test_class_mapping_reaches_the_engine(panel, scene, tiny_model, tmp_path: Path) -> None:
    """Reference classes named otherwise ('cat': roof/meadow) map onto the model's classes."""
    raster = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    labels = QgsVectorLayer(f"{scene.labels}|layername=labels", "reference", "ogr")
    assert raster.isValid() and labels.isValid()
    QgsProject.instance().addMapLayers([raster, labels])
    panel.set_raster_layer(raster)
    model = tmp_path / "tiny.tsm"
    model.write_bytes(Path(tiny_model.path).read_bytes())
    assert panel.load_model(model) is not None
    panel.set_reference_layer(labels)
    assert panel.reference_field_combo.currentField() == "klass"  # guessed
    assert panel.evaluate(wait=True, timeout_s=120), panel.log_text()
    by_name = panel.evaluation_table()
    assert sum(map(sum, by_name)) == 18 * 64  # 18 boxes of 8 x 8 pixels
    # unmapped names the model does not know are refused by the engine, shown in the panel
    assert not panel.evaluate(labels, class_field="cat", class_map="", wait=True,
                              timeout_s=120)
    assert panel.last_error is not None and "roof" in panel.last_error[1]
    assert panel.evaluation_table() == by_name  # the last good evaluation stays shown
    assert panel.evaluate(labels, class_field="cat", class_map="roof=sealed,meadow=unsealed",
                          wait=True, timeout_s=120), panel.log_text()
    args = panel.last_jobs["evaluate"]["args"]
    assert (args["class_field"], args["class_map"]) == ("cat", "roof=sealed,meadow=unsealed")
    assert panel.evaluation_table() == by_name
    assert panel.last_evaluation["class_map"] == "roof=sealed,meadow=unsealed"
