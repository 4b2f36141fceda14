"""What the panel tells the analyst (issue 10): its own words, not the command line's.

- Engine errors name command-line flags ("Fix: Check the --model path"); the panel shows
  them as its own controls (``worker_errors.PANEL_CONTROLS``), checked on the engine's
  real messages and on a real error from the worker.
- A disabled Train, Predict or Export button says why in its tooltip.
- Replacing an export asks once (the file dialog does not ask as well), and the job then
  carries ``overwrite``; a 'No' starts nothing.
- The area table's percentages are shares of the classified area; nodata is a row apart.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers.paths import ROOT
from helpers.qgis_support import needs_engine
from osgeo import gdal, osr
from qgis.core import Qgis, QgsProject, QgsRasterLayer
from qgis.PyQt.QtWidgets import QFileDialog

LEGACY_MODEL = ROOT / "tests" / "data" / "legacy_v0_1" / "legacy_patch.tsm"  # 4 bands, 2 classes
FLAG = re.compile(r"--[a-z]")


def write_raster(path: Path, bands: list[list[list[int]]], pixel_m: float = 10.0) -> Path:
    """A uint8 GeoTIFF in EPSG:32632 (one list of rows per band)."""
    rows, cols = len(bands[0]), len(bands[0][0])
    ds = gdal.GetDriverByName("GTiff").Create(str(path), cols, rows, len(bands), gdal.GDT_Byte)
    ds.SetGeoTransform((500000.0, pixel_m, 0.0, 5200000.0, 0.0, -pixel_m))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    ds.SetProjection(srs.ExportToWkt())
    for i, band in enumerate(bands, start=1):
        ds.GetRasterBand(i).WriteRaster(0, 0, cols, rows, bytes(v for row in band for v in row))
    ds.FlushCache()
    ds = None
    return path


def class_raster(path: Path) -> Path:
    """10 x 10 px of 10 m: 30 px nodata (0), 50 px class 1, 20 px class 2."""
    values = [0] * 30 + [1] * 50 + [2] * 20
    return write_raster(path, [[values[r * 10:(r + 1) * 10] for r in range(10)]])


@pytest.fixture
def dock(qgis_iface, qgis_new_project):
    from terraseg.plugin.dock import TerraSegDock

    panel = TerraSegDock(qgis_iface)
    panel.auto_answer = True
    yield panel
    panel.shutdown()
    panel.deleteLater()
    QgsProject.instance().removeAllMapLayers()


LEVELS = (Qgis.MessageLevel.Critical, Qgis.MessageLevel.Warning, Qgis.MessageLevel.Info)


def bar_counts(iface) -> dict[Any, int]:
    return {level: len(iface.messageBar().get_messages(level)) for level in LEVELS}


def bar_messages_since(iface, counts: dict[Any, int]) -> list[str]:
    """Messages pushed to the message bar since ``counts`` (any level)."""
    bar = iface.messageBar()
    return [m for level in LEVELS for m in bar.get_messages(level)[counts[level]:]]


# ----------------------------------------------------------------------------------------
# engine flags in the panel's words
# ----------------------------------------------------------------------------------------
def test_every_option_the_panel_sets_has_panel_wording(dock) -> None:
    from terraseg.plugin import jobs
    from terraseg.plugin.worker_errors import PANEL_CONTROLS, panel_wording
    from terraseg.protocol.options import option_specs

    dock.arch_combo.setCurrentText("unet_small")  # tile networks add --tile-size
    panel_keys = set(dock.training_options())
    panel_keys |= {"raster", "labels", "class_field", "class_map", "bands", "init_model",
                   "dem", "slope_from_dem", "extra_raster"}  # start_training's job fields
    assert panel_keys <= set(jobs.train_job(out="m.tsm", **dict.fromkeys(panel_keys, "x"))
                             ["args"])
    engine_flags = {spec.job_key: spec.flag for spec in option_specs() if spec.cli}
    exposed = {engine_flags[k] for k in panel_keys if k in engine_flags}
    assert {"bands", "class-field", "tile-size", "epochs", "model"} <= exposed
    missing = sorted(flag for flag in exposed if flag not in PANEL_CONTROLS)
    assert not missing, f"engine options the panel sets, without panel wording: {missing}"
    for flag, words in PANEL_CONTROLS.items():
        for command, text in words.items():
            assert "--" not in text and text, (flag, command)
            rewritten = panel_wording(f"Pass --{flag} 5, or leave out --{flag}.", command)
            assert not FLAG.search(rewritten), rewritten
            assert text in rewritten
    assert panel_wording("Use --model unet_small.", "train") == (
        "Use the Architecture in Train = unet_small.")
    assert "Load model…" in panel_wording("Check --model.", "predict")
    assert panel_wording("e.g. --min-area 500.", "vectorise") == (
        "e.g. the Minimum area in Export = 500.")
    assert panel_wording("e.g. --min-area 500.", "predict") == (
        "e.g. the Minimum region in Predict's clean-up = 500.")
    # a flag the panel does not offer is still no flag
    assert panel_wording("Use --k 2 or more.", "cv") == (
        "Use the engine's 'k' setting (not in the panel) = 2 or more.")


def test_engine_messages_read_in_panel_words(tmp_path: Path) -> None:
    """The engine's own errors (standard-library protocol code) reworded."""
    from terraseg.plugin.worker_errors import panel_wording
    from terraseg.protocol.errors import ConfigError, ModelFileError
    from terraseg.protocol.model_header import read_safetensors_header
    from terraseg.protocol.options import SPEC_BY_JOB_KEY, check_value

    with pytest.raises(ModelFileError) as missing:
        read_safetensors_header(tmp_path / "gone.tsm")
    assert "--model" in missing.value.hint
    hint = panel_wording(missing.value.hint, "predict")
    assert hint == ("Check the model file's path (the model file chosen with Load model… in "
                    "Data & task).")
    with pytest.raises(ConfigError) as bad_lr:
        check_value(SPEC_BY_JOB_KEY["lr"], -1.0)
    text = panel_wording(f"{bad_lr.value.message} {bad_lr.value.hint}", "train")
    assert "--lr" in bad_lr.value.message and not FLAG.search(text)
    assert "the Learning rate in Train > Advanced" in text


