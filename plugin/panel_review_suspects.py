"""The 'Review labels' suspects: the list, zooming to one, and the label edits per suspect.

The panel lists the suspects of the last review (rank, given -> predicted class,
probability, score). Selecting one zooms the map to it (its box in the labels' CRS,
transformed to the map's), selects it in the label layer and shows the last prediction's
probability layer. Per suspect:

- **Accept**: the label is right; the suspect leaves the list (remembered as accepted).
- **Change class**: the polygon's class becomes the predicted one, as an edit of the label
  layer: the layer is put in edit mode and the change is one undoable command (Ctrl+Z);
  nothing is saved until the analyst saves the layer or starts Train, which saves the label
  edits first.
- **Delete**: the polygon is deleted from the label layer, the same way (undoable, unsaved).
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from . import label_layer

COLUMNS = ("#", "Given → predicted", "Prob.", "Score")
ZOOM_MARGIN = 1.5
"""The map shows this many times the polygon's box (some surroundings)."""


def suspect_text(suspect: dict[str, Any]) -> str:
    """``"sealed → unsealed"`` of one suspect (given, then predicted class)."""
    return f"{suspect.get('given_class')} → {suspect.get('predicted_class')}"


class ReviewSuspectsMixin:
    """The suspects list of 'Review labels' and the actions on one suspect.

    Base of :class:`~.panel_review.ReviewPanelMixin`, which runs the review and fills the
    list (:meth:`_fill_review_table`); relies on its ``last_review``, ``review_suspects``
    and ``review_decisions`` and on the panel's ``_log``, ``_refuse``, ``iface`` and
    ``last_results``.
    """

    def _build_suspect_list(self, layout: QVBoxLayout) -> None:
        """The suspects table and the Accept / Change class / Delete buttons."""
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

    def _update_review_actions(self) -> None:
        chosen = self.current_suspect() is not None
        for button in (self.review_accept_button, self.review_relabel_button,
                       self.review_delete_button):
            button.setEnabled(chosen)

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
