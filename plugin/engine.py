"""Locating and creating TerraSeg's engine environment.

The engine (torch, Lightning, rasterio, ...) lives in its own isolated virtual environment,
never in QGIS's Python (docs/architecture.md). This module finds that environment
(:func:`find_engine`), asks it what it runs on (:func:`engine_environment`), detects an
NVIDIA GPU (:func:`detect_nvidia_gpu`) and creates the environment with
``scripts/install_engine.sh`` (:class:`EngineSetup`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.PyQt.QtCore import QObject, QProcess, QProcessEnvironment, pyqtSignal

from . import settings

PLUGIN_DIR = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = PLUGIN_DIR / "scripts" / "install_engine.sh"

# Environment variables of QGIS's own Python that must not leak into the engine's Python.
_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE",
                     "PYTHONEXECUTABLE", "PYTHONNOUSERSITE", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")

# Where pip finds a CPU-only torch build (PyPI's Linux wheels are CUDA builds, several GB).
# The setting ``terraseg/torch_index_url`` or the environment variable TORCH_INDEX_URL wins.
CPU_TORCH_INDEX_URL = "https://download.pytorch.org/whl/cpu"


class EngineError(RuntimeError):
    """The engine is missing or does not answer.

    Args:
        message: What went wrong.
        hint: How to fix it.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} Fix: {self.hint}" if self.hint else self.message


@dataclass(frozen=True)
class EngineLocation:
    """An engine environment on disk.

    Attributes:
        root: The environment's folder (a virtual environment).
        python: Its Python interpreter.
        terraseg: Its ``terraseg`` command (runs the worker).
    """

    root: str
    python: str
    terraseg: str


def default_engine_dir() -> str:
    """Folder where 'Set up engine' creates the engine by default.

    Returns:
        ``~/.local/share/TerraSeg/engine``.
    """
    return str(Path.home() / ".local" / "share" / "TerraSeg" / "engine")


def engine_at(root: str | os.PathLike[str]) -> EngineLocation | None:
    """The engine in ``root`` if that folder holds one.

    Args:
        root: A virtual environment folder.

    Returns:
        Its location when ``bin/terraseg`` (``Scripts/terraseg.exe`` on Windows) exists,
        else None.
    """
    base = Path(root).expanduser()
    layouts = [("bin", "terraseg", "python")]
    if sys.platform == "win32":
        layouts.insert(0, ("Scripts", "terraseg.exe", "python.exe"))
    for folder, exe, py in layouts:
        terraseg = base / folder / exe
        if terraseg.is_file() and os.access(terraseg, os.X_OK):
            python = base / folder / py
            return EngineLocation(root=str(base), python=str(python), terraseg=str(terraseg))
    return None


def candidate_dirs() -> list[str]:
    """Engine folders in search order.

    Returns:
        The setting ``terraseg/engine_dir`` (when set), ``<plugin_dir>/.venv-engine`` and
        ``~/.local/share/TerraSeg/engine``.
    """
    dirs = []
    configured = settings.get(settings.ENGINE_DIR, "") or ""
    if str(configured).strip():
        dirs.append(str(configured).strip())
    dirs += [str(PLUGIN_DIR / ".venv-engine"), default_engine_dir()]
    return dirs


def find_engine() -> EngineLocation | None:
    """Locate the engine environment.

    Returns:
        The first engine found in :func:`candidate_dirs`, or None when there is none.
    """
    for folder in candidate_dirs():
        loc = engine_at(folder)
        if loc is not None:
            return loc
    return None


def process_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for engine processes: this process's, without QGIS's Python variables.

    QGIS (notably on Windows) sets PYTHONHOME/PYTHONPATH for its embedded Python; an
    engine Python that inherited them would load QGIS's packages.

    Args:
        extra: Variables to add or replace.

    Returns:
        The environment as a dict.
    """
    env = {k: v for k, v in os.environ.items() if k not in _PYTHON_VARIABLES}
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def qprocess_environment(extra: dict[str, str] | None = None) -> QProcessEnvironment:
    """:func:`process_environment` as a QProcessEnvironment.

    Args:
        extra: Variables to add or replace.

    Returns:
        The environment for QProcess.setProcessEnvironment.
    """
    qenv = QProcessEnvironment()
    for key, value in process_environment(extra).items():
        qenv.insert(key, value)
    return qenv


def _creation_flags() -> int:
    return getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0


def engine_environment(loc: EngineLocation | None = None, timeout: float = 120.0
                       ) -> dict[str, Any]:
    """What the engine runs on, from ``terraseg env`` (blocking; seconds, torch loads).

    Args:
        loc: The engine; default :func:`find_engine`.
        timeout: Seconds to wait.

    Returns:
        The engine's JSON: ``terraseg`` (version), ``python``, ``python_version``,
        ``platform``, ``packages`` (name -> version), ``cuda_available``, ``cuda_version``,
        ``device`` (``type``, ``name``, ``description``, ``memory_gb`` for GPUs).

    Raises:
        EngineError: No engine, or it fails or answers something else than JSON.
    """
    loc = loc or find_engine()
    if loc is None:
        raise EngineError("No TerraSeg engine was found.",
                          "Open TerraSeg settings and click 'Set up engine'.")
    try:
        proc = subprocess.run([loc.terraseg, "env"], capture_output=True, text=True,
                              timeout=timeout, env=process_environment(),
                              creationflags=_creation_flags(), check=False,
                              encoding="utf-8", errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"The engine at {loc.root} does not run ({exc}).",
                          "Set up the engine again (TerraSeg settings).") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
        raise EngineError(f"'terraseg env' failed with exit code {proc.returncode}: {tail}",
                          "Set up the engine again (TerraSeg settings).")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise EngineError(f"'terraseg env' did not answer JSON ({exc}).",
                          "Set up the engine again (TerraSeg settings).") from exc


def detect_nvidia_gpu(timeout: float = 10.0) -> str | None:
    """The NVIDIA GPU of this machine according to ``nvidia-smi``.

    Args:
        timeout: Seconds to wait for nvidia-smi.

    Returns:
        For example ``"NVIDIA H100 80GB HBM3, 81559 MiB"`` (the first GPU), or None when
        nvidia-smi is missing, fails or lists no GPU.
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              creationflags=_creation_flags())
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [s.strip() for s in proc.stdout.splitlines() if s.strip()]
    if proc.returncode != 0 or not lines:
        return None
    return lines[0]


