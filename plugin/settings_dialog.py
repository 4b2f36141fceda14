"""The engine settings page: engine path, package versions, device, setup, diagnostics.

:class:`EngineSettingsWidget` is a page usable inside the dock; :class:`EngineSettingsDialog`
wraps it in a dialog. Everything slow (``terraseg env``, ``nvidia-smi``, the installer)
runs in child processes, so the GUI never freezes.

The page shows what will run and where packages come from: the resolved engine folder and
``terraseg`` command, the folders that were skipped and why (no TerraSeg marker file), and
the package index the installer will use. An index is used only when typed here; one named
by the environment or an old setting is listed as ignored. QGIS's Python is named by the
interpreter that really runs (:func:`~terraseg.plugin.engine_setup.running_python`), not by
``sys.executable``, which inside QGIS is the ``qgis`` program or a shim script.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from typing import Any

from qgis.core import Qgis
from qgis.PyQt.QtCore import QProcess, Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from . import jobs, settings
from .engine import (
    EngineCandidate,
    EngineLocation,
    default_engine_dir,
    engine_at,
    engine_problem,
    find_engine,
    skipped_engines,
)
from .engine_setup import (
    EngineSetup,
    check_index_url,
    ignored_index_sources,
    package_index_text,
    running_python,
)
from .worker_job import WorkerJob


def device_text(env: dict[str, Any] | None) -> str:
    """The compute device in words, from ``terraseg env``.

    Args:
        env: The engine environment (or None).

    Returns:
        For example ``"GPU NVIDIA H100 (79.1 GB) x1"`` or ``"CPU (8 threads) x1"``.
    """
    if not env:
        return "unknown"
    device = env.get("device") or {}
    if isinstance(device, dict):
        text = device.get("description") or device.get("name") or device.get("type", "")
        if device.get("type") == "cuda" and device.get("memory_gb") and "GB" not in text:
            text += f" ({device['memory_gb']} GB)"
        return str(text) or "unknown"
    return str(device)


def resolved_command(engine: EngineLocation) -> str:
    """The engine's ``terraseg`` command with symbolic links resolved.

    Args:
        engine: The engine.

    Returns:
        The command's path, followed by ``-> real path`` when it is a link.
    """
    real = os.path.realpath(engine.terraseg)
    return engine.terraseg if real == engine.terraseg else f"{engine.terraseg} -> {real}"


def linked_path(path: str) -> str:
    """``path``, followed by ``-> real path`` when it is a symbolic link (a venv's python)."""
    real = os.path.realpath(path) if path else path
    return path if real == path else f"{path} -> {real}"


def skipped_text(skipped: list[EngineCandidate]) -> str:
    """Engine folders not used, one line each: ``origin folder: problem``."""
    return "\n".join(f"{c.origin} {c.folder}: {c.problem}" for c in skipped)


def diagnostics_text(env: dict[str, Any] | None, engine: EngineLocation | None,
                     gpu: str | None = None, error: str = "",
                     skipped: list[EngineCandidate] | None = None, index: str = "",
                     ignored: list[str] | None = None) -> str:
    """A bug-report block: QGIS version, OS, engine path, versions, device and index.

    Args:
        env: ``terraseg env`` output, or None when unknown.
        engine: The engine's location, or None.
        gpu: ``nvidia-smi``'s GPU line, if any.
        error: Why the engine could not be queried, if it could not.
        skipped: Engine folders not used and why (:func:`~terraseg.plugin.engine.
            skipped_engines`).
        index: Where the installer takes packages from
            (:func:`~terraseg.plugin.engine_setup.package_index_text`).
        ignored: Package indexes named outside the Settings page, not used.

    Returns:
        Plain text for the clipboard.
    """
    lines = [
        "TerraSeg diagnostics",
        f"QGIS: {Qgis.QGIS_VERSION}",
        f"OS: {platform.platform()}",
        f"QGIS Python: {running_python().text()}",
        f"Engine: {os.path.realpath(engine.root) if engine else 'not found'}",
    ]
    if engine:
        lines.append(f"Engine command: {resolved_command(engine)}")
    for candidate in skipped or []:
        lines.append(f"Engine folder not used ({candidate.origin}): {candidate.folder}: "
                     f"{candidate.problem}")
    if index:
        lines.append(f"Package index for engine setup: {index}")
    lines.append("Package indexes ignored (not typed in the Settings page): "
                 + ("; ".join(ignored) if ignored else "none"))
    lines.append(f"NVIDIA GPU (nvidia-smi): {gpu or 'none found'}")
    if env:
        lines.append(f"Engine TerraSeg: {env.get('terraseg', '?')}")
        lines.append(f"Engine Python: {env.get('python_version', '?')} "
                     f"({linked_path(str(env.get('python', '')))})")
        packages = env.get("packages") or {}
        lines.append("Engine packages: " + ", ".join(
            f"{k} {v or 'missing'}" for k, v in packages.items()))
        lines.append(f"Device: {device_text(env)}")
        lines.append(f"CUDA: {env.get('cuda_version') or 'no'} "
                     f"(available: {bool(env.get('cuda_available'))})")
        lines.append("Engine environment (JSON):")
        lines.append(json.dumps(env, indent=2, sort_keys=True))
    elif error:
        lines.append(f"Engine error: {error}")
    return "\n".join(lines)


class EngineSettingsWidget(QWidget):
    """Engine page: shows the engine and its device, sets it up, copies diagnostics.

    Signals:
        environment_changed(object): The engine environment dict after a refresh (None
            when there is no engine or it does not answer).
    """

    environment_changed = pyqtSignal(object)

    def __init__(self, parent: QWidget | None = None, auto_refresh: bool = True) -> None:
        """Build the page.

        Args:
            parent: Parent widget.
            auto_refresh: Query the engine and the GPU at once.
        """
        super().__init__(parent)
        self.environment: dict[str, Any] | None = None
        self.engine: EngineLocation | None = None
        self.gpu: str | None = None
        self.error = ""
        self._env_job: WorkerJob | None = None
        self._gpu_process: QProcess | None = None
        self.setup = EngineSetup(self)
        self.setup.log.connect(self.append_log)
        self.setup.progress.connect(lambda f: self.progress.setValue(int(round(100 * f))))
        self.setup.finished.connect(self._setup_finished)
        self._build()
        if auto_refresh:
            self.refresh()
            self.detect_gpu()

    # --- layout -----------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)

        box = QGroupBox(self.tr("Engine"), self)
        form = QFormLayout()
        self.engine_label = QLabel(self.tr("searching..."), box)
        self.command_label = QLabel("", box)
        self.skipped_label = QLabel("", box)
        self.python_label = QLabel("", box)
        self.qgis_python_label = QLabel(running_python().text(), box)
        self.version_label = QLabel("", box)
        self.device_label = QLabel("", box)
        for lab in (self.engine_label, self.command_label, self.skipped_label,
                    self.python_label, self.qgis_python_label, self.device_label):
            lab.setWordWrap(True)
            lab.setTextInteractionFlags(Qt.TextSelectableByMouse)
        form.addRow(self.tr("Engine folder:"), self.engine_label)
        form.addRow(self.tr("Engine command:"), self.command_label)
        form.addRow(self.tr("Not used:"), self.skipped_label)
        form.addRow(self.tr("Python:"), self.python_label)
        form.addRow(self.tr("QGIS Python:"), self.qgis_python_label)
        form.addRow(self.tr("TerraSeg engine:"), self.version_label)
        form.addRow(self.tr("Compute device:"), self.device_label)
        inner = QVBoxLayout(box)
        inner.addLayout(form)
        self.packages = QTableWidget(0, 2, box)
        self.packages.setHorizontalHeaderLabels([self.tr("Package"), self.tr("Version")])
        self.packages.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.packages.verticalHeader().setVisible(False)
        self.packages.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.packages.setMinimumHeight(120)
        inner.addWidget(self.packages)
        row = QHBoxLayout()
        self.refresh_button = QPushButton(self.tr("Refresh"), box)
        self.refresh_button.clicked.connect(self.refresh)
        self.copy_button = QPushButton(self.tr("Copy diagnostics"), box)
        self.copy_button.clicked.connect(self.copy_diagnostics)
        self.choose_button = QPushButton(self.tr("Use existing engine..."), box)
        self.choose_button.setToolTip(self.tr("Point TerraSeg to an engine environment folder"))
        self.choose_button.clicked.connect(self._choose_engine)
        for b in (self.refresh_button, self.copy_button, self.choose_button):
            row.addWidget(b)
        row.addStretch(1)
        inner.addLayout(row)
        layout.addWidget(box)

        setup = QGroupBox(self.tr("Set up engine"), self)
        sform = QFormLayout(setup)
        self.target_edit = QLineEdit(default_engine_dir(), setup)
        sform.addRow(self.tr("Engine folder:"),
                     self._with_browse(self.target_edit, self.tr("Engine folder")))
        self.cuda_check = QCheckBox(self.tr("Use CUDA build"), setup)
        self.cuda_check.setToolTip(self.tr("Checked when nvidia-smi finds an NVIDIA GPU. The "
                                           "CUDA build is several GB; the CPU build is small."))
        sform.addRow("", self.cuda_check)
        self.wheels_edit = QLineEdit(setup)
        self.wheels_edit.setPlaceholderText(self.tr("optional: folder of wheels (offline sites)"))
        sform.addRow(self.tr("Install from wheels:"),
                     self._with_browse(self.wheels_edit, self.tr("Folder of wheels")))
        self.torch_index_edit = QLineEdit(setup)
        self.torch_index_edit.setPlaceholderText(self.tr("optional: package index for torch"))
        sform.addRow(self.tr("Torch index:"), self.torch_index_edit)
        self.pip_index_edit = QLineEdit(setup)
        self.pip_index_edit.setPlaceholderText(
            self.tr("optional: package index for all packages (a mirror)"))
        sform.addRow(self.tr("Package index:"), self.pip_index_edit)
        self.index_label = QLabel("", setup)
        self.ignored_label = QLabel("", setup)
        for lab in (self.index_label, self.ignored_label):
            lab.setWordWrap(True)
            lab.setTextInteractionFlags(Qt.TextSelectableByMouse)
        sform.addRow(self.tr("Packages from:"), self.index_label)
        sform.addRow(self.tr("Ignored:"), self.ignored_label)
        for edit in (self.wheels_edit, self.torch_index_edit, self.pip_index_edit):
            edit.textChanged.connect(self.update_index)
        self.cuda_check.toggled.connect(self.update_index)
        buttons = QHBoxLayout()
        self.setup_button = QPushButton(self.tr("Set up engine"), setup)
        self.setup_button.clicked.connect(self.start_setup)
        self.cancel_button = QPushButton(self.tr("Cancel"), setup)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.setup.cancel)
        buttons.addWidget(self.setup_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        sform.addRow(buttons)
        self.progress = QProgressBar(setup)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        sform.addRow(self.progress)
        layout.addWidget(setup)

        self.status_label = QLabel("", self)
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.log_view = QPlainTextEdit(self)
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setPlaceholderText(self.tr("Engine setup log"))
        layout.addWidget(self.log_view, 1)
        self.update_index()

    def _with_browse(self, edit: QLineEdit, title: str) -> QWidget:
        holder = QWidget(self)
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit, 1)
        button = QPushButton("...", holder)
        button.setToolTip(self.tr("Browse"))

        def browse() -> None:
            folder = QFileDialog.getExistingDirectory(self, title, edit.text())
            if folder:
                edit.setText(folder)

        button.clicked.connect(browse)
        row.addWidget(button)
        return holder

    # --- engine state -----------------------------------------------------------------
    def append_log(self, line: str) -> None:
        """Add a line to the log panel."""
        self.log_view.appendPlainText(line)

    def index_text(self) -> str:
        """Where the installer will take packages from, with the page's current choices."""
        return package_index_text(self.cuda_check.isChecked(),
                                  self.wheels_edit.text().strip() or None,
                                  self.torch_index_edit.text(), self.pip_index_edit.text())

    def update_index(self) -> None:
        """Show the package index in use and the indexes ignored."""
        self.index_label.setText(self.index_text())
        ignored = ignored_index_sources()
        self.ignored_label.setText(
            "; ".join(ignored) + self.tr(" (to use one, type it above)") if ignored
            else self.tr("none"))

    def refresh(self) -> None:
        """Locate the engine and query its environment in the background."""
        self.engine = find_engine()
        self.environment, self.error = None, ""
        skipped = skipped_engines()
        self.skipped_label.setText(skipped_text(skipped) or self.tr("none"))
        if self.engine is None:
            self._show_missing(skipped)
            self.environment_changed.emit(None)
            return
        self.engine_label.setText(self.engine.root)
        self.command_label.setText(resolved_command(self.engine))
        self.python_label.setText(self.engine.python)
        self.version_label.setText("")
        self.device_label.setText(self.tr("querying the engine..."))
        self.status_label.setText("")
        if self._env_job is not None and self._env_job.is_running():
            return
        job = WorkerJob(self.engine, self)
        job.result.connect(self._env_result)
        job.error.connect(self._env_error)
        job.finished.connect(self._env_finished)
        self._env_job = job
        self.refresh_button.setEnabled(False)
        job.start(jobs.env_job())

    def _env_finished(self, _exit_code: int) -> None:
        self.refresh_button.setEnabled(True)
        if self._env_job is not None:
            self._env_job.deleteLater()
            self._env_job = None

    def _show_missing(self, skipped: list[EngineCandidate]) -> None:
        self.engine_label.setText(self.tr("No engine found."))
        self.command_label.setText("")
        self.python_label.setText("")
        self.version_label.setText("")
        self.device_label.setText("")
        self.packages.setRowCount(0)
        text = self.tr(
            "The TerraSeg engine (PyTorch and friends, in its own Python environment) is not "
            "set up yet. Click 'Set up engine' below, or 'Use existing engine...'.")
        if skipped:
            text += "\n" + self.tr("Not used: ") + skipped_text(skipped)
        self.status_label.setText(text)

    def _env_result(self, env: dict[str, Any]) -> None:
        self.environment = env
        self.python_label.setText(f"{linked_path(str(env.get('python', '')))} (Python "
                                  f"{env.get('python_version', '?')})")
        self.version_label.setText(str(env.get("terraseg", "")))
        self.device_label.setText(device_text(env))
        packages = env.get("packages") or {}
        self.packages.setRowCount(len(packages))
        for i, (name, version) in enumerate(packages.items()):
            self.packages.setItem(i, 0, QTableWidgetItem(str(name)))
            self.packages.setItem(i, 1, QTableWidgetItem(str(version or self.tr("missing"))))
        missing = [k for k, v in packages.items() if not v]
        self.status_label.setText(
            self.tr("Engine ready.") if not missing else
            self.tr("Engine incomplete, missing: ") + ", ".join(missing)
            + self.tr(". Set up the engine again."))
        self.environment_changed.emit(env)

    def _env_error(self, kind: str, message: str, hint: str) -> None:
        self.error = f"{kind}: {message}"
        self.device_label.setText(self.tr("unknown (the engine does not answer)"))
        self.packages.setRowCount(0)
        self.status_label.setText(f"{message} {hint}".strip())
        self.append_log(f"terraseg env failed: {kind}: {message}")
        if self._env_job is not None and self._env_job.stderr_tail:
            self.append_log(self._env_job.stderr_tail)
        self.environment_changed.emit(None)

    def detect_gpu(self) -> None:
        """Ask nvidia-smi (in the background) and pre-check 'Use CUDA build' for a GPU."""
        exe = shutil.which("nvidia-smi")
        if exe is None:
            self._gpu_found(None)
            return
        proc = QProcess(self)
        proc.finished.connect(self._gpu_done)
        proc.errorOccurred.connect(lambda _error: self._gpu_found(None))
        self._gpu_process = proc
        proc.start(exe, ["--query-gpu=name,memory.total", "--format=csv,noheader"])

    def _gpu_done(self, exit_code: int, _status: QProcess.ExitStatus) -> None:
        out = bytes(self._gpu_process.readAllStandardOutput()).decode("utf-8", "replace")
        lines = [s.strip() for s in out.splitlines() if s.strip()]
        self._gpu_found(lines[0] if exit_code == 0 and lines else None)

    def _gpu_found(self, gpu: str | None) -> None:
        self.gpu = gpu or None
        self.cuda_check.setChecked(bool(self.gpu))
        self.cuda_check.setText(self.tr("Use CUDA build") + (
            f" (NVIDIA GPU: {self.gpu})" if self.gpu else self.tr(" (no NVIDIA GPU found)")))

    # --- actions ----------------------------------------------------------------------
    def diagnostics(self) -> str:
        """The diagnostics text for the current state."""
        return diagnostics_text(self.environment, self.engine or find_engine(), self.gpu,
                                self.error, skipped=skipped_engines(),
                                index=self.index_text(), ignored=ignored_index_sources())

    def copy_diagnostics(self) -> str:
        """Put the diagnostics on the clipboard.

        Returns:
            The copied text.
        """
        text = self.diagnostics()
        QApplication.clipboard().setText(text)
        self.status_label.setText(self.tr("Diagnostics copied to the clipboard."))
        return text

    def _choose_engine(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, self.tr("Engine environment folder"),
                                                  self.engine.root if self.engine else "")
        if not folder:
            return
        if engine_at(folder) is None:
            self.status_label.setText(self.tr("Not used: ") + engine_problem(folder))
            self.target_edit.setText(folder)
            return
        settings.set(settings.ENGINE_DIR, folder)
        self.refresh()

    def start_setup(self) -> None:
        """Run the installer with the chosen folder, build and wheels folder."""
        if self.setup.is_running():
            return
        target = self.target_edit.text().strip() or default_engine_dir()
        wheels = self.wheels_edit.text().strip() or None
        torch_index = self.torch_index_edit.text().strip() or None
        pip_index = self.pip_index_edit.text().strip() or None
        problems = [check_index_url(url) for url in (torch_index, pip_index) if url]
        if any(problems):
            self.status_label.setText(next(p for p in problems if p))
            return
        self.log_view.clear()
        self.progress.setValue(0)
        self.setup_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status_label.setText(self.tr("Setting up the engine; this takes a few minutes."))
        self.setup.start(target, self.cuda_check.isChecked(), wheels,
                         torch_index=torch_index, pip_index=pip_index)

    def _setup_finished(self, ok: bool, message: str) -> None:
        self.setup_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status_label.setText(message)
        if ok:
            self.progress.setValue(100)
            self.refresh()


class EngineSettingsDialog(QDialog):
    """A dialog around :class:`EngineSettingsWidget` (TerraSeg > Engine settings)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        """Build the dialog.

        Args:
            parent: Parent window (QGIS's main window).
        """
        super().__init__(parent)
        self.setWindowTitle(self.tr("TerraSeg engine"))
        self.resize(640, 720)
        layout = QVBoxLayout(self)
        self.widget = EngineSettingsWidget(self)
        layout.addWidget(self.widget)
        buttons = QDialogButtonBox(QDialogButtonBox.Close, self)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def reject(self) -> None:
        """Close; a running setup keeps running only while the dialog exists."""
        if self.widget.setup.is_running():
            self.widget.status_label.setText(self.tr(
                "The engine setup is still running: wait for it or click Cancel."))
            return
        super().reject()
