"""The panel's quick first map (random forest) in real QGIS, with the real engine worker.

The label layer gets the synthetic scene's 18 training boxes (9 per class); the quick map
must come back as Predict's two layers over the whole raster, agree with the scene's truth
and show the held-out accuracy, with the pointer to training a model next.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.qgis_support import label_boxes, make_scene, needs_engine, raster_values, truth
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayerUtils

pytestmark = needs_engine


def _raster(folder: Path) -> QgsRasterLayer:
    raster = QgsRasterLayer(str(make_scene(folder)), "scene", "gdal")
    assert raster.isValid()
    QgsProject.instance().addMapLayer(raster)
    return raster


def _draw(dock, classes: tuple[str, ...] = ("sealed", "unsealed")) -> None:
    labels = dock.label_layer()
    labels.startEditing()
    idx = labels.fields().indexOf("class")
    for name in classes:
        for geom in label_boxes()[name]:
            feature = QgsVectorLayerUtils.createFeature(labels, geom, {idx: name},
                                                        labels.createExpressionContext())
            assert labels.addFeature(feature)


def test_quick_map_adds_two_layers_and_shows_held_out_accuracy(panel, tmp_path: Path) -> None:
    from terraseg.plugin import results
    from terraseg.plugin.panel_quick import NEXT_STEP, QUICK_BUTTON_TEXT

    raster = _raster(tmp_path)
    panel.set_raster_layer(raster)
    assert not panel.quick_button.isEnabled()  # no label layer yet
    assert panel.new_label_layer(tmp_path / "labels.gpkg") is not None
    _draw(panel)
    assert panel.quick_button.isEnabled() and panel.quick_button.text() == QUICK_BUTTON_TEXT

    assert panel.quick_map(wait=True, timeout_s=120), panel.log_text()
    args = panel.last_jobs["quickmap"]["args"]
    assert args["class_field"] == "class" and args["bands"] == "red=1,green=2,blue=3,nir=4"
    assert args["class_map"] == "sealed=sealed,unsealed=unsealed"
    assert args["val_fraction"] == pytest.approx(panel.val_spin.value())
    assert "split_from" not in args  # no model yet: training's fresh split
    assert not panel.label_layer().isModified()  # the edits were saved first

    group = QgsProject.instance().layerTreeRoot().findGroup(results.GROUP_NAME)
    layers = [node.layer() for node in group.findLayers()]
    assert len(layers) == 2
    prob_layer, cls_layer = panel.last_results["layers"]
    assert {prob_layer.id(), cls_layer.id()} == {layer.id() for layer in layers}
    for layer in (prob_layer, cls_layer):
        assert layer.isValid() and layer.extent() == raster.extent()
        assert layer.crs().authid() == "EPSG:32632"
        assert Path(layer.source()).parent.parent == tmp_path / "quick_maps"
    assert [c.label for c in cls_layer.renderer().classes()] == ["sealed", "unsealed"]
    assert prob_layer.renderer().type() == "singlebandpseudocolor"
    _, values = raster_values(panel.last_results["classes"])
    agree = sum(int(v) == truth(r, c) for r, row in enumerate(values) for c, v in enumerate(row))
    assert agree / (96 * 96) > 0.97

    result = panel.last_results["result"]
    assert result["validation"]["accuracy"] == pytest.approx(1.0)
    assert panel.last_results["model"] is None and panel.last_model is None
    assert not list(tmp_path.rglob("*.tsm"))
    summary = panel.quick_summary.text()
    assert "Validation (held-out polygons" in summary and "accuracy 1.000" in summary
    assert "F1 sealed 1.000, unsealed 1.000" in summary
    assert NEXT_STEP in summary and NEXT_STEP in panel.log_text()
    assert panel.vectorise_button.isEnabled()  # the quick map can be exported like a prediction


def test_quick_map_keeps_the_split_of_the_last_model(panel, tmp_path: Path,
                                                    tiny_model) -> None:
    raster = _raster(tmp_path)
    panel.set_raster_layer(raster)
    assert panel.load_model(tiny_model.path) is not None
    assert panel.new_label_layer(tmp_path / "labels.gpkg") is not None
    _draw(panel)
    assert panel.quick_map(wait=True, timeout_s=120), panel.log_text()
    assert panel.last_jobs["quickmap"]["args"]["split_from"] == str(tiny_model.path)
    split = panel.last_results["result"]["split"]
    assert split["split_from"] == str(tiny_model.path)
    assert split["regions"]["val"] > 0 and split["regions"]["train"] > 0
    assert panel.last_model == str(tiny_model.path)  # the quick map does not replace it
    assert f"split of {tiny_model.path} kept" in panel.log_text()


def test_quick_map_needs_two_labelled_classes(panel, tmp_path: Path) -> None:
    panel.set_raster_layer(_raster(tmp_path))
    assert not panel.quick_map()
    assert "raster" not in panel.status_label.text().lower()  # the raster is chosen
    assert "label layer" in panel.status_label.text()
    assert panel.new_label_layer(tmp_path / "labels.gpkg") is not None
    _draw(panel, ("sealed",))
    assert not panel.quick_map()
    assert "at least two classes" in panel.status_label.text()
    assert "labelled so far: sealed" in panel.status_label.text()
    assert "quickmap" not in panel.last_jobs
