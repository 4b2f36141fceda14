"""Creating or updating the engine environment with ``scripts/install_engine.sh``.

:class:`EngineSetup` runs the installer in a QProcess with the Python that creates the
environment (:func:`find_system_python`: a Python >= 3.10 on PATH that is not QGIS's
embedded one) and the package index for torch (:func:`torch_index_url`: PyTorch's
CPU-only index for CPU builds on Linux). On success the new engine becomes the setting
``terraseg/engine_dir``, where :func:`terraseg.plugin.engine.find_engine` looks first.

A package index is used only when it is TerraSeg's default or the user typed it in the
Settings page: the installer never inherits an index from this process's environment
(PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_CONFIG_FILE, TORCH_INDEX_URL) or
from the old setting ``terraseg/torch_index_url``; those are shown there as ignored
(:func:`ignored_index_sources`), and :func:`package_index_text` says what is used.

Which Python is which: inside QGIS ``sys.executable`` is often not a Python at all (the
``qgis`` program that embeds it, or whatever ``python3`` was first on PATH when Python
guessed, e.g. a pyenv shim script). :func:`running_python` reports the interpreter that
really runs (its version, and the program of its installation prefix), and
:func:`describe_python` asks a candidate what it really starts, so the setup log and the
diagnostics name real interpreters, never a shim.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from qgis.PyQt.QtCore import QObject, QProcess, pyqtSignal

from . import settings
from .engine import (
    PLUGIN_DIR,
    creation_flags,
    engine_at,
    engine_problem,
    process_environment,
    qprocess_environment,
)

INSTALL_SCRIPT = PLUGIN_DIR / "scripts" / "install_engine.sh"

# Where pip finds a CPU-only torch build (PyPI's Linux wheels are CUDA builds, several GB).
# An index the user types in the Settings page wins.
CPU_TORCH_INDEX_URL = "https://download.pytorch.org/whl/cpu"

# Package sources a process environment can name (PIP_CONFIG_FILE: a pip configuration
# that may name an index); the installer never inherits them.
INDEX_VARIABLES = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE",
                   "TORCH_INDEX_URL")
# Everything the installer reads: set by EngineSetup from the dialog, never inherited.
INSTALLER_VARIABLES = (*INDEX_VARIABLES, "PIP_TRUSTED_HOST", "ENGINE_VENV", "PYTHON",
                       "TORCH_VARIANT", "WHEELS_DIR", "FORCE")

_INDEX_SCHEMES = ("https://", "http://", "file://")


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


@dataclass(frozen=True)
class PythonInterpreter:
    """A Python interpreter as the setup log and the diagnostics name it.

    Attributes:
        executable: The interpreter's program ("" when none was found).
        version: Its version, e.g. ``3.11.2``.
        called_as: What was called or reported instead, when that is not the interpreter
            itself (a shim script, the QGIS program); "" otherwise.
        note: Why ``called_as`` is not the interpreter, in words.
        embedded_in: The program this Python runs inside when that is not a Python (QGIS).
    """

    executable: str
    version: str
    called_as: str = ""
    note: str = ""
    embedded_in: str = ""

    def text(self) -> str:
        """One line, e.g. ``3.11.2 (/usr/bin/python3.11), embedded in /usr/bin/qgis``."""
        parts = [f"{self.version} ({self.executable or 'interpreter program not found'})"]
        if self.embedded_in:
            parts.append(f", embedded in {self.embedded_in}")
        if self.called_as:
            parts.append(f"; {self.called_as} {self.note}")
        return "".join(parts)


def not_a_python(path: str | os.PathLike[str]) -> str:
    """Why ``path`` is not a Python interpreter's program ("" when it is one).

    A script (``#!`` first, as pyenv's and asdf's shims are) only starts some Python, which
    one depends on the folder it is started in; a program not named ``python*`` (``qgis``)
    embeds Python but is none.
    """
    file = Path(path)
    if not str(path) or not file.is_file():
        return "does not exist"
    real = file.resolve()
    try:
        with real.open("rb") as handle:
            head = handle.read(2)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if head == b"#!":
        return "is a script (a shim such as pyenv's), not a Python"
    if not real.name.lower().startswith("python"):
        return f"is the program {real.name}, not a Python (Python is embedded in it)"
    return ""


def _fits_this_python(path: Path) -> bool:
    """Whether a Python program's name and folder fit the running interpreter."""
    real = path.resolve()
    version = real.name.lower().removeprefix("python").removesuffix(".exe")
    running = ".".join(str(v) for v in sys.version_info[:2])
    if version and not (running + ".").startswith(version + "."):
        return False  # python3.12 is not the 3.11 running here
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix)}
    return any(real.is_relative_to(prefix) for prefix in prefixes)


