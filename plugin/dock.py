"""The TerraSeg dock panel: data and task, labels, training, prediction and export.

The panel only prepares inputs and shows results; every piece of engine work runs in a
``terraseg worker`` process (:class:`~.worker_job.WorkerJob`, job dicts from :mod:`.jobs`).
All its steps can be driven from code without dialogs (tests, screenshot scripts):
:meth:`TerraSegDock.set_raster_layer`, :meth:`~TerraSegDock.set_preset`,
:meth:`~TerraSegDock.new_label_layer`, :meth:`~TerraSegDock.start_training`,
:meth:`~TerraSegDock.cancel_training`, :meth:`~TerraSegDock.predict`,
:meth:`~TerraSegDock.load_model`, :meth:`~TerraSegDock.evaluate`,
:meth:`~TerraSegDock.export_polygons`,
:meth:`~TerraSegDock.export_areas`; set :attr:`~TerraSegDock.auto_answer` to answer
questions (overwrite, run anyway, save edits) without a message box.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from qgis.core import Qgis, QgsProject, QgsVectorLayer
from qgis.gui import QgsDockWidget
from qgis.PyQt.QtCore import QEvent, Qt, QTimer, pyqtSignal
from qgis.PyQt.QtWidgets import QHBoxLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget

from . import label_layer, presets, project_state
from .engine import EngineLocation, find_engine
from .panel_change import ChangePanelMixin
from .panel_common import TITLE, exec_qt, group_box, name_widgets
from .panel_coverage import CoveragePanelMixin
from .panel_data import DataPanelMixin
from .panel_evaluate import EvaluatePanelMixin
from .panel_export import ExportPanelMixin
from .panel_jobs import JobsPanelMixin
from .panel_label_areas import LabelAreasPanelMixin
from .panel_labels import LabelsPanelMixin
from .panel_predict import PredictPanelMixin
from .panel_quick import QuickMapPanelMixin
from .panel_review import ReviewPanelMixin
from .panel_terrain import TerrainPanelMixin
from .panel_train import TrainPanelMixin
from .presets import ClassDef
from .worker_job import WorkerJob


class TerraSegDock(
    DataPanelMixin,
    CoveragePanelMixin,
    TerrainPanelMixin,
    LabelsPanelMixin,
    LabelAreasPanelMixin,
    QuickMapPanelMixin,
    ReviewPanelMixin,
    TrainPanelMixin,
    PredictPanelMixin,
    EvaluatePanelMixin,
    ExportPanelMixin,
    ChangePanelMixin,
    JobsPanelMixin,
    QgsDockWidget,
):
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
        last_evaluation: Last evaluation against a reference layer: ``folder`` (report),
            ``files``, ``metrics`` (the engine's metrics.json), ``result`` (engine payload),
            ``model``, ``reference``, ``class_field``, ``class_map``.
        last_exports: Paths and layers of the last exports (``polygons``, ``csv``,
            ``zones_csv``, ``zones``, ``area_rows``, layers).
        epoch_metrics: ``(epoch, values)`` of the current/last training.
        class_area_m2: Labelled area per class as shown in the panel.
        label_stats: Label polygons per class inside and outside the raster's extent
            (:class:`~.label_layer.ClassLabelStats`), as shown in the area table.
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
        self.last_evaluation: dict[str, Any] | None = None
        self.last_exports: dict[str, Any] = {}
        self.epoch_metrics: list[tuple[int, dict[str, float]]] = []
        self.class_area_m2: dict[str, float] = {}
        self.label_stats: dict[str, label_layer.ClassLabelStats] = {}
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
        name_widgets(self)  # object names = attribute names (tests find controls by them)
        # connected once every widget exists (the combos signal while they are set up)
        self.raster_combo.layerChanged.connect(self._on_raster_changed)
        self.raster_combo.layerChanged.connect(self._suggest_recipe)  # Train's Recipe
        self.label_combo.layerChanged.connect(self._on_label_combo_changed)
        self.set_preset(presets.SEALED)
        self.refresh_engine_status()
        self._on_raster_changed(self.raster_combo.currentLayer())
        self._suggest_recipe(self.raster_combo.currentLayer())
        self._on_label_combo_changed(self.label_combo.currentLayer())
        self._update_buttons()
        project = QgsProject.instance()
        project.writeProject.connect(self._on_write_project)
        project.readProject.connect(self._on_read_project)
        project.cleared.connect(self._on_project_cleared)
        if project_state.read_state(project) is not None:  # opened with a saved project
            self.restore_from_project(project)

    # ------------------------------------------------------------------------------------
    # UI construction
    # ------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self._build_engine_box())
        layout.addWidget(self._build_data_box())
        layout.addWidget(self._build_terrain_box())
        layout.addWidget(self._build_labels_box())
        layout.addWidget(self._build_quick_box())
        layout.addWidget(self._build_train_box())
        layout.addWidget(self._build_review_box())
        layout.addWidget(self._build_predict_box())
        layout.addWidget(self._build_evaluate_box())
        layout.addWidget(self._build_export_box())
        layout.addWidget(self._build_change_box())
        layout.addWidget(self._build_log_box())
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        # wide enough for every section, so nothing scrolls sideways: measured again whenever
        # the body's layout changes (QGIS's style and fonts, a preset, a raster's bands), not
        # only once here - in real QGIS the first measure was too small
        self._scroll, self._body = scroll, body
        body.installEventFilter(self)
        self._fit_width()

        outer = QWidget()
        outer_layout = QVBoxLayout(outer)
        outer_layout.setContentsMargins(0, 0, 0, 0)
        outer_layout.addWidget(scroll, 1)
        outer_layout.addWidget(self._build_status_bar())
        self.setWidget(outer)

    def _fit_width(self) -> None:
        """Keep the scroll area at least as wide as the body's minimum (no sideways scroll)."""
        scroll = self._scroll
        needed = (scroll.widget().minimumSizeHint().width() + 2 * scroll.frameWidth()
                  + scroll.verticalScrollBar().sizeHint().width())
        if scroll.minimumWidth() != needed:
            scroll.setMinimumWidth(needed)

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
        """Re-fit the width when the body's layout is redone (see :meth:`_fit_width`)."""
        if event.type() == QEvent.Type.LayoutRequest and watched is self._body:
            try:
                self._fit_width()
            except RuntimeError:  # the panel is being deleted
                pass
        return super().eventFilter(watched, event)

    def _build_engine_box(self) -> QWidget:
        box = group_box("Engine", "TerraSegEngineBox")
        row = QHBoxLayout(box)
        self.engine_label = QLabel()
        self.engine_label.setWordWrap(True)
        self.engine_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.settings_button = QPushButton("Settings…")
        self.settings_button.clicked.connect(self.open_settings)
        row.addWidget(self.engine_label, 1)
        row.addWidget(self.settings_button)
        return box

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

    def _find_engine(self) -> EngineLocation | None:
        """The engine as found by this module's ``find_engine`` (tests replace it)."""
        return find_engine()

    def open_settings(self) -> None:
        """Open the engine settings dialog, then refresh the engine status."""
        try:
            from .settings_dialog import EngineSettingsDialog
        except Exception as exc:  # noqa: BLE001 - show, do not break the panel
            self._show_error("Settings", f"Cannot open the engine settings: {exc}")
            return
        exec_qt(EngineSettingsDialog(self))
        self.refresh_engine_status()

    # ------------------------------------------------------------------------------------
    # The panel's state in the project
    # ------------------------------------------------------------------------------------
    def save_to_project(self, project: QgsProject | None = None) -> None:
        """Store the panel's state in ``project`` (saved with it; :mod:`.project_state`)."""
        project = project or QgsProject.instance()
        project_state.write_state(project, project_state.panel_state(self))

    def restore_from_project(self, project: QgsProject | None = None) -> list[str]:
        """Restore the state stored in ``project``; returns the problems shown (missing files)."""
        project = project or QgsProject.instance()
        state = project_state.read_state(project)
        if state is None:
            return []
        problems = project_state.apply_state(self, state, project)
        if problems:
            self._show_error(TITLE, " ".join(problems), level=Qgis.MessageLevel.Warning)
        else:
            self._set_status(f"Restored the panel from {project.baseName() or 'the project'}.")
        return problems

    def _on_write_project(self, *_doc: Any) -> None:
        self.save_to_project()

    def _on_read_project(self, *_doc: Any) -> None:
        self.restore_from_project()

    def _on_project_cleared(self) -> None:
        # the result layers went with the project
        self.last_results = None
        self.last_evaluation = None
        self.show_evaluation(None)
        self.predict_summary.setText("")
        self._update_buttons()

    # ------------------------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        busy = self.is_busy()
        has_raster = self.raster_layer() is not None
        has_labels = self._label_layer is not None and label_layer.is_label_layer(
            self._label_layer)
        self.train_button.setEnabled(not busy and has_raster and has_labels)
        self.quick_button.setEnabled(not busy and has_raster and has_labels)
        self.predict_button.setEnabled(not busy and has_raster and bool(self.last_model))
        self.vectorise_button.setEnabled(not busy and bool(self.last_results))
        self.areas_button.setEnabled(not busy and bool(self.last_results))
        self.evaluate_button.setEnabled(not busy and has_raster and bool(self.last_model))
        self.cancel_button.setEnabled(busy)
        self.cancel_train_button.setEnabled(busy and self.job_kind == "train")
        self.draw_button.setEnabled(has_labels)
        self.save_labels_button.setEnabled(self._label_layer is not None)
        self.scratch_check.setEnabled(bool(self.last_model))
        self._update_pseudo_controls(busy, has_raster)
        self._update_encoder_controls(busy, has_raster)
        self._update_review_controls(busy, has_raster, has_labels)
        self._update_change_controls(busy, has_raster)
        self._explain_buttons()  # tooltips say why a button is disabled

    def shutdown(self) -> None:
        """Stop a running job and release layers and temporary files (plugin unload)."""
        self._next_step = None
        project = QgsProject.instance()
        for signal, slot in ((project.writeProject, self._on_write_project),
                             (project.readProject, self._on_read_project),
                             (project.cleared, self._on_project_cleared)):
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass
        if self.job is not None and self.job.is_running():
            self.job.cancel()
            self.job.wait(15000)
        self.stop_inspect()
        self._disconnect_label_layer()
        self._label_layer = None
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
