"""Shared test setup for every test under tests/.

Layout (each folder tests the package of the same name):

- ``tests/protocol``, ``tests/core``, ``tests/training``, ``tests/cli``: the engine, run
  with the engine's Python (``make test-engine``). ``tests/test_import_direction.py``
  checks the imports of the whole package.
- ``tests/plugin``: the QGIS side, run with QGIS's Python (``make test-plugin``); it has
  its own conftest.py and is not collected by a Python without ``qgis``.
- ``tests/helpers``: helper modules, imported as ``helpers.<module>`` (pyproject's pytest
  ``pythonpath = ["tests"]``): ``paths`` (repository, test data, ../shared/data, the
  engine's command line ``TERRASEG``), ``synthetic`` (tiny scenes with real CRSs),
  ``label_layers`` (label layers on a 10 x 10 grid), ``patch_models`` (a randomised patch
  CNN), ``qgis_support`` (QGIS side).
- ``tests/data``: small files the tests read (never collected).

Slow tests (each more than ~15 s on 2 CPU cores) are marked ``@pytest.mark.slow``: ``make
test`` (CI) runs them, ``make test-fast`` (``-m "not slow"``) leaves them out.

QGIS's Python loads this file too, so it imports only the standard library and pytest.
"""

from __future__ import annotations

import importlib.util

import pytest

collect_ignore = ["data"]
if importlib.util.find_spec("qgis") is None:  # the engine's Python: no QGIS, no plugin tests
    collect_ignore.append("plugin")


@pytest.fixture(scope="module", autouse=True)
def private_default_cache(tmp_path_factory: pytest.TempPathFactory):
    """Belt and braces: even a forgotten --cache-dir never writes to ~/.cache.

    ``TERRASEG_CACHE`` points at a fresh folder for each test module (engine processes
    started by the tests inherit it).
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TERRASEG_CACHE", str(tmp_path_factory.mktemp("default_cache")))
        yield

