"""Panel section 'Prediction': model files, predict modes and result layers.

"Also map level N" (enabled when a Class hierarchy is chosen under Evaluate) adds the
job's ``hierarchy`` and ``level``: the engine also writes ``levelN_probability.tif`` and
``levelN_classes.tif`` (fine probabilities summed per group), and the panel adds the level's
class map to the results with its group names and colours.
"""

from __future__ import annotations

import datetime as _dt
import math
import tempfile
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import jobs, modelinfo, presets, results, settings
from .panel_common import TITLE, group_box, layer_filter, unique_path
from .presets import ClassDef


def _radius_spin(tooltip: str) -> QSpinBox:
    """A 0..64 px radius for the class-map clean-up (0 = off)."""
    spin = QSpinBox()
    spin.setRange(0, 64)
    spin.setSuffix(" px")
    spin.setToolTip(tooltip)
    return spin


class PredictPanelMixin:
    """Model loading, prediction modes and result layers of the panel.

    Mixed into :class:`~.dock.TerraSegDock`; relies on the panel's shared state and helpers
    (``_log``, ``_refuse``, ``_start_job``, ``_update_buttons``, ...).
    """

    def _build_predict_box(self) -> QWidget:
        box = group_box("Predict", "TerraSegPredictBox")
        layout = QVBoxLayout(box)
        self.area_canvas_radio = QRadioButton("Current map extent")
        self.area_layer_radio = QRadioButton("Extent of layer")
        self.area_whole_radio = QRadioButton("Whole raster")
        self.area_canvas_radio.setChecked(True)
        self.extent_combo = QgsMapLayerComboBox()
        self.extent_combo.setFilters(layer_filter("VectorLayer"))
        layout.addWidget(self.area_canvas_radio)
        row = QHBoxLayout()
        row.addWidget(self.area_layer_radio)
        row.addWidget(self.extent_combo, 1)
        layout.addLayout(row)
        layout.addWidget(self.area_whole_radio)
        form = QFormLayout()
        threshold_row = QHBoxLayout()
        self.threshold_check = QCheckBox("Own threshold")
        self.threshold_check.setToolTip(
            "Two-class models: the first class (e.g. landslide) where its probability is at "
            "least this. Unchecked: the threshold tuned on validation pixels at training.")
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.01, 0.99)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.5)
        self.threshold_spin.setEnabled(False)
        self.threshold_check.toggled.connect(self.threshold_spin.setEnabled)
        self.threshold_label = QLabel("model: –")
        threshold_row.addWidget(self.threshold_check)
        threshold_row.addWidget(self.threshold_spin)
        threshold_row.addWidget(self.threshold_label, 1)
        form.addRow("Threshold", threshold_row)
        level_row = QHBoxLayout()
        self.level_check = QCheckBox("Also map level")
        self.level_spin = QSpinBox()
        self.level_spin.setRange(1, 9)
        self.level_spin.setEnabled(False)
        self.level_check.toggled.connect(lambda _on: self._update_level_controls())
        self.level_note = QLabel()  # never widens the dock: a long file name is cut
        self.level_note.setSizePolicy(QSizePolicy.Policy.Ignored,
                                      QSizePolicy.Policy.Preferred)
        level_row.addWidget(self.level_check)
        level_row.addWidget(self.level_spin)
        level_row.addWidget(self.level_note, 1)
        form.addRow("Hierarchy", level_row)
        self._update_level_controls()
        clean = group_box("Clean-up of the class map", "TerraSegCleanupBox", collapsed=True)
        clean_form = QFormLayout(clean)
        self.opening_spin = _radius_spin("Opening of the first class with a disk of this "
                                         "radius: removes specks and slivers narrower than "
                                         "the disk.")
        clean_form.addRow("Opening radius", self.opening_spin)
        self.closing_spin = _radius_spin("Closing of the first class: fills gaps narrower "
                                         "than the disk.")
        clean_form.addRow("Closing radius", self.closing_spin)
        # its own name: Export's "Minimum area" (vectorise) is a different option
        self.min_region_spin = QDoubleSpinBox()
        self.min_region_spin.setRange(0.0, 1e9)
        self.min_region_spin.setDecimals(0)
        self.min_region_spin.setSingleStep(100.0)
        self.min_region_spin.setSuffix(" m²")
        self.min_region_spin.setToolTip("Regions smaller than this take their next most "
                                        "probable class (0 = keep all).")
        clean_form.addRow("Minimum region", self.min_region_spin)
        layout.addLayout(form)
        layout.addWidget(clean)
        buttons = QHBoxLayout()
        self.predict_button = QPushButton("Predict")
        self.predict_button.clicked.connect(lambda: self.predict(self._selected_predict_mode()))
        buttons.addWidget(self.predict_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.predict_summary = QLabel()
        self.predict_summary.setWordWrap(True)
        self.predict_summary.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.predict_summary)
        return box

    # ------------------------------------------------------------------------------------
    # Model files
    # ------------------------------------------------------------------------------------
    def _set_model(self, path: str) -> dict[str, Any] | None:
        self.last_model = path
        try:
            self.model_meta = modelinfo.read_model_metadata(path)
        except modelinfo.ModelInfoError as exc:
            self.model_meta = None
            self.model_label.setText(f"{Path(path).name} (unreadable: {exc})")
            return None
        note = modelinfo.checkpoint_note(path, self.model_meta)
        self.model_label.setText(Path(path).name + (f" ({note})" if note else ""))
        self.model_label.setToolTip(f"{path}\n{modelinfo.summary(self.model_meta, path)}\n\n"
                                    f"{modelinfo.MODEL_FILES_HELP}")
        self._show_model_threshold(self.model_meta)
        self._update_buttons()
        return self.model_meta

    def _show_model_threshold(self, meta: dict[str, Any]) -> None:
        two = len(modelinfo.model_classes(meta)) == 2
        self.threshold_check.setEnabled(two)
        tuned = (meta.get("threshold") or {}).get("value")
        if not two:
            self.threshold_check.setChecked(False)
            self.threshold_label.setText("model: most probable class (> 2 classes)")
        elif isinstance(tuned, int | float):
            self.threshold_label.setText(f"model: {tuned:.2f} (tuned on validation pixels)")
            if not self.threshold_check.isChecked():
                self.threshold_spin.setValue(float(tuned))
        else:
            self.threshold_label.setText("model: most probable class")

    def set_prediction_options(self, threshold: float | None = None, opening: int = 0,
                               closing: int = 0, min_area: float = 0.0) -> None:
        """Threshold (None: the model's) and clean-up of the class map for predictions."""
        self.threshold_check.setChecked(threshold is not None)
        if threshold is not None:
            self.threshold_spin.setValue(threshold)
        self.opening_spin.setValue(opening)
        self.closing_spin.setValue(closing)
        self.min_region_spin.setValue(min_area)

    def _update_level_controls(self) -> None:
        """'Also map level' follows the Class hierarchy chosen under Evaluate."""
        chooser = getattr(self, "hierarchy", None)  # Evaluate's box may not be built yet
        value = chooser() if chooser is not None and hasattr(self, "hierarchy_combo") else None
        self.level_check.setEnabled(bool(value))
        self.level_spin.setEnabled(bool(value) and self.level_check.isChecked())
        if not value:
            self.level_note.setText("(hierarchy: see Evaluate)")
            self.level_check.setToolTip("Choose a Class hierarchy under Evaluate first: then "
                                        "Predict can also map one of its coarser levels.")
            return
        from .panel_evaluate import hierarchy_levels

        levels = hierarchy_levels(value)
        self.level_spin.setMaximum(levels or 9)
        self.level_note.setText(f"of {self.hierarchy_name()}")
        self.level_note.setToolTip(str(value))
        self.level_check.setToolTip(
            f"Also write the map at this level of {self.hierarchy_name()} (1 = coarsest; "
            "probabilities of the model's classes summed per group) and add its class map "
            "to the results.")

    def set_level_map(self, level: int | None) -> None:
        """Also map this level of the Class hierarchy (None: only the model's classes)."""
        self.level_check.setChecked(level is not None)
        if level is not None:
            self.level_spin.setValue(level)
        self._update_level_controls()

    def level_options(self) -> dict[str, Any]:
        """The engine ``predict`` options ``hierarchy`` and ``level`` (empty: no level map).

        ``hierarchy`` is ``""`` when File… is chosen without a path (predict refuses).
        """
        if not (self.level_check.isEnabled() and self.level_check.isChecked()):
            return {}
        return {"hierarchy": self.hierarchy(), "level": self.level_spin.value()}

    def prediction_options(self) -> dict[str, Any]:
        """The engine ``predict`` options set in the panel (threshold, clean-up)."""
        opts: dict[str, Any] = {}
        if self.threshold_check.isChecked() and self.threshold_check.isEnabled():
            opts["threshold"] = round(self.threshold_spin.value(), 4)
        if self.opening_spin.value():
            opts["opening"] = self.opening_spin.value()
        if self.closing_spin.value():
            opts["closing"] = self.closing_spin.value()
        if self.min_region_spin.value() > 0:
            opts["min_area"] = self.min_region_spin.value()
        return opts

    def load_model(self, path: str | Path | None = None) -> dict[str, Any] | None:
        """Use an existing model file: fills bands, classes and preset from its metadata.

        Args:
            path: ``.tsm`` file; None asks with a file dialog.

        Returns:
            The model metadata, or None when cancelled or unreadable.
        """
        if path is None:
            start = str(settings.get(settings.MODELS_DIR, "") or Path.home())
            chosen, _ = QFileDialog.getOpenFileName(self, "Load TerraSeg model", start,
                                                    modelinfo.MODEL_FILE_FILTERS)
            if not chosen:
                return None
            path = chosen
        try:
            meta = modelinfo.read_model_metadata(path)
        except modelinfo.ModelInfoError as exc:
            self._show_error("Model", str(exc), "Choose a .tsm file written by TerraSeg.")
            return None
        model_classes = modelinfo.model_classes(meta)
        preset = presets.preset_for_classes([c["name"] for c in model_classes])
        if presets.PRESETS[preset].editable:
            self.set_classes([ClassDef(c["name"], c.get("colour", "#808080"))
                              for c in model_classes])
        else:
            self.set_preset(preset)
        self._set_model(str(path))
        geometry = meta.get("geometry") or {}
        arch = (meta.get("architecture") or {}).get("name")
        if arch and self.arch_combo.findText(arch) >= 0:
            self.arch_combo.setCurrentText(arch)
        if geometry.get("kind") == "tile" and geometry.get("tile_px"):
            self.tile_spin.setValue(int(geometry["tile_px"]))
        if geometry.get("patch_px"):
            self.patch_spin.setValue(int(geometry["patch_px"]))
        if geometry.get("block_px"):
            self.block_spin.setValue(int(geometry["block_px"]))
        self._on_raster_changed(self.raster_layer())  # band roles from the model
        settings.set(settings.LAST_MODEL, str(path))
        self._log("info", f"Loaded model {path}: {modelinfo.summary(meta)}")
        return meta

    def _warn_incompatible(self, meta: dict[str, Any], raster: QgsRasterLayer,
                           ask: bool) -> bool:
        """Warn when the model may not fit the raster; with ``ask``, returns the answer."""
        problems = modelinfo.compatibility_problems(
            meta, raster.bandCount(),
            (raster.rasterUnitsPerPixelX(), raster.rasterUnitsPerPixelY()))
        if not problems:
            return True
        text = " ".join(problems)
        self._log("warning", text)
        if not ask:
            self.iface.messageBar().pushMessage(TITLE, text, Qgis.MessageLevel.Warning, 10)
            return True
        return self._confirm("Model and raster differ", f"{text}\n\nRun the model anyway?")

    # ------------------------------------------------------------------------------------
    # Prediction
    # ------------------------------------------------------------------------------------
    def _selected_predict_mode(self) -> str:
        if self.area_whole_radio.isChecked():
            return "whole"
        if self.area_layer_radio.isChecked():
            return "layer"
        return "canvas"

    def canvas_window(self, raster: QgsRasterLayer) -> tuple[int, int, int, int] | None:
        """The map canvas extent as a pixel window (col, row, width, height) of ``raster``."""
        canvas = self.iface.mapCanvas()
        extent = canvas.extent()
        src = canvas.mapSettings().destinationCrs()
        return self.extent_window(raster, extent, src)

    @staticmethod
    def extent_window(raster: QgsRasterLayer, extent: QgsRectangle,
                      crs: QgsCoordinateReferenceSystem) -> tuple[int, int, int, int] | None:
        """A rectangle (in ``crs``) as a pixel window of ``raster``; None if disjoint."""
        if crs.isValid() and raster.crs().isValid() and crs != raster.crs():
            transform = QgsCoordinateTransform(crs, raster.crs(), QgsProject.instance())
            extent = transform.transformBoundingBox(extent)
        r_ext = raster.extent()
        inter = extent.intersect(r_ext)
        if inter.isEmpty() or inter.width() <= 0 or inter.height() <= 0:
            return None
        px, py = raster.rasterUnitsPerPixelX(), raster.rasterUnitsPerPixelY()
        eps = 1e-6
        col0 = max(0, math.floor((inter.xMinimum() - r_ext.xMinimum()) / px + eps))
        row0 = max(0, math.floor((r_ext.yMaximum() - inter.yMaximum()) / py + eps))
        col1 = min(raster.width(), math.ceil((inter.xMaximum() - r_ext.xMinimum()) / px - eps))
        row1 = min(raster.height(), math.ceil((r_ext.yMaximum() - inter.yMinimum()) / py - eps))
        if col1 <= col0 or row1 <= row0:
            return None
        return col0, row0, col1 - col0, row1 - row0

    def results_dir(self, mode: str) -> Path:
        """A new results folder next to the model: ``<model>_results/<time>_<mode>``."""
        model = Path(self.last_model or "model.tsm")
        stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H%M%S")
        return unique_path(model.parent / f"{model.stem}_results" / f"{stamp}_{mode}")

    def _temp_folder(self) -> str:
        if self._temp_dir is None or not Path(self._temp_dir).is_dir():
            self._temp_dir = tempfile.mkdtemp(prefix="terraseg_panel_")
        return self._temp_dir

    def _model_and_raster(self, title: str) -> tuple[QgsRasterLayer, dict[str, Any]] | None:
        """The panel's raster and the last model's metadata, when the model can run on it.

        Refuses (a message titled ``title``) without a raster, without a readable model, or
        when the analyst declines a model that does not fit the raster; returns None then.
        """
        raster = self.raster_layer()
        if raster is None:
            self._refuse(title, "Choose a raster layer first.")
            return None
        if not self.last_model or not Path(self.last_model).is_file():
            self._refuse(title, "Train or load a model first.")
            return None
        meta = self.model_meta or self._set_model(self.last_model)
        if meta is None:
            self._refuse(title, f"Cannot read the model {self.last_model}.")
            return None
        if not self._warn_incompatible(meta, raster, ask=True):
            return None
        return raster, meta

    def predict(self, mode: str = "canvas", layer: QgsVectorLayer | None = None,
                wait: bool = False, timeout_s: float = 3600.0) -> bool:
        """Apply :attr:`last_model` to the raster; results go to 'TerraSeg results'.

        Args:
            mode: ``canvas`` (current map extent), ``layer`` (extent of ``layer`` or of the
                layer chosen in the panel) or ``whole`` (the whole raster).
            layer: Extent layer for ``mode='layer'``.
            wait: Block until the job has ended.
            timeout_s: Longest wait.

        Returns:
            True when the job started (with ``wait``: when it also succeeded).
        """
        ready = self._model_and_raster("Predict")
        if ready is None:
            return False
        raster, meta = ready
        try:
            raster_path = jobs.raster_layer_path(raster)
            terrain = self.terrain_for_model(meta)
        except ValueError as exc:
            return self._refuse("Predict", str(exc))
        window = extent_layer = None
        if mode == "canvas":
            window = self.canvas_window(raster)
            if window is None:
                return self._refuse("Predict", "The map view does not overlap the raster.")
        elif mode == "layer":
            layer = layer or self.extent_combo.currentLayer()
            if not isinstance(layer, QgsVectorLayer):
                return self._refuse("Predict", "Choose the extent layer first.")
            try:
                extent_layer = jobs.vector_layer_path(layer, self._temp_folder(),
                                                      layer_spec=False)
            except OSError as exc:
                return self._refuse("Predict", str(exc))
        elif mode != "whole":
            raise ValueError(f"Unknown prediction mode {mode!r}: canvas, layer or whole.")
        bands = None
        try:
            spec = self.bands_spec()
            if len(spec.split(",")) == len(modelinfo.model_bands(meta)):
                bands = spec
        except ValueError:
            bands = None
        level = self.level_options()
        if level.get("hierarchy") == "":
            return self._refuse("Predict", "Choose the class hierarchy CSV under Evaluate, or "
                                "untick 'Also map level'.")
        out_dir = self.results_dir(mode)
        job = jobs.predict_job(model=self.last_model, raster=raster_path, out_dir=str(out_dir),
                               bands=bands, window=list(window) if window else None,
                               extent_layer=extent_layer, **terrain,
                               **self.prediction_options(), **level)
        self._log("info", f"Predicting ({mode}) with {Path(self.last_model).name} into "
                          f"{out_dir}")
        return self._start_job("predict", job, self._on_predict_result, wait, timeout_s)

    def result_classes(self) -> list[dict[str, Any]]:
        """The model's classes, with the panel's colours where the names match."""
        meta = self.model_meta or {}
        colours = {c.name.lower(): c.colour for c in self.classes()}
        out = []
        for c in modelinfo.model_classes(meta):
            c = dict(c)
            c["colour"] = colours.get(str(c["name"]).lower(), c.get("colour", "#808080"))
            out.append(c)
        return out

    def _on_predict_result(self, result: dict[str, Any]) -> None:
        prob, cls = str(result["probability"]), str(result["classes"])
        classes = self.result_classes()
        layers = results.add_results(prob, cls, classes,
                                     name=f"{Path(self.last_model or '').stem} "
                                          f"{Path(cls).parent.name}")
        self.last_results = {"probability": prob, "classes": cls,
                             "folder": str(Path(cls).parent), "layers": layers,
                             "result": result, "model": self.last_model,
                             "class_list": classes}
        level_text = self._add_level_result(result.get("level"), layers[1])
        if result.get("device"):
            self.device = str(result["device"])
            self.device_label.setText(f"Device: {self.device} (prediction)")
        shares = result.get("class_shares") or {}
        share_text = ", ".join(f"{k} {100 * v:.1f} %" for k, v in shares.items())
        notes = []
        if isinstance(result.get("threshold"), int | float):
            notes.append(f"threshold {result['threshold']:.2f}")
        changed = (result.get("postprocess") or {}).get("changed_px") or {}
        if changed:
            notes.append("clean-up changed " + ", ".join(
                f"{v} px ({k.replace('_px', '').replace('_', ' ')})" for k, v in changed.items()))
        self.predict_summary.setText(f"Results in {Path(cls).parent}\n{share_text}"
                                     + (f"\n{'; '.join(notes)}" if notes else "")
                                     + level_text)
        self.iface.messageBar().pushMessage(TITLE, f"Prediction added to '{results.GROUP_NAME}'",
                                            Qgis.MessageLevel.Success, 5)

    def _add_level_result(self, level: dict[str, Any] | None, fine: QgsRasterLayer) -> str:
        """Add the map at a hierarchy level (``level`` of the result) above the fine one.

        Its groups take the panel's colours where their names match the panel's classes,
        else the engine's. Returns the summary's line about it ("" without a level map).
        """
        if not level:
            return ""
        colours = {c.name.lower(): c.colour for c in self.classes()}
        groups = [{**g, "colour": colours.get(str(g["name"]).lower(), g.get("colour"))}
                  for g in level.get("class_list") or []]
        name = level.get("level_name") or f"level{level.get('level')}"
        layer = QgsRasterLayer(str(level["classes"]), f"{fine.name()} at {name}", "gdal")
        if not layer.isValid():
            raise results.ResultLayerError(f"Cannot open result {level['classes']}.")
        results.style_classes(layer, groups)
        project = QgsProject.instance()
        project.addMapLayer(layer, False)
        results.results_group(project).insertLayer(0, layer)
        if self.last_results is not None:
            self.last_results["level"] = {**level, "class_list": groups, "layer": layer}
        return f"\nMap at {name}: {', '.join(str(g['name']) for g in groups)}"
