"""Running engine jobs from the panel: WorkerJob wiring, progress, log, errors."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from typing import Any

from qgis.core import Qgis
from qgis.PyQt.QtCore import QEventLoop, Qt, QTimer
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from . import label_layer
from .panel_common import LOG_LIMIT, TITLE, exec_qt, fmt_seconds, group_box
from .worker_errors import panel_wording
from .worker_job import WorkerJob

#: What each action button does (its tooltip while it is enabled).
BUTTON_HELP = {
    "train_button": "Train a model on the raster and the label layer's polygons.",
    "predict_button": "Classify the raster with the last model (area chosen above).",
    "vectorise_button": "Write the last prediction's class map as polygons (GeoPackage).",
    "areas_button": "Area per class of the last prediction (CSV), per zone when a zone "
                    "layer is chosen.",
}


class JobsPanelMixin:
    """Engine jobs of the panel: one :class:`~.worker_job.WorkerJob` at a time.

    Shows the job's progress, log and errors; also holds the panel's question, status and
    log helpers.

    Mixed into :class:`~.dock.TerraSegDock`; relies on the panel's shared state and helpers
    (``_log``, ``_refuse``, ``_start_job``, ``_update_buttons``, ...).
    """

    def _build_log_box(self) -> QWidget:
        box = group_box("Log", "TerraSegLogBox", collapsed=False)
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
        loc = self._find_engine()
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
            exec_qt(loop)
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
            text += f", about {fmt_seconds(eta)} left"
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
        if kind != "WorkerCrashed":  # (a crash quotes the engine's output as it was)
            # the engine speaks of command-line flags; the panel of its own controls
            command = (self.last_jobs.get(self.job_kind or "") or {}).get("command")
            message, hint = panel_wording(message, command), panel_wording(hint, command)
            self.last_error = (kind, message, hint)
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

    def busy_blockers(self) -> list[str]:
        """The blocker of every engine action while a job runs (empty when none does)."""
        return ([f"A TerraSeg job ({self.job_kind or 'engine'}) is running: wait for it or "
                 "cancel it."] if self.is_busy() else [])

    def raster_blockers(self) -> list[str]:
        """The blocker of actions that need Data & task's raster (empty when chosen)."""
        return [] if self.raster_layer() is not None else [
            "Choose a raster layer under Data & task."]

    def button_blockers(self) -> dict[str, list[str]]:
        """Why each action button cannot run now, by attribute name (empty: it can)."""
        busy = self.busy_blockers()
        raster = self.raster_blockers()
        layer = self._label_layer
        if layer is None:
            labels = ["Choose or create a label layer under Labels."]
        elif not label_layer.is_label_layer(layer):
            labels = [f"The layer '{layer.name()}' has no '{label_layer.CLASS_FIELD}' field: "
                      "create a new label layer under Labels."]
        else:
            labels = []
        model = [] if self.last_model else [
            "No model yet: train one, or load one (Load model… in Data & task)."]
        results = [] if self.last_results else [
            "No prediction yet: Predict first; exports come from its class map."]
        return {"train_button": busy + raster + labels,
                "quick_button": busy + raster + labels,
                "predict_button": busy + raster + model,
                "evaluate_button": busy + raster + model,
                "vectorise_button": busy + results,
                "areas_button": busy + results}

    def _explain_buttons(self) -> None:
        """Tooltips of the action buttons: what they do, or why they are disabled.

        A button's own tooltip (set where it is built) is kept as what it does unless
        :data:`BUTTON_HELP` names it.
        """
        for name, reasons in self.button_blockers().items():
            button = getattr(self, name, None)
            if button is None:
                continue
            help_text = BUTTON_HELP.get(name) or button.property("terraseg_help")
            if help_text is None:
                help_text = button.toolTip()
                button.setProperty("terraseg_help", help_text)
            if button.isEnabled():
                button.setToolTip(help_text)
            else:
                button.setToolTip("Disabled: " + (" ".join(reasons) or "not available now."))

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
