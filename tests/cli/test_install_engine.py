"""scripts/install_engine.sh deletes or replaces only what it made (issue 9, lost data).

The engine folder is user-chosen (the plugin's Settings page), so the installer must never
wipe a folder it did not create. Each test runs the real script on a folder under tmp_path
with a fake ``PYTHON`` (and fake venv Pythons) that log every call: nothing is pip-installed,
and a refused folder must be refused before any Python runs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import ROOT

pytestmark = pytest.mark.skipif(sys.platform == "win32" or shutil.which("bash") is None,
                                reason="the installer is a bash script")

SCRIPT = ROOT / "scripts" / "install_engine.sh"
MARKER = ".terraseg-engine"

# A venv's Python: `-c ...` succeeds (the installer's "is it usable" probe); anything else
# (pip) is logged and fails, which stops the installer before it installs anything.
VENV_PYTHON = """#!/bin/sh
echo "venv-python $*" >> "$FAKE_LOG"
[ "$1" = "-c" ] && exit 0
echo "fake pip: stopping here" >&2
exit 1
"""

# The interpreter that creates venvs: Python 3.11; `-m venv DIR` makes an isolated venv
# whose bin/python is VENV_PYTHON.
CREATOR_PYTHON = """#!/bin/sh
echo "python $*" >> "$FAKE_LOG"
case "$1" in
  --version) echo "Python 3.11.0" ;;
  -c) exit 0 ;;
  -m)
    [ "$2" = venv ] || exit 1
    mkdir -p "$3/bin" "$3/lib/python3.11/site-packages"
    printf 'home = /usr/bin\\ninclude-system-site-packages = false\\n' > "$3/pyvenv.cfg"
    cp "$FAKE_VENV_PYTHON" "$3/bin/python"
    chmod +x "$3/bin/python" ;;
esac
"""


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, Path]:
    """Fake interpreters and the log of their calls."""
    tools = tmp_path / "tools"
    return {"log": tools / "calls.log",
            "python": _executable(tools / "python3", CREATOR_PYTHON),
            "venv_python": _executable(tools / "venv-python", VENV_PYTHON)}


def run_installer(venv: Path, fake: dict[str, Path], **extra: str
                  ) -> subprocess.CompletedProcess:
    """The real installer with ENGINE_VENV=venv and the fake PYTHON."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE", "TORCH_VARIANT", "TORCH_INDEX_URL", "WHEELS_DIR")}
    env.update(ENGINE_VENV=str(venv), PYTHON=str(fake["python"]), FAKE_LOG=str(fake["log"]),
               FAKE_VENV_PYTHON=str(fake["venv_python"]), **extra)
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def calls(fake: dict[str, Path]) -> list[str]:
    """Every call of a fake Python, in order."""
    return fake["log"].read_text().splitlines() if fake["log"].exists() else []


def tree(folder: Path) -> dict[str, str]:
    """Relative path -> content (files) or '<dir>' (folders) under ``folder``."""
    return {str(p.relative_to(folder)): "<dir>" if p.is_dir() else p.read_text()
            for p in sorted(folder.rglob("*"))}


def stamp_hash() -> str:
    """The installer's stamp hash (inputs as the script lists them, no torch variant)."""
    inputs = ["requirements/engine.txt", "requirements/dev.txt", "pyproject.toml",
              "scripts/install_engine.sh"]
    data = b"".join((ROOT / f).read_bytes() for f in inputs)
    return hashlib.sha256(data).hexdigest()[:16]


def assert_refused(proc: subprocess.CompletedProcess, folder: Path) -> None:
    assert proc.returncode != 0, proc.stdout
    assert f"refusing to use {folder}" in proc.stderr, proc.stderr
    assert "Fix: choose an empty or new folder" in proc.stderr


# --- folders the installer did not make: refused, untouched, nothing run --------------------


def test_folder_with_user_files_is_refused_untouched(tmp_path, fake):
    folder = tmp_path / "My Documents"
    (folder / "project").mkdir(parents=True)
    (folder / "thesis.docx").write_text("three years of work")
    (folder / "project" / "labels.gpkg").write_text("polygons")
    before = tree(folder)
    proc = run_installer(folder, fake)
    assert_refused(proc, folder)
    # One line, the last: the plugin's setup shows the installer's last line.
    assert proc.stderr.strip().splitlines()[-1].endswith("if nothing in it is needed.")
    assert tree(folder) == before  # no marker written either
    assert calls(fake) == []  # refused before any Python ran


def test_non_isolated_venv_is_refused_not_recreated(tmp_path, fake):
    """The old installer ran `rm -rf` on a folder that was not an isolated venv."""
    folder = tmp_path / "venv"
    (folder / "pyvenv.cfg").parent.mkdir()
    (folder / "pyvenv.cfg").write_text("include-system-site-packages = true\n")
    _executable(folder / "bin" / "python", VENV_PYTHON)
    _executable(folder / "bin" / "terraseg", "#!/bin/sh\n")
    (folder / "analysis.py").write_text("print('mine')")
    before = tree(folder)
    proc = run_installer(folder, fake)
    assert_refused(proc, folder)
    assert tree(folder) == before
    assert calls(fake) == []  # not even the folder's own Python


