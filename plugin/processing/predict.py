"""Processing algorithm 'Predict': probability and class rasters of a model over a raster."""

from __future__ import annotations

import json
import math
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .. import jobs
from .base import (
    TerraSegAlgorithm,
    add_terrain_inputs,
    advanced,
    model_parameter,
    terrain_options,
    warn_if_checkpoint,
)
from .evaluate import hierarchy_parameter


class Predict(TerraSegAlgorithm):
    """Probability and class rasters of a model over a raster."""

    ALG_ID = "predict"
    DISPLAY_NAME = "Predict"
    HELP = ("Applies a TerraSeg model to a raster and writes probability.tif (one band per "
            "class) and classes.tif (class ids with a colour table) into the output folder. "
            "Optionally only over an extent. Both rasters are added to the project. "
            "Training writes NAME.tsm (the best epoch: predict with it) and may write "
            "NAME.last.tsm beside it (the last epoch: a checkpoint to resume training). "
            "With a class hierarchy (a CSV of code,level1,level2,... or 'corine') and a "
            "LEVEL, levelN_probability.tif (the model's class probabilities summed per "
            "group) and levelN_classes.tif are written and added too.")

    DEVICES = ["auto", "cpu", "cuda"]

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        """Parameters."""
        self.addParameter(model_parameter())
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT_RASTER", self.tr("Raster")))
        self.addParameter(QgsProcessingParameterString(
            "BANDS", self.tr("Bands (empty: the model's band indices)"), optional=True))
        self.addParameter(QgsProcessingParameterExtent(
            "EXTENT", self.tr("Extent (empty: the whole raster)"), optional=True))
        add_terrain_inputs(self)
        self.addParameter(QgsProcessingParameterNumber(
            "THRESHOLD", self.tr("Threshold on P(first class) (two-class models; empty: the "
                                 "model's tuned threshold)"),
            QgsProcessingParameterNumber.Double, None, optional=True, minValue=0.0,
            maxValue=1.0))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "OPENING", self.tr("Clean-up: opening radius of the first class (pixels)"),
            QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=64)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "CLOSING", self.tr("Clean-up: closing radius of the first class (pixels)"),
            QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=64)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "MIN_AREA", self.tr("Clean-up: minimum region area (m²)"),
            QgsProcessingParameterNumber.Double, 0.0, minValue=0.0)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "TILE_SIZE", self.tr("Tile size (output pixels; 0: the model's default)"),
            QgsProcessingParameterNumber.Integer, 0, minValue=0)))
        self.addParameter(advanced(QgsProcessingParameterEnum(
            "DEVICE", self.tr("Device"), self.DEVICES, defaultValue=0)))
        self.addParameter(advanced(QgsProcessingParameterBoolean(
            "PREVIEW", self.tr("Also write preview.png"), False)))
        self.addParameter(hierarchy_parameter())
        self.addParameter(QgsProcessingParameterNumber(
            "LEVEL", self.tr("Also map this level of the hierarchy (1 = coarsest)"),
            QgsProcessingParameterNumber.Integer, None, optional=True, minValue=1))
        self.addParameter(QgsProcessingParameterFolderDestination(
            "OUTPUT_FOLDER", self.tr("Output folder")))
        self.addOutput(QgsProcessingOutputRasterLayer("PROBABILITY", self.tr("Probability")))
        self.addOutput(QgsProcessingOutputRasterLayer("CLASSES", self.tr("Classes")))
        self.addOutput(QgsProcessingOutputRasterLayer(
            "LEVEL_PROBABILITY", self.tr("Probability at the level (one band per group)")))
        self.addOutput(QgsProcessingOutputRasterLayer("LEVEL_CLASSES",
                                                      self.tr("Classes at the level")))
        self.addOutput(QgsProcessingOutputFile("PREVIEW_PNG", self.tr("Preview")))
        self.addOutput(QgsProcessingOutputString("CLASS_SHARES",
                                                 self.tr("Class shares (JSON)")))

    def window(self, parameters: dict[str, Any], context: QgsProcessingContext
               ) -> list[int] | None:
        """Pixel window ``[col, row, width, height]`` of the EXTENT parameter, or None."""
        if not parameters.get("EXTENT"):
            return None
        layer = self.parameterAsRasterLayer(parameters, "INPUT_RASTER", context)
        crs = layer.crs() if layer.crs().isValid() else QgsCoordinateReferenceSystem()
        rect = self.parameterAsExtent(parameters, "EXTENT", context, crs)
        if rect.isNull() or rect.isEmpty():
            return None
        full = layer.extent()
        px, py = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
        col0 = max(0, math.floor((rect.xMinimum() - full.xMinimum()) / px))
        row0 = max(0, math.floor((full.yMaximum() - rect.yMaximum()) / py))
        col1 = min(layer.width(), math.ceil((rect.xMaximum() - full.xMinimum()) / px))
        row1 = min(layer.height(), math.ceil((full.yMaximum() - rect.yMinimum()) / py))
        if col1 <= col0 or row1 <= row0:
            raise QgsProcessingException("The extent does not overlap the raster.")
        return [col0, row0, col1 - col0, row1 - row0]

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run ``terraseg predict``."""
        out_dir = self.parameterAsFileOutput(parameters, "OUTPUT_FOLDER", context)
        if not out_dir:
            raise QgsProcessingException("No output folder given.")
        job = jobs.predict_job(
            model=self.file(parameters, "MODEL", context),
            raster=self.raster_path(parameters, "INPUT_RASTER", context),
            out_dir=out_dir, bands=self.text(parameters, "BANDS", context),
            window=self.window(parameters, context),
            preview=self.parameterAsBoolean(parameters, "PREVIEW", context),
            overwrite=True,
            tile_size=self.parameterAsInt(parameters, "TILE_SIZE", context),
            device=self.DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
            threshold=(self.parameterAsDouble(parameters, "THRESHOLD", context)
                       if parameters.get("THRESHOLD") not in (None, "") else None),
            opening=self.parameterAsInt(parameters, "OPENING", context) or None,
            closing=self.parameterAsInt(parameters, "CLOSING", context) or None,
            min_area=self.parameterAsDouble(parameters, "MIN_AREA", context) or None,
            hierarchy=self.text(parameters, "HIERARCHY", context),
            level=(self.parameterAsInt(parameters, "LEVEL", context)
                   if parameters.get("LEVEL") not in (None, "") else None),
            **terrain_options(self, parameters, context))
        warn_if_checkpoint(job["args"]["model"], feedback)
        result = self.run_engine(job, feedback)
        prob, classes = result["probability"], result["classes"]
        self.load_on_completion(context, prob, "TerraSeg probability", "PROBABILITY")
        self.load_on_completion(context, classes, "TerraSeg classes", "CLASSES")
        level = result.get("level") or {}
        if level:
            name = level.get("level_name") or f"level{level.get('level')}"
            self.load_on_completion(context, level["probability"],
                                    f"TerraSeg probability at {name}", "LEVEL_PROBABILITY")
            self.load_on_completion(context, level["classes"], f"TerraSeg classes at {name}",
                                    "LEVEL_CLASSES")
        return {"OUTPUT_FOLDER": out_dir, "PROBABILITY": prob, "CLASSES": classes,
                "LEVEL_PROBABILITY": level.get("probability"),
                "LEVEL_CLASSES": level.get("classes"),
                "PREVIEW_PNG": result.get("preview"),
                "CLASS_SHARES": json.dumps(result.get("class_shares", {}))}
