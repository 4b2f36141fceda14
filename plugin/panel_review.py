"""Panel section 'Review labels': the training polygons whose class is most likely wrong.

'Review labels' runs the engine's ``review`` command in a worker with the raster, the label
layer and the Train section's settings: k models are trained on folds of the polygons
(grouped by region), each polygon is scored by the model that did not train on it (its mean
loss, or confident learning), and the most suspicious polygons come back as
``review.gpkg`` / ``review.csv`` / ``review.json`` in a new folder ``review/<time>`` next to
the models folder. The folds start from random weights: fine-tuning the last model would
score polygons with a model that has seen them.

The panel lists the suspects (rank, given -> predicted class, probability). Selecting one
zooms the map to it, selects it in the label layer and shows the last prediction's
probability layer. Per suspect:

- **Accept**: the label is right; the suspect leaves the list (remembered as accepted).
- **Change class**: the polygon's class becomes the predicted one, as an edit of the label
  layer: the layer is put in edit mode and the change is one undoable command (Ctrl+Z);
  nothing is saved until the analyst saves the layer or starts Train, which saves the label
  edits first.
- **Delete**: the polygon is deleted from the label layer, the same way (undoable, unsaved).

Then Train retrains on the corrected labels.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsClassificationQuantile,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsFillSymbol,
    QgsGraduatedSymbolRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsStyle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from . import jobs, label_layer, presets, results
from .panel_common import TITLE, group_box, unique_path

REVIEW_BUTTON_TEXT = "Review labels"
REVIEW_FOLDER = "review"
"""Folder next to the models folder holding one ``<time>`` folder per review."""
REVIEW_LAYER_NAME = "Label review (score)"
REVIEW_LAYER = "review"
"""The layer of ``review.gpkg``."""
RANKINGS = ("loss", "cleanlab")
"""Rankings of ``terraseg review --ranking``: mean out-of-fold loss, confident learning."""
DEFAULT_FOLDS = 5
DEFAULT_TOP = 50
COLUMNS = ("#", "Given → predicted", "Prob.", "Score")
ZOOM_MARGIN = 1.5
"""The map shows this many times the polygon's box (some surroundings)."""
SCORE_CLASSES = 5
SCORE_RAMP = "Reds"
NEXT_STEP = "Accept, change or delete the suspects, then Train again."
_FOLD_LOG = re.compile(r"fold (\d+)/(\d+)")
"""The engine's log line as a review starts training a fold."""


def suspect_text(suspect: dict[str, Any]) -> str:
    """``"sealed → unsealed"`` of one suspect (given, then predicted class)."""
    return f"{suspect.get('given_class')} → {suspect.get('predicted_class')}"


def review_summary(result: dict[str, Any]) -> str:
    """One line on a review: regions ranked, by what, how many confident learning flags."""
    ranking = result.get("ranking", "loss")
    how = "confident learning" if ranking == "cleanlab" else "mean out-of-fold loss"
    listed = len(result.get("suspects") or [])
    return (f"{result.get('regions', 0)} labelled regions ranked by {how} "
            f"({result.get('k')} folds), {result.get('flagged', 0)} flagged by confident "
            f"learning; the {listed} most suspicious listed")


def style_by_score(layer: QgsVectorLayer, field: str = "score") -> None:
    """Graduated fill on ``field`` (quantiles, white to red), half transparent."""
    renderer = QgsGraduatedSymbolRenderer(field)
    renderer.setSourceSymbol(QgsFillSymbol.createSimple(
        {"color": "#cb181d", "outline_color": "#67000d", "outline_width": "0.6"}))
    renderer.setClassificationMethod(QgsClassificationQuantile())
    renderer.updateClasses(layer, SCORE_CLASSES)
    ramp = QgsStyle.defaultStyle().colorRamp(SCORE_RAMP)
    if ramp is not None:
        renderer.updateColorRamp(ramp)
    layer.setRenderer(renderer)
    layer.setOpacity(0.6)
    layer.triggerRepaint()


