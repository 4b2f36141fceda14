"""Helpers shared by the tests, imported as ``helpers.<module>``.

``tests/`` is on ``sys.path`` through pytest's ``pythonpath = ["tests"]`` (pyproject.toml),
so no test changes ``sys.path``. Which Python may import what:

- :mod:`helpers.paths`: standard library only; both the engine's and QGIS's Python.
- :mod:`helpers.synthetic`, :mod:`helpers.label_layers`, :mod:`helpers.patch_models`:
  the engine's Python only (numpy, rasterio, fiona, torch).
- :mod:`helpers.qgis_support`: QGIS's Python only (tests/plugin).

This package imports none of them itself.
"""
