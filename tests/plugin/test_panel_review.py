"""The panel's 'Review labels' section (issue 12) in real QGIS.

The synthetic scene (96x96, EPSG:32632) gets a label layer drawn in the panel with the
scene's 18 boxes, two of them given the wrong class. The review job the panel sends is
checked field by field (the Train settings, no fine-tuning, the review options); a review
result in the engine's contract (``review.gpkg`` with layer ``review``, written here with
QGIS) is fed to the panel's own result handler. Selecting a suspect must zoom the map (in
another CRS than the labels') to its box and select it; Change class and Delete edit the
label layer undoably without saving it. One review runs through the engine with random
forests (seconds): the scorer reaches the result and no fold model is written.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers.qgis_support import TINY_TRAIN, label_boxes, needs_engine
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsFeature,
    QgsField,
    QgsGraduatedSymbolRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsVectorLayerUtils,
)
from qgis.PyQt.QtCore import QPoint, Qt, QVariant
from qgis.PyQt.QtTest import QTest

pytestmark = needs_engine  # the scene raster is written by the engine's Python

MAP_CRS = "EPSG:3857"  # the canvas's CRS: not the labels' (EPSG:32632)
FLIPPED = (3, 12)  # features (fids) drawn with the wrong class


@pytest.fixture
def started(panel, monkeypatch) -> list[tuple]:
    """(kind, job, on_result) of each job the panel starts, recorded instead of run."""
    seen: list[tuple] = []

    def start(kind, job, on_result, wait=False, timeout_s=0.0):
        seen.append((kind, job, on_result))
        return True

    monkeypatch.setattr(panel, "_start_job", start)
    return seen


def draw_scene_labels(panel, folder: Path) -> QgsVectorLayer:
    """A saved panel label layer with the scene's boxes (fids 1..9 sealed, 10..18
    unsealed), the FLIPPED ones given the other class."""
    layer = panel.new_label_layer(folder / "labels.gpkg")
    assert layer is not None
    boxes = [(name, geom) for name, geoms in label_boxes().items() for geom in geoms]
    layer.startEditing()
    idx = layer.fields().indexOf("class")
    for i, (name, geom) in enumerate(boxes, start=1):
        if i in FLIPPED:
            name = "unsealed" if name == "sealed" else "sealed"
        feature = QgsVectorLayerUtils.createFeature(layer, geom, {idx: name},
                                                    layer.createExpressionContext())
        assert layer.addFeature(feature)
    assert layer.commitChanges()
    return layer


def given_class(layer: QgsVectorLayer, fid: int) -> str:
    return layer.getFeature(fid).attribute("class")


def write_review(layer: QgsVectorLayer, folder: Path) -> dict:
    """A review result as the engine's contract has it, FLIPPED first, review.gpkg written."""
    folder.mkdir(parents=True, exist_ok=True)
    memory = QgsVectorLayer(f"MultiPolygon?crs={layer.crs().authid()}", "review", "memory")
    fields = [QgsField("rank", QVariant.Int), QgsField("feature_id", QVariant.String),
              QgsField("region_key", QVariant.String), QgsField("given_class", QVariant.String),
              QgsField("predicted_class", QVariant.String),
              QgsField("predicted_probability", QVariant.Double),
              QgsField("score", QVariant.Double)]
    memory.dataProvider().addAttributes(fields)
    memory.updateFields()
    suspects, features = [], []
    for rank, fid in enumerate((*FLIPPED, 5), start=1):
        source = layer.getFeature(fid)
        given = source.attribute("class")
        predicted = ("unsealed" if given == "sealed" else "sealed") if fid in FLIPPED else given
        box = source.geometry().boundingBox()
        suspect = {"rank": rank, "feature_id": str(fid), "region_key": f"labels:{fid}",
                   "given_class": given, "predicted_class": predicted,
                   "predicted_probability": 0.9 - 0.1 * rank, "score": 3.0 - rank,
                   "bbox": [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()]}
        suspects.append(suspect)
        feature = QgsFeature(memory.fields())
        feature.setGeometry(source.geometry())
        feature.setAttributes([suspect[f.name()] for f in fields])
        features.append(feature)
    assert memory.dataProvider().addFeatures(features)[0]
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", "review"
    gpkg = folder / "review.gpkg"
    error = QgsVectorFileWriter.writeAsVectorFormatV3(memory, str(gpkg),
                                                      QgsCoordinateTransformContext(), options)
    assert error[0] == QgsVectorFileWriter.NoError, error
    return {"review_gpkg": str(gpkg), "review_csv": str(folder / "review.csv"),
            "review_json": str(folder / "review.json"), "ranking": "loss", "k": 3,
            "regions": 18, "flagged": 3, "suspects": list(reversed(suspects))}


