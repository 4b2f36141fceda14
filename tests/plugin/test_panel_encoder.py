"""Train's Pretrained encoder in the panel (issue 12, seed 004), in real QGIS.

'Pretrain on this raster' runs the real engine worker's ``pretrain`` job (SimCLR) on the
synthetic scene (96x96, 4 bands, EPSG:32632) and fills the Encoder file field; Train from
scratch then starts a ``unet_resnet18`` from it (the model file records the encoder), and
fine-tuning that model sends no encoder (the engine refuses both starts together). Without
a worker: the group is disabled for networks without a ResNet encoder, a missing encoder
file is refused before any job, and the project keeps the group's values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.qgis_support import label_boxes, needs_engine
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer, QgsVectorLayerUtils

pytestmark = needs_engine

# a tiny unet_resnet18: base width 8 (the recipe's option without a widget), 32 px tiles
TINY_RESNET = {"model": "unet_resnet18", "tile_size": 32, "epochs": 2, "patience": 2,
               "samples_per_epoch": 16, "batch_size": 8, "accelerator": "cpu"}
TINY_PRETRAIN = {"tile_size": 32, "batch_size": 4, "samples_per_epoch": 8}
BASE_WIDTH = 8


def _raster(scene) -> QgsRasterLayer:
    raster = QgsRasterLayer(str(scene.raster), "NC scene", "gdal")
    assert raster.isValid()
    QgsProject.instance().addMapLayer(raster)
    return raster


def _labelled(panel, folder: Path) -> QgsVectorLayer:
    """A label layer in ``folder`` (the models and encoders go next to it) with 4 polygons."""
    layer = panel.new_label_layer(folder / "labels.gpkg")
    assert layer is not None
    boxes = label_boxes()
    layer.startEditing()
    idx = layer.fields().indexOf("class")
    for name in ("sealed", "unsealed"):
        for geom in boxes[name][:2]:
            feature = QgsVectorLayerUtils.createFeature(layer, geom, {idx: name},
                                                        layer.createExpressionContext())
            assert layer.addFeature(feature)
    return layer


def _tiny_resnet(panel, monkeypatch, cache_dir: Path) -> None:
    panel.set_training_options(**TINY_RESNET, cache_dir=str(cache_dir))
    # no recipe sets a base width yet; the panel sends a recipe's options without widgets
    monkeypatch.setattr(panel, "recipe_job_options", lambda: {"base_width": BASE_WIDTH})


def test_encoder_names_and_disabled_states(panel, scene) -> None:
    from terraseg.plugin.panel_encoder import PRETRAIN_BUTTON_TEXT, encoder_of

    assert [encoder_of(m) for m in ("unet_resnet18", "fpn_resnet34", "deeplabv3plus_resnet50",
                                    "unet_small", "unet", "patch_cnn", "resnet18")] == [
        "resnet18", "resnet34", "resnet50", None, None, None, None]
    group = (panel.encoder_edit, panel.encoder_browse_button, panel.pretrain_epochs_spin,
             panel.freeze_spin, panel.encoder_lr_spin)
    assert (panel.pretrain_epochs_spin.value(), panel.freeze_spin.value(),
            panel.encoder_lr_spin.value()) == (30, 5, 0.1)
    button = panel.pretrain_button
    assert button.text() == PRETRAIN_BUTTON_TEXT
    panel.set_training_options(model="patch_cnn")
    assert not any(w.isEnabled() for w in group) and not button.isEnabled()
    for widget in group:
        assert widget.toolTip().startswith("Disabled: the patch_cnn network has no ResNet "
                                           "encoder"), widget.objectName()
    assert "Choose a raster layer" in button.toolTip()
    assert "no ResNet encoder to pretrain" in button.toolTip()
    panel.set_raster_layer(_raster(scene))
    panel.set_training_options(model="unet_resnet18")
    assert all(w.isEnabled() for w in group) and button.isEnabled()
    assert panel.encoder_edit.toolTip().startswith("A ResNet encoder pretrained on your pixels")
    assert button.toolTip().startswith("Pretrains the Architecture's ResNet encoder")
    panel.set_training_options(model="unet_small")
    assert not any(w.isEnabled() for w in group) and not button.isEnabled()
    assert "the unet_small network has no ResNet encoder" in panel.freeze_spin.toolTip()
    assert not panel.pretrain_encoder()  # called anyway: refused with the reason
    assert "no ResNet encoder to pretrain" in panel.status_label.text()
    assert "pretrain" not in panel.last_jobs


def test_missing_encoder_file_is_refused_before_any_job(panel, sent_jobs, scene,
                                                        tmp_path: Path) -> None:
    panel.set_raster_layer(_raster(scene))
    _labelled(panel, tmp_path)
    panel.set_training_options(model="unet_resnet18", tile_size=32)
    missing = tmp_path / "encoders" / "gone.tse"
    panel.encoder_edit.setText(str(missing))
    assert not panel.start_training()
    assert sent_jobs == []
    status = panel.status_label.text()
    assert f"The encoder file {missing} does not exist" in status
    assert "Train > Pretrained encoder" in status and "clear the field" in status
    # a network without a ResNet encoder ignores the field (its controls are disabled)
    panel.set_training_options(model="patch_cnn")
    assert panel.start_training()
    [job] = sent_jobs
    assert not {"encoder", "freeze_epochs", "encoder_lr"} & set(job["args"])
    assert "encoder gone.tse not used: patch_cnn has no ResNet encoder" in panel.log_text()


def test_pretrain_then_train_from_the_encoder_then_fine_tune(panel, scene, tmp_path: Path,
                                                             cache_dir: Path,
                                                             monkeypatch) -> None:
    from terraseg.plugin import modelinfo

    panel.set_raster_layer(_raster(scene))
    _labelled(panel, tmp_path)
    _tiny_resnet(panel, monkeypatch, cache_dir)
    panel.pretrain_epochs_spin.setValue(2)
    assert panel.pretrain_encoder(wait=True, timeout_s=120, **TINY_PRETRAIN), panel.log_text()
    args = panel.last_jobs["pretrain"]["args"]
    assert args["raster"] == [str(scene.raster)] and args["task"] == "ssl"
    assert (args["encoder"], args["base_width"], args["epochs"]) == ("resnet18", BASE_WIDTH, 2)
    assert args["bands"] == "red=1,green=2,blue=3,nir=4" and args["accelerator"] == "cpu"
    encoder = Path(panel.encoder_file())
    assert encoder.is_file() and encoder.parent == tmp_path / "encoders"
    assert encoder.name.startswith("NC_scene_ssl_") and encoder.suffix == ".tse"
    assert args["out"] == str(encoder)
    result = panel.last_pretrain
    assert result["epochs"] == 2 and len(result["loss_curve"]) == 2 and result["loss"] > 0
    log = panel.log_text()
    assert (f"Encoder pretrained: SimCLR loss {result['loss_curve'][0]:.4f} (epoch 1) -> "
            f"{result['loss']:.4f} over 2 epoch(s)") in log
    assert "pretraining epoch 2: loss" in log
    assert panel.metrics_table.rowCount() == 0  # SimCLR's epochs are not training's
    print(f"SimCLR loss {result['loss_curve']} in {result['seconds']} s")

    # a new network (no model yet) starts from the encoder
    panel.freeze_spin.setValue(1)
    panel.encoder_lr_spin.setValue(0.5)
    assert panel.start_training(wait=True, timeout_s=180), panel.log_text()
    args = panel.last_jobs["train"]["args"]
    assert (args["encoder"], args["freeze_epochs"], args["encoder_lr"]) == (
        str(encoder), 1, 0.5)
    assert "init_model" not in args and args["base_width"] == BASE_WIDTH
    first = Path(panel.last_model)
    assert first.is_file() and first.parent == tmp_path / "models"
    assert "(from scratch (no previous model), unet_resnet18) on NC scene" in panel.log_text()
    assert (f"; from encoder {encoder.name} (frozen for 1 epoch(s), then at 0.5 x the "
            "learning rate)") in panel.log_text()
    assert f"encoder initialised from {encoder.name}" in panel.log_text()  # the engine's
    record = modelinfo.read_model_metadata(first)["training"]["encoder"]
    assert Path(record["path"]) == encoder and record["encoder"] == "resnet18"
    assert record["pretraining"]["method"] == "simclr"
    assert record["pretraining"]["rasters"] == [str(scene.raster.resolve())]

    # fine-tuning the model: its weights (encoder included) are the start, no encoder sent
    assert panel.start_training(wait=True, timeout_s=180), panel.log_text()
    args = panel.last_jobs["train"]["args"]
    assert args["init_model"] == str(first)
    assert not {"encoder", "freeze_epochs", "encoder_lr"} & set(args)
    assert (f"encoder {encoder.name} not sent: the encoder is already in the last model "
            f"{first.name}") in panel.log_text()
    tuned = Path(panel.last_model)
    assert tuned != first and tuned.is_file()
    assert "encoder" not in (modelinfo.read_model_metadata(tuned)["training"] or {})


def test_project_keeps_the_encoder_settings(qgis_iface, panel, tmp_path: Path) -> None:
    from terraseg.plugin import project_state
    from terraseg.plugin.dock import TerraSegDock

    encoder = tmp_path / "scene.tse"
    encoder.write_bytes(b"stand-in")  # only its path is stored
    panel.set_encoder_options(str(encoder), freeze_epochs=8, encoder_lr=0.25,
                              pretrain_epochs=12)
    project = QgsProject.instance()
    try:
        panel.save_to_project(project)
        state = project_state.read_state(project)
        assert state.encoder == {"file": str(encoder), "freeze_epochs": 8, "encoder_lr": 0.25,
                                 "pretrain_epochs": 12}
        other = TerraSegDock(qgis_iface)  # reads the project's state on creation
        try:
            assert other.encoder_file() == str(encoder)
            assert (other.freeze_spin.value(), other.encoder_lr_spin.value(),
                    other.pretrain_epochs_spin.value()) == (8, pytest.approx(0.25), 12)
        finally:
            other.shutdown()
            other.deleteLater()
        encoder.unlink()
        problems = project_state.apply_state(panel, state, project)
        assert any(f"encoder file {encoder} is missing" in p for p in problems)
        assert panel.encoder_file() == str(encoder)  # kept: the analyst sees what is missing
    finally:  # a later panel on this project would restore the (missing) encoder file
        project.removeEntry(project_state.SCOPE, project_state.KEY)
