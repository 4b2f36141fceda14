"""The 'TerraSeg' Processing provider."""

from __future__ import annotations

import re
from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..engine import PLUGIN_DIR, find_engine
from .areas import AreaStatistics
from .base import TerraSegAlgorithm
from .change import ChangeBetweenClassMaps, ChangeBetweenDates
from .evaluate import Evaluate
from .predict import Predict
from .pseudo_label import PseudoLabels
from .rasterise import RasteriseLabels
from .review_labels import ReviewLabels
from .train import TrainModel
from .vectorise import Vectorise

ICON = PLUGIN_DIR / "resources" / "icon.png"
ALGORITHMS: tuple[type[TerraSegAlgorithm], ...] = (
    RasteriseLabels, TrainModel, Predict, Evaluate, Vectorise, AreaStatistics, PseudoLabels,
    ReviewLabels, ChangeBetweenDates, ChangeBetweenClassMaps)


def plugin_version() -> str:
    """The plugin's version from metadata.txt ('' when unknown)."""
    try:
        text = (PLUGIN_DIR / "metadata.txt").read_text(encoding="utf-8")
    except OSError:
        return ""
    match = re.search(r"^version\s*=\s*(\S+)", text, re.MULTILINE)
    return match.group(1) if match else ""


class TerraSegProvider(QgsProcessingProvider):
    """Processing provider ``terraseg`` with TerraSeg's ten algorithms.

    Rasterise labels, Train model, Predict, Evaluate, Vectorise, Area statistics,
    Pseudo-labels from coarse labels (random forest), Review labels, Change between two
    dates and Change between two class maps.
    """

    def id(self) -> str:
        """Provider id (algorithm ids are ``terraseg:<name>``)."""
        return "terraseg"

    def name(self) -> str:
        """Name in the toolbox."""
        return "TerraSeg"

    def longName(self) -> str:  # noqa: N802
        """Name with version."""
        version = plugin_version()
        return f"TerraSeg {version}".strip()

    def versionInfo(self) -> str:  # noqa: N802
        """Plugin version."""
        return plugin_version()

    def icon(self) -> QIcon:
        """resources/icon.png when present."""
        if Path(ICON).is_file():
            return QIcon(str(ICON))
        return super().icon()

    def svgIconPath(self) -> str:  # noqa: N802
        """No SVG icon."""
        return ""

    def loadAlgorithms(self) -> None:  # noqa: N802
        """Add the algorithms."""
        for cls in ALGORITHMS:
            self.addAlgorithm(cls())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        """The engine writes GeoTIFF."""
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self) -> list[str]:  # noqa: N802
        """The engine writes GeoPackage."""
        return ["gpkg"]

    def supportsNonFileBasedOutput(self) -> bool:  # noqa: N802
        """Outputs are files written by the engine process."""
        return False

    def warningMessage(self) -> str:  # noqa: N802
        """Shown in the toolbox while no engine is set up."""
        if find_engine() is None:
            return ("The TerraSeg engine is not set up: open TerraSeg settings and click "
                    "'Set up engine'.")
        return ""