def click_row(table, row: int) -> None:
    """A mouse click on the row's first cell, as the analyst clicks."""
    table.scrollToItem(table.item(row, 0))
    rect = table.visualItemRect(table.item(row, 0))
    QTest.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     QPoint(rect.center()))


def on_map(layer: QgsVectorLayer, bbox: list[float], canvas) -> QgsRectangle:
    transform = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(),
                                       QgsProject.instance())
    return transform.transformBoundingBox(QgsRectangle(*bbox))


def test_review_job_carries_the_train_settings(panel, started, scene, tmp_path) -> None:
    raster = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    QgsProject.instance().addMapLayer(raster)
    button = panel.review_button
    assert button.text() == "Review labels" and not button.isEnabled()
    assert "Choose a raster layer" in button.toolTip()
    panel.set_raster_layer(raster)
    layer = draw_scene_labels(panel, tmp_path)
    assert button.isEnabled() and button.toolTip().startswith("Trains k models")
    panel.set_training_options(**TINY_TRAIN, cache_dir=str(tmp_path / "cache"))
    panel.set_review_options(k=3, ranking="cleanlab", top=10)
    panel.last_model = str(tmp_path / "models" / "earlier.tsm")  # never fine-tuned from
    # an unsaved edit: the review reads the saved layer, so the panel saves it first
    layer.startEditing()
    assert layer.changeAttributeValue(1, layer.fields().indexOf("class"), "unsealed")
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)
    [(kind, job, _)] = started
    assert kind == "review" and job["command"] == "review"
    args = job["args"]
    assert not layer.isModified() and given_class(QgsVectorLayer(
        f"{tmp_path / 'labels.gpkg'}|layername=labels", "check", "ogr"), 1) == "unsealed"
    assert args["raster"] == str(scene.raster)
    assert args["labels"].split("|")[0] == str(tmp_path / "labels.gpkg")
    assert (args["class_field"], args["class_map"]) == ("class",
                                                        "sealed=sealed,unsealed=unsealed")
    assert args["bands"] == panel.bands_spec()
    assert (args["k"], args["ranking"], args["top"]) == (3, "cleanlab", 10)
    assert args["scorer"] == "network"  # the engine's default, Train's settings used
    out_dir = Path(args["out_dir"])
    assert out_dir.parent == tmp_path / "review" and not out_dir.exists()
    assert "init_model" not in args and "out" not in args  # k new models, none written
    for key, value in TINY_TRAIN.items():
        assert args[key] == value, key
    assert args["cache_dir"] == str(tmp_path / "cache")
    # the same training options as Train sends
    assert {k: args[k] for k in panel.training_options() if k in args} == {
        k: v for k, v in panel.training_options().items() if v is not None}
    assert f"3 folds of {args['model']} from scratch" in panel.log_text(), panel.log_text()
    assert "ranking cleanlab" in panel.log_text()

    # forests: the same job with scorer forest (Train's settings still sent, unused)
    started.clear()
    combo = panel.review_scorer_combo
    assert [combo.itemText(i) for i in range(combo.count())] == [
        "Networks (Train's settings; minutes)", "Random forests (seconds)"]
    assert "default" in combo.toolTip() and "seconds" in combo.toolTip()
    combo.setCurrentText("Random forests (seconds)")
    assert panel.review_labels()
    [(_, forest_job, _)] = started
    assert forest_job["args"]["scorer"] == "forest"
    assert {k: v for k, v in forest_job["args"].items() if k not in ("scorer", "out_dir")} == {
        k: v for k, v in args.items() if k not in ("scorer", "out_dir")}
    assert panel.log_text().rstrip().endswith(
        f"3 folds of random forests of pixels (Train's network options unused), ranking "
        f"cleanlab, into {forest_job['args']['out_dir']}")
    panel.set_review_options(scorer="network")
    assert panel.review_scorer() == "network" and combo.currentIndex() == 0

    with pytest.raises(KeyError, match="cleanlab"):
        panel.set_review_options(ranking="median")
    with pytest.raises(KeyError, match="forest"):
        panel.set_review_options(scorer="svm")