def running_python() -> PythonInterpreter:
    """The interpreter running this process (QGIS's Python when called in QGIS).

    ``sys.executable`` is used when it is a Python of this version and installation;
    else (a shim, or the QGIS program) the interpreter program of this installation's
    prefix (``sys._base_executable``, ``<base_prefix>/bin/python3.X``, ...) is named,
    with what ``sys.executable`` is instead.

    Returns:
        The interpreter; ``embedded_in`` is the running program (Linux's ``/proc/self/exe``)
        when that is not a Python.
    """
    version = ".".join(str(v) for v in sys.version_info[:3])
    major, minor = sys.version_info[:2]
    program = Path("/proc/self/exe")
    embedded_in = ""
    if program.exists() and not_a_python(program):
        embedded_in = str(program.resolve())
    reported = sys.executable or ""
    problem = not_a_python(reported) if reported else "is empty"
    if not problem and not _fits_this_python(Path(reported)):
        problem = "is another Python installation than the one running"
    if not problem:
        return PythonInterpreter(reported, version, embedded_in=embedded_in)
    names = (f"python{major}.{minor}", f"python{major}", "python", "python.exe")
    candidates = [getattr(sys, "_base_executable", "")] + [
        str(Path(prefix) / folder / name) for prefix in (sys.base_prefix, sys.prefix)
        for folder in ("bin", "") for name in names]
    for candidate in candidates:
        if candidate and not not_a_python(candidate) and _fits_this_python(Path(candidate)):
            return PythonInterpreter(str(Path(candidate).resolve()), version,
                                     f"sys.executable {reported}", problem, embedded_in)
    return PythonInterpreter("", version, f"sys.executable {reported}", problem, embedded_in)


# Prints the interpreter a program really starts and its version; fails below 3.10 or
# without venv/ensurepip (what install_engine.sh needs).
_PYTHON_PROBE = ("import sys, venv, ensurepip; print(sys.executable); "
                 "print('.'.join(str(v) for v in sys.version_info[:3])); "
                 "sys.exit(sys.version_info < (3, 10))")


def describe_python(exe: str) -> PythonInterpreter | None:
    """The interpreter that ``exe`` starts, asked by running it.

    Args:
        exe: A Python, or a shim script that starts one.

    Returns:
        The interpreter (``called_as`` is ``exe`` when that is a shim or another file than
        the interpreter), or None when ``exe`` does not run, is older than Python 3.10 or
        lacks ``venv``/``ensurepip``.
    """
    try:
        proc = subprocess.run([exe, "-c", _PYTHON_PROBE], capture_output=True, text=True,
                              timeout=20, check=False, env=process_environment(),
                              creationflags=creation_flags())
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or len(lines) < 2:
        return None
    real, version = lines[-2].strip(), lines[-1].strip()
    problem = not_a_python(exe)
    if problem:
        return PythonInterpreter(real, version, exe, f"{problem}; it starts this one")
    return PythonInterpreter(real, version)


