"""Processing algorithm 'Vectorise': polygons of a class raster."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorDestination,
)

from .. import jobs
from .base import TerraSegAlgorithm, add_class_raster_inputs, check_suffix


class Vectorise(TerraSegAlgorithm):
    """Polygons of a class raster."""

    ALG_ID = "vectorise"
    DISPLAY_NAME = "Vectorise"
    HELP = ("Turns a class raster (classes.tif from Predict) into polygons with the fields "
            "class_id, class_name and area_m2 (GeoPackage). Regions smaller than the minimum "
            "area are merged into their neighbours first. The model file only supplies the "
            "class names.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        """Parameters."""
        add_class_raster_inputs(self)
        self.addParameter(QgsProcessingParameterNumber(
            "MIN_AREA", self.tr("Minimum area (m²)"), QgsProcessingParameterNumber.Double,
            0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", self.tr("Polygons"), QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("N_POLYGONS", self.tr("Number of polygons")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run ``terraseg vectorise``."""
        out = check_suffix(self.parameterAsOutputLayer(parameters, "OUTPUT", context),
                            ".gpkg", "Polygons")
        job = jobs.vectorise_job(
            classes=self.raster_path(parameters, "CLASSES", context), out=out,
            min_area=self.parameterAsDouble(parameters, "MIN_AREA", context),
            model=self.file(parameters, "MODEL", context), overwrite=True)
        result = self.run_engine(job, feedback)
        return {"OUTPUT": result.get("polygons", out), "N_POLYGONS": result.get("n_polygons")}
