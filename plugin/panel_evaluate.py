"""Panel section 'Evaluate': accuracy of the model against an independent reference layer.

The engine's ``evaluate`` command predicts at the reference pixels and writes
``metrics.json``, ``per_class.csv`` and ``confusion_matrix.csv`` into a new folder beside the
prediction results (``<model>_results/<time>_evaluation``); the panel reads ``metrics.json``
back and shows overall accuracy, precision/recall/F1 per class and the confusion matrix.

With a *Class hierarchy* (none, the shipped CORINE Land Cover legend, or a CSV of code,
level1, level2, ...) the job carries ``hierarchy`` and the engine scores every level too
(``levels`` in ``metrics.json``); the panel shows accuracy, F1 and IoU per level. Predict's
"Also map level" uses the same choice (panel_predict.py).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from qgis.core import QgsVectorLayer
from qgis.gui import QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from . import jobs, modelinfo
from .panel_common import group_box, layer_filter

CLASS_FIELD_GUESSES = ("class", "klass", "class_name", "label", "classname")
"""Field names chosen by default as the reference class field (first match, any case)."""

PER_CLASS_COLUMNS = (("Precision", "precision_per_class"), ("Recall", "recall_per_class"),
                     ("F1", "f1_per_class"))

#: The per-level table: header and metrics.json key (F1 weighted by support, mean IoU).
LEVEL_COLUMNS = (("Accuracy", "accuracy"), ("F1", "f1_weighted"), ("IoU", "mean_iou"))
#: The hierarchy choices: label, engine value (None: no hierarchy; FILE_CHOICE: the CSV).
FILE_CHOICE = "file"
HIERARCHY_CHOICES = (("None", None), ("CORINE Land Cover", "corine"), ("File…", FILE_CHOICE))
#: Levels of the hierarchies the engine ships (``--hierarchy corine``).
SHIPPED_LEVELS = {"corine": 3}
_LEVEL_COLUMN = re.compile(r"level\d+(_label)?", re.IGNORECASE)


def hierarchy_levels(value: str | None) -> int | None:
    """How many levels a hierarchy has: shipped ones by name, a CSV by its header.

    Only sets the range of Predict's level box; the engine checks the file itself.

    Args:
        value: ``corine`` or a CSV path (``code,level1,level2,...``).

    Returns:
        The number of ``levelN`` columns; None without a hierarchy or for a file that
        cannot be read (the engine then says what is wrong with it).
    """
    if not value:
        return None
    if value.lower() in SHIPPED_LEVELS:
        return SHIPPED_LEVELS[value.lower()]
    try:
        with open(value, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError):
        return None
    return sum(1 for h in header if _LEVEL_COLUMN.fullmatch(h.strip())) or None


def _number_item(text: str) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    return item


def _table(columns: int, headers: list[str] | None = None) -> QTableWidget:
    table = QTableWidget(0, columns)
    if headers:
        table.setHorizontalHeaderLabels(headers)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setMaximumHeight(150)
    return table


def evaluation_summary(metrics: dict[str, Any]) -> str:
    """One line: overall accuracy, weighted F1, samples and reference pixels without prediction.

    Args:
        metrics: The engine's ``metrics.json`` document.
    """
    accuracy = float(metrics.get("accuracy", 0.0))
    n_samples = int(metrics.get("n_samples", 0))
    n_reference = int(metrics.get("n_reference_pixels", n_samples))
    n_nodata = int(metrics.get("n_outside_valid_data", metrics.get("n_unpredicted", 0)))
    text = (f"Overall accuracy {100 * accuracy:.1f} % (F1 weighted "
            f"{float(metrics.get('f1_weighted', 0.0)):.3f}) on {n_samples} of {n_reference} "
            f"reference pixels")
    if n_nodata:
        text += f"; {n_nodata} without prediction (nodata), left out"
    return text + "."


class EvaluatePanelMixin:
    """Evaluation of :attr:`last_model` against a reference layer, shown in the panel.

    Mixed into :class:`~.dock.TerraSegDock`; relies on the panel's shared state and helpers
    (``_log``, ``_refuse``, ``_start_job``, ``_update_buttons``, ``results_dir``, ...).
    """

    def _build_evaluate_box(self) -> QWidget:
        box = group_box("Evaluate", "TerraSegEvaluateBox")
        form = QFormLayout(box)
        self.reference_combo = QgsMapLayerComboBox()
        self.reference_combo.setFilters(layer_filter("PointLayer")
                                        | layer_filter("PolygonLayer"))
        self.reference_combo.setAllowEmptyLayer(True)
        self.reference_combo.setLayer(None)
        self.reference_combo.setToolTip("Independent reference points or polygons with a "
                                        "class attribute (not the training labels).")
        self.reference_field_combo = QgsFieldComboBox()
        self.reference_field_combo.setToolTip("Attribute holding the reference class name.")
        self.reference_combo.layerChanged.connect(self._on_reference_changed)
        form.addRow("Reference layer", self.reference_combo)
        form.addRow("Class field", self.reference_field_combo)
        self.reference_map_edit = QLineEdit()
        self.reference_map_edit.setPlaceholderText("optional, e.g. developed=sealed,*=unsealed")
        self.reference_map_edit.setToolTip(
            "Maps the reference's class names to the model's classes: name=class pairs, "
            "'*' for every other name. Empty: the names must match the model's classes.")
        form.addRow("Class mapping", self.reference_map_edit)
        self._build_hierarchy_rows(form)
        self.evaluate_button = QPushButton("Evaluate model")
        self.evaluate_button.clicked.connect(lambda: self.evaluate())
        form.addRow("", self.evaluate_button)
        self.evaluation_summary = QLabel()
        self.evaluation_summary.setWordWrap(True)
        self.evaluation_summary.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.evaluation_summary)
        self.level_table = _table(1 + len(LEVEL_COLUMNS),
                                  ["Level (classes)", *(name for name, _ in LEVEL_COLUMNS)])
        self.level_table.verticalHeader().setVisible(False)
        self.level_table.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.Stretch)
        self.level_table.setToolTip("Each level of the class hierarchy: overall accuracy, F1 "
                                    "(weighted by reference pixels) and mean IoU, with the "
                                    "model's classes merged into the level's groups.")
        self.level_table.setVisible(False)
        form.addRow(self.level_table)
        self.per_class_table = _table(4, ["Class", *(name for name, _ in PER_CLASS_COLUMNS)])
        self.per_class_table.verticalHeader().setVisible(False)
        self.per_class_table.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.Stretch)
        form.addRow(self.per_class_table)
        self.confusion_table = _table(0)
        self.confusion_table.setToolTip("Confusion matrix: rows = reference class, "
                                        "columns = predicted class (reference pixels).")
        matrix_title = QLabel("Confusion matrix (rows: reference, columns: predicted)")
        matrix_title.setWordWrap(True)
        form.addRow(matrix_title)
        form.addRow(self.confusion_table)
        self.evaluation_files = QLabel()
        self.evaluation_files.setWordWrap(True)
        self.evaluation_files.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.evaluation_files)
        return box

    def _build_hierarchy_rows(self, form: QFormLayout) -> None:
        """'Class hierarchy': none, CORINE Land Cover or a CSV file (its row shown for File…)."""
        self.hierarchy_combo = QComboBox()
        for label, value in HIERARCHY_CHOICES:
            self.hierarchy_combo.addItem(label, value)
        self.hierarchy_combo.setToolTip(
            "Fine classes grouped into coarser levels: Evaluate also scores every level, "
            "Predict can also map one ('Also map level'). The model's class names must be "
            "the hierarchy's codes or finest names (CORINE: 111, 112, ... or their names).")
        form.addRow("Class hierarchy", self.hierarchy_combo)
        self.hierarchy_file_row = QWidget()
        row = QHBoxLayout(self.hierarchy_file_row)
        row.setContentsMargins(0, 0, 0, 0)
        self.hierarchy_file_edit = QLineEdit()
        self.hierarchy_file_edit.setPlaceholderText("CSV: code,level1,level2,...")
        self.hierarchy_file_edit.setToolTip("Hierarchy CSV: one row per fine class, a 'code' "
                                            "column, then one name column per level from "
                                            "the coarsest (CORINE's published legend reads "
                                            "as it is).")
        self.hierarchy_browse_button = QPushButton("…")
        self.hierarchy_browse_button.setMaximumWidth(32)
        self.hierarchy_browse_button.setToolTip("Choose the hierarchy CSV.")
        self.hierarchy_browse_button.clicked.connect(self._browse_hierarchy)
        row.addWidget(self.hierarchy_file_edit, 1)
        row.addWidget(self.hierarchy_browse_button)
        form.addRow("", self.hierarchy_file_row)
        self.hierarchy_file_row.setVisible(False)
        self.hierarchy_combo.currentIndexChanged.connect(self._on_hierarchy_changed)
        self.hierarchy_file_edit.editingFinished.connect(self._on_hierarchy_changed)

    def _browse_hierarchy(self) -> None:
        start = self.hierarchy_file_edit.text().strip() or str(Path.home())
        chosen, _ = QFileDialog.getOpenFileName(self, "Class hierarchy", start,
                                                "CSV (*.csv);;All files (*)")
        if chosen:
            self.set_hierarchy(chosen)

    def _on_hierarchy_changed(self, *_args: Any) -> None:
        self.hierarchy_file_row.setVisible(self.hierarchy_combo.currentData() == FILE_CHOICE)
        update = getattr(self, "_update_level_controls", None)  # Predict's 'Also map level'
        if update is not None:
            update()

    def set_hierarchy(self, value: str | Path | None) -> None:
        """Choose the class hierarchy: None, ``corine`` (the shipped one) or a CSV path."""
        text = str(value) if value else ""
        index = next((i for i, (_, v) in enumerate(HIERARCHY_CHOICES)
                      if v == text.lower() and v != FILE_CHOICE), None)
        if value and index is None:
            index = self.hierarchy_combo.findData(FILE_CHOICE)
            self.hierarchy_file_edit.setText(text)
        self.hierarchy_combo.setCurrentIndex(index or 0)
        self._on_hierarchy_changed()

    def hierarchy(self) -> str | None:
        """The engine's ``hierarchy`` value chosen: None, ``corine`` or the CSV path.

        ``""`` when File… is chosen without a path (the actions refuse then).
        """
        value = self.hierarchy_combo.currentData()
        if value == FILE_CHOICE:
            return self.hierarchy_file_edit.text().strip()
        return value

    def hierarchy_name(self) -> str:
        """The chosen hierarchy in words (``CORINE Land Cover``, a file name), or ""."""
        value = self.hierarchy()
        if not value:
            return ""
        if self.hierarchy_combo.currentData() == FILE_CHOICE:
            return Path(value).name
        return self.hierarchy_combo.currentText()

    def _on_reference_changed(self, layer: Any) -> None:
        self.reference_field_combo.setLayer(layer)
        if not isinstance(layer, QgsVectorLayer):
            return
        names = {f.name().lower(): f.name() for f in layer.fields()}
        for guess in CLASS_FIELD_GUESSES:
            if guess in names:
                self.reference_field_combo.setField(names[guess])
                return

    def set_reference_layer(self, layer: QgsVectorLayer | None,
                            class_field: str | None = None) -> None:
        """Choose the reference layer and its class field (default: a guessed field)."""
        self.reference_combo.setLayer(layer)
        self._on_reference_changed(layer)
        if class_field is not None:
            self.reference_field_combo.setField(class_field)

    # ------------------------------------------------------------------------------------
    # Evaluate
    # ------------------------------------------------------------------------------------
    def evaluate(self, reference_layer: QgsVectorLayer | None = None,
                 class_field: str | None = None, class_map: str | None = None,
                 hierarchy: str | Path | None = None, wait: bool = False,
                 timeout_s: float = 3600.0) -> bool:
        """Evaluate :attr:`last_model` on the panel's raster against a reference layer.

        The report (``metrics.json``, ``per_class.csv``, ``confusion_matrix.csv``) goes to
        a new folder ``<model>_results/<time>_evaluation``; :attr:`last_evaluation` holds
        it and the figures shown in the panel.

        Args:
            reference_layer: Points or polygons with a class attribute (default: the layer
                chosen in the panel); chosen in the panel when given.
            class_field: Class attribute (default: the panel's choice).
            class_map: Reference-to-model class mapping (default: the panel's text).
            hierarchy: Class hierarchy, ``corine`` or a CSV (default: the panel's choice);
                chosen in the panel when given.
            wait: Block until the job has ended.
            timeout_s: Longest wait.

        Returns:
            True when the job started (with ``wait``: when it also succeeded).
        """
        if reference_layer is not None:
            self.set_reference_layer(reference_layer, class_field)
        else:
            current = self.reference_combo.currentLayer()
            reference_layer = current if isinstance(current, QgsVectorLayer) else None
            if class_field is not None:
                self.reference_field_combo.setField(class_field)
        if class_map is not None:
            self.reference_map_edit.setText(class_map)
        if hierarchy is not None:
            self.set_hierarchy(hierarchy)
        ready = self._model_and_raster("Evaluate")
        if ready is None:
            return False
        raster, meta = ready
        if reference_layer is None:
            return self._refuse("Evaluate", "Choose the reference layer (points or polygons "
                                "with a class field) under Evaluate.")
        field = class_field or self.reference_field_combo.currentField()
        if not field or reference_layer.fields().indexOf(field) < 0:
            return self._refuse("Evaluate", f"Choose the class field of "
                                f"'{reference_layer.name()}' under Evaluate.")
        try:
            raster_path = jobs.raster_layer_path(raster)
            terrain = self.terrain_for_model(meta)
            reference = jobs.vector_layer_path(reference_layer, self._temp_folder())
        except (ValueError, OSError) as exc:
            return self._refuse("Evaluate", str(exc))
        bands = None
        try:
            spec = self.bands_spec()
            if len(spec.split(",")) == len(modelinfo.model_bands(meta)):
                bands = spec
        except ValueError:
            bands = None
        levels = self.hierarchy()
        if levels == "":
            return self._refuse("Evaluate", "Choose the class hierarchy CSV under Evaluate "
                                "(or Class hierarchy: None).")
        threshold = self.prediction_options().get("threshold")
        out_dir = self.results_dir("evaluation")
        mapping = self.reference_map_edit.text().strip() or None
        job = jobs.evaluate_job(model=self.last_model, raster=raster_path, reference=reference,
                                out_dir=str(out_dir), class_field=field, class_map=mapping,
                                bands=bands, threshold=threshold, hierarchy=levels, **terrain)
        request = {"model": self.last_model, "raster": raster_path, "reference": reference,
                   "reference_layer": reference_layer.name(),
                   "reference_layer_id": reference_layer.id(), "class_field": field,
                   "class_map": mapping, "hierarchy": levels, "folder": str(out_dir)}
        self._log("info", f"Evaluating {Path(self.last_model).name} against "
                          f"'{reference_layer.name()}' ({field}) into {out_dir}")
        return self._start_job("evaluate", job,
                               lambda result: self._on_evaluate_result(request, result),
                               wait, timeout_s)

    def _on_evaluate_result(self, request: dict[str, Any], result: dict[str, Any]) -> None:
        metrics_file = Path(str(result.get("metrics") or Path(request["folder"])
                                / "metrics.json"))
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        self.last_evaluation = {**request, "folder": str(metrics_file.parent),
                                "metrics_file": str(metrics_file),
                                "files": [str(p) for p in result.get("files") or []],
                                "result": result, "metrics": metrics}
        self.show_evaluation(self.last_evaluation)
        self._log("info", f"Evaluation: {evaluation_summary(metrics)} Report: "
                          f"{metrics_file.parent}")

    def show_evaluation(self, evaluation: dict[str, Any] | None) -> None:
        """Show an evaluation (:attr:`last_evaluation`) in the panel; None clears it."""
        self.per_class_table.setRowCount(0)
        self.level_table.setRowCount(0)
        self.level_table.setVisible(False)
        self.confusion_table.setRowCount(0)
        self.confusion_table.setColumnCount(0)
        if not evaluation:
            self.evaluation_summary.setText("")
            self.evaluation_files.setText("")
            return
        metrics = evaluation["metrics"]
        names = [str(n) for n in metrics.get("class_names") or []]
        self.evaluation_summary.setText(evaluation_summary(metrics))
        self._show_levels(metrics.get("levels") or {})
        self.per_class_table.setRowCount(len(names))
        for r, name in enumerate(names):
            self.per_class_table.setItem(r, 0, QTableWidgetItem(name))
            for c, (_, key) in enumerate(PER_CLASS_COLUMNS, start=1):
                value = (metrics.get(key) or {}).get(name)
                text = f"{value:.3f}" if isinstance(value, int | float) else ""
                self.per_class_table.setItem(r, c, _number_item(text))
        matrix = metrics.get("confusion_matrix") or []
        self.confusion_table.setRowCount(len(names))
        self.confusion_table.setColumnCount(len(names))
        self.confusion_table.setVerticalHeaderLabels(names)
        self.confusion_table.setHorizontalHeaderLabels(names)
        for r, row in enumerate(matrix[:len(names)]):
            for c, count in enumerate(row[:len(names)]):
                self.confusion_table.setItem(r, c, _number_item(str(int(count))))
        self.confusion_table.resizeColumnsToContents()
        folder = evaluation.get("folder", "")
        files = ", ".join(Path(p).name for p in evaluation.get("files") or [])
        self.evaluation_files.setText(f"Report saved in {folder}" + (f" ({files})" if files
                                                                     else ""))

    def _show_levels(self, levels: dict[str, Any]) -> None:
        """One row per hierarchy level (``levels`` of metrics.json).

        Columns: the level and its number of groups, accuracy, F1 weighted, mean IoU.
        """
        self.level_table.setRowCount(len(levels))
        self.level_table.setVisible(bool(levels))
        for r, (level, m) in enumerate(levels.items()):
            groups = len(m.get("class_names") or [])
            item = QTableWidgetItem(f"{level} ({groups})")
            item.setToolTip(", ".join(str(n) for n in m.get("class_names") or []))
            self.level_table.setItem(r, 0, item)
            for c, (_, key) in enumerate(LEVEL_COLUMNS, start=1):
                value = m.get(key)
                text = f"{value:.3f}" if isinstance(value, int | float) else ""
                self.level_table.setItem(r, c, _number_item(text))

    def level_metrics_shown(self) -> dict[str, tuple[str, ...]]:
        """The per-level table as shown: level label -> (accuracy, F1, IoU) texts."""
        return {self.level_table.item(r, 0).text():
                tuple(self.level_table.item(r, c).text()
                      for c in range(1, self.level_table.columnCount()))
                for r in range(self.level_table.rowCount())}

    def evaluation_table(self) -> list[list[int]]:
        """The confusion matrix as shown in the panel (rows reference, columns predicted)."""
        return [[int(self.confusion_table.item(r, c).text())
                 for c in range(self.confusion_table.columnCount())]
                for r in range(self.confusion_table.rowCount())]