def find_system_python() -> str:
    """A Python >= 3.10 on PATH that is not QGIS's embedded one, to create the engine with.

    A shim on PATH (pyenv, asdf) is followed to the interpreter it starts now
    (:func:`describe_python`), so the installer gets a real Python whatever folder it
    runs in.

    Returns:
        Its path, or ``"python3"`` when none qualifies (install_engine.sh then explains).
    """
    found = find_system_interpreter()
    return found.executable if found else "python3"


def find_system_interpreter() -> PythonInterpreter | None:
    """:func:`find_system_python` with what was called to find it (None: none qualifies)."""
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
            found = describe_python(exe)
            if found is not None and not any(
                    Path(found.executable).resolve().is_relative_to(root) for root in embedded):
                return found
    return None


def check_index_url(url: str) -> str:
    """Why ``url`` cannot be a package index.

    Args:
        url: A URL the user typed.

    Returns:
        ``""`` for an ``https://``, ``http://`` or ``file://`` URL without spaces, else the
        problem and its fix.
    """
    text = url.strip()
    if not text.lower().startswith(_INDEX_SCHEMES) or any(c.isspace() for c in text):
        return (f"'{url}' is not a package index URL. Fix: type an https:// (or http://, "
                "file://) address, or leave the field empty.")
    return ""


def torch_index_url(cuda: bool, wheels_dir: str | None = None, typed: str | None = None,
                    pip_index: str | None = None) -> str | None:
    """Package index for torch when setting up an engine.

    Args:
        cuda: Whether a CUDA build is wanted.
        wheels_dir: Offline wheel folder (then no index is used).
        typed: The torch index the user typed in the Settings page, if any.
        pip_index: The index for all packages the user typed, if any (torch comes from it
            when no torch index is typed).

    Returns:
        ``typed``, else None with ``pip_index``, else the PyTorch CPU index for CPU builds on
        Linux (PyPI's Linux torch is a CUDA build), else None (pip's configured index).
        Neither the environment nor a stored setting is consulted.
    """
    if wheels_dir:
        return None
    if typed and typed.strip():
        return typed.strip()
    if pip_index and pip_index.strip():
        return None
    if not cuda and sys.platform.startswith("linux"):
        return CPU_TORCH_INDEX_URL
    return None


def package_index_text(cuda: bool, wheels_dir: str | None = None, typed: str | None = None,
                       pip_index: str | None = None) -> str:
    """Where the installer will take packages from, in words (Settings page, diagnostics).

    Args:
        cuda: Whether a CUDA build is wanted.
        wheels_dir: Offline wheel folder.
        typed: The torch index typed in the Settings page.
        pip_index: The index for all packages typed in the Settings page.

    Returns:
        For example ``"torch from https://download.pytorch.org/whl/cpu (default for CPU
        builds on Linux); other packages from pip's configured index (PyPI unless a pip
        configuration file names another)"``.
    """
    if wheels_dir:
        return f"offline: only the wheels in {wheels_dir} (no package index)"
    pip_index = (pip_index or "").strip()
    torch = torch_index_url(cuda, None, typed, pip_index)
    others = (f"{pip_index} (typed)" if pip_index else
              "pip's configured index (PyPI unless a pip configuration file names another)")
    if torch is None:
        torch_text = "the same index as the other packages"
    elif typed and typed.strip():
        torch_text = f"{torch} (typed)"
    else:
        torch_text = f"{torch} (default for CPU builds on Linux)"
    return f"torch from {torch_text}; other packages from {others}"


def ignored_index_sources() -> list[str]:
    """Package indexes named outside the Settings page, which the installer does not use.

    Returns:
        ``"NAME=value (environment)"`` for each of :data:`INDEX_VARIABLES` set in this
        process and ``"terraseg/torch_index_url=value (setting)"`` for a value stored by an
        earlier release. To use one, type it in the Settings page.
    """
    found = [f"{name}={os.environ[name]} (environment)" for name in INDEX_VARIABLES
             if os.environ.get(name, "").strip()]
    stored = settings.get(settings.TORCH_INDEX_URL, "") or ""
    if str(stored).strip():
        found.append(f"terraseg/{settings.TORCH_INDEX_URL}={stored} (setting)")
    return found


