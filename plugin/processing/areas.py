"""Processing algorithm 'Area statistics': area per class, overall or per zone."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterVectorDestination,
)

from .. import jobs
from .base import TerraSegAlgorithm, add_class_raster_inputs, check_suffix


class AreaStatistics(TerraSegAlgorithm):
    """Area per class, overall or per zone."""

    ALG_ID = "area_statistics"
    DISPLAY_NAME = "Area statistics"
    HELP = ("Area per class in m² and % of the classified area of a class raster "
            "(classes.tif), for the whole raster or per zone of a polygon layer (parcels, "
            "districts). With zones, a copy of the zone layer with <class>_m2 and "
            "<class>_pct attributes can be written too.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        """Parameters."""
        add_class_raster_inputs(self)
        self.addParameter(QgsProcessingParameterFeatureSource(
            "ZONES", self.tr("Zones"), [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterField(
            "ZONE_FIELD", self.tr("Zone name field"), None, "ZONES", optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_CSV", self.tr("Area table"), "CSV files (*.csv)"))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT_ZONES", self.tr("Zones with class areas"), QgsProcessing.TypeVectorPolygon,
            optional=True, createByDefault=False))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run ``terraseg areas``."""
        out_csv = check_suffix(self.parameterAsFileOutput(parameters, "OUTPUT_CSV", context),
                                ".csv", "Area table")
        zones = self.vector_path(parameters, "ZONES", context, feedback, layer_spec=False)
        out_zones = None
        if parameters.get("OUTPUT_ZONES"):
            out_zones = self.parameterAsOutputLayer(parameters, "OUTPUT_ZONES", context) or None
        if out_zones and not zones:
            feedback.pushWarning("No zone layer given: 'Zones with class areas' is not written.")
            out_zones = None
        if out_zones:
            check_suffix(out_zones, ".gpkg", "Zones with class areas")
        job = jobs.areas_job(
            classes=self.raster_path(parameters, "CLASSES", context), out_csv=out_csv,
            zones=zones, zone_field=self.field(parameters, "ZONE_FIELD", context),
            out_zones=out_zones, model=self.file(parameters, "MODEL", context), overwrite=True)
        result = self.run_engine(job, feedback)
        return {"OUTPUT_CSV": result.get("csv", out_csv), "OUTPUT_ZONES": result.get("zones")}