def test_suspects_zoom_select_change_and_delete(panel, started, scene, qgis_iface,
                                                tmp_path) -> None:
    project = QgsProject.instance()
    raster = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    probability = QgsRasterLayer(str(scene.raster), "probability (sealed)", "gdal")
    project.addMapLayers([raster, probability])
    project.layerTreeRoot().findLayer(probability.id()).setItemVisibilityChecked(False)
    panel.last_results = {"layers": (probability, raster)}
    panel.set_raster_layer(raster)
    layer = draw_scene_labels(panel, tmp_path)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem(MAP_CRS))
    canvas.setExtent(on_map(layer, [0, 0, 1, 1], canvas))  # far away
    assert panel.review_labels()
    [(_, job, on_result)] = started
    result = write_review(layer, Path(job["args"]["out_dir"]))
    on_result(result)

    table = panel.review_table
    assert panel.review_rows() == [
        ("1", "unsealed → sealed", "0.80", "2.000"),   # fid 3: a sealed box, flipped
        ("2", "sealed → unsealed", "0.70", "1.000"),   # fid 12: an unsealed box, flipped
        ("3", "sealed → sealed", "0.60", "0.000")]     # fid 5: right
    assert panel.review_summary.text().startswith(  # no scorer in the result: networks
        "18 labelled regions scored by 3 networks (one per fold), ranked by mean out-of-fold "
        "loss, 3 flagged by confident learning; the 3 most suspicious listed.")
    review = panel.review_layer()
    assert review is not None and review.featureCount() == 3
    assert isinstance(review.renderer(), QgsGraduatedSymbolRenderer)
    assert review.renderer().classAttribute() == "score"
    assert not panel.review_relabel_button.isEnabled()  # nothing chosen yet

    panel.show()
    click_row(table, 1)
    # (the result lists them in reverse: the panel sorts by rank)
    assert [s["feature_id"] for s in panel.review_suspects] == ["3", "12", "5"]
    target = on_map(layer, panel.review_suspects[1]["bbox"], canvas)
    extent = canvas.extent()
    assert extent.contains(target)
    assert abs(extent.center().x() - target.center().x()) < 1.0
    assert abs(extent.center().y() - target.center().y()) < 1.0
    assert extent.width() < 4 * target.width() or extent.height() < 4 * target.height()
    assert layer.selectedFeatureIds() == [12]
    assert project.layerTreeRoot().findLayer(probability.id()).isVisible()

    # Change class: the predicted class, as an undoable, unsaved edit
    assert panel.review_relabel_button.isEnabled()
    QTest.mouseClick(panel.review_relabel_button, Qt.MouseButton.LeftButton)
    assert given_class(layer, 12) == "unsealed"
    assert layer.isEditable() and layer.isModified()
    saved = QgsVectorLayer(f"{tmp_path / 'labels.gpkg'}|layername=labels", "saved", "ogr")
    assert given_class(saved, 12) == "sealed"  # not saved behind the analyst's back
    layer.undoStack().undo()
    assert given_class(layer, 12) == "sealed"
    layer.undoStack().redo()
    assert given_class(layer, 12) == "unsealed"
    assert [r[1] for r in panel.review_rows()] == ["unsealed → sealed", "sealed → sealed"]
    assert panel.review_decisions == {"12": "relabelled:unsealed"}

    # Delete: the feature leaves the layer (unsaved, undoable)
    click_row(table, 0)
    assert layer.selectedFeatureIds() == [3]
    QTest.mouseClick(panel.review_delete_button, Qt.MouseButton.LeftButton)
    assert not layer.getFeature(3).isValid()
    assert layer.featureCount() == 17 and saved.featureCount() == 18
    assert [r[0] for r in panel.review_rows()] == ["3"]

    # Accept: the polygon stays as it is, only the list forgets it
    click_row(table, 0)
    QTest.mouseClick(panel.review_accept_button, Qt.MouseButton.LeftButton)
    assert panel.review_rows() == [] and given_class(layer, 5) == "sealed"
    assert panel.review_decisions == {"12": "relabelled:unsealed", "3": "deleted",
                                      "5": "accepted"}
    # Train then saves the corrections before it sends its job
    assert panel.save_label_edits()
    saved.reload()
    assert given_class(saved, 12) == "unsealed" and not saved.getFeature(3).isValid()


