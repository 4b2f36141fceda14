"""The panel remembers its work in the QGIS project (plugin/project_state.py), in real QGIS.

The panel is set up (raster, band mapping, task and classes, label layer, model, a real
prediction and evaluation through the worker), the project is written to a .qgz, cleared
and read back; every item must come back, also into a panel created after the project was
opened, and a deleted model is reported while the rest is restored. Bad documents in the
project are left out with a log line. Also: the dock is wide enough for its sections.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers.qgis_support import needs_engine
from qgis.core import Qgis, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtWidgets import QScrollArea

CLASSES = [("sealed", "#112233"), ("unsealed", "#445566"), ("water", "#0000ff")]


def make_panel(iface):
    from terraseg.plugin.dock import TerraSegDock

    dock = TerraSegDock(iface)
    dock.auto_answer = True
    return dock


def close_panel(dock) -> None:
    dock.shutdown()
    dock.deleteLater()


@pytest.fixture(scope="module")
def saved_project(qgis_iface, engine, scene, tiny_model, tmp_path_factory):
    """A project written with a set-up panel, and what the panel held then."""
    from terraseg.plugin import presets
    from terraseg.plugin.presets import ClassDef

    QgsProject.instance().clear()
    folder = tmp_path_factory.mktemp("project")
    shutil.copy(scene.raster, folder / "scene.tif")
    shutil.copy(tiny_model.path, folder / "model.tsm")
    project = QgsProject.instance()
    raster = QgsRasterLayer(str(folder / "scene.tif"), "scene", "gdal")
    project.addMapLayer(raster)
    reference = QgsVectorLayer(f"{scene.labels}|layername=labels", "reference", "ogr")
    assert reference.isValid()
    project.addMapLayer(reference)
    dock = make_panel(qgis_iface)
    try:
        dock.set_raster_layer(raster)
        assert dock.load_model(folder / "model.tsm") is not None
        assert dock.predict("whole", wait=True, timeout_s=120), dock.log_text()
        assert dock.evaluate(reference, class_field="klass", wait=True, timeout_s=120), \
            dock.log_text()
        dock.set_band_row(3, role="b3", include=False)
        dock.set_classes([ClassDef(n, c) for n, c in CLASSES], presets.LAND_COVER)
        labels = dock.new_label_layer(folder / "labels.gpkg")
        assert labels is not None
        before = {
            "raster": raster.id(), "bands": dock.band_rows(), "preset": dock.preset_name(),
            "classes": [(c.name, c.colour) for c in dock.classes()], "labels": labels.id(),
            "model": dock.last_model,
            "results": {k: dock.last_results[k] for k in ("probability", "classes", "folder")},
            "result": dock.last_results["result"],
            "layers": [layer.id() for layer in dock.last_results["layers"]],
            "evaluation": dock.last_evaluation["metrics"],
            "confusion": dock.evaluation_table(),
            "reference": reference.id(),
        }
        assert before["bands"] == [(1, "red", True), (2, "green", True), (3, "b3", False),
                                   (4, "nir", True)]
        qgz = folder / "work.qgz"
        assert project.write(str(qgz))  # writeProject -> the panel's state
    finally:
        close_panel(dock)
    project.clear()
    return qgz, before


def check_restored(dock, before: dict) -> None:
    assert dock.raster_layer() is not None and dock.raster_layer().id() == before["raster"]
    assert dock.band_rows() == before["bands"]
    assert dock.bands_spec() == "red=1,green=2,nir=4"
    assert dock.preset_name() == before["preset"] == "Land cover"
    assert [(c.name, c.colour) for c in dock.classes()] == CLASSES
    assert dock.label_layer() is not None and dock.label_layer().id() == before["labels"]
    assert dock.last_model == before["model"]
    assert dock.model_meta is not None and dock.model_label.text() == "model.tsm"
    for key, value in before["results"].items():
        assert dock.last_results[key] == value
    assert dock.last_results["result"] == before["result"]
    assert [layer.id() for layer in dock.last_results["layers"]] == before["layers"]
    assert all(layer.isValid() for layer in dock.last_results["layers"])
    assert dock.last_evaluation["metrics"] == before["evaluation"]
    assert dock.evaluation_table() == before["confusion"]
    assert dock.reference_combo.currentLayer().id() == before["reference"]
    assert dock.reference_field_combo.currentField() == "klass"
    assert "Report saved in" in dock.evaluation_files.text()
    assert dock.predict_button.isEnabled() and dock.areas_button.isEnabled()


@needs_engine
def test_reopened_project_restores_the_panel(qgis_iface, saved_project) -> None:
    qgz, before = saved_project
    project = QgsProject.instance()
    # a panel open while the project is read (readProject)
    dock = make_panel(qgis_iface)
    try:
        assert dock.last_model is None or dock.last_results is None
        assert project.read(str(qgz))
        check_restored(dock, before)
        assert "Restored" in dock.status_label.text()
        # a new project forgets the results (their layers went with it)
        project.clear()
        assert dock.last_results is None and dock.last_evaluation is None
        assert not dock.areas_button.isEnabled()
    finally:
        close_panel(dock)
    # a panel created with the project already open (plugin loaded later)
    assert project.read(str(qgz))
    dock = make_panel(qgis_iface)
    try:
        check_restored(dock, before)
    finally:
        close_panel(dock)
        project.clear()


@needs_engine
def test_missing_model_is_reported_and_the_rest_restored(qgis_iface, saved_project,
                                                         tmp_path: Path) -> None:
    qgz, before = saved_project
    # a copy of the project whose model was moved away
    folder = Path(qgz).parent
    model = folder / "model.tsm"
    moved = tmp_path / "model.tsm"
    shutil.move(model, moved)
    project = QgsProject.instance()
    try:
        assert project.read(str(qgz))
        dock = make_panel(qgis_iface)
        try:
            assert dock.last_model is None
            status = dock.status_label.text()
            assert f"model {model} is missing" in status and "Load model" in status
            assert dock.model_label.text() == "model.tsm (missing)"
            assert not dock.predict_button.isEnabled()
            warnings = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning)
            assert any("is missing" in w for w in warnings)
            assert dock.raster_layer().id() == before["raster"]
            assert dock.band_rows() == before["bands"]
            assert [(c.name, c.colour) for c in dock.classes()] == CLASSES
            assert dock.label_layer().id() == before["labels"]
            assert dock.last_results["classes"] == before["results"]["classes"]
            assert dock.evaluation_table() == before["confusion"]
        finally:
            close_panel(dock)
    finally:
        shutil.move(moved, model)
        project.clear()


def test_bad_documents_are_left_out_with_a_log_line(qgis_iface, qgis_new_project) -> None:
    from terraseg.plugin import project_state

    project = QgsProject.instance()
    dock = make_panel(qgis_iface)
    try:
        for text, expected in (
                ("{not json", "not JSON"),
                (json.dumps({"version": 99, "preset": "Landslides"}), "version 99"),
                (json.dumps({"preset": "Landslides"}), "version None")):
            project.writeEntry(project_state.SCOPE, project_state.KEY, text)
            assert dock.restore_from_project() == []
            assert expected in dock.log_text()
            assert dock.preset_name() == "Sealed surfaces"  # nothing applied
        doc = {"version": project_state.STATE_VERSION, "preset": "Landslides",
               "bands": "nonsense", "classes": [["a"]], "colour_of_sky": "blue",
               "results": {"probability": 3}, "raster": {"name": "no id"}}
        project.writeEntry(project_state.SCOPE, project_state.KEY, json.dumps(doc))
        assert dock.restore_from_project() == []
        assert dock.preset_name() == "Landslides"  # the valid entry is applied
        log = dock.log_text()
        for key in ("bands", "classes", "raster"):
            assert f"entry '{key}' is malformed" in log
        assert "Unknown TerraSeg project entry 'colour_of_sky'" in log
        assert "last results name no files" in log
        assert dock.last_results is None
    finally:
        close_panel(dock)


def test_dock_is_wide_enough_for_its_sections(qgis_iface, qgis_new_project) -> None:
    dock = make_panel(qgis_iface)
    try:
        scroll = dock.findChild(QScrollArea)
        body = scroll.widget()
        # at its narrowest, the dock still shows every section without sideways scrolling
        dock.resize(dock.minimumSizeHint().width(), 600)
        dock.show()
        dock.resize(dock.minimumSize().width(), 600)
        from qgis.PyQt.QtWidgets import QApplication
        QApplication.processEvents()
        assert scroll.viewport().width() >= body.minimumSizeHint().width()
        assert scroll.horizontalScrollBar().maximum() == 0
        assert dock.minimumSizeHint().width() >= body.minimumSizeHint().width()
        # ... and is narrow enough to sit beside the map on a laptop screen: in the
        # landslide screenshot a body 589 px wide (long check-box texts) overflowed a
        # 480 px dock
        dock.set_preset("Landslides")
        QApplication.processEvents()
        assert body.minimumSizeHint().width() <= 460
    finally:
        close_panel(dock)