def test_other_isolated_venv_is_not_adopted(tmp_path, fake):
    """An isolated venv without the terraseg distribution is someone else's."""
    folder = tmp_path / "other-venv"
    (folder / "lib" / "python3.11" / "site-packages" / "numpy").mkdir(parents=True)
    (folder / "pyvenv.cfg").write_text("include-system-site-packages = false\n")
    _executable(folder / "bin" / "python", VENV_PYTHON)
    _executable(folder / "bin" / "terraseg", "#!/bin/sh\n")
    before = tree(folder)
    proc = run_installer(folder, fake)
    assert_refused(proc, folder)
    assert tree(folder) == before and calls(fake) == []


def test_a_file_is_refused(tmp_path, fake):
    path = tmp_path / "engine"
    path.write_text("not a folder")
    proc = run_installer(path, fake)
    assert proc.returncode != 0
    assert f"refusing to use {path}: it is not a folder" in proc.stderr
    assert path.read_text() == "not a folder" and calls(fake) == []


# --- folders the installer makes or owns ----------------------------------------------------


def test_new_folder_gets_the_marker_when_created(tmp_path, fake):
    folder = tmp_path / "new" / "engine"
    proc = run_installer(folder, fake)
    assert proc.returncode != 0 and "fake pip: stopping here" in proc.stderr  # stub stops it
    assert "creating isolated engine environment" in proc.stdout
    text = (folder / MARKER).read_text()
    assert text.startswith("TerraSeg engine environment (created by scripts/install_engine.sh")
    assert re.search(r"on \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)", text), text
    assert "Keep no other files here" in text
    log = calls(fake)
    assert f"python -m venv {folder}" in log
    assert any(c.startswith("venv-python -m pip") for c in log), log


def test_empty_folder_may_be_used(tmp_path, fake):
    folder = tmp_path / "empty"
    folder.mkdir()
    proc = run_installer(folder, fake)
    assert f"using the empty folder {folder}" in proc.stdout
    assert (folder / MARKER).is_file() and (folder / "pyvenv.cfg").is_file()
    assert f"python -m venv {folder}" in calls(fake)


def test_marked_broken_venv_is_recreated_keeping_other_files(tmp_path, fake):
    """Repair removes only the virtual environment's own entries."""
    folder = tmp_path / "engine"
    (folder / "lib" / "python3.11" / "site-packages" / "stale").mkdir(parents=True)
    (folder / "pyvenv.cfg").write_text("include-system-site-packages = true\n")
    (folder / MARKER).write_text("TerraSeg engine environment (created ...)\n")
    (folder / "notes.txt").write_text("kept although it should not be here")
    proc = run_installer(folder, fake)
    assert "broken or not isolated; recreating its environment" in proc.stderr
    assert f"python -m venv {folder}" in calls(fake)
    assert not (folder / "lib" / "python3.11" / "site-packages" / "stale").exists()
    assert "include-system-site-packages = false" in (folder / "pyvenv.cfg").read_text()
    assert (folder / "notes.txt").read_text() == "kept although it should not be here"
    assert (folder / MARKER).read_text() == "TerraSeg engine environment (created ...)\n"


def earlier_release_engine(folder: Path) -> None:
    """An isolated venv as earlier releases left it: no marker, stamp of today's inputs."""
    dist = folder / "lib" / "python3.11" / "site-packages" / "terraseg-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: terraseg\nVersion: 0.1.0\n")
    (folder / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    _executable(folder / "bin" / "python", VENV_PYTHON)
    _executable(folder / "bin" / "terraseg", "#!/bin/sh\n")
    (folder / f".installed-{stamp_hash()}").write_text("")


def test_engine_of_an_earlier_release_is_adopted_without_reinstalling(tmp_path, fake):
    folder = tmp_path / ".venv-engine"
    earlier_release_engine(folder)
    before = tree(folder)
    proc = run_installer(folder, fake)
    assert proc.returncode == 0, proc.stderr
    assert f"adopting the TerraSeg engine made by an earlier release in {folder}" in proc.stdout
    assert "nothing was deleted" in proc.stdout
    assert f"engine environment up to date: {folder}" in proc.stdout
    after = tree(folder)
    assert "adopted by scripts/install_engine.sh" in after.pop(MARKER)
    assert after == before
    assert calls(fake) == ["venv-python -c import sys"]  # the usable probe only, no pip
    again = run_installer(folder, fake)  # marked and up to date: nothing to do
    assert again.returncode == 0 and "adopting" not in again.stdout
    assert "engine environment up to date" in again.stdout
