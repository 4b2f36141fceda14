"""Setup settings that run code (issue 9): the engine folder and the package index.

A folder from the settings is run only when it carries TerraSeg's marker file; the Settings
page and "Copy diagnostics" show the resolved engine, what was skipped and why, and the
package index in use; an index from the environment (or an old setting) never reaches the
installer unless the user types it in the page. The fake engines here are shell scripts
that leave a trace when run; no real engine is needed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from helpers.qgis_support import wait_until

from terraseg.plugin import engine as engine_mod
from terraseg.plugin import engine_setup, settings

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="shell-script engines")

ENV_RESULT = ('{"v": 1, "event": "result", "command": "env", "terraseg": "0.0-fake", '
              '"python": "/fake/python", "python_version": "3.11.0", '
              '"packages": {"torch": "2.0"}, "device": {"type": "cpu", '
              '"description": "CPU (fake)"}}')

HOSTILE = {"PIP_INDEX_URL": "https://evil.example/simple",
           "PIP_EXTRA_INDEX_URL": "https://evil.example/extra",
           "PIP_FIND_LINKS": "https://evil.example/links",
           "PIP_CONFIG_FILE": "/evil/pip.conf",
           "TORCH_INDEX_URL": "https://evil.example/torch",
           "WHEELS_DIR": "/evil/wheels", "FORCE": "1"}
# What the installer reads (scripts/install_engine.sh) plus pip's package-source variables.
INSTALLER_NAMES = ("ENGINE_VENV", "PYTHON", "TORCH_VARIANT", "WHEELS_DIR", "FORCE",
                   "TORCH_INDEX_URL", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS",
                   "PIP_CONFIG_FILE", "PIP_TRUSTED_HOST")


def fake_engine(folder: Path, marked: bool) -> Path:
    """A venv-like folder whose bin/terraseg answers ``env`` and leaves a trace file."""
    exe = folder / "bin" / "terraseg"
    exe.parent.mkdir(parents=True)
    exe.write_text(f"#!/bin/sh\ntouch '{folder / 'was-run'}'\ncat > /dev/null\n"
                   f"printf '%s\\n' '{ENV_RESULT}'\n")
    exe.chmod(0o755)
    (folder / "bin" / "python").write_text("")
    if marked:
        (folder / engine_mod.ENGINE_MARKER).write_text("TerraSeg engine environment\n")
    return folder


@pytest.fixture
def no_other_engines(tmp_path, monkeypatch, clean_engine_setting):
    """Only the setting can name an engine: no plugin-folder or default engine."""
    monkeypatch.setattr(engine_mod, "PLUGIN_DIR", tmp_path / "plugin")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in INSTALLER_NAMES:
        monkeypatch.delenv(name, raising=False)
    settings.remove(settings.TORCH_INDEX_URL)
    yield clean_engine_setting
    settings.remove(settings.TORCH_INDEX_URL)


# --- the marker ----------------------------------------------------------------------------


def test_engine_at_requires_the_marker(tmp_path):
    folder = fake_engine(tmp_path / "engine", marked=False)
    assert engine_mod.engine_at(folder) is None
    problem = engine_mod.engine_problem(folder)
    assert str(folder) in problem and engine_mod.ENGINE_MARKER in problem
    assert "Set up engine" in problem  # the fix
    (folder / engine_mod.ENGINE_MARKER).write_text("TerraSeg engine environment\n")
    loc = engine_mod.engine_at(folder)
    assert loc is not None and loc.terraseg == str(folder / "bin" / "terraseg")
    assert engine_mod.engine_problem(folder) == ""
    # A link named like the marker is not the marker.
    (folder / engine_mod.ENGINE_MARKER).unlink()
    (folder / engine_mod.ENGINE_MARKER).symlink_to(tmp_path / "elsewhere")
    assert engine_mod.engine_at(folder) is None
    assert not (folder / "was-run").exists()


def test_engine_at_resolves_links(tmp_path):
    real = fake_engine(tmp_path / "real", marked=True)
    (tmp_path / "link").symlink_to(real)
    loc = engine_mod.engine_at(tmp_path / "link")
    assert loc.root == str(real) and loc.terraseg == str(real / "bin" / "terraseg")


def test_find_engine_skips_an_unmarked_setting(tmp_path, no_other_engines):
    folder = fake_engine(tmp_path / "planted", marked=False)
    settings.set(settings.ENGINE_DIR, str(folder))
    assert engine_mod.find_engine() is None
    skipped = engine_mod.skipped_engines()
    assert [(c.folder, c.origin) for c in skipped] == [
        (str(folder), "setting terraseg/engine_dir")]
    assert engine_mod.ENGINE_MARKER in skipped[0].problem
    with pytest.raises(engine_mod.EngineError) as err:
        engine_mod.engine_environment()
    assert str(folder) in str(err.value) and engine_mod.ENGINE_MARKER in str(err.value)
    # The search goes on past it to a marked engine.
    fallback = fake_engine(tmp_path / "home" / ".local" / "share" / "TerraSeg" / "engine",
                           marked=True)
    assert engine_mod.find_engine().root == str(fallback)
    assert not (folder / "was-run").exists()


def test_settings_page_refuses_an_unmarked_engine_and_says_why(tmp_path, no_other_engines):
    from terraseg.plugin.settings_dialog import EngineSettingsWidget

    folder = fake_engine(tmp_path / "planted", marked=False)
    settings.set(settings.ENGINE_DIR, str(folder))
    page = EngineSettingsWidget(auto_refresh=False)
    page.refresh()
    assert page.engine is None
    assert page.engine_label.text() == "No engine found."
    assert str(folder) in page.skipped_label.text()
    assert engine_mod.ENGINE_MARKER in page.skipped_label.text()
    assert str(folder) in page.status_label.text()
    text = page.diagnostics()
    assert "Engine: not found" in text
    assert f"Engine folder not used (setting terraseg/engine_dir): {folder}:" in text
    assert not (folder / "was-run").exists()


# --- resolved paths and the index on the page ------------------------------------------------


def test_settings_page_shows_resolved_engine_and_index(tmp_path, no_other_engines,
                                                       monkeypatch):
    from terraseg.plugin.settings_dialog import EngineSettingsWidget

    real = fake_engine(tmp_path / "real", marked=True)
    (tmp_path / "link").symlink_to(real)
    settings.set(settings.ENGINE_DIR, str(tmp_path / "link"))
    monkeypatch.setenv("PIP_INDEX_URL", HOSTILE["PIP_INDEX_URL"])
    settings.set(settings.TORCH_INDEX_URL, "https://stored.example/torch")
    page = EngineSettingsWidget(auto_refresh=False)
    page.cuda_check.setChecked(False)
    page.refresh()
    assert page.engine_label.text() == str(real)
    assert page.command_label.text() == str(real / "bin" / "terraseg")
    assert wait_until(lambda: page.environment is not None or page.error, 30)
    assert page.environment["terraseg"] == "0.0-fake", page.error
    # The index in use, and what is ignored.
    expected = ("torch from https://download.pytorch.org/whl/cpu" if
                sys.platform.startswith("linux") else "torch from the same index")
    assert page.index_label.text().startswith(expected)
    assert "pip's configured index" in page.index_label.text()
    ignored = page.ignored_label.text()
    assert f"PIP_INDEX_URL={HOSTILE['PIP_INDEX_URL']} (environment)" in ignored
    assert "terraseg/torch_index_url=https://stored.example/torch (setting)" in ignored
    assert "evil" not in page.index_label.text() and "stored" not in page.index_label.text()
    page.torch_index_edit.setText("https://mirror.example/torch")
    assert page.index_label.text().startswith("torch from https://mirror.example/torch (typed)")
    text = page.diagnostics()
    assert f"Engine: {real}" in text
    assert f"Engine command: {real / 'bin' / 'terraseg'}" in text
    assert ("Package index for engine setup: torch from https://mirror.example/torch (typed)"
            in text)
    assert f"PIP_INDEX_URL={HOSTILE['PIP_INDEX_URL']} (environment)" in text
    page.torch_index_edit.setText("not a url")
    page.start_setup()
    assert not page.setup.is_running() and "not a package index URL" in page.status_label.text()


# --- what the installer receives -------------------------------------------------------------


def run_setup(tmp_path: Path, **kwargs) -> tuple[bool, dict[str, str], list[str]]:
    """EngineSetup with a script that prints the installer variables it received."""
    script = tmp_path / "print-env.sh"
    names = " ".join(INSTALLER_NAMES)
    script.write_text(f'for n in {names}; do eval "v=\\${{$n-<unset>}}"; '
                      'echo "VAR $n=$v"; done\nexit 1\n')
    setup = engine_setup.EngineSetup(script=str(script))
    logs, finished = [], []
    setup.log.connect(logs.append)
    setup.finished.connect(lambda ok, msg: finished.append(ok))
    setup.start(str(tmp_path / "engine"), **kwargs)
    assert wait_until(lambda: finished, 30)
    received = dict(line[4:].split("=", 1) for line in logs if line.startswith("VAR "))
    return finished[0], received, logs


def test_environment_index_is_not_passed_to_the_installer(tmp_path, no_other_engines,
                                                          monkeypatch):
    for name, value in HOSTILE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PIP_TRUSTED_HOST", "evil.example")
    settings.set(settings.TORCH_INDEX_URL, "https://stored.example/torch")
    monkeypatch.setenv("TERRASEG_PYTHON", "/usr/bin/python3")
    ok, received, logs = run_setup(tmp_path, cuda=True)
    assert ok is False
    assert "evil" not in "".join(received.values()), received
    assert "stored" not in "".join(received.values()), received
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE",
                 "TORCH_INDEX_URL", "WHEELS_DIR", "FORCE", "PIP_TRUSTED_HOST"):
        assert received[name] == "<unset>", (name, received)
    assert received["TORCH_VARIANT"] == "cuda"
    assert received["ENGINE_VENV"] == str(tmp_path / "engine")
    text = "\n".join(logs)
    assert "Python /usr/bin/python3 from TERRASEG_PYTHON" in text
    assert "package index: torch from the same index as the other packages" in text
    assert "not used (type it in the Settings page to use it): PIP_INDEX_URL=" in text
    assert "terraseg/torch_index_url=https://stored.example/torch (setting)" in text
    # Nor does torch_index_url read them.
    assert engine_setup.torch_index_url(cuda=True) is None


def test_typed_index_is_passed_to_the_installer(tmp_path, no_other_engines, monkeypatch):
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", HOSTILE["PIP_EXTRA_INDEX_URL"])
    _ok, received, logs = run_setup(tmp_path, cuda=False,
                                    torch_index="https://mirror.example/torch",
                                    pip_index="https://mirror.example/simple")
    assert received["TORCH_INDEX_URL"] == "https://mirror.example/torch"
    assert received["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert received["PIP_EXTRA_INDEX_URL"] == "<unset>"
    with pytest.raises(ValueError, match="not a package index URL"):
        engine_setup.EngineSetup().start(str(tmp_path / "e"), cuda=False,
                                         torch_index="-i https://x")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU index default")
def test_default_cpu_index_only(tmp_path, no_other_engines):
    _ok, received, _logs = run_setup(tmp_path, cuda=False)
    assert received["TORCH_INDEX_URL"] == engine_setup.CPU_TORCH_INDEX_URL
    assert received["PIP_INDEX_URL"] == "<unset>"
    # A typed mirror for all packages replaces the default torch index too.
    _ok, received, _logs = run_setup(tmp_path, cuda=False,
                                     pip_index="https://mirror.example/simple")
    assert received["TORCH_INDEX_URL"] == "<unset>"


# --- the real installer refuses a user folder ------------------------------------------------


def test_setup_refuses_a_folder_with_user_files(tmp_path, no_other_engines):
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "thesis.docx").write_text("three years of work")
    setup = engine_setup.EngineSetup()  # scripts/install_engine.sh
    finished = []
    setup.finished.connect(lambda ok, msg: finished.append((ok, msg)))
    setup.start(str(folder), cuda=False)
    assert wait_until(lambda: finished, 60)
    ok, message = finished[0]
    assert ok is False
    assert f"refusing to use {folder}" in message
    assert "choose an empty or new folder" in message
    assert sorted(os.listdir(folder)) == ["thesis.docx"]
    assert (folder / "thesis.docx").read_text() == "three years of work"
    assert settings.get(settings.ENGINE_DIR, "") == ""
