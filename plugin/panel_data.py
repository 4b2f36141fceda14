"""Panel section 'Data & task': raster, band table, nodata box, task preset and classes.

Band coverage, the suggested bands and the nodata value behind the band table's Coverage
column and the 'Nodata value' box live in :mod:`.panel_coverage`.
"""

from __future__ import annotations

from typing import Any

from qgis.core import QgsRasterLayer
from qgis.gui import QgsColorButton, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QComboBox,
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

from . import label_layer, modelinfo, presets
from .panel_common import group_box, layer_filter, layer_id
from .presets import ClassDef
from .worker_job import WorkerJob


class DataPanelMixin:
    """Raster and band choice, task preset and class table of the panel.

    Mixed into :class:`~.dock.TerraSegDock`; relies on the panel's shared state and helpers
    (``_log``, ``_refuse``, ``_start_job``, ``_update_buttons``, ...).
    """

    def _build_data_box(self) -> QWidget:
        box = group_box("Data && task", "TerraSegDataBox")
        form = QFormLayout(box)
        self.raster_combo = QgsMapLayerComboBox()
        self.raster_combo.setFilters(layer_filter("RasterLayer"))
        self.raster_combo.setAllowEmptyLayer(True)
        form.addRow("Raster", self.raster_combo)
        self.raster_info = QLabel()
        self.raster_info.setWordWrap(True)
        form.addRow("", self.raster_info)

        self.band_table = QTableWidget(0, 5)
        self.band_table.setHorizontalHeaderLabels(["Band", "Name", "Use", "Role", "Data %"])
        self.band_table.horizontalHeaderItem(4).setToolTip(
            "Share of the raster / of the labelled pixels where the band holds data.")
        self.band_table.verticalHeader().setVisible(False)
        header = self.band_table.horizontalHeader()
        # narrow columns fit their contents; name and role share the rest (no side scrolling)
        for col in (0, 2, 4):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.band_table.setMaximumHeight(180)
        self.band_table.setToolTip("Bands fed to the model and their role names "
                                   "(red, green, blue, nir, ...). Uncheck bands to leave out. "
                                   "Data: the share of the raster (and of the labelled "
                                   "pixels) where the band holds data.")
        self.band_table.itemChanged.connect(self._on_band_item_changed)
        form.addRow("Bands", self.band_table)
        coverage_row = QHBoxLayout()
        self.coverage_label = QLabel()
        self.coverage_label.setWordWrap(True)
        self.best_bands_button = QPushButton("Use best bands")
        self.best_bands_button.setToolTip("Tick the bands that together cover the most of the "
                                          "raster (a band is left out when it blanks more "
                                          "than 1 % of the raster or of the labelled pixels)")
        self.best_bands_button.setEnabled(False)
        self.best_bands_button.clicked.connect(lambda: self.use_best_bands())
        coverage_row.addWidget(self.coverage_label, 1)
        coverage_row.addWidget(self.best_bands_button)
        form.addRow("", coverage_row)
        self.nodata_edit = QLineEdit()
        self.nodata_edit.setPlaceholderText("blank = raster's own")
        self.nodata_edit.setToolTip("Nodata value of the raster when it does not declare one "
                                    "(e.g. 0 outside mosaicked chips); training, prediction "
                                    "and evaluation treat these pixels as no data.")
        self.nodata_edit.editingFinished.connect(self._on_nodata_edited)
        form.addRow("Nodata value", self.nodata_edit)
        self.band_coverage: dict[str, Any] | None = None
        self._inspect_worker: WorkerJob | None = None
        self._inspect_request: tuple[Any, ...] | None = None  # what band_coverage answers
        self._inspect_failed: tuple[Any, ...] | None = None  # a request the engine refused
        self._inspect_deferred = False
        self._inspect_generation = 0
        self._coverage_raster_id: str | None = None
        self._nodata_asked: set[tuple[str, float]] = set()
        self._inspect_timer = QTimer(self)
        self._inspect_timer.setSingleShot(True)
        self._inspect_timer.setInterval(300)
        self._inspect_timer.timeout.connect(self.inspect_raster)
        self.jobFinished.connect(lambda _kind, _ok: self._run_deferred_inspect())

        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(presets.PRESETS))
        self.preset_combo.currentTextChanged.connect(self._on_preset_changed)
        form.addRow("Task", self.preset_combo)

        self.class_table = QTableWidget(0, 2)
        self.class_table.setHorizontalHeaderLabels(["Class", "Colour"])
        self.class_table.verticalHeader().setVisible(False)
        self.class_table.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.Stretch)
        self.class_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.class_table.setMaximumHeight(130)
        self.class_table.itemChanged.connect(lambda _item: self._on_classes_edited())
        form.addRow("Classes", self.class_table)
        class_buttons = QHBoxLayout()
        self.add_class_button = QPushButton("Add class")
        self.add_class_button.clicked.connect(lambda: self.add_class())
        self.remove_class_button = QPushButton("Remove class")
        self.remove_class_button.clicked.connect(self._remove_selected_class)
        class_buttons.addWidget(self.add_class_button)
        class_buttons.addWidget(self.remove_class_button)
        class_buttons.addStretch(1)
        form.addRow("", class_buttons)

        model_row = QHBoxLayout()
        self.model_label = QLabel("No model yet")
        self.model_label.setWordWrap(True)
        self.load_model_button = QPushButton("Load model…")
        self.load_model_button.clicked.connect(lambda: self.load_model())
        model_row.addWidget(self.model_label, 1)
        model_row.addWidget(self.load_model_button)
        form.addRow("Model", model_row)
        return box

    # ------------------------------------------------------------------------------------
    # Data & task
    # ------------------------------------------------------------------------------------
    def raster_layer(self) -> QgsRasterLayer | None:
        """The raster chosen in the panel."""
        layer = self.raster_combo.currentLayer()
        return layer if isinstance(layer, QgsRasterLayer) else None

    def set_raster_layer(self, layer: QgsRasterLayer | None) -> None:
        """Choose the raster (fills the band table from its band names)."""
        before = layer_id(self.raster_combo.currentLayer())
        self.raster_combo.setLayer(layer)
        if before == layer_id(layer) or layer_id(self.raster_combo.currentLayer()) != layer_id(
                layer):  # no signal: same layer, or a layer outside the project
            self._on_raster_changed(layer)

    def _on_raster_changed(self, layer: Any) -> None:
        """Fill the band table from the raster's own bands, then inspect its coverage.

        The loaded model's band mapping is applied only when it fits the raster
        (:func:`~.presets.model_mapping_fits`); otherwise roles come from band descriptions.
        """
        self.band_table.setRowCount(0)
        self.band_coverage = None
        self.best_bands_button.setEnabled(False)
        self.coverage_label.setText("")
        if layer_id(layer) != self._coverage_raster_id:  # nodata belongs to the raster
            self._coverage_raster_id = layer_id(layer)
            self.nodata_edit.clear()
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            self.raster_info.setText("Choose a raster layer of the project.")
            self._update_buttons()
            return
        descriptions = []
        for i in range(1, layer.bandCount() + 1):
            name = layer.bandName(i)
            descriptions.append(name.split(":", 1)[1].strip() if ":" in name else "")
        roles = presets.default_band_roles(descriptions)
        meta_bands = dict(modelinfo.model_bands(self.model_meta)) if self.model_meta else {}
        if meta_bands and not presets.model_mapping_fits(list(meta_bands.items()),
                                                         descriptions):
            meta_bands = {}
        self.band_table.blockSignals(True)
        self.band_table.setRowCount(len(descriptions))
        for row, (desc, (role, include)) in enumerate(zip(descriptions, roles, strict=True)):
            index = row + 1
            if meta_bands:
                include = index in meta_bands
                role = meta_bands.get(index, role)
            self._set_band_row(row, index, desc, include, role)
        self.band_table.blockSignals(False)
        self._schedule_inspect()
        crs = layer.crs().authid() or layer.crs().description() or "no CRS"
        self.raster_info.setText(
            f"{layer.width()} x {layer.height()} px, {layer.bandCount()} band(s), pixel "
            f"{layer.rasterUnitsPerPixelX():g} x {layer.rasterUnitsPerPixelY():g}, {crs}")
        if self.model_meta:
            self._warn_incompatible(self.model_meta, layer, ask=False)
        self._update_buttons()

    def _set_band_row(self, row: int, index: int, desc: str, include: bool, role: str) -> None:
        fixed = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        number = QTableWidgetItem(str(index))
        number.setFlags(fixed)
        description = QTableWidgetItem(desc)
        description.setFlags(fixed)
        use = QTableWidgetItem()
        use.setFlags(fixed | Qt.ItemFlag.ItemIsUserCheckable)
        use.setCheckState(Qt.CheckState.Checked if include else Qt.CheckState.Unchecked)
        role_item = QTableWidgetItem(role)
        role_item.setFlags(fixed | Qt.ItemFlag.ItemIsEditable)
        coverage = QTableWidgetItem("")
        coverage.setFlags(fixed)
        for col, item in enumerate((number, description, use, role_item, coverage)):
            self.band_table.setItem(row, col, item)

    def band_rows(self) -> list[tuple[int, str, bool]]:
        """(band number, role, include) per row of the band table."""
        rows = []
        for r in range(self.band_table.rowCount()):
            rows.append((int(self.band_table.item(r, 0).text()),
                         self.band_table.item(r, 3).text(),
                         self.band_table.item(r, 2).checkState() == Qt.CheckState.Checked))
        return rows

    def set_band_row(self, band: int, role: str | None = None,
                     include: bool | None = None) -> None:
        """Change the role name or inclusion of one band (1-based)."""
        r = band - 1
        if not 0 <= r < self.band_table.rowCount():
            raise IndexError(f"No band {band} in the band table.")
        if role is not None:
            self.band_table.item(r, 3).setText(role)
        if include is not None:
            self.band_table.item(r, 2).setCheckState(
                Qt.CheckState.Checked if include else Qt.CheckState.Unchecked)

    def bands_spec(self) -> str:
        """The engine's ``--bands`` string, e.g. ``red=1,green=2,blue=3,nir=4``.

        Raises:
            ValueError: No band included or invalid role names.
        """
        return presets.bands_spec(self.band_rows())

    def preset_name(self) -> str:
        """The chosen task preset."""
        return self.preset_combo.currentText()

    def set_preset(self, name: str) -> None:
        """Choose a task preset (Sealed surfaces, Landslides, Land cover)."""
        if name not in presets.PRESETS:
            raise ValueError(f"Unknown preset {name!r}; use one of {list(presets.PRESETS)}.")
        if self.preset_combo.currentText() == name and self.class_table.rowCount():
            return
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentText(name)
        self.preset_combo.blockSignals(False)
        self._on_preset_changed(name)

    def _on_preset_changed(self, name: str) -> None:
        preset = presets.PRESETS.get(name)
        if preset is None:
            return
        if preset.editable:
            self._fill_class_table(self._user_classes or list(preset.classes), editable=True)
        else:
            self._fill_class_table(list(preset.classes), editable=False)
        self._on_classes_edited()
        self._apply_preset_defaults(preset)

    def classes(self) -> list[ClassDef]:
        """The classes of the task in model order."""
        out = []
        for r in range(self.class_table.rowCount()):
            item = self.class_table.item(r, 0)
            button = self.class_table.cellWidget(r, 1)
            colour = button.color().name() if isinstance(button, QgsColorButton) else "#808080"
            out.append(ClassDef(item.text().strip() if item else "", colour))
        return out

    def set_classes(self, classes: list[ClassDef], preset: str = presets.LAND_COVER) -> None:
        """Set the task's classes (switches to ``preset``, normally Land cover)."""
        if presets.PRESETS[preset].editable:
            self._user_classes = list(classes)
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentText(preset)
        self.preset_combo.blockSignals(False)
        self._fill_class_table(list(classes), editable=presets.PRESETS[preset].editable)
        self._on_classes_edited()

    def add_class(self, name: str | None = None, colour: str | None = None) -> None:
        """Add a Land cover class (switches to Land cover when another preset is chosen)."""
        current = self.classes()
        if not presets.PRESETS[self.preset_name()].editable:
            self.set_classes(current)
        colour = colour or presets.next_colour(c.colour for c in current)
        name = name or f"class {len(current) + 1}"
        self.set_classes([*self.classes(), ClassDef(name, colour)])

    def remove_class(self, name: str) -> None:
        """Remove a Land cover class by name."""
        if not presets.PRESETS[self.preset_name()].editable:
            raise ValueError("Only Land cover classes can be removed.")
        self.set_classes([c for c in self.classes() if c.name != name])

    def _remove_selected_class(self) -> None:
        rows = sorted({i.row() for i in self.class_table.selectedIndexes()}, reverse=True)
        if not rows and self.class_table.rowCount():
            rows = [self.class_table.rowCount() - 1]
        names = {self.classes()[r].name for r in rows}
        self.set_classes([c for c in self.classes() if c.name not in names])

    def _fill_class_table(self, classes: list[ClassDef], editable: bool) -> None:
        self.class_table.blockSignals(True)
        self.class_table.setRowCount(len(classes))
        for r, cls in enumerate(classes):
            item = QTableWidgetItem(cls.name)
            flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
            if editable:
                flags |= Qt.ItemFlag.ItemIsEditable
            item.setFlags(flags)
            self.class_table.setItem(r, 0, item)
            button = QgsColorButton()
            button.setColor(QColor(cls.colour))
            button.setColorDialogTitle(f"Colour of {cls.name}")
            button.colorChanged.connect(lambda _c: self._on_classes_edited())
            self.class_table.setCellWidget(r, 1, button)
        self.class_table.blockSignals(False)
        self.add_class_button.setEnabled(editable)
        self.remove_class_button.setEnabled(editable)

    def _on_classes_edited(self) -> None:
        classes = self.classes()
        if presets.PRESETS[self.preset_name()].editable:
            self._user_classes = classes
        self._rebuild_palette(classes)
        layer = self.label_layer()
        if layer is not None and label_layer.is_label_layer(layer) and classes:
            label_layer.apply_class_style(layer, classes)
        self._schedule_area_refresh()
