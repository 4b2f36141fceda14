"""Helpers for the QGIS-side tests (tests/plugin, run with QGIS's Python).

QGIS's Python must not import rasterio/fiona, so the synthetic scene of
:mod:`helpers.synthetic` is written by the engine's Python (:func:`make_scene`), and its
label boxes and truth are mirrored here in QGIS geometries. Also: the smallest training
options, a Qt-event wait, a QgsFeedback double and raster reading through QGIS.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from qgis.core import QgsGeometry, QgsPointXY, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication, QEventLoop

from helpers.paths import engine_executable, run_engine_python

# The smallest training that still exercises every stage (a few seconds on 2 CPU cores).
TINY_TRAIN = {"patch_size": 23, "block_size": 5, "blocks": "1,1,1", "epochs": 2,
              "patience": 2, "samples_per_epoch": 256, "batch_size": 64}

TERRASEG = engine_executable()  # the engine's console script in .venv-engine

needs_engine = pytest.mark.skipif(
    not os.access(TERRASEG, os.X_OK),
    reason=f"the TerraSeg engine is not installed ({TERRASEG} missing; run `make install`)")

# helpers/synthetic.py: origin, pixel size and label boxes of make_scene(size=96)
ORIGIN = (500000.0, 5200000.0)
PIXEL_M = 10.0
STARTS = range(4, 96 - 12, 32)
BOX_AREA_M2 = 64 * PIXEL_M * PIXEL_M  # 8 x 8 pixels

_MAKE_SCENE = """
import sys
from pathlib import Path
from helpers.synthetic import make_scene
print(make_scene(Path(sys.argv[1])).raster)
"""


def make_scene(folder: Path, python: Path | str | None = None) -> Path:
    """Write helpers/synthetic.py's scene into ``folder`` with the engine's Python.

    Returns the raster's path (``labels.gpkg`` lies next to it).
    """
    out = run_engine_python(_MAKE_SCENE, folder, python=python)
    return Path(out.stdout.strip().splitlines()[-1])


def pixel_box(r0: int, c0: int, r1: int, c1: int) -> QgsGeometry:
    """Polygon over pixel rows r0..r1-1 and cols c0..c1-1 (as helpers/synthetic.py)."""
    x0, y0 = ORIGIN[0] + c0 * PIXEL_M, ORIGIN[1] - r0 * PIXEL_M
    x1, y1 = ORIGIN[0] + c1 * PIXEL_M, ORIGIN[1] - r1 * PIXEL_M
    ring = [QgsPointXY(x0, y0), QgsPointXY(x1, y0), QgsPointXY(x1, y1), QgsPointXY(x0, y1),
            QgsPointXY(x0, y0)]
    return QgsGeometry.fromPolygonXY([ring])


def label_boxes() -> dict[str, list[QgsGeometry]]:
    """The scene's training polygons by class (8 x 8 px inside each kind of surface)."""
    boxes: dict[str, list[QgsGeometry]] = {"sealed": [], "unsealed": []}
    for r in STARTS:
        for c in STARTS:
            boxes["sealed"].append(pixel_box(r + 3, c + 3, r + 11, c + 11))
            boxes["unsealed"].append(pixel_box(r + 18, c + 18, r + 26, c + 26))
    return boxes


def truth(row: int, col: int) -> int:
    """1 sealed, 2 unsealed (make_scene's truth)."""
    for r in STARTS:
        for c in STARTS:
            if r <= row < r + 14 and c <= col < c + 14:
                return 1
    return 2


def raster_values(path: str, band: int = 1) -> tuple[QgsRasterLayer, list[list[float]]]:
    """The layer and its band's values (rows of columns), read through QGIS."""
    layer = QgsRasterLayer(path, "check", "gdal")
    assert layer.isValid(), path
    w, h = layer.width(), layer.height()
    block = layer.dataProvider().block(band, layer.extent(), w, h)
    return layer, [[block.value(r, c) for c in range(w)] for r in range(h)]


def wait_until(condition: Callable[[], Any], timeout_s: float) -> bool:
    """Process Qt events until ``condition()`` is true or the time is up."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return bool(condition())
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        time.sleep(0.01)
    return True


class RecordingFeedback:
    """Feedback double for run_job: records progress, info and debug lines; cancellable."""

    def __init__(self) -> None:
        self.progress: list[float] = []
        self.texts: list[str] = []
        self.info: list[str] = []
        self.debug: list[str] = []
        self.warnings: list[str] = []
        self.canceled = False

    def setProgress(self, value: float) -> None:  # noqa: N802 - QgsFeedback API
        self.progress.append(value)

    def setProgressText(self, text: str) -> None:  # noqa: N802
        self.texts.append(text)

    def pushInfo(self, text: str) -> None:  # noqa: N802
        self.info.append(text)

    def pushDebugInfo(self, text: str) -> None:  # noqa: N802
        self.debug.append(text)

    def pushWarning(self, text: str) -> None:  # noqa: N802
        self.warnings.append(text)

    def isCanceled(self) -> bool:  # noqa: N802
        return self.canceled

    def cancel(self) -> None:
        self.canceled = True
