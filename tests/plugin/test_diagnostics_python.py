"""The Python the diagnostics name is a real interpreter, never a shim (issue 10).

Inside QGIS ``sys.executable`` is the ``qgis`` program or whatever ``python3`` came first on
PATH when Python guessed (a pyenv shim script). These tests put a fake shim script and a
fake ``qgis`` program in its place and check that the Settings page, "Copy diagnostics" and
the engine setup name the interpreter that really runs: this process's own Python program
(the one the tests run with), with the shim named as what it is.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from helpers.qgis_support import wait_until

from terraseg.plugin import engine_setup, settings_dialog

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="shell-script shims")

# The interpreter running the tests: the venv's python links to it.
REAL_PYTHON = str(Path(sys._base_executable).resolve())
VERSION = ".".join(str(v) for v in sys.version_info[:3])


def make_shim(folder: Path, name: str = "python3") -> Path:
    """A pyenv-style shim: a shell script that starts the real Python."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / name
    shim.write_text(f'#!/bin/sh\nexec "{REAL_PYTHON}" "$@"\n')
    shim.chmod(0o755)
    return shim


def test_a_shim_as_sys_executable_is_not_reported(tmp_path, monkeypatch):
    shim = make_shim(tmp_path / "shims")
    monkeypatch.setattr(sys, "executable", str(shim))
    assert "script" in engine_setup.not_a_python(shim)
    found = engine_setup.running_python()
    assert found.executable == REAL_PYTHON
    assert found.version == VERSION
    assert found.called_as == f"sys.executable {shim}"
    assert "is a script (a shim such as pyenv's), not a Python" in found.note
    text = settings_dialog.diagnostics_text(None, None)
    line = next(s for s in text.splitlines() if s.startswith("QGIS Python:"))
    assert line.startswith(f"QGIS Python: {VERSION} ({REAL_PYTHON});")
    assert f"sys.executable {shim} is a script" in line


def test_the_qgis_program_as_sys_executable_is_not_reported(tmp_path, monkeypatch):
    program = tmp_path / "bin" / "qgis"  # a binary, not named python
    program.parent.mkdir()
    shutil.copy(shutil.which("true") or "/bin/true", program)
    monkeypatch.setattr(sys, "executable", str(program))
    found = engine_setup.running_python()
    assert found.executable == REAL_PYTHON
    assert "is the program qgis, not a Python" in found.note
    # Another installation's Python is no answer either (its version differs).
    other = tmp_path / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1] + 1}"
    shutil.copy(REAL_PYTHON, other)
    monkeypatch.setattr(sys, "executable", str(other))
    assert engine_setup.running_python().executable == REAL_PYTHON


def test_a_real_sys_executable_is_kept(monkeypatch):
    found = engine_setup.running_python()
    assert found.executable == sys.executable and found.called_as == ""
    assert found.text().startswith(f"{VERSION} ({sys.executable})")
    assert engine_setup.not_a_python(sys.executable) == ""


def test_describe_python_follows_a_shim(tmp_path):
    shim = make_shim(tmp_path / "shims")
    found = engine_setup.describe_python(str(shim))
    assert found is not None
    assert (found.executable, found.version, found.called_as) == (REAL_PYTHON, VERSION,
                                                                   str(shim))
    assert "it starts this one" in found.note
    direct = engine_setup.describe_python(REAL_PYTHON)
    assert direct == engine_setup.PythonInterpreter(REAL_PYTHON, VERSION)
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    assert engine_setup.describe_python(str(broken)) is None


def test_engine_setup_uses_the_interpreter_behind_a_shim(tmp_path, monkeypatch,
                                                         clean_engine_setting):
    """The installer gets the real Python, and the log names the shim it was found by."""
    shim = make_shim(tmp_path / "shims")
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("TERRASEG_PYTHON", raising=False)
    monkeypatch.delenv("PYTHON", raising=False)
    assert engine_setup.find_system_python() == REAL_PYTHON
    script = tmp_path / "print-python.sh"
    script.write_text('echo "VAR PYTHON=$PYTHON"\nexit 1\n')
    setup = engine_setup.EngineSetup(script=str(script))
    logs, finished = [], []
    setup.log.connect(logs.append)
    setup.finished.connect(lambda ok, _msg: finished.append(ok))
    setup.start(str(tmp_path / "engine"), cuda=False)
    assert wait_until(lambda: finished, 30)
    assert f"VAR PYTHON={REAL_PYTHON}" in logs
    line = next(s for s in logs if s.startswith("Python creating the engine:"))
    assert f"{VERSION} ({REAL_PYTHON}); {shim} is a script" in line


def test_settings_page_shows_qgis_python(tmp_path, monkeypatch, qgis_app):
    shim = make_shim(tmp_path / "shims")
    monkeypatch.setattr(sys, "executable", str(shim))
    page = settings_dialog.EngineSettingsWidget(auto_refresh=False)
    assert page.qgis_python_label.text().startswith(f"{VERSION} ({REAL_PYTHON})")
    assert f"QGIS Python: {VERSION} ({REAL_PYTHON})" in page.diagnostics()
    assert settings_dialog.linked_path("/usr/bin/python3") in (
        "/usr/bin/python3", f"/usr/bin/python3 -> {os.path.realpath('/usr/bin/python3')}")
    venv_python = Path(sys.prefix) / "bin" / "python"
    if venv_python.is_symlink():
        assert settings_dialog.linked_path(str(venv_python)) == (
            f"{venv_python} -> {venv_python.resolve()}")
