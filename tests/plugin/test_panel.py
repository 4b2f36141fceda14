"""The TerraSeg dock panel in QGIS, driven like an analyst would, with the real engine worker.

Runs in QGIS's Python (``make test-plugin``); the engine (``.venv-engine``) is only ever
reached through the plugin's worker processes. One scene, one workflow: raster and bands,
preset, label layer, drawn polygons and their areas, training, cancel and crash, retraining
from the last model, prediction, loading a model, and the planning exports.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from helpers.qgis_support import (
    BOX_AREA_M2,
    PIXEL_M,
    label_boxes,
    make_scene,
    needs_engine,
    pixel_box,
    raster_values,
    truth,
)
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
    QgsVectorLayerUtils,
)

FAST_TRAINING = {"epochs": 3, "patch_size": 23, "block_size": 5, "blocks": "1,1,1",
                 "lr": 0.01, "samples_per_epoch": 512, "patience": 10}


def process_events(seconds: float = 0.0) -> None:
    end = time.monotonic() + seconds
    while True:
        QgsApplication.processEvents()
        if time.monotonic() >= end:
            return
        time.sleep(0.02)


def wait_until(condition, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        process_events(0.05)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def critical_messages(iface) -> list[str]:
    return iface.messageBar().get_messages(Qgis.MessageLevel.Critical)


def test_presets_and_band_roles() -> None:
    from terraseg.plugin import presets

    assert [c.name for c in presets.PRESETS[presets.SEALED].classes] == ["sealed", "unsealed"]
    assert presets.class_map(presets.PRESETS[presets.LANDSLIDES].classes) == (
        "landslide=landslide,no landslide=no landslide")
    roles = presets.default_band_roles(["Red", "green", "Blue", "near infrared", ""])
    assert [r for r, _ in roles] == ["red", "green", "blue", "nir", "band_5"]
    assert presets.bands_spec([(1, "red", True), (2, "green", False), (4, "nir", True)]) == (
        "red=1,nir=4")
    with pytest.raises(ValueError):
        presets.bands_spec([(1, "red", True), (2, "red", True)])
    assert presets.validate_classes([presets.ClassDef("a=b", "#000000"),
                                     presets.ClassDef("c", "#000000")])
    assert presets.preset_for_classes(["Landslide", "no landslide"]) == presets.LANDSLIDES


def test_modelinfo_refuses_foreign_files(tmp_path: Path) -> None:
    from terraseg.plugin import modelinfo

    bad = tmp_path / "x.tsm"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(modelinfo.ModelInfoError):
        modelinfo.read_model_metadata(bad)
    with pytest.raises(modelinfo.ModelInfoError):
        modelinfo.read_model_metadata(tmp_path / "missing.tsm")


def test_missing_engine_is_reported(qgis_iface, qgis_new_project, monkeypatch) -> None:
    from terraseg.plugin import dock as dock_module

    monkeypatch.setattr(dock_module, "find_engine", lambda: None)
    dock = dock_module.TerraSegDock(qgis_iface)
    try:
        assert not dock.refresh_engine_status()
        assert "not found" in dock.engine_label.text()
        # nothing to train on yet: refused with a reason, no job
        assert not dock.start_training()
        assert "raster" in dock.status_label.text().lower()
        assert not dock._start_job("predict", {"command": "env", "args": {}},
                                   lambda _r: None)
        assert "engine was not found" in dock.status_label.text()
        assert "Set up engine" in dock.status_label.text()
        assert not dock.is_busy()
    finally:
        dock.shutdown()
        dock.deleteLater()


@pytest.mark.slow  # the analyst's whole path, several trainings: ~60-120 s on 2 CPU cores
@needs_engine
def test_panel_workflow(qgis_iface, qgis_new_project, qgis_canvas, tmp_path: Path) -> None:
    from terraseg import classFactory
    from terraseg.plugin import modelinfo, presets, results

    project = QgsProject.instance()
    # --- plugin loads: action, dock ----------------------------------------------------
    # another test's session fixture may have registered the provider already
    registered_before = QgsApplication.processingRegistry().providerById("terraseg")
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    try:
        dock = plugin.dock
        assert dock is not None and plugin.action is not None
        registry = QgsApplication.processingRegistry()
        assert plugin.provider is not None
        assert registry.providerById(plugin.provider.id()) is not None
        provider_id = plugin.provider.id()
        assert dock.isHidden() and not plugin.action.isChecked()
        plugin.action.setChecked(True)  # the toolbar button shows the dock
        assert not dock.isHidden()
        dock.auto_answer = True
        assert dock.refresh_engine_status(), dock.engine_label.text()
        assert "found" in dock.engine_label.text().lower()

        # --- step 3: raster, bands, preset -------------------------------------------------
        raster_path = make_scene(tmp_path)
        raster = QgsRasterLayer(str(raster_path), "scene", "gdal")
        assert raster.isValid()
        project.addMapLayer(raster)
        dock.set_raster_layer(raster)
        assert dock.raster_layer().id() == raster.id()
        assert dock.bands_spec() == "red=1,green=2,blue=3,nir=4"
        dock.set_band_row(4, include=False)
        assert dock.bands_spec() == "red=1,green=2,blue=3"
        dock.set_band_row(4, role="nir", include=True)
        dock.set_preset(presets.LAND_COVER)
        dock.add_class("meadow", "#00ff00")
        assert "meadow" in [c.name for c in dock.classes()]
        dock.set_preset(presets.SEALED)
        assert [c.name for c in dock.classes()] == ["sealed", "unsealed"]
        assert [c.colour for c in dock.classes()] == ["#d7191c", "#1a9641"]
        assert set(dock.palette_buttons) == {"sealed", "unsealed"}

        # --- step 4: label layer, drawing, per-class areas ------------------------------------
        labels = dock.new_label_layer(tmp_path / "labels.gpkg")
        assert labels is not None and labels.isValid()
        assert (tmp_path / "labels.gpkg").is_file()
        assert project.mapLayer(labels.id()) is not None
        assert labels.crs().authid() == "EPSG:32632"
        renderer = labels.renderer()
        assert renderer.type() == "categorizedSymbol"
        assert {c.value() for c in renderer.categories()} == {"sealed", "unsealed"}
        assert dock.new_label_layer(tmp_path / "labels.gpkg") is not None  # asked: yes
        labels = dock.label_layer()

        assert dock.start_drawing("sealed")
        assert labels.isEditable()
        qgis_iface.actionAddFeature().trigger.assert_called()
        idx = labels.fields().indexOf("class")
        assert labels.defaultValueDefinition(idx).expression() == "'sealed'"
        from qgis.core import QgsEditFormConfig
        assert labels.editFormConfig().suppress() == QgsEditFormConfig.SuppressOn
        boxes = label_boxes()
        for name in ("sealed", "unsealed"):
            dock.select_class(name)  # palette click while drawing
            assert labels.defaultValueDefinition(idx).expression() == f"'{name}'"
            for geom in boxes[name]:
                # what QGIS's add-feature tool does with a drawn polygon
                feature = QgsVectorLayerUtils.createFeature(labels, geom, {},
                                                            labels.createExpressionContext())
                assert feature.attribute("class") == name
                assert labels.addFeature(feature)
            process_events(0.1)
            expected = len(boxes[name]) * BOX_AREA_M2
            assert dock.class_area_m2[name] == pytest.approx(expected, rel=1e-9)
        area_texts = {dock.area_table.item(r, 0).text(): dock.area_table.item(r, 2).text()
                      for r in range(dock.area_table.rowCount())}
        assert area_texts == {"sealed": "57,600", "unsealed": "57,600"}
        dock.stop_drawing()  # offers to save: auto-answered yes
        assert not labels.isModified()
        on_disk = QgsVectorLayer(f"{tmp_path / 'labels.gpkg'}|layername=labels", "disk", "ogr")
        assert on_disk.featureCount() == 18
        # deleting a polygon updates the areas
        labels.startEditing()
        fid = next(labels.getFeatures()).id()
        deleted_class = labels.getFeature(fid)["class"]
        labels.deleteFeature(fid)
        process_events(0.1)
        assert dock.class_area_m2[deleted_class] == pytest.approx(8 * BOX_AREA_M2)
        labels.rollBack()
        process_events(0.1)
        assert dock.class_area_m2[deleted_class] == pytest.approx(9 * BOX_AREA_M2)

        # --- step 5: train through the real worker -------------------------------------------
        dock.set_training_options(**FAST_TRAINING)
        t0 = time.monotonic()
        assert dock.start_training(wait=True, timeout_s=120), dock.log_text()
        assert time.monotonic() - t0 < 90
        model1 = Path(dock.last_model)
        assert model1.is_file() and model1.parent == tmp_path / "models"
        assert model1.name.endswith("_sealed.tsm")
        assert len(dock.epoch_metrics) == 3
        assert dock.metrics_table.rowCount() == 3
        assert "val_loss" in dock.epoch_metrics[-1][1]
        assert "Validation: accuracy" in dock.train_summary.text()
        assert dock.device and "Device:" in dock.device_label.text()
        assert dock.device.split()[0] in dock.device_label.text()
        train_args = dock.last_jobs["train"]["args"]
        assert train_args["class_field"] == "class"
        assert train_args["class_map"] == "sealed=sealed,unsealed=unsealed"
        assert train_args["bands"] == "red=1,green=2,blue=3,nir=4"
        assert "init_model" not in train_args
        assert "cache_dir" not in train_args  # the engine's default cache, reused later
        meta = modelinfo.read_model_metadata(model1)
        assert [c["name"] for c in meta["classes"]] == ["sealed", "unsealed"]

        # --- step 6: predict the whole raster --------------------------------------------------
        assert dock.predict("whole", wait=True, timeout_s=120), dock.log_text()
        group = project.layerTreeRoot().findGroup(results.GROUP_NAME)
        assert group is not None
        layers = [node.layer() for node in group.findLayers()]
        assert len(layers) == 2
        prob_layer, cls_layer = dock.last_results["layers"]
        for layer in (prob_layer, cls_layer):
            assert layer.isValid()
            assert layer.crs().authid() == "EPSG:32632"
            assert layer.extent() == raster.extent()
            assert Path(layer.source()).parent.parent == model1.parent / f"{model1.stem}_results"
        assert cls_layer.renderer().type() == "paletted"
        assert [c.label for c in cls_layer.renderer().classes()] == ["sealed", "unsealed"]
        assert prob_layer.renderer().type() == "singlebandpseudocolor"
        _, cls_values = raster_values(dock.last_results["classes"])
        flat = [int(v) for row in cls_values for v in row]
        assert set(flat) <= {1, 2}
        agreement = sum(int(cls_values[r][c]) == truth(r, c) for r in range(96)
                        for c in range(96)) / (96 * 96)
        print(f"class agreement with truth: {agreement:.3f}")
        assert agreement >= 0.75, agreement
        _, prob_values = raster_values(dock.last_results["probability"])
        assert all(0.0 <= v <= 1.0 for row in prob_values for v in row)

        # canvas extent (in another CRS: EPSG:3857) -> pixel window of the raster
        mercator = QgsCoordinateReferenceSystem("EPSG:3857")
        to_mercator = QgsCoordinateTransform(raster.crs(), mercator, project)
        qgis_canvas.setDestinationCrs(mercator)
        qgis_canvas.setExtent(to_mercator.transformBoundingBox(
            QgsRectangle(500100, 5199500, 500400, 5199800)))
        window = dock.canvas_window(raster)
        assert window is not None and window[2] < 96 and window[3] < 96
        assert dock.predict("canvas", wait=True, timeout_s=120), dock.log_text()
        canvas_cls = dock.last_results["layers"][1]
        assert (canvas_cls.width(), canvas_cls.height()) == (window[2], window[3])
        assert dock.last_jobs["predict"]["args"]["window"] == list(window)
        assert len(group.findLayers()) == 4

        # --- nothing lost: cancel, then a killed worker ----------------------------------------
        models_before = sorted((tmp_path / "models").glob("*.tsm"))
        dock.set_training_options(epochs=200, patience=200)
        assert dock.start_training()
        pending = Path(dock.pending_model)
        wait_until(lambda: dock.epoch_metrics, 90, "the first epoch's metrics")
        pid = dock.job.process_id()
        assert pid > 0 and process_alive(pid)
        dock.cancel_training()
        assert dock.wait_for_job(30)
        assert not process_alive(pid)
        assert dock.last_error is not None and dock.last_error[0] == "CancelledError"
        assert not pending.exists()
        assert sorted((tmp_path / "models").glob("*.tsm")) == models_before
        assert Path(dock.last_model) == model1

        n_critical = len(critical_messages(qgis_iface))
        assert dock.start_training()
        wait_until(lambda: dock.job is not None and dock.job.process_id() > 0, 30,
                   "the worker to start")
        os.kill(dock.job.process_id(), signal.SIGKILL)
        assert dock.wait_for_job(30)
        assert dock.last_error[0] == "WorkerCrashed"
        critical = critical_messages(qgis_iface)[n_critical:]
        assert critical and "WorkerCrashed" in critical[-1]
        assert "memory" in critical[-1]  # the hint
        assert "WorkerCrashed" in dock.status_label.text()
        assert labels.isValid() and labels.featureCount() == 18
        assert sorted((tmp_path / "models").glob("*.tsm")) == models_before

        # --- step 7: retrain from the last model (fine-tuning, same cache) ---------------------
        dock.set_training_options(epochs=2, patience=10)
        assert dock.start_training(wait=True, timeout_s=120), dock.log_text()
        model2 = Path(dock.last_model)
        assert model2 != model1 and model2.is_file()
        assert dock.last_jobs["train"]["args"]["init_model"] == str(model1)
        assert modelinfo.read_model_metadata(model2)["training"]["init_model"]
        dock.set_training_options(from_scratch=True, epochs=1)
        assert dock.start_training(wait=True, timeout_s=120), dock.log_text()
        assert "init_model" not in dock.last_jobs["train"]["args"]
        dock.set_training_options(from_scratch=False)

        # --- step 8: load an existing model: bands, classes, preset ---------------------------
        dock.set_preset(presets.LANDSLIDES)
        dock.set_band_row(1, role="x", include=False)
        meta1 = dock.load_model(model1)
        assert meta1 is not None and dock.last_model == str(model1)
        assert dock.preset_name() == presets.SEALED
        assert [c.name for c in dock.classes()] == ["sealed", "unsealed"]
        assert dock.bands_spec() == "red=1,green=2,blue=3,nir=4"
        assert dock.patch_spin.value() == 23
        assert modelinfo.compatibility_problems(meta1, 4, (10.0, 10.0)) == []
        assert modelinfo.compatibility_problems(meta1, 4, (30.0, 30.0))
        assert modelinfo.compatibility_problems(meta1, 3, (10.0, 10.0))

        # a model trained on 10 m pixels, run on a 30 m raster: asks first (answer: no)
        from osgeo import gdal

        coarse_path = tmp_path / "coarse.tif"
        gdal.Translate(str(coarse_path), str(raster_path), xRes=30, yRes=30)
        coarse = QgsRasterLayer(str(coarse_path), "coarse", "gdal")
        project.addMapLayer(coarse)
        dock.set_raster_layer(coarse)
        dock.auto_answer = False
        n_predict = len(list(model1.parent.glob(f"{model1.stem}_results/*")))
        assert not dock.predict("whole")
        assert not dock.is_busy()
        assert "differs more than 2x" in dock.log_text()
        assert len(list(model1.parent.glob(f"{model1.stem}_results/*"))) == n_predict
        dock.auto_answer = True
        dock.set_raster_layer(raster)
        assert dock.bands_spec() == "red=1,green=2,blue=3,nir=4"

        # extent of a layer
        assert dock.predict("layer", layer=labels, wait=True, timeout_s=120), dock.log_text()
        layer_cls = dock.last_results["layers"][1]
        assert layer_cls.width() <= 96 and layer_cls.height() <= 96
        assert "extent_layer" in dock.last_jobs["predict"]["args"]
        assert dock.predict("whole", wait=True, timeout_s=120)

        # --- step 9: exports for planning -------------------------------------------------------
        polys = tmp_path / "exports" / "polygons.gpkg"
        assert dock.export_polygons(polys, min_area=200.0, wait=True, timeout_s=60), \
            dock.log_text()
        assert polys.is_file()
        poly_layer = dock.last_exports["polygons_layer"]
        assert poly_layer.isValid() and poly_layer.featureCount() > 0
        assert project.mapLayer(poly_layer.id()) is not None
        assert {f["class_name"] for f in poly_layer.getFeatures()} <= {"sealed", "unsealed"}
        mtime = polys.stat().st_mtime_ns
        dock.auto_answer = False  # existing output, the analyst says no
        assert not dock.export_polygons(polys, min_area=0.0)
        assert polys.stat().st_mtime_ns == mtime
        dock.auto_answer = True

        zones = QgsVectorLayer("Polygon?crs=EPSG:32632&field=name:string", "districts",
                               "memory")
        feats = []
        for name, (c0, c1) in (("west", (0, 48)), ("east", (48, 96))):
            f = QgsFeature(zones.fields())
            f.setGeometry(pixel_box(0, c0, 96, c1))
            f["name"] = name
            feats.append(f)
        zones.dataProvider().addFeatures(feats)
        project.addMapLayer(zones)
        csv_path = tmp_path / "exports" / "areas.csv"
        assert dock.export_areas(csv_path, zones_layer=zones, zone_field="name", wait=True,
                                 timeout_s=60), dock.log_text()
        assert csv_path.is_file()
        assert (tmp_path / "exports" / "areas_zones.csv").is_file()
        assert (tmp_path / "exports" / "areas_zones.gpkg").is_file()
        rows = dock.last_exports["area_rows"]
        assert {r["class_name"] for r in rows} == {"sealed", "unsealed"}
        assert sum(r["area_m2"] for r in rows) == pytest.approx(96 * 96 * PIXEL_M ** 2)
        assert sum(r["percent"] for r in rows) == pytest.approx(100.0, abs=0.01)
        assert dock.areas_table.rowCount() == 2
        zones_layer = dock.last_exports["zones_layer"]
        assert zones_layer.isValid() and zones_layer.featureCount() == 2
        assert project.mapLayer(zones_layer.id()) is not None
        names = zones_layer.fields().names()
        assert "sealed_m2" in names and "unsealed_pct" in names
        for f in zones_layer.getFeatures():
            assert f["sealed_m2"] + f["unsealed_m2"] == pytest.approx(48 * 96 * 100.0)
        assert not critical_messages(qgis_iface)[n_critical + 1:]
    finally:
        plugin.unload()
    assert plugin.dock is None and plugin.provider is None
    # the plugin removed what it added, and only that
    assert QgsApplication.processingRegistry().providerById(provider_id) is registered_before
