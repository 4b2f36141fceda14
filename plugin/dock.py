"""The TerraSeg dock panel: data and task, labels, training, prediction and export.

The panel only prepares inputs and shows results; every piece of engine work runs in a
``terraseg worker`` process (:class:`~.worker.WorkerJob`, job dicts from :mod:`.jobs`).
All its steps can be driven from code without dialogs (tests, screenshot scripts):
:meth:`TerraSegDock.set_raster_layer`, :meth:`~TerraSegDock.set_preset`,
:meth:`~TerraSegDock.new_label_layer`, :meth:`~TerraSegDock.start_training`,
:meth:`~TerraSegDock.cancel_training`, :meth:`~TerraSegDock.predict`,
:meth:`~TerraSegDock.load_model`, :meth:`~TerraSegDock.export_polygons`,
:meth:`~TerraSegDock.export_areas`; set :attr:`~TerraSegDock.auto_answer` to answer
questions (overwrite, run anyway, save edits) without a message box.
"""

from __future__ import annotations

import datetime as _dt
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import (
    QgsCollapsibleGroupBox,
    QgsColorButton,
    QgsDockWidget,
    QgsFieldComboBox,
    QgsMapLayerComboBox,
)
from qgis.PyQt.QtCore import QEventLoop, Qt, QTimer, pyqtSignal
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import jobs, label_layer, modelinfo, presets, results, settings
from .engine import find_engine
from .presets import ClassDef
from .worker import WorkerJob

TITLE = "TerraSeg"
METRIC_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc")
LOG_LIMIT = 5000


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(float(seconds)):
        return ""
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _colour_icon(colour: str, size: int = 14) -> QIcon:
    pix = QPixmap(size, size)
    pix.fill(QColor(colour))
    return QIcon(pix)