class ReviewPanelMixin:
    """The 'Review labels' section: run a review, list the suspects, act on each.

    Mixed into :class:`~.dock.TerraSegDock` before :class:`~.panel_train.TrainPanelMixin`
    (a review's fold trainings send epoch metrics that are not Train's) and
    :class:`~.panel_jobs.JobsPanelMixin` (their progress becomes the review's);
    relies on the panel's shared state and helpers (``_log``, ``_refuse``, ``_start_job``,
    ``training_options``, ``models_dir``, ``classes``, ``bands_spec``, ...).

    Attributes:
        last_review: The last review: ``folder``, ``label_layer_id`` (the layer reviewed),
            ``labels_crs`` (its CRS, the bounding boxes'), ``layer_id`` (review.gpkg in the
            project), ``result`` (engine payload).
        review_suspects: The suspects still listed, in table order.
        review_decisions: What was done per feature id: ``accepted``, ``relabelled`` (with
            the new class: ``relabelled:NAME``) or ``deleted``.
    """

    def _build_review_box(self) -> QWidget:
        box = group_box("Review labels", "TerraSegReviewBox", collapsed=True)
        self._review_box = box
        layout = QVBoxLayout(box)
        intro = QLabel("Finds training polygons whose class is probably wrong: each one is "
                       "scored by a model trained without it (the Train settings, k times).")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.review_folds_spin = QSpinBox()
        self.review_folds_spin.setRange(2, 20)
        self.review_folds_spin.setValue(DEFAULT_FOLDS)
        self.review_folds_spin.setToolTip("Folds: k models are trained, each without one k-th "
                                          "of the polygons (grouped by region), which it "
                                          "scores. Every class needs at least k polygons.")
        form.addRow("Folds", self.review_folds_spin)
        self.review_ranking_combo = QComboBox()
        self.review_ranking_combo.addItems(list(RANKINGS))
        self.review_ranking_combo.setToolTip(
            "loss: a polygon's mean loss under the model that did not train on it; "
            "cleanlab: confident learning (per-class thresholds of the predicted "
            "probabilities).")
        form.addRow("Ranking", self.review_ranking_combo)
        self.review_top_spin = QSpinBox()
        self.review_top_spin.setRange(1, 10000)
        self.review_top_spin.setValue(DEFAULT_TOP)
        self.review_top_spin.setToolTip("How many of the most suspicious polygons to list.")
        form.addRow("Polygons listed", self.review_top_spin)
        layout.addLayout(form)
        self.review_button = QPushButton(REVIEW_BUTTON_TEXT)
        self.review_button.setToolTip(
            "Trains k models on folds of the label layer's polygons with the Train settings "
            "and lists the polygons their held-out model disagrees with most.")
        self.review_button.clicked.connect(lambda: self.review_labels())
        layout.addWidget(self.review_button)
        self.review_summary = QLabel()
        self.review_summary.setWordWrap(True)
        self.review_summary.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.review_summary)
        self.review_table = QTableWidget(0, len(COLUMNS))
        self.review_table.setHorizontalHeaderLabels(list(COLUMNS))
        self.review_table.verticalHeader().setVisible(False)
        self.review_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.review_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.review_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.review_table.horizontalHeader()
        for column in range(len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch if column == 1
                                        else QHeaderView.ResizeMode.ResizeToContents)
        self.review_table.setMaximumHeight(220)
        self.review_table.setToolTip("Click a polygon to zoom to it and select it in the label "
                                     "layer.")
        self.review_table.currentCellChanged.connect(self._on_review_row_changed)
        self.review_table.cellClicked.connect(lambda row, _col: self.zoom_to_suspect(row))
        layout.addWidget(self.review_table)
        row = QHBoxLayout()
        self.review_accept_button = QPushButton("Accept")
        self.review_accept_button.setToolTip("The class is right: remove the polygon from "
                                             "the list.")
        self.review_accept_button.clicked.connect(lambda: self.accept_suspect())
        self.review_relabel_button = QPushButton("Change class")
        self.review_relabel_button.setToolTip(
            "Give the polygon the predicted class in the label layer (an undoable edit; "
            "saved when you save the layer or Train).")
        self.review_relabel_button.clicked.connect(lambda: self.relabel_suspect())
        self.review_delete_button = QPushButton("Delete")
        self.review_delete_button.setToolTip(
            "Delete the polygon from the label layer (an undoable edit; saved when you save "
            "the layer or Train).")
        self.review_delete_button.clicked.connect(lambda: self.delete_suspect())
        for button in (self.review_accept_button, self.review_relabel_button,
                       self.review_delete_button):
            row.addWidget(button)
        row.addStretch(1)
        layout.addLayout(row)
        self.last_review: dict[str, Any] | None = None
        self.review_suspects: list[dict[str, Any]] = []
        self.review_decisions: dict[str, str] = {}
        self._review_fold: tuple[int, int] | None = None  # (fold index, k) while running
        self._update_review_actions()
        return box

    # ------------------------------------------------------------------------------------
    # Buttons
    # ------------------------------------------------------------------------------------
    def _update_review_controls(self, busy: bool, has_raster: bool, has_labels: bool) -> None:
        """Enable Review labels as the inputs allow (called by ``dock._update_buttons``)."""
        self.review_button.setEnabled(not busy and has_raster and has_labels)
        self._update_review_actions()

    def _update_review_actions(self) -> None:
        chosen = self.current_suspect() is not None
        for button in (self.review_accept_button, self.review_relabel_button,
                       self.review_delete_button):
            button.setEnabled(chosen)

    def button_blockers(self) -> dict[str, list[str]]:
        """The other sections' blockers and Review labels' (as Train's: raster, labels)."""
        blockers = super().button_blockers()  # type: ignore[misc]
        blockers["review_button"] = list(blockers.get("train_button", []))
        return blockers

    # ------------------------------------------------------------------------------------
    # A running review: the folds' trainings as one progress, Train's table left alone
    # ------------------------------------------------------------------------------------
    def _on_worker_log(self, level: str, message: str) -> None:
        match = _FOLD_LOG.fullmatch(message) if self.job_kind == "review" else None
        if match:
            self._review_fold = (int(match[1]) - 1, int(match[2]))
        super()._on_worker_log(level, message)  # type: ignore[misc]

    def _on_progress(self, fraction: float, stage: str, eta: Any, message: str) -> None:
        """A fold's training progress as the review's: fold i of k covers (i, i+1) / k."""
        fold = self._review_fold if self.job_kind == "review" else None
        if fold is not None and stage not in ("prepare", "review"):
            index, k = fold
            fraction = (index + max(0.0, min(1.0, fraction))) / k
            message = f"fold {index + 1}/{k}" + (f": {message}" if message else "")
            eta = None  # the fold's time left, not the review's
        super()._on_progress(fraction, stage, eta, message)  # type: ignore[misc]

    def _on_metrics(self, epoch: int, values: dict[str, Any]) -> None:
        """A fold's epoch goes to the log only (Train's table shows the last training)."""
        if self.job_kind != "review":
            super()._on_metrics(epoch, values)  # type: ignore[misc]
            return
        index, k = self._review_fold or (0, 0)
        vals = ", ".join(f"{key} {v:.4f}" for key, v in values.items()
                         if isinstance(v, int | float))
        self._log("info", f"review fold {index + 1}/{k}, epoch {epoch}: {vals}")

    # ------------------------------------------------------------------------------------
    # Run a review
    # ------------------------------------------------------------------------------------
    def review_dir(self) -> Path | None:
        """A new folder ``review/<time>`` beside the models folder; None before saving."""
        models = self.models_dir()
        if models is None:
            return None
        stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H%M%S")
        return unique_path(models.parent / REVIEW_FOLDER / stamp)

    def set_review_options(self, k: int | None = None, ranking: str | None = None,
                           top: int | None = None) -> None:
        """Set the folds, the ranking (``loss`` or ``cleanlab``) and how many are listed.

        Raises:
            KeyError: An unknown ranking.
        """
        if k is not None:
            self.review_folds_spin.setValue(int(k))
        if ranking is not None:
            if ranking not in RANKINGS:
                raise KeyError(f"Unknown ranking {ranking!r}; use one of {', '.join(RANKINGS)}.")
            self.review_ranking_combo.setCurrentText(ranking)
        if top is not None:
            self.review_top_spin.setValue(int(top))

    def review_job(self, labels: str, out_dir: str) -> dict[str, Any]:
        """The ``review`` job of the panel's raster, labels and Train settings.

        Args:
            labels: The label layer's path for the engine.
            out_dir: The new review folder.

        Raises:
            ValueError: Bands, terrain inputs or the nodata value are not valid.
        """
        raster = self.raster_layer()
        nodata = self.nodata_value()
        return jobs.make_job(
            "review", raster=jobs.raster_layer_path(raster), labels=labels,
            class_field=label_layer.CLASS_FIELD, class_map=presets.class_map(self.classes()),
            bands=self.bands_spec(), nodata=nodata, **self.terrain_options(),
            **self.training_options(), k=self.review_folds_spin.value(),
            ranking=self.review_ranking_combo.currentText(),
            top=self.review_top_spin.value(), out_dir=out_dir)

    def review_labels(self, wait: bool = False, timeout_s: float = 3600.0) -> bool:
        """Rank the label layer's polygons by how likely their class is wrong (a worker job).

        Saves pending label edits first (the engine reads the saved layer, and the
        suspects' feature ids are its saved ones).

        Args:
            wait: Block (running the Qt event loop) until the job has ended.
            timeout_s: Longest wait.

        Returns:
            True when the job started (with ``wait``: when it also succeeded).
        """
        title = REVIEW_BUTTON_TEXT
        raster, layer = self.raster_layer(), self._label_layer
        if raster is None:
            return self._refuse(title, "Choose a raster layer first.")
        if layer is None or not label_layer.is_label_layer(layer):
            return self._refuse(title, "Choose a label layer (polygons with a "
                                f"'{label_layer.CLASS_FIELD}' field) first.")
        problem = presets.validate_classes(self.classes())
        if problem:
            return self._refuse(title, problem)
        out_dir = self.review_dir()
        if out_dir is None:
            return self._refuse(title, "Save the project (or the label layer) first: reviews "
                                f"are kept in a '{REVIEW_FOLDER}' folder next to it.")
        if not self.save_label_edits():
            return False
        try:
            labels = jobs.vector_layer_path(layer, self._temp_folder(), layer_spec=True)
            job = self.review_job(labels, str(out_dir))
        except (ValueError, OSError) as exc:
            return self._refuse(title, str(exc))
        request = {"folder": str(out_dir), "label_layer_id": layer.id(),
                   "labels_crs": layer.crs().authid(), "labels": labels}
        args = job["args"]
        self._log("info", f"Reviewing the labels of {layer.name()} on {raster.name()}: "
                          f"{args['k']} folds of {args.get('model')} from scratch, ranking "
                          f"{args['ranking']}, into {out_dir}")
        self._review_fold = None
        return self._start_job("review", job,
                               lambda result: self._on_review_result(request, result),
                               wait, timeout_s)

    def _on_review_result(self, request: dict[str, Any], result: dict[str, Any]) -> None:
        self.show_review(result, request)
        self.iface.messageBar().pushMessage(
            TITLE, f"{len(self.review_suspects)} suspicious polygons listed. {NEXT_STEP}",
            Qgis.MessageLevel.Success, 8)

    def show_review(self, result: dict[str, Any], request: dict[str, Any] | None = None) -> None:
        """Show a review's suspects and add its ``review.gpkg`` to the map.

        Args:
            result: The engine's ``review`` result (``suspects``, ``review_gpkg``, ...).
            request: What the panel sent (``label_layer_id``, ``labels_crs``, ``folder``);
                default: the panel's label layer now.

        Raises:
            results.ResultLayerError: review.gpkg cannot be opened.
        """
        layer = self._label_layer
        request = request or {"label_layer_id": layer.id() if layer else None,
                              "labels_crs": layer.crs().authid() if layer else "",
                              "folder": str(Path(str(result.get("review_gpkg", ""))).parent)}
        project = QgsProject.instance()
        old = (self.last_review or {}).get("layer_id")
        if old and project.mapLayer(old) is not None:
            project.removeMapLayer(old)  # one review layer at a time: the newest
        layer_id = None
        gpkg = result.get("review_gpkg")
        if gpkg:
            review = QgsVectorLayer(f"{gpkg}|layername={REVIEW_LAYER}", REVIEW_LAYER_NAME, "ogr")
            if not review.isValid():
                raise results.ResultLayerError(f"Cannot open the layer '{REVIEW_LAYER}' of "
                                               f"{gpkg}.")
            style_by_score(review)
            project.addMapLayer(review, False)
            results.results_group(project, self._label_layer).insertLayer(0, review)
            layer_id = review.id()
        self.last_review = {**request, "layer_id": layer_id, "result": result}
        self.review_decisions = {}
        suspects = sorted(result.get("suspects") or [], key=lambda s: int(s.get("rank", 0)))
        self._fill_review_table(suspects)
        text = review_summary(result)
        self._review_box.setCollapsed(False)  # the list is the next step
        self.review_summary.setText(f"{text}.\n{NEXT_STEP}")
        self._log("info", f"Review: {text}; files in {request.get('folder')}")

    def _fill_review_table(self, suspects: list[dict[str, Any]]) -> None:
        self.review_suspects = list(suspects)
        table = self.review_table
        table.blockSignals(True)
        table.setRowCount(len(suspects))
        for r, s in enumerate(suspects):
            prob, score = s.get("predicted_probability"), s.get("score")
            cells = (str(s.get("rank", r + 1)), suspect_text(s),
                     f"{prob:.2f}" if isinstance(prob, int | float) else "",
                     f"{score:.3f}" if isinstance(score, int | float) else "")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c != 1:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter)
                item.setToolTip(f"Feature {s.get('feature_id')} ({s.get('region_key')})")
                table.setItem(r, c, item)
        table.clearSelection()
        table.setCurrentCell(-1, -1)
        table.blockSignals(False)
        self._update_review_actions()

    def review_rows(self) -> list[tuple[str, str, str, str]]:
        """The suspect table as shown: (rank, given → predicted, probability, score)."""
        table = self.review_table
        return [tuple(table.item(r, c).text() for c in range(table.columnCount()))
                for r in range(table.rowCount())]

    def review_layer(self) -> QgsVectorLayer | None:
        """The last review's ``review.gpkg`` layer, while it is in the project."""
        layer_id = (self.last_review or {}).get("layer_id")
        layer = QgsProject.instance().mapLayer(layer_id) if layer_id else None
        return layer if isinstance(layer, QgsVectorLayer) else None

    # ------------------------------------------------------------------------------------
    # A suspect
    # ------------------------------------------------------------------------------------
    def current_suspect(self) -> int | None:
        """The table row chosen, or None."""
        row = self.review_table.currentRow()
        return row if 0 <= row < len(self.review_suspects) else None

    def _on_review_row_changed(self, row: int, *_: Any) -> None:
        self._update_review_actions()
        if 0 <= row < len(self.review_suspects):
            self.zoom_to_suspect(row)

    def reviewed_layer(self) -> QgsVectorLayer | None:
        """The label layer the last review ranked (while it is in the project)."""
        layer_id = (self.last_review or {}).get("label_layer_id")
        layer = QgsProject.instance().mapLayer(layer_id) if layer_id else None
        return layer if isinstance(layer, QgsVectorLayer) else None

    def _suspect_feature(self, row: int | None, title: str) -> tuple[QgsVectorLayer, int] | None:
        """(label layer, feature id) of a table row; refuses (returns None) when gone."""
        if row is None or not 0 <= row < len(self.review_suspects):
            self._refuse(title, "Choose a polygon in the Review labels list first.")
            return None
        layer = self.reviewed_layer()
        if layer is None:
            self._refuse(title, "The label layer that was reviewed is no longer in the "
                         "project.", "Run Review labels again.")
            return None
        feature_id = self.review_suspects[row].get("feature_id")
        if feature_id in (None, ""):
            self._refuse(title, "This suspect is a region of a label raster, not a polygon of "
                         "the label layer.", "Correct the label raster itself.")
            return None
        try:
            fid = int(str(feature_id))
        except ValueError:
            self._refuse(title, f"The suspect's feature id {feature_id!r} is not a number.")
            return None
        if not layer.getFeature(fid).isValid():
            self._refuse(title, f"Feature {fid} is no longer in '{layer.name()}'.",
                         "Run Review labels again.")
            return None
        return layer, fid

    def zoom_to_suspect(self, row: int | None = None) -> bool:
        """Zoom the map to a suspect, select it in the label layer, show the probability.

        The box is in the labels' CRS and is transformed to the map's. A region of a label
        raster (no feature id) is zoomed to without a selection.

        Args:
            row: Table row (default: the chosen one).

        Returns:
            True when the map was zoomed.
        """
        title = "Zoom to polygon"
        row = self.current_suspect() if row is None else row
        if row is None or not 0 <= row < len(self.review_suspects):
            return self._refuse(title, "Choose a polygon in the Review labels list first.")
        suspect = self.review_suspects[row]
        found = (self._suspect_feature(row, title) if suspect.get("feature_id") not in
                 (None, "") else None)
        layer = found[0] if found else self.reviewed_layer()
        box = suspect.get("bbox") or []
        if len(box) == 4:
            rect = QgsRectangle(*(float(v) for v in box))
        elif found:  # no box: the feature's own
            rect = layer.getFeature(found[1]).geometry().boundingBox()
        else:
            return self._refuse(title, "The suspect has no box to zoom to.")
        crs = layer.crs() if layer is not None else QgsCoordinateReferenceSystem(
            str((self.last_review or {}).get("labels_crs") or ""))
        canvas = self.iface.mapCanvas()
        try:
            transform = QgsCoordinateTransform(crs, canvas.mapSettings().destinationCrs(),
                                               QgsProject.instance())
            rect = transform.transformBoundingBox(rect)
        except QgsCsException as exc:
            return self._refuse(title, f"Cannot transform the polygon's box to the map's CRS: "
                                f"{exc}")
        if rect.width() == 0 or rect.height() == 0:
            rect.grow(max(rect.width(), rect.height(), 1.0))
        rect.scale(ZOOM_MARGIN)
        canvas.setExtent(rect)
        canvas.refresh()
        if found:
            found[0].selectByIds([found[1]])
        self._show_probability_layer()
        return True

    def _show_probability_layer(self) -> QgsRasterLayer | None:
        """Make the last prediction's probability layer visible (when it is loaded)."""
        layers = (self.last_results or {}).get("layers") or ()
        probability = layers[0] if layers else None
        try:
            layer_id = probability.id() if probability is not None else None
        except RuntimeError:  # the layer was deleted
            return None
        node = QgsProject.instance().layerTreeRoot().findLayer(layer_id) if layer_id else None
        if node is None:
            return None
        node.setItemVisibilityCheckedParentRecursive(True)
        return probability

    def _drop_suspect(self, row: int, decision: str) -> None:
        suspect = self.review_suspects.pop(row)
        self.review_decisions[str(suspect.get("feature_id"))] = decision
        self.review_table.blockSignals(True)
        self.review_table.removeRow(row)
        self.review_table.clearSelection()
        self.review_table.setCurrentCell(-1, -1)
        self.review_table.blockSignals(False)
        self._update_review_actions()

    def accept_suspect(self, row: int | None = None) -> bool:
        """The suspect's class is right: remove it from the list (remembered as accepted)."""
        row = self.current_suspect() if row is None else row
        if row is None or not 0 <= row < len(self.review_suspects):
            return self._refuse("Accept", "Choose a polygon in the Review labels list first.")
        suspect = self.review_suspects[row]
        self._drop_suspect(row, "accepted")
        self._log("info", f"Review: kept feature {suspect.get('feature_id')} as "
                          f"{suspect.get('given_class')}.")
        return True

    def relabel_suspect(self, row: int | None = None) -> bool:
        """Give the suspect the predicted class in the label layer (undoable, not saved).

        The layer is put in edit mode; the change is one edit command on its undo stack and
        stays unsaved until the layer is saved (Train saves the label edits first).
        """
        row = self.current_suspect() if row is None else row
        found = self._suspect_feature(row, "Change class")
        if found is None:
            return False
        layer, fid = found
        suspect = self.review_suspects[row]
        new_class = str(suspect.get("predicted_class"))
        index = layer.fields().indexOf(label_layer.CLASS_FIELD)
        if index < 0:
            return self._refuse("Change class", f"'{layer.name()}' has no "
                                f"'{label_layer.CLASS_FIELD}' field.")
        if not layer.isEditable() and not layer.startEditing():
            return self._refuse("Change class", f"Cannot edit '{layer.name()}'.",
                                "Check that its file is writable.")
        old = layer.getFeature(fid).attribute(index)
        layer.beginEditCommand(f"TerraSeg review: class of feature {fid} to {new_class}")
        if not layer.changeAttributeValue(fid, index, new_class, old):
            layer.destroyEditCommand()
            return self._refuse("Change class", f"Cannot change the class of feature {fid}.")
        layer.endEditCommand()
        self._drop_suspect(row, f"relabelled:{new_class}")
        self._log("info", f"Review: feature {fid} of {layer.name()}: class {old} -> "
                          f"{new_class} (unsaved; Train saves it).")
        return True

    def delete_suspect(self, row: int | None = None) -> bool:
        """Delete the suspect from the label layer (undoable, not saved)."""
        row = self.current_suspect() if row is None else row
        found = self._suspect_feature(row, "Delete")
        if found is None:
            return False
        layer, fid = found
        if not layer.isEditable() and not layer.startEditing():
            return self._refuse("Delete", f"Cannot edit '{layer.name()}'.",
                                "Check that its file is writable.")
        layer.beginEditCommand(f"TerraSeg review: delete feature {fid}")
        if not layer.deleteFeature(fid):
            layer.destroyEditCommand()
            return self._refuse("Delete", f"Cannot delete feature {fid}.")
        layer.endEditCommand()
        self._drop_suspect(row, "deleted")
        self._log("info", f"Review: deleted feature {fid} of {layer.name()} (unsaved; Train "
                          "saves it).")
        return True