def _embedded_roots() -> list[Path]:
    """Folders of a Python bundled with QGIS (Windows, macOS); none on Linux."""
    if sys.platform.startswith("linux"):
        return []
    roots = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    try:
        from qgis.core import QgsApplication

        roots.add(Path(QgsApplication.prefixPath()).resolve().parent)
    except Exception:  # noqa: BLE001 - best effort
        pass
    return sorted(roots)


_PYTHON_CHECK = "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))"


def _python_ok(exe: str) -> bool:
    try:
        proc = subprocess.run([exe, "-c", _PYTHON_CHECK],
                              capture_output=True, timeout=20, check=False,
                              env=process_environment(), creationflags=_creation_flags())
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def find_system_python() -> str:
    """A Python >= 3.10 on PATH that is not QGIS's embedded one, to create the engine with.

    Returns:
        Its path, or ``"python3"`` when none qualifies (install_engine.sh then explains).
    """
    embedded = _embedded_roots()
    names = ("python3.13", "python3.12", "python3.11", "python3.10", "python3", "python")
    seen: set[str] = set()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        for name in names:
            exe = shutil.which(name, path=folder) if folder else None
            if not exe:
                continue
            real = str(Path(exe).resolve())
            if real in seen:
                continue
            seen.add(real)
            if any(Path(real).is_relative_to(root) for root in embedded):
                continue
            if _python_ok(exe):
                return exe
    return "python3"


def torch_index_url(cuda: bool, wheels_dir: str | None = None) -> str | None:
    """Package index for torch when setting up an engine.

    Args:
        cuda: Whether a CUDA build is wanted.
        wheels_dir: Offline wheel folder (then no index is used).

    Returns:
        The setting ``terraseg/torch_index_url``, else the environment's TORCH_INDEX_URL,
        else the PyTorch CPU index for CPU builds on Linux (PyPI's Linux torch is a CUDA
        build), else None (pip's configured index).
    """
    if wheels_dir:
        return None
    configured = settings.get(settings.TORCH_INDEX_URL, "") or os.environ.get(
        "TORCH_INDEX_URL", "")
    if configured:
        return str(configured)
    if not cuda and sys.platform.startswith("linux"):
        return CPU_TORCH_INDEX_URL
    return None


