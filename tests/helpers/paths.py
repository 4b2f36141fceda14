"""Where the tests find things: the repository, test data, ../shared/data and the engine.

Standard library only: tests/conftest.py imports it, and that conftest is loaded by the
engine's Python (``make test-engine``) and by QGIS's Python (``make test-plugin``) alike.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent  # the repository root, which is the ``terraseg`` package
TEST_DATA = TESTS / "data"  # small files kept in the repository (legacy model files)
SHARED_DATA = ROOT.parent / "shared" / "data"  # real imagery; optional, tests skip without it

ENGINE_DIR = ROOT / ".venv-engine"  # the isolated engine environment (`make install`)


def engine_executable(engine_dir: Path = ENGINE_DIR) -> Path:
    """The ``terraseg`` console script of the engine environment in ``engine_dir``."""
    return engine_dir / ("Scripts/terraseg.exe" if sys.platform == "win32" else "bin/terraseg")


def engine_python(engine_dir: Path = ENGINE_DIR) -> Path:
    """The Python of the engine environment in ``engine_dir``."""
    return engine_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _terraseg_command() -> list[str]:
    """The console script installed next to the running Python, as a user runs it.

    Without one (a Python where TerraSeg is not pip-installed), the CLI module run by the
    running Python, which is the same ``main``.
    """
    name = "terraseg.exe" if sys.platform == "win32" else "terraseg"
    sibling = Path(sys.executable).with_name(name)
    if sibling.exists():
        return [str(sibling)]
    return [sys.executable, "-m", "terraseg.cli.main"]


# The engine's command line for engine tests (run them with the engine's Python):
# subprocess.run([*TERRASEG, "train", ...]).
TERRASEG: list[str] = _terraseg_command()


def terraseg(*args: object, cwd: Path | str | None = None, stdin: str | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the terraseg command as a user would; stdout/stderr captured as text."""
    return subprocess.run([*TERRASEG, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, input=stdin, timeout=timeout)


def run_engine_python(code: str, *args: object, python: Path | str | None = None,
                      timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` with the engine's Python, ``helpers`` importable, ``args`` in sys.argv[1:].

    For QGIS-side tests, which must not import rasterio/fiona themselves: e.g.
    ``run_engine_python("from helpers.synthetic import make_scene; ...", folder)``.
    Raises ``CalledProcessError`` (with the output) when the code fails.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([str(python or engine_python()), "-c", code, *map(str, args)],
                          env=env, check=True, capture_output=True, text=True,
                          timeout=timeout)