def test_fold_progress_is_the_reviews(panel) -> None:
    """Fold i of k fills the bar from i/k to (i+1)/k; its epochs stay out of Train's table."""
    panel.job_kind = "review"  # as while a review job runs
    panel._review_fold = None
    panel._on_worker_log("info", "fold 2/4")
    panel._on_progress(0.5, "train", 30.0, "epoch 3")
    assert panel.progress_bar.value() == 375  # (1 + 0.5) / 4
    assert "fold 2/4: epoch 3" in panel.status_label.text()
    assert "left" not in panel.status_label.text()  # a fold's time left is not the review's
    panel._on_metrics(3, {"train_loss": 0.25})
    assert panel.metrics_table.rowCount() == 0
    assert "review fold 2/4, epoch 3: train_loss 0.2500" in panel.log_text()
    panel._on_progress(0.75, "review", None, "fold 3/4 scored")
    assert panel.progress_bar.value() == 750
    panel.job_kind = "train"
    panel._on_metrics(1, {"train_loss": 0.5})
    assert panel.metrics_table.rowCount() == 1
    panel.job_kind = None


def test_a_suspect_gone_from_the_layer_is_refused(panel, started, scene, tmp_path) -> None:
    raster = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    QgsProject.instance().addMapLayer(raster)
    panel.set_raster_layer(raster)
    layer = draw_scene_labels(panel, tmp_path)
    assert panel.review_labels()
    on_result = started[-1][2]
    on_result(write_review(layer, Path(started[-1][1]["args"]["out_dir"])))
    layer.startEditing()
    assert layer.deleteFeature(3)
    assert not panel.relabel_suspect(0)
    assert "Feature 3 is no longer in" in panel.status_label.text()
    assert len(panel.review_rows()) == 3  # still listed: nothing was done


def has_review_command(engine) -> bool:
    out = subprocess.run([engine.terraseg, "review", "--help"], capture_output=True,
                         text=True, timeout=120)
    return out.returncode == 0


