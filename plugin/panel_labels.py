"""Panel section 'Labels': label layer, class palette, drawing and labelled areas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsVectorLayer
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import label_layer, presets, results
from .panel_common import (
    colour_icon,
    group_box,
    layer_filter,
    layer_id,
    save_file_name,
    unique_path,
)
from .panel_label_areas import AREA_COLUMNS
from .presets import ClassDef


class LabelsPanelMixin:
    """Label layer, class palette, drawing and labelled areas of the panel.

    Mixed into :class:`~.dock.TerraSegDock`; relies on the panel's shared state and helpers
    (``_log``, ``_refuse``, ``_start_job``, ``_update_buttons``, ...).
    """

    def _build_labels_box(self) -> QWidget:
        box = group_box("Labels", "TerraSegLabelsBox")
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        self.label_combo = QgsMapLayerComboBox()
        self.label_combo.setFilters(layer_filter("PolygonLayer"))
        self.label_combo.setAllowEmptyLayer(True)
        self.label_combo.setLayer(None)
        self.new_label_button = QPushButton("New label layer…")
        self.new_label_button.clicked.connect(lambda: self.new_label_layer())
        row.addWidget(self.label_combo, 1)
        row.addWidget(self.new_label_button)
        layout.addLayout(row)

        self.palette_widget = QWidget()
        self.palette_layout = QGridLayout(self.palette_widget)
        self.palette_layout.setContentsMargins(0, 0, 0, 0)
        self.palette_group = QButtonGroup(self)
        self.palette_group.setExclusive(True)
        self.palette_group.buttonToggled.connect(self._on_palette_toggled)
        self.palette_buttons: dict[str, QToolButton] = {}
        layout.addWidget(self.palette_widget)

        draw_row = QHBoxLayout()
        self.draw_button = QPushButton("Draw")
        self.draw_button.setCheckable(True)
        self.draw_button.setToolTip("Draw polygons of the chosen class with QGIS's "
                                    "add-polygon tool (no attribute form).")
        self.draw_button.toggled.connect(self._on_draw_toggled)
        self.save_labels_button = QPushButton("Save edits")
        self.save_labels_button.clicked.connect(lambda: self.save_label_edits())
        draw_row.addWidget(self.draw_button)
        draw_row.addWidget(self.save_labels_button)
        draw_row.addStretch(1)
        layout.addLayout(draw_row)

        self.area_table = QTableWidget(0, len(AREA_COLUMNS))
        self.area_table.setHorizontalHeaderLabels([title for title, _ in AREA_COLUMNS])
        for col, (_, tip) in enumerate(AREA_COLUMNS):
            self.area_table.horizontalHeaderItem(col).setToolTip(tip)
        self.area_table.verticalHeader().setVisible(False)
        self.area_table.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.Stretch)
        self.area_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.area_table.setMaximumHeight(130)
        layout.addWidget(self.area_table)
        self.area_note = QLabel()
        self.area_note.setWordWrap(True)
        self.area_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.area_note)
        # the areas inside the raster change with the raster (built before this box)
        self.raster_combo.layerChanged.connect(self._schedule_area_refresh)
        return box

    # ------------------------------------------------------------------------------------
    # Labels
    # ------------------------------------------------------------------------------------
    def label_layer(self) -> QgsVectorLayer | None:
        """The label layer chosen in the panel."""
        return self._label_layer

    def set_label_layer(self, layer: QgsVectorLayer | None) -> None:
        """Use ``layer`` (polygons with a ``class`` field) as the label layer."""
        self.label_combo.setLayer(layer)
        if layer_id(self._label_layer) != layer_id(layer):
            self._on_label_combo_changed(layer)

    def _on_label_combo_changed(self, layer: Any) -> None:
        if self.draw_button.isChecked():
            self.draw_button.setChecked(False)
        self._disconnect_label_layer()
        self._label_layer = layer if isinstance(layer, QgsVectorLayer) else None
        label_layer.mark_current(self._label_layer if label_layer.is_label_layer(
            self._label_layer) else None)
        if self._label_layer is not None:
            lyr = self._label_layer
            for sig in (lyr.featureAdded, lyr.featureDeleted, lyr.geometryChanged,
                        lyr.committedFeaturesAdded, lyr.committedFeaturesRemoved,
                        lyr.attributeValueChanged, lyr.afterRollBack, lyr.dataChanged):
                sig.connect(self._schedule_area_refresh)
            lyr.editingStopped.connect(self._on_editing_stopped)
            lyr.willBeDeleted.connect(self._on_label_layer_deleted)
            if label_layer.is_label_layer(lyr):
                label_layer.apply_class_style(lyr, self.classes())
            else:
                self._set_status(f"Layer '{lyr.name()}' has no '{label_layer.CLASS_FIELD}' "
                                 "field: create a new label layer to draw labels.", "warning")
        self.refresh_areas()
        self._update_buttons()

    def _disconnect_label_layer(self) -> None:
        lyr = self._label_layer
        if lyr is None:
            return
        for sig, slot in ((lyr.featureAdded, self._schedule_area_refresh),
                          (lyr.featureDeleted, self._schedule_area_refresh),
                          (lyr.geometryChanged, self._schedule_area_refresh),
                          (lyr.committedFeaturesAdded, self._schedule_area_refresh),
                          (lyr.committedFeaturesRemoved, self._schedule_area_refresh),
                          (lyr.attributeValueChanged, self._schedule_area_refresh),
                          (lyr.afterRollBack, self._schedule_area_refresh),
                          (lyr.dataChanged, self._schedule_area_refresh),
                          (lyr.editingStopped, self._on_editing_stopped),
                          (lyr.willBeDeleted, self._on_label_layer_deleted)):
            try:
                sig.disconnect(slot)
            except (TypeError, RuntimeError):
                pass

    def _on_label_layer_deleted(self) -> None:
        self._disconnect_label_layer()
        self._label_layer = None
        label_layer.mark_current(None)
        self.draw_button.blockSignals(True)
        self.draw_button.setChecked(False)
        self.draw_button.blockSignals(False)
        self.refresh_areas()
        self._update_buttons()

    def _on_editing_stopped(self) -> None:
        if self.draw_button.isChecked():
            self.draw_button.blockSignals(True)
            self.draw_button.setChecked(False)
            self.draw_button.blockSignals(False)
        self._schedule_area_refresh()

    def default_label_path(self) -> Path | None:
        """Where a new label layer goes: next to the project file (None if unsaved)."""
        home = QgsProject.instance().absolutePath()
        if not home:
            return None
        raster = self.raster_layer()
        stem = Path(raster.source().split("|")[0]).stem if raster else "terraseg"
        return unique_path(Path(home) / f"{stem}_labels.gpkg")

    def new_label_layer(self, path: str | Path | None = None) -> QgsVectorLayer | None:
        """Create a GeoPackage label layer (class field and colours) and choose it.

        Args:
            path: GeoPackage to create. Default: next to the project file; for an unsaved
                project a file dialog asks. An existing file is replaced only after asking.

        Returns:
            The new layer, or None when cancelled or failed.
        """
        classes = self.classes()
        problem = presets.validate_classes(classes)
        if problem:
            self._show_error("Label layer", problem)
            return None
        if path is None:
            path = self.default_label_path()
            if path is None:
                # the panel asks about replacing below (once), not the dialog as well
                chosen = save_file_name(self, "New label layer",
                                        str(Path.home() / "labels.gpkg"), "GeoPackage (*.gpkg)")
                if not chosen:
                    return None
                path = chosen
        target = Path(path)
        if target.suffix.lower() != ".gpkg":
            target = target.with_suffix(".gpkg")
        overwrite = False
        if target.exists():
            if not self._confirm("Label layer", f"{target} exists. Replace it with a new, "
                                 "empty label layer?"):
                return None
            results.remove_layers_with_source(target)
            overwrite = True
        raster = self.raster_layer()
        crs = raster.crs() if raster is not None and raster.crs().isValid() else (
            QgsProject.instance().crs())
        if not crs.isValid():
            crs = QgsCoordinateReferenceSystem("EPSG:4326")
        try:
            layer = label_layer.create_label_layer(target, crs, classes, overwrite=overwrite,
                                                   name=f"{target.stem} (TerraSeg labels)")
        except (OSError, label_layer.LabelLayerError) as exc:
            self._show_error("Label layer", str(exc))
            return None
        self.set_label_layer(layer)
        self._set_status(f"New label layer {target}", "info")
        return layer

    def _rebuild_palette(self, classes: list[ClassDef]) -> None:
        current = self.selected_class()
        for button in list(self.palette_buttons.values()):
            self.palette_group.removeButton(button)
            button.setParent(None)
            button.deleteLater()
        self.palette_buttons = {}
        for i, cls in enumerate(classes):
            if not cls.name:
                continue
            button = QToolButton()
            button.setText(cls.name)
            button.setIcon(colour_icon(cls.colour))
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            button.setCheckable(True)
            button.setMinimumWidth(110)
            self.palette_group.addButton(button)
            self.palette_layout.addWidget(button, i // 2, i % 2)
            self.palette_buttons[cls.name] = button
        if current in self.palette_buttons:
            self.palette_buttons[current].setChecked(True)
        elif self.palette_buttons:
            next(iter(self.palette_buttons.values())).setChecked(True)

    def selected_class(self) -> str | None:
        """The class chosen in the palette."""
        for name, button in getattr(self, "palette_buttons", {}).items():
            if button.isChecked():
                return name
        return None

    def select_class(self, name: str) -> None:
        """Choose the class to draw."""
        if name not in self.palette_buttons:
            raise ValueError(f"Unknown class {name!r}.")
        self.palette_buttons[name].setChecked(True)

    def _on_palette_toggled(self, _button: Any, checked: bool) -> None:
        layer = self._label_layer
        if not checked or layer is None or not label_layer.is_label_layer(layer):
            return
        drawing = self.draw_button.isChecked()
        name = self.selected_class()
        if drawing or layer.isEditable():  # QGIS's own add-polygon tool may be in use
            label_layer.set_default_class(layer, name)
        if drawing:
            self._set_status(self._drawing_status(name, layer), "info")

    @staticmethod
    def _drawing_status(name: str | None, layer: QgsVectorLayer) -> str:
        return f"Drawing '{name}' polygons on {layer.name()}"

    def start_drawing(self, class_name: str | None = None) -> bool:
        """Start QGIS's add-polygon tool on the label layer for a class.

        The layer enters edit mode, new features get ``class_name`` as their ``class``
        value and no attribute form opens.

        Returns:
            True when drawing started.
        """
        layer = self._label_layer
        if layer is None or not label_layer.is_label_layer(layer):
            self._show_error("Draw", "Choose or create a label layer first.")
            self._set_draw_checked(False)
            return False
        if class_name is not None:
            self.select_class(class_name)
        name = self.selected_class()
        if name is None:
            self._show_error("Draw", "Choose a class in the palette first.")
            self._set_draw_checked(False)
            return False
        label_layer.suppress_attribute_form(layer)
        label_layer.set_default_class(layer, name)
        if not layer.isEditable() and not layer.startEditing():
            self._show_error("Draw", f"Layer '{layer.name()}' cannot be edited.")
            self._set_draw_checked(False)
            return False
        self.iface.setActiveLayer(layer)
        action = self.iface.actionAddFeature()
        if action is not None:
            action.trigger()
        self._set_draw_checked(True)
        self._set_status(self._drawing_status(name, layer), "info")
        return True

    def stop_drawing(self, ask: bool = True) -> None:
        """Leave the drawing tool; offer to save unsaved label edits."""
        self._set_draw_checked(False)
        layer = self._label_layer
        try:
            pan = self.iface.actionPan()
            if pan is not None:
                pan.trigger()
        except Exception:  # noqa: BLE001 - only a convenience
            pass
        if layer is None or not layer.isEditable() or not layer.isModified() or not ask:
            return
        if self._confirm("Labels", f"Save the label edits of '{layer.name()}' to its file?"):
            self.save_label_edits(stop_editing=True)

    def _set_draw_checked(self, checked: bool) -> None:
        self.draw_button.blockSignals(True)
        self.draw_button.setChecked(checked)
        self.draw_button.blockSignals(False)

    def _on_draw_toggled(self, checked: bool) -> None:
        if checked:
            self.start_drawing()
        else:
            self.stop_drawing()

    def save_label_edits(self, stop_editing: bool = False) -> bool:
        """Commit the label layer's edits to its GeoPackage (keeps editing by default).

        Returns:
            True when there was nothing to save or the commit succeeded.
        """
        layer = self._label_layer
        if layer is None or not layer.isEditable():
            return True
        if not layer.isModified():
            if stop_editing:
                layer.commitChanges()
            return True
        if layer.commitChanges(stop_editing):
            self._set_status(f"Saved the label edits of {layer.name()}", "info")
            return True
        errors = "; ".join(layer.commitErrors())
        self._show_error("Labels", f"Cannot save the label edits of '{layer.name()}': "
                         f"{errors}", "Check that the GeoPackage is writable.")
        return False

    def _schedule_area_refresh(self, *_args: Any) -> None:
        self._area_timer.start()