@needs_engine
def test_worker_error_is_shown_in_panel_words(dock, qgis_iface, tmp_path: Path) -> None:
    """A real engine error: a 4-band model on a 3-band raster (its hint names --bands)."""
    three = [[[(7 * b + 3 * r + c) % 200 for c in range(8)] for r in range(8)] for b in range(3)]
    raster = QgsRasterLayer(str(write_raster(tmp_path / "three.tif", three)), "three", "gdal")
    assert raster.isValid()
    QgsProject.instance().addMapLayer(raster)
    model = tmp_path / "legacy.tsm"
    shutil.copy(LEGACY_MODEL, model)
    dock.set_raster_layer(raster)
    assert dock.load_model(model) is not None
    before = bar_counts(qgis_iface)
    assert not dock.predict("whole", wait=True, timeout_s=120)
    kind, message, hint = dock.last_error
    assert kind == "RasterError", dock.last_error
    assert "3 band(s)" in message
    assert hint.startswith("Use a raster with the model's bands, or set the Bands table in "
                           "Data & task with 4 band numbers"), hint
    shown = [dock.status_label.text(), dock.log_text(), *bar_messages_since(qgis_iface, before)]
    assert any("Bands table" in text for text in shown[2:])  # the message bar
    for text in shown:
        assert not FLAG.search(text), text
    assert "Bands table" in dock.status_label.text()


# ----------------------------------------------------------------------------------------
# disabled buttons
# ----------------------------------------------------------------------------------------
def test_disabled_buttons_say_why(dock, scene, tmp_path: Path) -> None:
    from terraseg.plugin.panel_jobs import BUTTON_HELP

    def tip(name: str) -> str:
        button = getattr(dock, name)
        return ("enabled: " if button.isEnabled() else "") + button.toolTip()

    # a button's own tooltip stays what it does (Quick map's is set where it is built)
    assert dock.quick_button.property("terraseg_help").startswith("Fits a random forest")
    assert tip("predict_button").startswith("Disabled: Choose a raster layer")
    assert tip("evaluate_button") == tip("predict_button")  # same needs as Predict
    assert "No model yet" in tip("predict_button")
    assert tip("train_button") == ("Disabled: Choose a raster layer under Data & task. "
                                   "Choose or create a label layer under Labels.")
    for name in ("vectorise_button", "areas_button"):
        assert tip(name).startswith("Disabled: No prediction yet: Predict first")
    raster = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    QgsProject.instance().addMapLayer(raster)
    dock.set_raster_layer(raster)
    assert tip("predict_button") == ("Disabled: No model yet: train one, or load one "
                                     "(Load model… in Data & task).")
    assert tip("train_button") == "Disabled: Choose or create a label layer under Labels."
    assert tip("quick_button") == tip("train_button")  # same needs as Train
    model = tmp_path / "legacy.tsm"
    shutil.copy(LEGACY_MODEL, model)
    dock.load_model(model)
    assert tip("predict_button") == "enabled: " + BUTTON_HELP["predict_button"]
    assert tip("evaluate_button").startswith("enabled: ")
    dock.job, dock.job_kind = object(), "train"  # a running job, as _start_job sets it
    try:
        dock._update_buttons()
        assert tip("predict_button") == ("Disabled: A TerraSeg job (train) is running: wait "
                                         "for it or cancel it.")
    finally:
        dock.job, dock.job_kind = None, None
    dock._update_buttons()
    assert dock.predict_button.isEnabled()


