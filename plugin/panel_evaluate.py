"""Panel section 'Evaluate': accuracy of the model against an independent reference layer.

The engine's ``evaluate`` command predicts at the reference pixels and writes
``metrics.json``, ``per_class.csv`` and ``confusion_matrix.csv`` into a new folder beside the
prediction results (``<model>_results/<time>_evaluation``); the panel reads ``metrics.json``
back and shows overall accuracy, precision/recall/F1 per class and the confusion matrix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import QgsVectorLayer
from qgis.gui import QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
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
        self.evaluate_button = QPushButton("Evaluate model")
        self.evaluate_button.clicked.connect(lambda: self.evaluate())
        form.addRow("", self.evaluate_button)
        self.evaluation_summary = QLabel()
        self.evaluation_summary.setWordWrap(True)
        self.evaluation_summary.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.evaluation_summary)
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
                 wait: bool = False, timeout_s: float = 3600.0) -> bool:
        """Evaluate :attr:`last_model` on the panel's raster against a reference layer.

        The report (``metrics.json``, ``per_class.csv``, ``confusion_matrix.csv``) goes to
        a new folder ``<model>_results/<time>_evaluation``; :attr:`last_evaluation` holds
        it and the figures shown in the panel.

        Args:
            reference_layer: Points or polygons with a class attribute (default: the layer
                chosen in the panel); chosen in the panel when given.
            class_field: Class attribute (default: the panel's choice).
            class_map: Reference-to-model class mapping (default: the panel's text).
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
        threshold = self.prediction_options().get("threshold")
        out_dir = self.results_dir("evaluation")
        mapping = self.reference_map_edit.text().strip() or None
        job = jobs.evaluate_job(model=self.last_model, raster=raster_path, reference=reference,
                                out_dir=str(out_dir), class_field=field, class_map=mapping,
                                bands=bands, threshold=threshold, **terrain)
        request = {"model": self.last_model, "raster": raster_path, "reference": reference,
                   "reference_layer": reference_layer.name(),
                   "reference_layer_id": reference_layer.id(), "class_field": field,
                   "class_map": mapping, "folder": str(out_dir)}
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
        self.confusion_table.setRowCount(0)
        self.confusion_table.setColumnCount(0)
        if not evaluation:
            self.evaluation_summary.setText("")
            self.evaluation_files.setText("")
            return
        metrics = evaluation["metrics"]
        names = [str(n) for n in metrics.get("class_names") or []]
        self.evaluation_summary.setText(evaluation_summary(metrics))
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

    def evaluation_table(self) -> list[list[int]]:
        """The confusion matrix as shown in the panel (rows reference, columns predicted)."""
        return [[int(self.confusion_table.item(r, c).text())
                 for c in range(self.confusion_table.columnCount())]
                for r in range(self.confusion_table.rowCount())]
