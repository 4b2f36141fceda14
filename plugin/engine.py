"""Where TerraSeg's engine environment is, how its processes start, what it runs on.

The engine (torch, Lightning, rasterio, ...) lives in its own isolated virtual environment,
never in QGIS's Python (docs/architecture.md). This module finds that environment
(:func:`find_engine`, :func:`engine_program`), gives its processes a clean environment
(:func:`process_environment`), asks it what it runs on (:func:`engine_environment`) and
detects an NVIDIA GPU (:func:`detect_nvidia_gpu`). Creating the environment is
:mod:`terraseg.plugin.engine_setup`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.PyQt.QtCore import QProcessEnvironment

from . import settings

PLUGIN_DIR = Path(__file__).resolve().parents[1]

# Environment variables of QGIS's own Python that must not leak into the engine's Python.
_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE",
                     "PYTHONEXECUTABLE", "PYTHONNOUSERSITE", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")


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


def engine_program(engine: EngineLocation | str | None = None) -> str | None:
    """The ``terraseg`` command that runs worker jobs.

    Args:
        engine: An engine, a ``terraseg`` path, or None for :func:`find_engine`.

    Returns:
        The command's path, or None when no engine is found.
    """
    if isinstance(engine, EngineLocation):
        return engine.terraseg
    if isinstance(engine, str) and engine:
        return engine
    loc = find_engine()
    return loc.terraseg if loc else None


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


def creation_flags() -> int:
    """``subprocess`` creation flags that keep engine processes windowless on Windows."""
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
                              creationflags=creation_flags(), check=False,
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
                              creationflags=creation_flags())
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [s.strip() for s in proc.stdout.splitlines() if s.strip()]
    if proc.returncode != 0 or not lines:
        return None
    return lines[0]