# ----------------------------------------------------------------------------------------
# one overwrite question; area percentages
# ----------------------------------------------------------------------------------------
@pytest.fixture
def exporting(dock, monkeypatch, tmp_path: Path):
    """The panel after a prediction (a hand-made class map), dialogs and questions counted."""
    model = tmp_path / "legacy.tsm"
    shutil.copy(LEGACY_MODEL, model)
    classes = class_raster(tmp_path / "classes.tif")
    dock.last_model = str(model)
    dock.model_meta = None
    dock.last_results = {"classes": str(classes), "folder": str(tmp_path),
                         "model": str(model), "class_list": []}
    dock._update_buttons()
    calls: dict[str, list[Any]] = {"dialogs": [], "questions": []}

    def save_name(_parent, title, default, _filter, **kwargs):
        calls["dialogs"].append(kwargs.get("options"))
        return str(Path(default)), ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_name)
    confirm = dock._confirm

    def counted(title: str, text: str) -> bool:
        calls["questions"].append(text)
        return confirm(title, text)

    monkeypatch.setattr(dock, "_confirm", counted)
    return calls


@needs_engine
def test_replacing_an_export_asks_once(dock, exporting, tmp_path: Path) -> None:
    target = tmp_path / "classes.gpkg"
    target.write_bytes(b"old")
    dock.auto_answer = False
    assert not dock.export_polygons()
    assert len(exporting["questions"]) == 1 and str(target) in exporting["questions"][0]
    assert "vectorise" not in dock.last_jobs and target.read_bytes() == b"old"
    dock.auto_answer = True
    assert dock.export_polygons(wait=True, timeout_s=120), dock.log_text()
    assert len(exporting["questions"]) == 2  # once per click
    assert dock.last_jobs["vectorise"]["args"]["overwrite"] is True
    assert target.stat().st_size > 1000  # replaced by the engine's GeoPackage
    for options in exporting["dialogs"]:
        assert options & QFileDialog.Option.DontConfirmOverwrite


@needs_engine
def test_area_percentages_are_of_the_classified_area(dock, exporting, tmp_path: Path) -> None:
    assert dock.export_areas(wait=True, timeout_s=120), dock.log_text()
    assert exporting["questions"] == []  # nothing to replace: no question
    table = dock.areas_table
    header = [table.horizontalHeaderItem(c).text() for c in range(3)]
    assert header == ["Class", "Area (m²)", "% of classified"]
    rows = [[table.item(r, c).text() for c in range(3)] for r in range(table.rowCount())]
    assert rows == [["sealed", "5,000", "71.43"], ["unsealed", "2,000", "28.57"],
                    ["nodata (not classified)", "3,000", "excluded"]]
    assert table.item(2, 0).font().italic()
    assert dock.last_exports["nodata_m2"] == pytest.approx(3000.0)
    assert dock.areas_note.text() == (
        "% = share of the classified area (7,000 m²); nodata (3,000 m², 30.0 % of the "
        "raster) is excluded. The CSV's 'percent' column means the same.")
    dock._show_area_rows(dock.last_exports["area_rows"], 0.0)  # a map without nodata
    assert table.rowCount() == 2
    assert dock.areas_note.text().startswith("% = share of the classified area (7,000 m²); "
                                             "the class map has no nodata pixels.")
    csv = (tmp_path / "areas.csv").read_text().splitlines()
    assert csv[0].split(",")[-1] == "percent" and csv[1].endswith(",71.4286")


def test_replacing_a_label_layer_asks_once(dock, monkeypatch, tmp_path: Path) -> None:
    """An unsaved project: the save dialog does not ask; the panel asks once, then replaces."""
    target = tmp_path / "labels.gpkg"
    target.write_bytes(b"old")
    dialogs: list[Any] = []
    questions: list[str] = []

    def save_name(_parent, _title, _default, _filter, **kwargs):
        dialogs.append(kwargs.get("options"))
        return str(target), ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_name)
    confirm = dock._confirm
    monkeypatch.setattr(dock, "_confirm",
                        lambda title, text: questions.append(text) or confirm(title, text))
    dock.auto_answer = False
    assert dock.new_label_layer() is None and target.read_bytes() == b"old"
    dock.auto_answer = True
    layer = dock.new_label_layer()
    assert layer is not None and layer.isValid() and dock.label_layer() is layer
    assert len(dialogs) == 2 and len(questions) == 2  # one question per click
    assert all(options & QFileDialog.Option.DontConfirmOverwrite for options in dialogs)
    assert target.read_bytes()[:16] == b"SQLite format 3\x00"