@pytest.mark.slow  # a refused job and two trainings in workers: ~40 s on 2 cores
def test_review_through_the_engine_lists_the_label_layers_features(panel, engine, scene, cache_dir,
                                                              qgis_iface, tmp_path) -> None:
    if not has_review_command(engine):
        pytest.skip("the engine has no `terraseg review` command yet")
    raster = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    QgsProject.instance().addMapLayer(raster)
    panel.set_raster_layer(raster)
    layer = draw_scene_labels(panel, tmp_path)
    panel.set_training_options(**TINY_TRAIN, cache_dir=str(cache_dir))
    # more folds than polygons of a class: the engine's message in the panel's words
    panel.set_review_options(k=10, top=5)
    assert not panel.review_labels(wait=True, timeout_s=300)
    kind, message, hint = panel.last_error
    assert kind in ("ConfigError", "LabelError") and "fewer than the k = 10 folds" in message
    assert "the Folds in Review labels" in hint and "--" not in hint, hint
    assert panel.review_rows() == [] and panel.review_button.isEnabled()

    panel.set_review_options(k=2)
    assert panel.review_labels(wait=True, timeout_s=300), panel.log_text()
    assert panel.progress_bar.value() == 1000
    assert "review fold 2/2, epoch 2:" in panel.log_text()
    assert panel.metrics_table.rowCount() == 0  # the folds' epochs are not Train's
    result = panel.last_review["result"]
    assert result["regions"] == 18 and result["k"] == 2 and result["ranking"] == "loss"
    assert result["scorer"] == "network"  # the default: the fold networks are written
    assert sorted(p.name for p in Path(panel.last_review["folder"]).glob("fold_*.tsm")) == [
        "fold_0.tsm", "fold_1.tsm"]
    rows = panel.review_suspects
    assert len(rows) == 5 == len(panel.review_rows())
    assert [s["rank"] for s in rows] == [1, 2, 3, 4, 5]
    scores = [s["score"] for s in rows]
    assert scores == sorted(scores, reverse=True)
    # the engine's feature ids are the label layer's: each one's class is the given class
    # (whether a 2-epoch model ranks the flipped ones first is the engine's tests' business)
    for suspect in rows:
        assert given_class(layer, int(suspect["feature_id"])) == suspect["given_class"]
    review = panel.review_layer()
    assert review is not None and review.featureCount() == 18
    panel.show()
    click_row(panel.review_table, 0)
    assert layer.selectedFeatureIds() == [int(rows[0]["feature_id"])]
    assert qgis_iface.mapCanvas().extent().contains(
        on_map(layer, rows[0]["bbox"], qgis_iface.mapCanvas()))


def test_review_with_forests_through_the_engine(panel, engine, scene, cache_dir, tmp_path
                                                ) -> None:
    """'Random forests': k forests on the folds in seconds, no fold model, the list fills."""
    if not has_review_command(engine):
        pytest.skip("the engine has no `terraseg review` command yet")
    raster = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    QgsProject.instance().addMapLayer(raster)
    panel.set_raster_layer(raster)
    layer = draw_scene_labels(panel, tmp_path)
    panel.set_training_options(cache_dir=str(cache_dir))
    panel.set_review_options(k=3, top=6, scorer="forest")
    assert panel.review_labels(wait=True, timeout_s=120), panel.log_text()
    result = panel.last_review["result"]
    assert (result["scorer"], result["k"], result["regions"]) == ("forest", 3, 18)
    folder = Path(panel.last_review["folder"])
    assert sorted(p.name for p in folder.iterdir()) == ["review.csv", "review.gpkg",
                                                        "review.json"]  # no fold_*.tsm
    assert "random forests of pixels" in panel.log_text()
    assert panel.review_summary.text().startswith(
        "18 labelled regions scored by 3 random forests (one per fold), ranked by mean "
        "out-of-fold loss,")
    rows = panel.review_suspects
    assert [s["rank"] for s in rows] == [1, 2, 3, 4, 5, 6] and len(panel.review_rows()) == 6
    for suspect in rows:
        assert given_class(layer, int(suspect["feature_id"])) == suspect["given_class"]
    # the boxes' pixels separate the classes: the forests put the two flipped ones first
    assert sorted(int(s["feature_id"]) for s in rows[:2]) == list(FLIPPED)
    assert all(s["predicted_class"] != s["given_class"] for s in rows[:2])
    assert panel.progress_bar.value() == 1000 and panel.metrics_table.rowCount() == 0
