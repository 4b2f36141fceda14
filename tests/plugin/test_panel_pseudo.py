"""Train's pseudo-labels in the panel (issue 11), in real QGIS with the real engine worker.

The synthetic scene (96x96, sealed rectangles on unsealed ground) comes with a coarse label
raster: its truth downsampled 4x by majority onto a 40 m grid (tests/core/
test_pseudo_label.py's ``write_coarse_labels``), wrong along every rectangle's edge.
'Show pseudo-labels' must add the forest's classes, which agree with the truth; Train then
fits the forest on the coarse map with the label layer's polygons as corrections, or
densifies a few polygons. Without a worker, the train job's fields are checked for an
empty label layer (the coarse map is the labels too) and for one-class corrections.
"""

from __future__ import annotations

from pathlib import Path

from helpers.paths import run_engine_python
from helpers.qgis_support import (
    TINY_TRAIN,
    label_boxes,
    needs_engine,
    pixel_box,
    raster_values,
    truth,
)
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer, QgsVectorLayerUtils

pytestmark = needs_engine

FACTOR = 4
_MAKE_SCENE = """
import sys
from pathlib import Path
import numpy as np
from rasterio.transform import from_origin
from helpers.synthetic import ORIGIN, PIXEL_M, make_scene, write_raster
folder = Path(sys.argv[1])
sc = make_scene(folder)
f = int(sys.argv[2])
h, w = sc.truth.shape
share = (sc.truth.reshape(h // f, f, w // f, f) == 1).mean(axis=(1, 3))
coarse = np.where(share >= 0.5, 1, 2).astype(np.uint8)
write_raster(folder / "coarse.tif", coarse[None],
             transform=from_origin(*ORIGIN, PIXEL_M * f, PIXEL_M * f))
print(sc.raster)
"""


def _scene(folder: Path) -> tuple[QgsRasterLayer, QgsRasterLayer]:
    """The scene's raster and coarse label raster, added to the project."""
    out = run_engine_python(_MAKE_SCENE, folder, FACTOR)
    raster = QgsRasterLayer(out.stdout.strip().splitlines()[-1], "scene", "gdal")
    coarse = QgsRasterLayer(str(folder / "coarse.tif"), "coarse land cover", "gdal")
    assert raster.isValid() and coarse.isValid()
    QgsProject.instance().addMapLayers([raster, coarse])
    return raster, coarse


