"""Processing algorithm 'Rasterise labels': labels burnt onto a raster's grid."""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .. import jobs
from .base import TerraSegAlgorithm, advanced, check_suffix


class RasteriseLabels(TerraSegAlgorithm):
    """Labels burnt onto a raster's grid (uint8 class ids, 0 = unlabelled)."""

    ALG_ID = "rasterise_labels"
    DISPLAY_NAME = "Rasterise labels"
    HELP = ("Burns labelled polygons (or points) into a class raster on the grid of the "
            "input raster: one uint8 band of class ids, 0 where nothing is labelled, with "
            "a colour table. Use it to check labels before training; it runs the same "
            "label code as training.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        """Parameters."""
        self.addParameter(QgsProcessingParameterRasterLayer(
            "INPUT_RASTER", self.tr("Raster (grid of the output)")))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "LABELS", self.tr("Labels"),
            [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterField(
            "CLASS_FIELD", self.tr("Class field"), None, "LABELS", optional=True))
        self.addParameter(QgsProcessingParameterString(
            "CLASS_MAP", self.tr("Class mapping (e.g. developed=sealed,*=unsealed)"),
            optional=True))
        self.addParameter(advanced(QgsProcessingParameterBoolean(
            "ALL_TOUCHED", self.tr("Burn all touched pixels"), False)))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "OUTPUT", self.tr("Label raster")))
        self.addOutput(QgsProcessingOutputString("CLASSES", self.tr("Classes (JSON)")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run ``terraseg rasterise``."""
        out = check_suffix(self.parameterAsOutputLayer(parameters, "OUTPUT", context),
                           ".tif", "Label raster")
        job = jobs.rasterise_job(
            raster=self.raster_path(parameters, "INPUT_RASTER", context),
            labels=self.vector_path(parameters, "LABELS", context, feedback),
            out=out, class_field=self.field(parameters, "CLASS_FIELD", context),
            class_map=self.text(parameters, "CLASS_MAP", context),
            all_touched=self.parameterAsBoolean(parameters, "ALL_TOUCHED", context),
            overwrite=True)
        result = self.run_engine(job, feedback)
        return {"OUTPUT": result.get("labels", out),
                "CLASSES": json.dumps(result.get("classes", []))}
