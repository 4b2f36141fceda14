"""Retraining in the panel: the new model next to the previous one on the same pixels.

Real QGIS (pytest-qgis) and the real engine worker: the synthetic scene's 18 polygons are
drawn, a model is trained, two polygons are added and the panel retrains from the last
model. The engine keeps the first model's split (the first validation polygons stay
validation polygons) and evaluates the first model on the new run's validation pixels; the
panel shows both models' figures side by side and which is better.
"""

from __future__ import annotations

from pathlib import Path

from helpers.qgis_support import TINY_TRAIN, label_boxes, needs_engine, pixel_box
from qgis.core import QgsFeature, QgsProject, QgsRasterLayer

# the top rows of a sealed rectangle beside its label; open ground between two rectangles
ADDED = [("sealed", pixel_box(4, 4, 7, 18)), ("unsealed", pixel_box(40, 20, 48, 30))]


def add_polygons(layer, polygons) -> None:
    """Add (class, geometry in the layer's CRS) polygons and save them."""
    assert layer.startEditing()
    for name, geom in polygons:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(geom)
        feature.setAttribute("class", name)
        assert layer.addFeature(feature)
    assert layer.commitChanges()


def cells(table) -> dict[str, list[str]]:
    """Row header -> cell texts of a table."""
    return {table.verticalHeaderItem(r).text(): [table.item(r, c).text()
                                                 for c in range(table.columnCount())]
            for r in range(table.rowCount())}


@needs_engine
def test_retraining_shows_both_models_on_the_same_pixels(qgis_iface, qgis_new_project, scene,
                                                         cache_dir, tmp_path: Path) -> None:
    from terraseg.plugin import presets
    from terraseg.plugin.dock import TerraSegDock

    raster = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    assert raster.isValid()
    QgsProject.instance().addMapLayer(raster)
    dock = TerraSegDock(qgis_iface)
    dock.auto_answer = True
    try:
        dock.set_raster_layer(raster)
        dock.set_preset(presets.SEALED)
        labels = dock.new_label_layer(tmp_path / "labels.gpkg")
        assert labels is not None and labels.crs().authid() == "EPSG:32632"
        add_polygons(labels, [(name, g) for name, geoms in label_boxes().items()
                              for g in geoms])
        dock.set_training_options(**TINY_TRAIN, cache_dir=str(cache_dir))

        assert dock.start_training(wait=True, timeout_s=180), dock.log_text()
        model1 = Path(dock.last_model)
        first = dock.last_train_result
        assert "previous" not in first and first["split"]["kept_from"] is None
        assert dock.compare_table.isHidden() and dock.compare_label.isHidden()

        add_polygons(labels, ADDED)
        assert dock.start_training(wait=True, timeout_s=180), dock.log_text()
        assert dock.last_jobs["train"]["args"]["init_model"] == str(model1)
        second = dock.last_train_result
        assert second["split"] == {"kept_regions": 18, "regions": 20,
                                   "kept_from": str(model1)}
        prev = second["previous"]
        new_val, old_val = second["metrics"]["val"], prev["metrics"]["val"]
        n_val = new_val["n_samples"]
        # the new polygons went to training: the same validation pixels as the first run,
        # where the first model scores what it scored then
        assert prev["pixels"]["val"] == n_val == first["metrics"]["val"]["n_samples"]
        assert old_val["confusion_matrix"] == first["metrics"]["val"]["confusion_matrix"]

        assert not dock.compare_table.isHidden()
        table = dock.compare_table
        assert [table.horizontalHeaderItem(c).text() for c in range(2)] == [
            "New model", f"Previous ({model1.name})"]
        shown = cells(table)
        assert list(shown) == ["Accuracy", "F1 (weighted)", "F1 sealed", "F1 unsealed"]
        assert shown["Accuracy"] == [f"{new_val['accuracy']:.3f}",
                                     f"{first['metrics']['val']['accuracy']:.3f}"]
        assert shown["F1 (weighted)"] == [f"{new_val['f1_weighted']:.3f}",
                                          f"{old_val['f1_weighted']:.3f}"]
        for cls in ("sealed", "unsealed"):
            assert shown[f"F1 {cls}"] == [f"{new_val['f1_per_class'][cls]:.3f}",
                                          f"{old_val['f1_per_class'][cls]:.3f}"]
        a = (round(new_val["f1_weighted"], 6), round(new_val["accuracy"], 6))
        b = (round(old_val["f1_weighted"], 6), round(old_val["accuracy"], 6))
        verdict = ("the new model is better" if a > b else
                   f"the previous model ({model1.name}) is better" if b > a else
                   "both models score the same")
        assert dock.compare_label.text() == (
            f"New model vs {model1.name} on the same {n_val} validation pixels: {verdict}.")
        assert (f"Split kept from {model1.name}: 18 polygon(s) keep their side, 2 new one(s) "
                "split among themselves.") in dock.train_summary.text()
        # a result without a previous model (from scratch) hides the comparison again
        dock._on_train_result(first)
        assert dock.compare_table.isHidden() and dock.compare_table.rowCount() == 0
    finally:
        dock.shutdown()
        dock.deleteLater()