def _unique_path(path: Path) -> Path:
    """``path`` or ``stem_2.suffix``, ``stem_3.suffix``, ... whichever does not exist."""
    if not path.exists():
        return path
    for i in range(2, 10000):
        candidate = path.with_name(f"{path.stem}_{i}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(str(path))


def _exec(obj: Any) -> Any:
    """``exec()`` of a dialog or event loop (``exec_`` on Qt5 bindings)."""
    return obj.exec_() if hasattr(obj, "exec_") else obj.exec()


def _layer_id(layer: Any) -> str | None:
    return layer.id() if layer is not None else None


def _layer_filter(name: str) -> Any:
    """A layer-combo filter: ``Qgis.LayerFilter`` (QGIS >= 3.34) or the older enum."""
    scoped = getattr(Qgis, "LayerFilter", None)
    if scoped is not None and hasattr(scoped, name):
        return getattr(scoped, name)
    return getattr(QgsMapLayerProxyModel.Filter, name)


def _group(title: str, name: str, collapsed: bool = False) -> QgsCollapsibleGroupBox:
    box = QgsCollapsibleGroupBox(title)
    box.setObjectName(name)
    box.setSaveCollapsedState(False)
    box.setCollapsed(collapsed)
    return box


def _odd_spin(minimum: int, maximum: int, value: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(minimum, maximum)
    spin.setSingleStep(2)
    spin.setValue(value)
    return spin


class TerraSegDock(QgsDockWidget):
    """The TerraSeg panel.

    Attributes:
        iface: The QGIS interface.
        auto_answer: When not None, answers every question (overwrite, run anyway, save
            edits) without showing a message box: True = yes/save, False = no.
        last_model: Model file trained or loaded last (used by Predict and as the start of
            the next training).
        model_meta: Metadata of :attr:`last_model`.
        last_train_result: Result of the last finished training (engine payload).
        last_results: Last prediction: ``probability``, ``classes`` (paths), ``folder``,
            ``layers`` (probability and class layers), ``result`` (engine payload).
        last_exports: Paths and layers of the last exports (``polygons``, ``csv``,
            ``zones_csv``, ``zones``, ``area_rows``, layers).
        epoch_metrics: ``(epoch, values)`` of the current/last training.
        class_area_m2: Labelled area per class as shown in the panel.
        last_error: ``(type, message, hint)`` of the last failed job, else None.
        last_jobs: The job dict sent last, per kind (``train``, ``predict``, ...).
        device: Device description of the last training/prediction.
    """

    jobFinished = pyqtSignal(str, bool)  # noqa: N815 - Qt signal naming
    """(kind, ok) after a job (and any follow-up job) has ended."""

    def __init__(self, iface: Any, parent: QWidget | None = None) -> None:
        """Build the panel; no engine work is started."""
        super().__init__(TITLE, parent)
        self.iface = iface
        self.auto_answer: bool | None = None
        self.last_model: str | None = None
        self.model_meta: dict[str, Any] | None = None
        self.last_train_result: dict[str, Any] | None = None
        self.last_results: dict[str, Any] | None = None
        self.last_exports: dict[str, Any] = {}
        self.epoch_metrics: list[tuple[int, dict[str, float]]] = []
        self.class_area_m2: dict[str, float] = {}
        self.last_error: tuple[str, str, str] | None = None
        self.last_jobs: dict[str, dict[str, Any]] = {}
        self.device: str = ""
        self.pending_model: str | None = None
        self.job: WorkerJob | None = None
        self.job_kind: str | None = None
        self._job_ok = False
        self._on_job_result: Callable[[dict[str, Any]], None] | None = None
        self._next_step: Callable[[], None] | None = None
        self._label_layer: QgsVectorLayer | None = None
        self._user_classes: list[ClassDef] | None = None
        self._temp_dir: str | None = None
        self._area_timer = QTimer(self)
        self._area_timer.setSingleShot(True)
        self._area_timer.setInterval(0)
        self._area_timer.timeout.connect(self.refresh_areas)
        self._build_ui()
        # connected once every widget exists (the combos signal while they are set up)
        self.raster_combo.layerChanged.connect(self._on_raster_changed)
        self.label_combo.layerChanged.connect(self._on_label_combo_changed)
        self.set_preset(presets.SEALED)
        self.refresh_engine_status()
        self._on_raster_changed(self.raster_combo.currentLayer())
        self._on_label_combo_changed(self.label_combo.currentLayer())
        self._update_buttons()

    # ------------------------------------------------------------------------------------
    # UI construction
    # ------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self._build_engine_box())
        layout.addWidget(self._build_data_box())
        layout.addWidget(self._build_labels_box())
        layout.addWidget(self._build_train_box())
        layout.addWidget(self._build_predict_box())
        layout.addWidget(self._build_export_box())
        layout.addWidget(self._build_log_box())
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)

        outer = QWidget()
        outer_layout = QVBoxLayout(outer)
        outer_layout.setContentsMargins(0, 0, 0, 0)
        outer_layout.addWidget(scroll, 1)
        outer_layout.addWidget(self._build_status_bar())
        self.setWidget(outer)

    def _build_engine_box(self) -> QWidget:
        box = _group("Engine", "TerraSegEngineBox")
        row = QHBoxLayout(box)
        self.engine_label = QLabel()
        self.engine_label.setWordWrap(True)
        self.engine_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.settings_button = QPushButton("Settings…")
        self.settings_button.clicked.connect(self.open_settings)
        row.addWidget(self.engine_label, 1)
        row.addWidget(self.settings_button)
        return box

    def _build_data_box(self) -> QWidget:
        box = _group("Data && task", "TerraSegDataBox")
        form = QFormLayout(box)
        self.raster_combo = QgsMapLayerComboBox()
        self.raster_combo.setFilters(_layer_filter("RasterLayer"))
        self.raster_combo.setAllowEmptyLayer(True)
        form.addRow("Raster", self.raster_combo)
        self.raster_info = QLabel()
        self.raster_info.setWordWrap(True)
        form.addRow("", self.raster_info)

        self.band_table = QTableWidget(0, 4)
        self.band_table.setHorizontalHeaderLabels(["Band", "Description", "Use", "Role"])
        self.band_table.verticalHeader().setVisible(False)
        header = self.band_table.horizontalHeader()
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.band_table.setMaximumHeight(180)
        self.band_table.setToolTip("Bands fed to the model and their role names "
                                   "(red, green, blue, nir, ...). Uncheck bands to leave out.")
        form.addRow("Bands", self.band_table)

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

    def _build_labels_box(self) -> QWidget:
        box = _group("Labels", "TerraSegLabelsBox")
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        self.label_combo = QgsMapLayerComboBox()
        self.label_combo.setFilters(_layer_filter("PolygonLayer"))
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

        self.area_table = QTableWidget(0, 3)
        self.area_table.setHorizontalHeaderLabels(["Class", "Polygons", "Area (m²)"])
        self.area_table.verticalHeader().setVisible(False)
        self.area_table.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.Stretch)
        self.area_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.area_table.setMaximumHeight(130)
        layout.addWidget(self.area_table)
        return box

    def _build_train_box(self) -> QWidget:
        box = _group("Train", "TerraSegTrainBox")
        layout = QVBoxLayout(box)
        form = QFormLayout()
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 100000)
        self.epochs_spin.setValue(50)
        form.addRow("Epochs (max)", self.epochs_spin)
        self.patch_spin = _odd_spin(3, 1001, 51)
        self.patch_spin.setToolTip("Input cutout in pixels (odd): the context the model sees.")
        form.addRow("Patch size (px)", self.patch_spin)
        self.block_spin = _odd_spin(1, 501, 5)
        self.block_spin.setToolTip("Predicted centre block in pixels (odd).")
        form.addRow("Block size (px)", self.block_spin)
        self.scratch_check = QCheckBox("From scratch (do not start from the last model)")
        form.addRow("", self.scratch_check)
        layout.addLayout(form)

        adv = _group("Advanced", "TerraSegTrainAdvanced", collapsed=True)
        adv_form = QFormLayout(adv)
        self.patience_spin = QSpinBox()
        self.patience_spin.setRange(1, 100000)
        self.patience_spin.setValue(10)
        adv_form.addRow("Early-stopping patience", self.patience_spin)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(1e-3)
        adv_form.addRow("Learning rate", self.lr_spin)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 65536)
        self.batch_spin.setValue(128)
        adv_form.addRow("Batch size", self.batch_spin)
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(1, 10_000_000)
        self.samples_spin.setValue(2048)
        adv_form.addRow("Samples per epoch (min)", self.samples_spin)
        self.blocks_edit = QLineEdit("2,2,2")
        self.blocks_edit.setToolTip("Residual blocks per stage, e.g. 2,2,2")
        adv_form.addRow("Blocks per stage", self.blocks_edit)
        self.planes_edit = QLineEdit("4,8,16")
        self.planes_edit.setToolTip("Channels per stage, e.g. 4,8,16")
        adv_form.addRow("Channels per stage", self.planes_edit)
        self.val_spin = QDoubleSpinBox()
        self.val_spin.setRange(0.0, 0.9)
        self.val_spin.setSingleStep(0.05)
        self.val_spin.setValue(0.2)
        adv_form.addRow("Validation fraction", self.val_spin)
        self.augment_edit = QLineEdit("flip,rotate")
        adv_form.addRow("Augmentation", self.augment_edit)
        self.accelerator_combo = QComboBox()
        self.accelerator_combo.addItems(["auto", "cpu", "gpu"])
        adv_form.addRow("Device", self.accelerator_combo)
        self.cache_edit = QLineEdit()
        self.cache_edit.setPlaceholderText("engine default (~/.cache/terraseg)")
        adv_form.addRow("Cache folder", self.cache_edit)
        layout.addWidget(adv)

        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(lambda: self.start_training())
        self.cancel_train_button = QPushButton("Cancel")
        self.cancel_train_button.clicked.connect(self.cancel_training)
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_train_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.device_label = QLabel("Device: –")
        layout.addWidget(self.device_label)

        self.metrics_table = QTableWidget(0, 1 + len(METRIC_COLUMNS))
        self.metrics_table.setHorizontalHeaderLabels(
            ["Epoch", "Train loss", "Train acc", "Val loss", "Val acc"])
        self.metrics_table.verticalHeader().setVisible(False)
        self.metrics_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.metrics_table.setMaximumHeight(160)
        layout.addWidget(self.metrics_table)
        self.train_summary = QLabel()
        self.train_summary.setWordWrap(True)
        self.train_summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.train_summary)
        return box

    def _build_predict_box(self) -> QWidget:
        box = _group("Predict", "TerraSegPredictBox")
        layout = QVBoxLayout(box)
        self.area_canvas_radio = QRadioButton("Current map extent")
        self.area_layer_radio = QRadioButton("Extent of layer")
        self.area_whole_radio = QRadioButton("Whole raster")
        self.area_canvas_radio.setChecked(True)
        self.extent_combo = QgsMapLayerComboBox()
        self.extent_combo.setFilters(_layer_filter("VectorLayer"))
        layout.addWidget(self.area_canvas_radio)
        row = QHBoxLayout()
        row.addWidget(self.area_layer_radio)
        row.addWidget(self.extent_combo, 1)
        layout.addLayout(row)
        layout.addWidget(self.area_whole_radio)
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

    def _build_export_box(self) -> QWidget:
        box = _group("Export", "TerraSegExportBox")
        form = QFormLayout(box)
        self.min_area_spin = QDoubleSpinBox()
        self.min_area_spin.setRange(0.0, 1e9)
        self.min_area_spin.setDecimals(1)
        self.min_area_spin.setSuffix(" m²")
        self.min_area_spin.setToolTip("Regions smaller than this merge into their neighbours.")
        form.addRow("Minimum area", self.min_area_spin)
        self.vectorise_button = QPushButton("Export polygons…")
        self.vectorise_button.clicked.connect(lambda: self.export_polygons())
        form.addRow("", self.vectorise_button)
        self.zones_combo = QgsMapLayerComboBox()
        self.zones_combo.setFilters(_layer_filter("PolygonLayer"))
        self.zones_combo.setAllowEmptyLayer(True)
        self.zones_combo.setLayer(None)
        self.zone_field_combo = QgsFieldComboBox()
        self.zone_field_combo.setAllowEmptyFieldName(True)
        self.zones_combo.layerChanged.connect(self.zone_field_combo.setLayer)
        form.addRow("Zones (optional)", self.zones_combo)
        form.addRow("Zone name field", self.zone_field_combo)
        self.areas_button = QPushButton("Area statistics…")
        self.areas_button.clicked.connect(lambda: self.export_areas())
        form.addRow("", self.areas_button)
        self.areas_table = QTableWidget(0, 3)
        self.areas_table.setHorizontalHeaderLabels(["Class", "Area (m²)", "%"])
        self.areas_table.verticalHeader().setVisible(False)
        self.areas_table.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.Stretch)
        self.areas_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.areas_table.setMaximumHeight(130)
        form.addRow(self.areas_table)
        self.export_summary = QLabel()
        self.export_summary.setWordWrap(True)
        form.addRow(self.export_summary)
        return box

    def _build_log_box(self) -> QWidget:
        box = _group("Log", "TerraSegLogBox", collapsed=False)
        layout = QVBoxLayout(box)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_LIMIT)
        self.log_view.setMinimumHeight(120)
        layout.addWidget(self.log_view)
        self.debug_check = QCheckBox("Show engine output (debug)")
        layout.addWidget(self.debug_check)
        return box

    def _build_status_bar(self) -> QWidget:
        bar = QWidget()
        layout = QVBoxLayout(bar)
        layout.setContentsMargins(4, 2, 4, 4)
        row = QHBoxLayout()
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_job)
        row.addWidget(self.progress_bar, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.status_label = QLabel("Ready")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status_label)
        return bar

    # ------------------------------------------------------------------------------------
    # Engine
    # ------------------------------------------------------------------------------------
    def refresh_engine_status(self) -> bool:
        """Show whether the engine is found; returns True when it is."""
        loc = find_engine()
        if loc is None:
            self.engine_label.setText("<b style='color:#b00'>Engine not found.</b> "
                                      "Open Settings… and click 'Set up engine'.")
        else:
            self.engine_label.setText(f"<b style='color:#080'>Engine found</b>: {loc.root}")
        self.engine_label.setToolTip(loc.terraseg if loc else "")
        return loc is not None

    def open_settings(self) -> None:
        """Open the engine settings dialog, then refresh the engine status."""
        try:
            from .settings_dialog import EngineSettingsDialog
        except Exception as exc:  # noqa: BLE001 - show, do not break the panel
            self._show_error("Settings", f"Cannot open the engine settings: {exc}")
            return
        _exec(EngineSettingsDialog(self))
        self.refresh_engine_status()

    # ------------------------------------------------------------------------------------
    # Data & task
    # ------------------------------------------------------------------------------------
    def raster_layer(self) -> QgsRasterLayer | None:
        """The raster chosen in the panel."""
        layer = self.raster_combo.currentLayer()
        return layer if isinstance(layer, QgsRasterLayer) else None

    def set_raster_layer(self, layer: QgsRasterLayer | None) -> None:
        """Choose the raster (fills the band table from its band names)."""
        before = _layer_id(self.raster_combo.currentLayer())
        self.raster_combo.setLayer(layer)
        if before == _layer_id(layer) or _layer_id(self.raster_combo.currentLayer()) != _layer_id(
                layer):  # no signal: same layer, or a layer outside the project
            self._on_raster_changed(layer)

    def _on_raster_changed(self, layer: Any) -> None:
        self.band_table.setRowCount(0)
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
        if meta_bands and max(meta_bands) > layer.bandCount():
            meta_bands = {}
        self.band_table.setRowCount(len(descriptions))
        for row, (desc, (role, include)) in enumerate(zip(descriptions, roles, strict=True)):
            index = row + 1
            if meta_bands:
                include = index in meta_bands
                role = meta_bands.get(index, role)
            self._set_band_row(row, index, desc, include, role)
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
        for col, item in enumerate((number, description, use, role_item)):
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

    # ------------------------------------------------------------------------------------
    # Labels
    # ------------------------------------------------------------------------------------
    def label_layer(self) -> QgsVectorLayer | None:
        """The label layer chosen in the panel."""
        return self._label_layer

    def set_label_layer(self, layer: QgsVectorLayer | None) -> None:
        """Use ``layer`` (polygons with a ``class`` field) as the label layer."""
        self.label_combo.setLayer(layer)
        if _layer_id(self._label_layer) != _layer_id(layer):
            self._on_label_combo_changed(layer)

    def _on_label_combo_changed(self, layer: Any) -> None:
        if self.draw_button.isChecked():
            self.draw_button.setChecked(False)
        self._disconnect_label_layer()
        self._label_layer = layer if isinstance(layer, QgsVectorLayer) else None
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
        return _unique_path(Path(home) / f"{stem}_labels.gpkg")

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
                chosen, _ = QFileDialog.getSaveFileName(
                    self, "New label layer", str(Path.home() / "labels.gpkg"),
                    "GeoPackage (*.gpkg)")
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
            button.setIcon(_colour_icon(cls.colour))
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
        if checked and self.draw_button.isChecked() and self._label_layer is not None:
            label_layer.set_default_class(self._label_layer, self.selected_class())

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
        self._set_status(f"Drawing '{name}' polygons on {layer.name()}", "info")
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

    def refresh_areas(self) -> dict[str, float]:
        """Recompute and show the labelled area per class; returns {class: m2}."""
        layer = self._label_layer
        classes = self.classes()
        if layer is None or not label_layer.is_label_layer(layer):
            stats = {c.name: (0.0, 0) for c in classes}
        else:
            stats = label_layer.class_stats(layer, classes)
        self.class_area_m2 = {k: v[0] for k, v in stats.items()}
        self.area_table.setRowCount(len(stats))
        colours = {c.name: c.colour for c in classes}
        for r, (name, (area, count)) in enumerate(stats.items()):
            item = QTableWidgetItem(name or "(no class)")
            if name in colours:
                item.setIcon(_colour_icon(colours[name]))
            self.area_table.setItem(r, 0, item)
            n = QTableWidgetItem(str(count))
            n.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.area_table.setItem(r, 1, n)
            a = QTableWidgetItem(f"{area:,.0f}")
            a.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.area_table.setItem(r, 2, a)
        return dict(self.class_area_m2)

    # ------------------------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------------------------
    def set_training_options(self, **options: Any) -> None:
        """Set training options by engine name.

        Keys: ``epochs``, ``patch_size``, ``block_size``, ``from_scratch``, ``patience``,
        ``lr``, ``batch_size``, ``samples_per_epoch``, ``blocks``, ``planes``,
        ``val_fraction``, ``augment``, ``accelerator``, ``cache_dir``.
        """
        spins = {"epochs": self.epochs_spin, "patch_size": self.patch_spin,
                 "block_size": self.block_spin, "patience": self.patience_spin,
                 "lr": self.lr_spin, "batch_size": self.batch_spin,
                 "samples_per_epoch": self.samples_spin, "val_fraction": self.val_spin}
        edits = {"blocks": self.blocks_edit, "planes": self.planes_edit,
                 "augment": self.augment_edit, "cache_dir": self.cache_edit}
        for key, value in options.items():
            if key in spins:
                spins[key].setValue(value)
            elif key in edits:
                text = value if isinstance(value, str) else ",".join(str(v) for v in value)
                edits[key].setText(text or "")
            elif key == "from_scratch":
                self.scratch_check.setChecked(bool(value))
            elif key == "accelerator":
                self.accelerator_combo.setCurrentText(str(value))
            else:
                raise KeyError(f"Unknown training option {key!r}.")

    def training_options(self) -> dict[str, Any]:
        """The engine ``train`` options set in the panel (besides data and labels)."""
        opts: dict[str, Any] = {
            "epochs": self.epochs_spin.value(), "patch_size": self.patch_spin.value(),
            "block_size": self.block_spin.value(), "patience": self.patience_spin.value(),
            "lr": self.lr_spin.value(), "batch_size": self.batch_spin.value(),
            "samples_per_epoch": self.samples_spin.value(),
            "val_fraction": self.val_spin.value(),
            "blocks": self.blocks_edit.text().strip() or None,
            "planes": self.planes_edit.text().strip() or None,
            "augment": self.augment_edit.text().strip() or None,
            "accelerator": self.accelerator_combo.currentText(),
            "cache_dir": self.cache_edit.text().strip() or None,
        }
        return opts

    def models_dir(self) -> Path | None:
        """``models`` next to the project file, else next to the label layer's file."""
        home = QgsProject.instance().absolutePath()
        if home:
            return Path(home) / "models"
        layer = self._label_layer
        if layer is not None:
            file_path, _ = jobs.split_source(layer.source())
            if Path(file_path).is_file():
                return Path(file_path).resolve().parent / "models"
        return None

    def new_model_path(self) -> Path | None:
        """A new model file name ``models/YYYY-MM-DD_HHMM_<task>.tsm``."""
        folder = self.models_dir()
        if folder is None:
            return None
        stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H%M")
        slug = presets.slug_for(self.preset_name(), self.classes())
        return _unique_path(folder / f"{stamp}_{slug}.tsm")

    def _init_model_for(self, classes: list[ClassDef],
                        bands: str) -> tuple[str | None, dict[str, Any], str]:
        """(model to fine-tune from or None, its architecture options, how training starts).

        Fine-tuning keeps the last model's architecture, so its patch/block sizes and stage
        settings replace the panel's.
        """
        if self.scratch_check.isChecked():
            return None, {}, "from scratch (option)"
        if not self.last_model or not Path(self.last_model).is_file():
            return None, {}, "from scratch (no previous model)"
        try:
            meta = modelinfo.read_model_metadata(self.last_model)
        except modelinfo.ModelInfoError as exc:
            return None, {}, f"from scratch ({exc})"
        names = [c["name"] for c in modelinfo.model_classes(meta)]
        if [n.lower() for n in names] != [c.name.lower() for c in classes]:
            return None, {}, (f"from scratch: the last model's classes ({', '.join(names)}) "
                              "differ from the task's")
        indices = [i for i, _ in modelinfo.model_bands(meta)]
        wanted = [int(tok.split("=")[-1]) for tok in bands.split(",")]
        if indices != wanted:
            return None, {}, "from scratch: the last model uses other bands"
        params = (meta.get("architecture") or {}).get("params") or {}
        arch: dict[str, Any] = {}
        for key, option in (("patch_px", "patch_size"), ("block_px", "block_size"),
                            ("blocks", "blocks"), ("planes", "planes")):
            if params.get(key):
                value = params[key]
                arch[option] = ",".join(str(v) for v in value) if isinstance(value, list) else (
                    int(value))
        if (meta.get("architecture") or {}).get("name"):
            arch["model"] = meta["architecture"]["name"]
        return self.last_model, arch, f"fine-tuning {Path(self.last_model).name}"

    def start_training(self, wait: bool = False, timeout_s: float = 3600.0) -> bool:
        """Train a model on the raster and the label layer in a worker process.

        Saves pending label edits first. Starts from :attr:`last_model` unless 'From
        scratch' is checked (or the last model has other classes or bands).

        Args:
            wait: Block (running the Qt event loop) until the job has ended.
            timeout_s: Longest wait.

        Returns:
            True when the job started (with ``wait``: when it also succeeded).
        """
        raster = self.raster_layer()
        layer = self._label_layer
        classes = self.classes()
        if raster is None:
            return self._refuse("Train", "Choose a raster layer first.")
        if layer is None or not label_layer.is_label_layer(layer):
            return self._refuse("Train", "Choose or create a label layer (polygons with a "
                                f"'{label_layer.CLASS_FIELD}' field) first.")
        problem = presets.validate_classes(classes)
        if problem:
            return self._refuse("Train", problem)
        try:
            bands = self.bands_spec()
            raster_path = jobs.raster_layer_path(raster)
        except ValueError as exc:
            return self._refuse("Train", str(exc))
        if not self.save_label_edits():
            return False
        stats = label_layer.class_stats(layer, classes)
        labelled = [c.name for c in classes if stats.get(c.name, (0.0, 0))[1] > 0]
        if len(labelled) < 2:
            return self._refuse("Train", "Draw polygons of at least two classes first "
                                f"(labelled so far: {', '.join(labelled) or 'none'}).")
        out = self.new_model_path()
        if out is None:
            return self._refuse("Train", "Save the project (or the label layer) first: "
                                "models are kept in a 'models' folder next to it.")
        out.parent.mkdir(parents=True, exist_ok=True)
        init_model, arch, how = self._init_model_for(classes, bands)
        options = {**self.training_options(), **arch}
        try:
            labels_path = jobs.vector_layer_path(layer, self._temp_folder(), layer_spec=True)
        except OSError as exc:
            return self._refuse("Train", str(exc))
        job = jobs.train_job(
            raster=raster_path, labels=labels_path, out=str(out),
            class_field=label_layer.CLASS_FIELD, class_map=presets.class_map(classes),
            bands=bands, init_model=init_model, **options)
        self.pending_model = str(out)
        self.epoch_metrics = []
        self.metrics_table.setRowCount(0)
        self.train_summary.setText("")
        self._log("info", f"Training {out.name} ({how}) on {raster.name()} with labels "
                          f"{layer.name()}; bands {bands}")
        return self._start_job("train", job, self._on_train_result, wait, timeout_s)

    def cancel_training(self) -> None:
        """Stop a running training (the worker process is terminated; no model is kept)."""
        if self.job_kind == "train":
            self.cancel_job()

    def _on_train_result(self, result: dict[str, Any]) -> None:
        self.last_train_result = result
        model = str(result.get("model") or self.pending_model)
        self.pending_model = None
        device = result.get("device")
        if isinstance(device, dict):
            self.device = str(device.get("description") or device.get("type") or "")
            self.device_label.setText(f"Device: {self.device}")
        self._set_model(model)
        settings.set(settings.LAST_MODEL, model)
        settings.set(settings.MODELS_DIR, str(Path(model).parent))
        val = (result.get("metrics") or {}).get("val") or (result.get("metrics") or {}).get(
            "test") or {}
        lines = [f"Model saved: {model}",
                 f"Epochs run: {result.get('epochs')}, best epoch: {result.get('best_epoch')}"]
        if val:
            lines.append(self._format_eval(val))
        else:
            lines.append("No validation pixels: draw more polygons per class for held-out "
                         "metrics.")
        self.train_summary.setText("\n".join(lines))
        self.iface.messageBar().pushMessage(TITLE, f"Model trained: {Path(model).name}",
                                            Qgis.MessageLevel.Success, 5)

    @staticmethod
    def _format_eval(m: dict[str, Any]) -> str:
        parts = []
        for key, label in (("accuracy", "accuracy"), ("f1_weighted", "F1 (weighted)"),
                           ("mean_iou", "mean IoU")):
            if isinstance(m.get(key), int | float):
                parts.append(f"{label} {m[key]:.3f}")
        text = "Validation: " + ", ".join(parts)
        if m.get("n_samples") is not None:
            text += f" (n = {m['n_samples']} px)"
        f1 = m.get("f1_per_class") or {}
        if f1:
            text += "\nF1 per class: " + ", ".join(f"{k} {v:.3f}" for k, v in f1.items()
                                                  if isinstance(v, int | float))
        return text

    def _on_metrics(self, epoch: int, values: dict[str, Any]) -> None:
        self.epoch_metrics.append((epoch, dict(values)))
        r = self.metrics_table.rowCount()
        self.metrics_table.insertRow(r)
        self.metrics_table.setItem(r, 0, QTableWidgetItem(str(epoch)))
        for c, key in enumerate(METRIC_COLUMNS, start=1):
            value = values.get(key)
            text = f"{value:.4f}" if isinstance(value, int | float) else ""
            self.metrics_table.setItem(r, c, QTableWidgetItem(text))
        self.metrics_table.scrollToBottom()
        vals = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, int | float))
        self._log("info", f"epoch {epoch}: {vals}")

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
        self.model_label.setText(Path(path).name)
        self.model_label.setToolTip(f"{path}\n{modelinfo.summary(self.model_meta)}")
        self._update_buttons()
        return self.model_meta

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
                                                    "TerraSeg model (*.tsm)")
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
        return _unique_path(model.parent / f"{model.stem}_results" / f"{stamp}_{mode}")

    def _temp_folder(self) -> str:
        if self._temp_dir is None or not Path(self._temp_dir).is_dir():
            self._temp_dir = tempfile.mkdtemp(prefix="terraseg_panel_")
        return self._temp_dir

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
        raster = self.raster_layer()
        if raster is None:
            return self._refuse("Predict", "Choose a raster layer first.")
        if not self.last_model or not Path(self.last_model).is_file():
            return self._refuse("Predict", "Train or load a model first.")
        meta = self.model_meta or self._set_model(self.last_model)
        if meta is None:
            return self._refuse("Predict", f"Cannot read the model {self.last_model}.")
        if not self._warn_incompatible(meta, raster, ask=True):
            return False
        try:
            raster_path = jobs.raster_layer_path(raster)
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
        out_dir = self.results_dir(mode)
        job = jobs.predict_job(model=self.last_model, raster=raster_path, out_dir=str(out_dir),
                               bands=bands, window=list(window) if window else None,
                               extent_layer=extent_layer)
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
        if result.get("device"):
            self.device = str(result["device"])
            self.device_label.setText(f"Device: {self.device} (prediction)")
        shares = result.get("class_shares") or {}
        share_text = ", ".join(f"{k} {100 * v:.1f} %" for k, v in shares.items())
        self.predict_summary.setText(f"Results in {Path(cls).parent}\n{share_text}")
        self.iface.messageBar().pushMessage(TITLE, f"Prediction added to '{results.GROUP_NAME}'",
                                            Qgis.MessageLevel.Success, 5)

    # ------------------------------------------------------------------------------------
    # Export
    # ------------------------------------------------------------------------------------
    def _check_targets(self, paths: list[Path]) -> bool | None:
        """None: cancelled; False: nothing exists; True: overwrite confirmed."""
        existing = [p for p in paths if p.exists()]
        if not existing:
            return False
        names = "\n".join(str(p) for p in existing)
        if not self._confirm("Replace files?", f"These files exist:\n{names}\n\nReplace them?"):
            return None
        for p in existing:
            results.remove_layers_with_source(p)
        return True

    def export_polygons(self, path: str | Path | None = None, min_area: float | None = None,
                        wait: bool = False, timeout_s: float = 3600.0) -> bool:
        """Vectorise the last class raster to a GeoPackage and add it to the project.

        Args:
            path: GeoPackage to write; None asks with a file dialog.
            min_area: Regions below this area (m2) merge into neighbours (default: panel).
            wait: Block until the job has ended.
            timeout_s: Longest wait.

        Returns:
            True when the job started (with ``wait``: when it also succeeded).
        """
        if not self.last_results:
            return self._refuse("Export", "Predict first: polygons come from the class raster.")
        if min_area is not None:
            self.min_area_spin.setValue(float(min_area))
        if path is None:
            default = Path(self.last_results["folder"]) / "classes.gpkg"
            chosen, _ = QFileDialog.getSaveFileName(self, "Export polygons", str(default),
                                                    "GeoPackage (*.gpkg)")
            if not chosen:
                return False
            path = chosen
        target = Path(path)
        if target.suffix.lower() != ".gpkg":
            target = target.with_suffix(".gpkg")
        overwrite = self._check_targets([target])
        if overwrite is None:
            return False
        job = jobs.vectorise_job(classes=self.last_results["classes"], out=str(target),
                                 min_area=self.min_area_spin.value(),
                                 model=self.last_results.get("model"), overwrite=overwrite)
        return self._start_job("vectorise", job, self._on_vectorise_result, wait, timeout_s)

    def _on_vectorise_result(self, result: dict[str, Any]) -> None:
        path = str(result["polygons"])
        classes = (self.last_results or {}).get("class_list") or self.result_classes()
        layer = results.add_vector_result(path, f"{Path(path).stem} polygons", classes)
        self.last_exports.update(polygons=path, polygons_layer=layer)
        self.export_summary.setText(f"{result.get('n_polygons', '?')} polygons: {path}")

    def export_areas(self, csv: str | Path | None = None,
                     zones_layer: QgsVectorLayer | None = None, zone_field: str | None = None,
                     wait: bool = False, timeout_s: float = 3600.0) -> bool:
        """Area per class (m2, %) of the last class raster, overall and per zone.

        The overall table goes to ``csv`` and the panel. With a zone layer a second job
        writes ``<csv>_zones.csv`` and ``<csv>_zones.gpkg`` (the zones with per-class area
        attributes), which is added to the project.

        Args:
            csv: CSV to write; None asks with a file dialog.
            zones_layer: Polygon zones (default: the layer chosen in the panel, if any).
            zone_field: Zone name attribute (default: the panel's choice).
            wait: Block until all jobs have ended.
            timeout_s: Longest wait.

        Returns:
            True when the job started (with ``wait``: when all succeeded).
        """
        if not self.last_results:
            return self._refuse("Export", "Predict first: areas come from the class raster.")
        if zones_layer is None:
            current = self.zones_combo.currentLayer()
            zones_layer = current if isinstance(current, QgsVectorLayer) else None
            if zone_field is None and zones_layer is not None:
                zone_field = self.zone_field_combo.currentField() or None
        if csv is None:
            default = Path(self.last_results["folder"]) / "areas.csv"
            chosen, _ = QFileDialog.getSaveFileName(self, "Area statistics", str(default),
                                                    "CSV (*.csv)")
            if not chosen:
                return False
            csv = chosen
        target = Path(csv)
        if target.suffix.lower() != ".csv":
            target = target.with_suffix(".csv")
        zones_csv = target.with_name(f"{target.stem}_zones.csv")
        zones_gpkg = target.with_name(f"{target.stem}_zones.gpkg")
        paths = [target] + ([zones_csv, zones_gpkg] if zones_layer is not None else [])
        overwrite = self._check_targets(paths)
        if overwrite is None:
            return False
        zones_path = None
        if zones_layer is not None:
            try:
                zones_path = jobs.vector_layer_path(zones_layer, self._temp_folder(),
                                                    layer_spec=False)
            except OSError as exc:
                return self._refuse("Export", str(exc))
        classes_tif, model = self.last_results["classes"], self.last_results.get("model")
        job = jobs.areas_job(classes=classes_tif, out_csv=str(target), model=model,
                             overwrite=overwrite)

        def after_overall(result: dict[str, Any]) -> None:
            self._show_area_rows(result.get("rows") or [])
            self.last_exports.update(csv=str(result.get("csv", target)),
                                     area_rows=result.get("rows") or [])
            self.export_summary.setText(f"Areas: {target}")
            if zones_path is None:
                return
            zone_job = jobs.areas_job(classes=classes_tif, out_csv=str(zones_csv),
                                      zones=zones_path, zone_field=zone_field,
                                      out_zones=str(zones_gpkg), model=model,
                                      overwrite=overwrite)
            self._next_step = lambda: self._start_job("areas", zone_job, after_zones)

        def after_zones(result: dict[str, Any]) -> None:
            zones_out = str(result.get("zones") or zones_gpkg)
            layer = results.add_vector_result(zones_out, f"{zones_layer.name()} class areas")
            self.last_exports.update(zones_csv=str(result.get("csv", zones_csv)),
                                     zones=zones_out, zones_layer=layer)
            self.export_summary.setText(f"Areas: {target}\nZones: {zones_out}")

        return self._start_job("areas", job, after_overall, wait, timeout_s)

    def _show_area_rows(self, rows: list[dict[str, Any]]) -> None:
        self.areas_table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            self.areas_table.setItem(r, 0, QTableWidgetItem(str(row.get("class_name", ""))))
            for c, key, fmt in ((1, "area_m2", "{:,.0f}"), (2, "percent", "{:.2f}")):
                value = row.get(key)
                item = QTableWidgetItem(fmt.format(value) if isinstance(value, int | float)
                                        else "")
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.areas_table.setItem(r, c, item)

    # ------------------------------------------------------------------------------------
    # Jobs
    # ------------------------------------------------------------------------------------
    def is_busy(self) -> bool:
        """Whether an engine job (or a follow-up job) is running."""
        return self.job is not None

    def _start_job(self, kind: str, job: dict[str, Any],
                   on_result: Callable[[dict[str, Any]], None], wait: bool = False,
                   timeout_s: float = 3600.0) -> bool:
        if self.is_busy():
            return self._refuse(kind.capitalize(), "Another TerraSeg job is running; wait for "
                                "it or cancel it first.")
        loc = find_engine()
        self.refresh_engine_status()
        if loc is None:
            return self._refuse(kind.capitalize(), "The TerraSeg engine was not found.",
                                "Open Settings… in the Engine box and click 'Set up engine'.")
        worker = WorkerJob(loc, self)
        worker.progress.connect(self._on_progress)
        worker.log.connect(self._on_worker_log)
        worker.metrics.connect(self._on_metrics)
        worker.result.connect(self._on_result)
        worker.error.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.job, self.job_kind = worker, kind
        self._job_ok = False
        self._on_job_result = on_result
        self.last_error = None
        self.last_jobs[kind] = job
        self.progress_bar.setValue(0)
        self._set_status(f"{kind}: starting the engine…", "info")
        self._update_buttons()
        worker.start(job)
        if wait:
            return self.wait_for_job(timeout_s) and self.last_error is None
        return True

    def wait_for_job(self, timeout_s: float = 3600.0) -> bool:
        """Run the Qt event loop until no job runs; False on timeout."""
        deadline = time.monotonic() + timeout_s
        loop = QEventLoop()
        timer = QTimer()
        timer.setInterval(50)
        timer.timeout.connect(lambda: loop.quit() if (not self.is_busy() or
                                                      time.monotonic() > deadline) else None)
        timer.start()
        while self.is_busy() and time.monotonic() <= deadline:
            _exec(loop)
        timer.stop()
        return not self.is_busy()

    def cancel_job(self) -> None:
        """Stop the running job (its worker process is terminated; outputs roll back)."""
        self._next_step = None
        if self.job is not None and self.job.is_running():
            self._set_status(f"{self.job_kind}: cancelling…", "warning")
            self.job.cancel()

    def _on_progress(self, fraction: float, stage: str, eta: Any, message: str) -> None:
        self.progress_bar.setValue(int(max(0.0, min(1.0, fraction)) * 1000))
        self.progress_bar.setFormat(f"{stage} %p%")
        text = f"{self.job_kind}: {stage} {100 * fraction:.0f} %"
        if eta is not None:
            text += f", about {_fmt_seconds(eta)} left"
        if message:
            text += f" – {message}"
        self.status_label.setStyleSheet("")
        self.status_label.setText(text)

    def _on_worker_log(self, level: str, message: str) -> None:
        if message.startswith("training on "):
            self.device = message[len("training on "):]
            self.device_label.setText(f"Device: {self.device}")
        if level == "debug" and not self.debug_check.isChecked():
            return
        self._log(level, message)

    def _on_result(self, result: dict[str, Any]) -> None:
        handler = self._on_job_result
        try:
            if handler is not None:
                handler(result)
            self._job_ok = True
            self._set_status(f"{self.job_kind}: done", "success")
        except Exception as exc:  # noqa: BLE001 - a bad result must not break the panel
            self._job_ok = False
            self._next_step = None
            self.last_error = ("PanelError", str(exc), "")
            self._show_error(TITLE, f"{self.job_kind} finished, but its result could not be "
                             f"shown: {exc}")

    def _on_error(self, kind: str, message: str, hint: str) -> None:
        self.last_error = (kind, message, hint)
        self._next_step = None
        if kind == "CancelledError":
            self._set_status(f"{self.job_kind}: cancelled. {message}", "warning")
            self._log("warning", message)
            self.iface.messageBar().pushMessage(TITLE, f"{self.job_kind} cancelled",
                                                Qgis.MessageLevel.Info, 5)
            return
        self._show_error(f"{TITLE} {self.job_kind} failed", f"{kind}: {message}", hint)

    def _on_finished(self, exit_code: int) -> None:
        worker, kind = self.job, self.job_kind or ""
        ok = self._job_ok and self.last_error is None
        self.job = None
        self._on_job_result = None
        if kind == "train" and self.pending_model and not ok:
            self.pending_model = None
        if worker is not None:
            worker.deleteLater()
        self._log("debug" if ok else "info", f"{kind} worker ended ({exit_code})")
        step, self._next_step = self._next_step, None
        if ok and step is not None:
            step()
            if self.is_busy():
                return
            ok = self.last_error is None
        self.job_kind = None
        self._update_buttons()
        self.jobFinished.emit(kind, ok)

    # ------------------------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        busy = self.is_busy()
        has_raster = self.raster_layer() is not None
        has_labels = self._label_layer is not None and label_layer.is_label_layer(
            self._label_layer)
        self.train_button.setEnabled(not busy and has_raster and has_labels)
        self.predict_button.setEnabled(not busy and has_raster and bool(self.last_model))
        self.vectorise_button.setEnabled(not busy and bool(self.last_results))
        self.areas_button.setEnabled(not busy and bool(self.last_results))
        self.cancel_button.setEnabled(busy)
        self.cancel_train_button.setEnabled(busy and self.job_kind == "train")
        self.draw_button.setEnabled(has_labels)
        self.save_labels_button.setEnabled(self._label_layer is not None)
        self.scratch_check.setEnabled(bool(self.last_model))

    def _confirm(self, title: str, text: str) -> bool:
        if self.auto_answer is not None:
            self._log("info", f"{title}: {text.splitlines()[0]} -> "
                              f"{'yes' if self.auto_answer else 'no'} (automatic)")
            return bool(self.auto_answer)
        answer = QMessageBox.question(self, title, text,
                                      QMessageBox.StandardButton.Yes
                                      | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _refuse(self, title: str, message: str, hint: str = "") -> bool:
        self.last_error = ("Refused", message, hint)
        self._show_error(title, message, hint, level=Qgis.MessageLevel.Warning)
        return False

    def _show_error(self, title: str, message: str, hint: str = "",
                    level: Any = Qgis.MessageLevel.Critical) -> None:
        text = f"{message} Hint: {hint}" if hint else message
        critical = level == Qgis.MessageLevel.Critical
        self._set_status(text, "error" if critical else "warning")
        self._log("error" if critical else "warning", text)
        self.iface.messageBar().pushMessage(title, text, level, 0 if critical else 10)

    def _set_status(self, text: str, level: str = "info") -> None:
        colours = {"error": "#b00", "warning": "#a60", "success": "#080"}
        colour = colours.get(level)
        self.status_label.setStyleSheet(f"color: {colour}" if colour else "")
        self.status_label.setText(text)

    def _log(self, level: str, message: str) -> None:
        stamp = _dt.datetime.now().strftime("%H:%M:%S")
        prefix = "" if level in ("info", "debug") else f"{level.upper()}: "
        self.log_view.appendPlainText(f"{stamp} {prefix}{message}")

    def log_text(self) -> str:
        """The panel's log as plain text."""
        return self.log_view.toPlainText()

    def shutdown(self) -> None:
        """Stop a running job and release layers and temporary files (plugin unload)."""
        self._next_step = None
        if self.job is not None and self.job.is_running():
            self.job.cancel()
            self.job.wait(15000)
        self._disconnect_label_layer()
        self._label_layer = None
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
