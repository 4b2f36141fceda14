"""Where TerraSeg's engine environment is, how its processes start, what it runs on.

The engine (torch, Lightning, rasterio, ...) lives in its own isolated virtual environment,
never in QGIS's Python (docs/architecture.md). This module finds that environment
(:func:`find_engine`, :func:`engine_program`), gives its processes a clean environment
(:func:`process_environment`), asks it what it runs on (:func:`engine_environment`) and
detects an NVIDIA GPU (:func:`detect_nvidia_gpu`). Creating the environment is
:mod:`terraseg.plugin.engine_setup`.

A folder is run as an engine only when it carries TerraSeg's marker file
(:data:`ENGINE_MARKER`, written by ``scripts/install_engine.sh`` when it creates or adopts
an environment): a setting that points anywhere else is skipped, and the reason is shown
(:func:`engine_problem`, :func:`engine_candidates`).
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

# The file scripts/install_engine.sh writes into every engine folder it creates or adopts.
ENGINE_MARKER = ".terraseg-engine"


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


def _engine_layout(base: Path) -> tuple[Path, Path] | None:
    """``(terraseg, python)`` of the virtual environment in ``base``, if it has a terraseg."""
    layouts = [("bin", "terraseg", "python")]
    if sys.platform == "win32":
        layouts.insert(0, ("Scripts", "terraseg.exe", "python.exe"))
    for folder, exe, py in layouts:
        terraseg = base / folder / exe
        if terraseg.is_file() and os.access(terraseg, os.X_OK):
            return terraseg, base / folder / py
    return None


def engine_problem(root: str | os.PathLike[str]) -> str:
    """Why TerraSeg will not run an engine from ``root``.

    Args:
        root: A folder that should hold an engine environment.

    Returns:
        ``""`` when ``root`` holds an engine TerraSeg runs (``bin/terraseg`` and the marker
        file :data:`ENGINE_MARKER`), else what is wrong and how to fix it.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        return f"{base} is not a folder."
    if _engine_layout(base) is None:
        return f"{base} holds no engine (it has no bin/terraseg)."
    marker = base / ENGINE_MARKER
    if marker.is_symlink() or not marker.is_file():
        return (f"{base} lacks TerraSeg's marker file {ENGINE_MARKER}, so it is not run: "
                "TerraSeg runs only engines its installer set up. Fix: click 'Set up engine' "
                "with this folder (an engine made by an earlier TerraSeg release is adopted, "
                "nothing is deleted), or choose another engine folder.")
    return ""


def engine_at(root: str | os.PathLike[str]) -> EngineLocation | None:
    """The engine in ``root`` if that folder holds one TerraSeg runs.

    Args:
        root: A virtual environment folder.

    Returns:
        Its location (the folder with symbolic links resolved) when ``bin/terraseg``
        (``Scripts/terraseg.exe`` on Windows) exists and the folder carries the marker file
        :data:`ENGINE_MARKER`, else None (:func:`engine_problem` says why).
    """
    base = Path(root).expanduser().resolve()
    if engine_problem(base):
        return None
    terraseg, python = _engine_layout(base)
    return EngineLocation(root=str(base), python=str(python), terraseg=str(terraseg))


@dataclass(frozen=True)
class EngineCandidate:
    """A folder searched for the engine, and why it is not used.

    Attributes:
        folder: The folder as configured.
        origin: Where it comes from: ``"setting terraseg/engine_dir"``, ``"plugin folder"``
            or ``"default folder"``.
        problem: ``""`` when it holds an engine TerraSeg runs, else :func:`engine_problem`.
    """

    folder: str
    origin: str
    problem: str


def candidate_dirs() -> list[str]:
    """Engine folders in search order.

    Returns:
        The setting ``terraseg/engine_dir`` (when set), ``<plugin_dir>/.venv-engine`` and
        ``~/.local/share/TerraSeg/engine``.
    """
    return [folder for folder, _origin in _candidates()]


def _candidates() -> list[tuple[str, str]]:
    """``(folder, origin)`` of each folder searched, in order."""
    dirs = []
    configured = settings.get(settings.ENGINE_DIR, "") or ""
    if str(configured).strip():
        dirs.append((str(configured).strip(), "setting terraseg/engine_dir"))
    dirs.append((str(PLUGIN_DIR / ".venv-engine"), "plugin folder"))
    dirs.append((default_engine_dir(), "default folder"))
    return dirs


def engine_candidates() -> list[EngineCandidate]:
    """The folders :func:`find_engine` searches, in order, each with its problem.

    Returns:
        One :class:`EngineCandidate` per folder of :func:`candidate_dirs`.
    """
    return [EngineCandidate(folder, origin, engine_problem(folder))
            for folder, origin in _candidates()]


def skipped_engines() -> list[EngineCandidate]:
    """Folders that were asked for or look like engines but are not run, with the reason.

    Returns:
        The configured folder when it holds no engine TerraSeg runs, and any other searched
        folder that exists but is refused (for example an engine without the marker file).
    """
    return [c for c in engine_candidates()
            if c.problem and (c.origin.startswith("setting") or Path(c.folder).expanduser()
                              .exists())]


def find_engine() -> EngineLocation | None:
    """Locate the engine environment.

    Returns:
        The first engine TerraSeg runs in :func:`candidate_dirs` (a folder without the
        marker file :data:`ENGINE_MARKER` is skipped: :func:`skipped_engines` says why), or
        None when there is none.
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


def process_environment(extra: dict[str, str] | None = None,
                        drop: tuple[str, ...] = ()) -> dict[str, str]:
    """Environment for engine processes: this process's, without QGIS's Python variables.

    QGIS (notably on Windows) sets PYTHONHOME/PYTHONPATH for its embedded Python; an
    engine Python that inherited them would load QGIS's packages.

    Args:
        extra: Variables to add or replace.
        drop: Further variables of this process not to pass on.

    Returns:
        The environment as a dict.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in _PYTHON_VARIABLES and k not in drop}
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def qprocess_environment(extra: dict[str, str] | None = None,
                         drop: tuple[str, ...] = ()) -> QProcessEnvironment:
    """:func:`process_environment` as a QProcessEnvironment.

    Args:
        extra: Variables to add or replace.
        drop: Further variables of this process not to pass on.

    Returns:
        The environment for QProcess.setProcessEnvironment.
    """
    qenv = QProcessEnvironment()
    for key, value in process_environment(extra, drop).items():
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
        skipped = " ".join(f"Skipped ({c.origin}): {c.problem}" for c in skipped_engines())
        raise EngineError(f"No TerraSeg engine was found. {skipped}".strip(),
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