class EngineSetup(QObject):
    """Creates or updates an engine environment with ``scripts/install_engine.sh``.

    Runs ``bash install_engine.sh`` in a QProcess with ``ENGINE_VENV=target_dir``,
    ``PYTHON`` (see :func:`find_system_python`), ``TORCH_VARIANT`` (``cpu``/``cuda``),
    ``WHEELS_DIR`` (offline installs), ``TORCH_INDEX_URL`` (:func:`torch_index_url`) and
    ``PIP_INDEX_URL`` when the user typed one; none of :data:`INSTALLER_VARIABLES` is
    inherited from this process. The installer refuses a folder it did not make (see
    ``scripts/install_engine.sh``). On success the target is stored as the setting
    ``terraseg/engine_dir``. The environment variable TERRASEG_PYTHON overrides the Python
    that creates the engine (the log says so). The installer needs bash (on Windows: Git
    Bash or WSL on PATH).

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

    def start(self, target_dir: str, cuda: bool, wheels_dir: str | None = None,
              torch_index: str | None = None, pip_index: str | None = None) -> None:
        """Start the installer (returns at once; watch the signals).

        Args:
            target_dir: Engine folder to create or update.
            cuda: Install the CUDA build of torch (else the CPU build).
            wheels_dir: Install offline from this folder of wheels.
            torch_index: Package index for torch that the user typed.
            pip_index: Package index for all packages that the user typed.

        Raises:
            RuntimeError: The installer runs already.
            ValueError: A typed index is not a URL (:func:`check_index_url`).
        """
        if self.is_running():
            raise RuntimeError("The engine setup is running already.")
        for typed in (torch_index, pip_index):
            if typed and typed.strip() and check_index_url(typed):
                raise ValueError(check_index_url(typed))
        self.target_dir = str(Path(target_dir).expanduser())
        self._buffer, self._tail, self._collected = b"", [], 0
        self._fraction, self._cancelled = 0.0, False
        chosen = os.environ.get("TERRASEG_PYTHON")
        interpreter = describe_python(chosen) if chosen else find_system_interpreter()
        python = chosen or (interpreter.executable if interpreter else "python3")
        extra = {"ENGINE_VENV": self.target_dir, "PYTHON": python,
                 "TORCH_VARIANT": "cuda" if cuda else "cpu"}
        if wheels_dir:
            extra["WHEELS_DIR"] = str(Path(wheels_dir).expanduser())
        index = torch_index_url(cuda, wheels_dir, torch_index, pip_index)
        if index:
            extra["TORCH_INDEX_URL"] = index
        if pip_index and pip_index.strip() and not wheels_dir:
            extra["PIP_INDEX_URL"] = pip_index.strip()
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.MergedChannels)
        proc.setProcessEnvironment(qprocess_environment(extra, drop=INSTALLER_VARIABLES))
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
                      + (" from TERRASEG_PYTHON" if chosen else "")
                      + (f", wheels from {extra['WHEELS_DIR']}" if wheels_dir else "") + ")")
        self.log.emit("Python creating the engine: " + (
            interpreter.text() if interpreter else
            f"{python} does not run as Python >= 3.10 with venv and ensurepip"))
        self.log.emit("package index: " + package_index_text(
            cuda, extra.get("WHEELS_DIR"), torch_index, pip_index))
        for source in ignored_index_sources():
            self.log.emit(f"not used (type it in the Settings page to use it): {source}")
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
            message = (f"The installer ended but made no engine in {self.target_dir}: "
                       f"{engine_problem(self.target_dir)}")
        else:
            detail = self._tail[-1] if self._tail else ""
            message = f"Engine setup failed (exit code {exit_code}). {detail}".strip()
        self.log.emit(message)
        self.finished.emit(loc is not None, message)