def _agreement(path: str, factor: int = 1) -> float:
    """Share of the scene's pixels where the raster's class (read at pixel // factor) is
    the truth's."""
    _, values = raster_values(path)
    hits = sum(int(values[r // factor][c // factor]) == truth(r, c)
               for r in range(96) for c in range(96))
    return hits / (96 * 96)


def _draw(layer: QgsVectorLayer, boxes: list[tuple[str, object]]) -> None:
    layer.startEditing()
    idx = layer.fields().indexOf("class")
    for name, geom in boxes:
        feature = QgsVectorLayerUtils.createFeature(layer, geom, {idx: name},
                                                    layer.createExpressionContext())
        assert layer.addFeature(feature)


def _tiny(panel, cache_dir: Path) -> None:
    panel.set_training_options(**TINY_TRAIN, cache_dir=str(cache_dir))


def test_disabled_states_say_why(panel, tmp_path: Path) -> None:
    from terraseg.plugin.panel_pseudo import PREVIEW_BUTTON_TEXT

    raster, coarse = _scene(tmp_path)
    button = panel.pseudo_preview_button
    assert button.text() == PREVIEW_BUTTON_TEXT and not button.isEnabled()
    assert "Choose a raster layer" in button.toolTip()
    assert "Coarse map" in button.toolTip()
    panel.set_raster_layer(raster)
    assert not button.isEnabled() and "Choose a raster layer" not in button.toolTip()
    assert panel.densify_check.isEnabled()
    panel.set_coarse_map(coarse)
    assert button.isEnabled() and button.toolTip().startswith("Fits the random forest")
    assert not panel.coarse_field_combo.isEnabled()  # a raster: its values are the classes
    assert "only a polygon coarse map" in panel.coarse_field_combo.toolTip()
    assert not panel.densify_check.isEnabled()
    assert "a coarse map is chosen" in panel.densify_check.toolTip()
    assert panel.coarse_map_edit.placeholderText() == "empty: 1=sealed,2=unsealed"
    polygons = QgsVectorLayer(f"{tmp_path / 'labels.gpkg'}|layername=labels", "osm", "ogr")
    assert polygons.isValid()
    QgsProject.instance().addMapLayer(polygons)
    panel.set_coarse_map(polygons)
    assert panel.coarse_field_combo.isEnabled()
    assert panel.coarse_field_combo.currentField() == "klass"  # guessed
    panel.set_coarse_map(None)
    assert panel.densify_check.isEnabled() and not button.isEnabled()


def test_show_pseudo_labels_then_train_with_corrections(panel, tmp_path: Path,
                                                       cache_dir: Path) -> None:
    from terraseg.plugin import results
    from terraseg.plugin.panel_pseudo import PREVIEW_LAYER_NAME

    raster, coarse = _scene(tmp_path)
    panel.set_raster_layer(raster)
    labels = panel.new_label_layer(tmp_path / "labels_panel.gpkg")
    assert labels is not None
    panel.set_coarse_map(coarse)
    assert panel.show_pseudo_labels(wait=True, timeout_s=120), panel.log_text()

    args = panel.last_jobs["pseudo-label"]["args"]
    assert args["labels"] == str(tmp_path / "coarse.tif")
    assert args["class_map"] == "1=sealed,2=unsealed" and "class_field" not in args
    assert args["bands"] == "red=1,green=2,blue=3,nir=4"
    assert Path(args["out_dir"]).parent == tmp_path / "pseudo_labels"
    layer = panel.pseudo_preview_layer()
    assert layer is not None and layer.name() == PREVIEW_LAYER_NAME
    group = QgsProject.instance().layerTreeRoot().findGroup(results.GROUP_NAME)
    assert [node.layer().id() for node in group.findLayers()] == [layer.id()]
    assert layer.extent() == raster.extent() and layer.crs().authid() == "EPSG:32632"
    colours = {c.name: c.colour.lower() for c in panel.classes()}
    palette = layer.renderer().classes()
    assert [(c.value, c.label) for c in palette] == [(1, "sealed"), (2, "unsealed")]
    assert {c.label: c.color.name() for c in palette} == colours
    forest = _agreement(layer.source())
    upsampled = _agreement(str(tmp_path / "coarse.tif"), FACTOR)
    print(f"agreement with the truth: pseudo-labels {forest:.4f}, coarse map {upsampled:.4f}")
    assert forest > 0.95
    assert forest > upsampled  # the forest mends the coarse map's edges
    summary = panel.pseudo_summary.text()
    assert "Pseudo-labels of a random forest (50 trees, random sample" in summary
    assert "agreement with their source labels" in summary and "drawing polygons" in summary

    # a second preview replaces the first layer (its result shown again, no engine run)
    first = layer.id()
    panel._on_pseudo_result(panel.last_pseudo["result"])
    assert [node.layer().name() for node in group.findLayers()] == [PREVIEW_LAYER_NAME]
    assert panel.pseudo_preview_layer().id() != first
    assert QgsProject.instance().mapLayer(first) is None

    # one class of corrections is enough with a coarse map; they override the forest
    _draw(labels, [("sealed", pixel_box(40, 40, 44, 44))])
    _tiny(panel, cache_dir)
    assert panel.start_training(wait=True, timeout_s=120), panel.log_text()
    args = panel.last_jobs["train"]["args"]
    assert args["pseudo_labels"] is True
    assert args["pseudo_source"] == str(tmp_path / "coarse.tif")
    assert args["pseudo_class_map"] == "1=sealed,2=unsealed"
    assert args["labels"].split("|")[0] == str(tmp_path / "labels_panel.gpkg")
    model = Path(panel.last_model)
    assert model.is_file() and model.parent == tmp_path / "models"
    pseudo = panel.last_train_result["pseudo_labels"]
    assert Path(pseudo["folder"]) == model.with_name(model.stem + ".pseudo")
    assert Path(pseudo["classes"]).is_file()
    assert "override the pseudo-labels on 16 px" in panel.log_text()
    assert "pseudo-labels of a random forest fitted on the coarse map coarse land cover" in (
        panel.log_text())
    assert "Trained on pseudo-labels of a random forest" in panel.train_summary.text()


def test_densify_few_polygons(panel, tmp_path: Path, cache_dir: Path) -> None:
    raster, _ = _scene(tmp_path)
    panel.set_raster_layer(raster)
    labels = panel.new_label_layer(tmp_path / "labels_panel.gpkg")
    boxes = label_boxes()
    _draw(labels, [(name, boxes[name][i]) for name in ("sealed", "unsealed") for i in (0, 4)])
    panel.densify_check.setChecked(True)
    _tiny(panel, cache_dir)
    assert panel.start_training(wait=True, timeout_s=120), panel.log_text()
    args = panel.last_jobs["train"]["args"]
    assert args["pseudo_labels"] is True
    assert not {"pseudo_source", "pseudo_class_map", "pseudo_class_field"} & set(args)
    pseudo = panel.last_train_result["pseudo_labels"]
    assert Path(pseudo["classes"]).is_file()
    assert sum(pseudo["sampled_pixels"].values()) > 0
    assert pseudo["agreement_accuracy"] > 0.95  # on the 4 polygons
    assert "pseudo-labels of a random forest fitted on the label layer" in panel.log_text()
    assert "Trained on pseudo-labels of a random forest" in panel.train_summary.text()


def test_empty_label_layer_sends_the_coarse_map_as_labels(panel, sent_jobs,
                                                          tmp_path: Path) -> None:
    raster, _ = _scene(tmp_path)
    panel.set_raster_layer(raster)
    panel.new_label_layer(tmp_path / "labels_panel.gpkg")
    assert not panel.start_training()  # no coarse map: two classes of polygons needed
    assert "at least two classes" in panel.status_label.text()
    polygons = QgsVectorLayer(f"{tmp_path / 'labels.gpkg'}|layername=labels", "osm", "ogr")
    QgsProject.instance().addMapLayer(polygons)
    panel.set_coarse_map(polygons, "klass", "")
    assert panel.start_training()
    [job] = sent_jobs
    args = job["args"]
    assert args["labels"] == args["pseudo_source"]  # the engine then overrides nothing
    assert args["pseudo_source"].split("|")[0] == str(tmp_path / "labels.gpkg")
    assert args["pseudo_class_field"] == "klass" and args["class_field"] == "class"
    assert args["pseudo_class_map"] == "sealed=sealed,unsealed=unsealed"
    assert "fitted on the coarse map osm (the label layer is empty: no corrections)" in (
        panel.log_text())


def test_project_remembers_the_pseudo_inputs(qgis_iface, panel, tmp_path: Path) -> None:
    from terraseg.plugin import project_state
    from terraseg.plugin.dock import TerraSegDock

    _, coarse = _scene(tmp_path)
    panel.densify_check.setChecked(True)
    panel.set_coarse_map(coarse, None, "1=unsealed,2=sealed")
    project = QgsProject.instance()
    panel.save_to_project(project)
    state = project_state.read_state(project)
    assert state.pseudo == {"densify": True, "coarse": {"id": coarse.id(),
                                                       "source": coarse.source(),
                                                       "name": "coarse land cover"},
                            "class_field": "", "class_map": "1=unsealed,2=sealed"}
    other = TerraSegDock(qgis_iface)  # reads the project's state on creation
    try:
        assert other.densify_check.isChecked()
        assert other.coarse_layer() is not None and other.coarse_layer().id() == coarse.id()
        assert other.coarse_map_edit.text() == "1=unsealed,2=sealed"
    finally:
        other.shutdown()
        other.deleteLater()
    project.removeMapLayer(coarse.id())
    problems = project_state.apply_state(panel, state, project)
    assert any("coarse map 'coarse land cover'" in p for p in problems)