class EngineSetup(QObject):
    """Creates or updates an engine environment with ``scripts/install_engine.sh``.

    Runs ``bash install_engine.sh`` in a QProcess with ``ENGINE_VENV=target_dir``,
    ``PYTHON`` (see :func:`find_system_python`), ``TORCH_VARIANT`` (``cpu``/``cuda``),
    ``WHEELS_DIR`` (offline installs) and, where needed, ``TORCH_INDEX_URL``.
    On success the target is stored as the setting ``terraseg/engine_dir``. The
    environment variable TERRASEG_PYTHON overrides the Python that creates the engine.
    The installer needs bash (on Windows: Git Bash or WSL on PATH).

    Signals:
        log(str): One output line of the installer.
        progress(float): Estimated fraction done (0..1).
        finished(bool, str): Success and a message for the user.
    """

    log = pyqtSignal(str)
    progress = pyqtSignal(float)
    finished = pyqtSignal(bool, str)

    def __init__(self, parent: QObject | None = None, script: str | None = None) -> None:
        """Create an idle setup.

        Args:
            parent: Qt parent.
            script: Installer to run (default ``<plugin_dir>/scripts/install_engine.sh``).
        """
        super().__init__(parent)
        self.script = script or str(INSTALL_SCRIPT)
        self.target_dir = ""
        self._process: QProcess | None = None
        self._buffer = b""
        self._tail: list[str] = []
        self._collected = 0
        self._fraction = 0.0
        self._cancelled = False

    def is_running(self) -> bool:
        """Whether the installer runs."""
        return self._process is not None and self._process.state() != QProcess.NotRunning

    def start(self, target_dir: str, cuda: bool, wheels_dir: str | None = None) -> None:
        """Start the installer (returns at once; watch the signals).

        Args:
            target_dir: Engine folder to create or update.
            cuda: Install the CUDA build of torch (else the CPU build).
            wheels_dir: Install offline from this folder of wheels.

        Raises:
            RuntimeError: The installer runs already.
        """
        if self.is_running():
            raise RuntimeError("The engine setup is running already.")
        self.target_dir = str(Path(target_dir).expanduser())
        self._buffer, self._tail, self._collected = b"", [], 0
        self._fraction, self._cancelled = 0.0, False
        python = os.environ.get("TERRASEG_PYTHON") or find_system_python()
        extra = {"ENGINE_VENV": self.target_dir, "PYTHON": python,
                 "TORCH_VARIANT": "cuda" if cuda else "cpu"}
        if wheels_dir:
            extra["WHEELS_DIR"] = str(Path(wheels_dir).expanduser())
        index = torch_index_url(cuda, wheels_dir)
        if index:
            extra["TORCH_INDEX_URL"] = index
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.MergedChannels)
        proc.setProcessEnvironment(qprocess_environment(extra))
        proc.setWorkingDirectory(str(PLUGIN_DIR))
        proc.readyReadStandardOutput.connect(self._on_output)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        self._process = proc
        bash = shutil.which("bash") or "bash"
        program, args = bash, [self.script]
        setsid = shutil.which("setsid") if sys.platform.startswith("linux") else None
        if setsid:  # own process group, so Cancel stops pip too
            program, args = setsid, [bash, self.script]
        self.log.emit(f"setting up the engine in {self.target_dir} "
                      f"({extra['TORCH_VARIANT']} build, Python {python}"
                      + (f", wheels from {extra['WHEELS_DIR']}" if wheels_dir else "") + ")")
        self._set_progress(0.01)
        proc.start(program, args)

    def cancel(self) -> None:
        """Stop the installer (the next setup repairs a half-made environment)."""
        if not self.is_running():
            return
        self._cancelled = True
        pid = int(self._process.processId() or 0)
        if pid > 0 and hasattr(os, "killpg"):
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        self._process.kill()

    def wait(self, ms: int = -1) -> bool:
        """Block until the installer ends.

        Args:
            ms: Milliseconds to wait; -1 waits forever.

        Returns:
            True when it is not running any more.
        """
        if not self.is_running():
            return True
        return self._process.waitForFinished(ms)

    # --- internals ------------------------------------------------------------------
    def _set_progress(self, fraction: float) -> None:
        if fraction > self._fraction:
            self._fraction = fraction
            self.progress.emit(fraction)

    def _on_output(self) -> None:
        self._buffer += bytes(self._process.readAllStandardOutput())
        *lines, self._buffer = self._buffer.replace(b"\r", b"\n").split(b"\n")
        for raw in lines:
            self._line(raw.decode("utf-8", "replace").rstrip())

    def _line(self, line: str) -> None:
        if not line.strip():
            return
        self._tail = (self._tail + [line])[-30:]
        self.log.emit(line)
        text = line.strip()
        if text.startswith("creating isolated engine environment"):
            self._set_progress(0.05)
        elif text.startswith("installing pinned engine requirements"):
            self._set_progress(0.1)
        elif text.startswith("Collecting") or text.startswith("Processing "):
            self._collected += 1
            self._set_progress(0.1 + 0.6 * (1.0 - math.exp(-self._collected / 25.0)))
        elif text.startswith("Installing collected packages"):
            self._set_progress(0.75)
        elif text.startswith("installing terraseg"):
            self._set_progress(0.9)
        elif text.startswith(("engine environment ready", "engine environment up to date")):
            self._set_progress(1.0)

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.FailedToStart:
            message = (f"Cannot run the installer ({self._process.errorString()}). "
                       "It needs bash and a Python >= 3.10.")
            self.log.emit(message)
            self.finished.emit(False, message)

    def _on_finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        if self._buffer:
            self._line(self._buffer.decode("utf-8", "replace"))
            self._buffer = b""
        ok = status == QProcess.NormalExit and exit_code == 0 and not self._cancelled
        loc = engine_at(self.target_dir) if ok else None
        if ok and loc is not None:
            settings.set(settings.ENGINE_DIR, self.target_dir)
            self._set_progress(1.0)
            message = f"Engine ready: {loc.terraseg}"
        elif self._cancelled:
            message = "Engine setup cancelled."
        elif ok:
            message = f"The installer ended but made no engine in {self.target_dir}."
        else:
            detail = self._tail[-1] if self._tail else ""
            message = f"Engine setup failed (exit code {exit_code}). {detail}".strip()
        self.log.emit(message)
        self.finished.emit(loc is not None, message)
