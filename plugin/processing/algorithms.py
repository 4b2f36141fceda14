"""TerraSeg's Processing algorithms: thin wrappers around engine worker jobs.

Every algorithm turns its parameters into a job with :mod:`terraseg.plugin.jobs` and runs
it with :func:`terraseg.plugin.worker.run_job` (the code path the panel uses), so the
toolbox, batch mode, the graphical modeler and ``qgis_process`` run the same engine code.
Layers reach the engine by their file path; layers that are not files (memory layers,
databases, filtered layers, selected features only) are written to a temporary
GeoPackage by Processing first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
)
from qgis.PyQt.QtCore import QCoreApplication

from .. import jobs, presets
from ..engine import find_engine
from ..worker import WorkerError, run_job

MODEL_FILTER = "TerraSeg model (*.tsm)"
ARCHITECTURES = (*presets.PATCH_MODELS, *presets.TILE_MODELS)
# Formats the engine reads (fiona/GDAL) without a conversion.
VECTOR_FORMATS = ["gpkg", "shp", "geojson", "json", "fgb", "gml", "kml", "sqlite"]


def _advanced(param: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return param


class TerraSegAlgorithm(QgsProcessingAlgorithm):
    """Common base: names, help, engine check, running a job, reading parameters."""

    ALG_ID = ""
    DISPLAY_NAME = ""
    HELP = ""

    def tr(self, text: str) -> str:
        """Translated text."""
        return QCoreApplication.translate("TerraSeg", text)

    def name(self) -> str:
        """Algorithm id within the provider."""
        return self.ALG_ID

    def displayName(self) -> str:  # noqa: N802
        """Name in the toolbox."""
        return self.tr(self.DISPLAY_NAME)

    def group(self) -> str:
        """No groups: the algorithms sit directly under the provider."""
        return ""

    def groupId(self) -> str:  # noqa: N802
        """No groups."""
        return ""

    def shortHelpString(self) -> str:  # noqa: N802
        """Help shown next to the parameters."""
        return self.tr(self.HELP)

    def tags(self) -> list[str]:
        """Search words."""
        return ["terraseg", "segmentation", "deep learning", "cnn", "classification"]

    def createInstance(self) -> QgsProcessingAlgorithm:  # noqa: N802
        """A fresh copy (Processing runs copies)."""
        return type(self)()

    def canExecute(self) -> tuple[bool, str]:  # noqa: N802
        """False with a message while no engine is set up."""
        if find_engine() is None:
            return False, self.tr("The TerraSeg engine is not set up. Open TerraSeg settings "
                                  "and click 'Set up engine'.")
        return True, ""

    # --- helpers ----------------------------------------------------------------------
    def run_engine(self, job: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run a worker job, reporting to ``feedback``.

        Args:
            job: Job dict from :mod:`terraseg.plugin.jobs`.
            feedback: Processing feedback (progress, log, cancel).

        Returns:
            The job's result payload.

        Raises:
            QgsProcessingException: The job failed, was cancelled or the worker crashed
                (message and hint of the engine).
        """
        feedback.pushDebugInfo("TerraSeg job: " + json.dumps(job))
        try:
            return run_job(job, feedback)
        except WorkerError as exc:
            raise QgsProcessingException(str(exc)) from exc

    def raster_path(self, parameters: dict[str, Any], name: str,
                    context: QgsProcessingContext) -> str:
        """File path of a raster layer parameter."""
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, name))
        try:
            return jobs.raster_layer_path(layer)
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from exc

    def vector_path(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext,
                    feedback: QgsProcessingFeedback, layer_spec: bool = True) -> str | None:
        """File path of a vector parameter (exported to a GeoPackage when needed).

        Args:
            parameters: Parameter values.
            name: Parameter name.
            context: Processing context.
            feedback: Feedback for the export.
            layer_spec: Whether ``file|layername=NAME`` may be returned (else a file whose
                first layer is the data).

        Returns:
            The path, or None for an optional parameter without a value.
        """
        value = parameters.get(name)
        if value is None or value == "":
            return None
        if layer_spec:
            path, layer_name = self.parameterAsCompatibleSourceLayerPathAndLayerName(
                parameters, name, context, VECTOR_FORMATS, "gpkg", feedback)
            if path and layer_name:
                return f"{path}|layername={layer_name}"
        else:
            path = self.parameterAsCompatibleSourceLayerPath(parameters, name, context,
                                                             VECTOR_FORMATS, "gpkg", feedback)
        if not path:
            raise QgsProcessingException(self.invalidSourceError(parameters, name))
        return path

    def field(self, parameters: dict[str, Any], name: str,
              context: QgsProcessingContext) -> str | None:
        """A field parameter's value (None when empty)."""
        fields = self.parameterAsFields(parameters, name, context)
        return fields[0] if fields else None

    def text(self, parameters: dict[str, Any], name: str,
             context: QgsProcessingContext) -> str | None:
        """A string parameter's value (None when empty)."""
        value = self.parameterAsString(parameters, name, context).strip()
        return value or None

    def file(self, parameters: dict[str, Any], name: str,
             context: QgsProcessingContext) -> str | None:
        """A file parameter's value (None when empty)."""
        value = self.parameterAsFile(parameters, name, context).strip()
        return value or None

    @staticmethod
    def load_on_completion(context: QgsProcessingContext, path: str, name: str,
                           output: str) -> None:
        """Load a raster output into the project when the algorithm finishes."""
        details = QgsProcessingContext.LayerDetails(name, context.project(), output)
        if hasattr(QgsProcessingUtils, "LayerHint"):
            details.layerTypeHint = QgsProcessingUtils.LayerHint.Raster
        context.addLayerToLoadOnCompletion(path, details)


def _check_suffix(path: str, suffix: str, what: str) -> str:
    if not path:
        raise QgsProcessingException(f"No {what} given.")
    if Path(path).suffix.lower() != suffix:
        raise QgsProcessingException(f"{what} must be a {suffix} file, not {path}.")
    return path


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
        self.addParameter(_advanced(QgsProcessingParameterBoolean(
            "ALL_TOUCHED", self.tr("Burn all touched pixels"), False)))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "OUTPUT", self.tr("Label raster")))
        self.addOutput(QgsProcessingOutputString("CLASSES", self.tr("Classes (JSON)")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run ``terraseg rasterise``."""
        out = _check_suffix(self.parameterAsOutputLayer(parameters, "OUTPUT", context),
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


class TrainModel(TerraSegAlgorithm):
    """Trains a patch CNN from a raster and labelled polygons or points."""

    ALG_ID = "train_model"
    DISPLAY_NAME = "Train model"
    HELP = ("Trains a segmentation model (patch CNN, or a U-Net on tiles) from a raster and "
            "labelled polygons or points, optionally with a DEM and its slope, and writes a "
            "self-describing model file (.tsm) with the classes, bands, normalisation and "
            "held-out accuracy. Labels that are not files (memory layers, selections) are "
            "saved to a temporary GeoPackage first. Training runs in the TerraSeg engine "
            "process; Cancel stops it and writes no model.")

    AUGMENT = ["flip,rotate", "none", "flip,rotate,pixel_noise,channel_noise"]
    ACCELERATORS = ["auto", "cpu", "gpu"]

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        """Parameters."""
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT_RASTER", self.tr("Raster")))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "LABELS", self.tr("Training labels"),
            [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterField(
            "CLASS_FIELD", self.tr("Class field"), None, "LABELS"))
        self.addParameter(QgsProcessingParameterString(
            "CLASS_MAP", self.tr("Class mapping (e.g. developed=sealed,*=unsealed)"),
            optional=True))
        self.addParameter(QgsProcessingParameterString(
            "BANDS", self.tr("Bands (e.g. 1,2,3,4 or red=1,green=2; empty: all)"),
            optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "EPOCHS", self.tr("Maximum epochs"), QgsProcessingParameterNumber.Integer, 300,
            minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "PATIENCE", self.tr("Early-stopping patience (epochs)"),
            QgsProcessingParameterNumber.Integer, 10, minValue=1))
        self.addParameter(QgsProcessingParameterEnum(
            "ARCHITECTURE", self.tr("Architecture"), list(ARCHITECTURES), defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "TILE_SIZE", self.tr("Tile size for U-Nets (pixels, multiple of 16)"),
            QgsProcessingParameterNumber.Integer, 64, minValue=16))
        _add_terrain_inputs(self)
        self.addParameter(QgsProcessingParameterNumber(
            "PATCH_SIZE", self.tr("Patch size (pixels, odd)"),
            QgsProcessingParameterNumber.Integer, 51, minValue=3))
        self.addParameter(QgsProcessingParameterNumber(
            "BLOCK_SIZE", self.tr("Block size (pixels, odd)"),
            QgsProcessingParameterNumber.Integer, 5, minValue=1))
        self.addParameter(_advanced(QgsProcessingParameterString(
            "BLOCKS", self.tr("Residual blocks per stage"), "2,2,2")))
        self.addParameter(_advanced(QgsProcessingParameterString(
            "PLANES", self.tr("Channels per stage"), "4,8,16")))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            "LR", self.tr("Learning rate"), QgsProcessingParameterNumber.Double, 1e-3,
            minValue=0.0)))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            "WEIGHT_DECAY", self.tr("Weight decay"), QgsProcessingParameterNumber.Double, 1e-2,
            minValue=0.0)))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            "BATCH_SIZE", self.tr("Batch size"), QgsProcessingParameterNumber.Integer, 128,
            minValue=1)))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            "SAMPLES_PER_EPOCH", self.tr("Minimum training cutouts per epoch"),
            QgsProcessingParameterNumber.Integer, 2048, minValue=1)))
        self.addParameter(_advanced(QgsProcessingParameterEnum(
            "AUGMENT", self.tr("Augmentation"), self.AUGMENT, defaultValue=0)))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            "SEED", self.tr("Random seed"), QgsProcessingParameterNumber.Integer, 0)))
        self.addParameter(_advanced(QgsProcessingParameterEnum(
            "ACCELERATOR", self.tr("Device"), self.ACCELERATORS, defaultValue=0)))
        self.addParameter(_advanced(QgsProcessingParameterFile(
            "INIT_MODEL", self.tr("Fine-tune from model"), fileFilter=MODEL_FILTER,
            optional=True)))
        self.addParameter(_advanced(QgsProcessingParameterFile(
            "CACHE_DIR", self.tr("Cache folder (default ~/.cache/terraseg)"),
            QgsProcessingParameterFile.Folder, optional=True)))
        self.addParameter(_advanced(QgsProcessingParameterString(
            "EXTRA_OPTIONS", self.tr("Further engine options (JSON object, e.g. "
                                     '{"val_fraction": 0.3})'), optional=True)))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", self.tr("Model file"), MODEL_FILTER))
        self.addOutput(QgsProcessingOutputNumber("VAL_ACCURACY",
                                                 self.tr("Validation accuracy")))
        self.addOutput(QgsProcessingOutputNumber("EPOCHS_RUN", self.tr("Epochs trained")))
        self.addOutput(QgsProcessingOutputNumber("BEST_EPOCH", self.tr("Best epoch")))
        self.addOutput(QgsProcessingOutputString("DEVICE", self.tr("Device")))
        self.addOutput(QgsProcessingOutputString("METRICS", self.tr("Held-out metrics (JSON)")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run ``terraseg train``."""
        out = _check_suffix(self.parameterAsFileOutput(parameters, "OUTPUT", context),
                            ".tsm", "Model file")
        extra: dict[str, Any] = {}
        extra_text = self.text(parameters, "EXTRA_OPTIONS", context)
        if extra_text:
            try:
                extra = json.loads(extra_text)
            except json.JSONDecodeError as exc:
                raise QgsProcessingException(f"Further engine options are not JSON: {exc}") \
                    from exc
            if not isinstance(extra, dict):
                raise QgsProcessingException("Further engine options must be a JSON object.")
        options = {
            "blocks": self.text(parameters, "BLOCKS", context),
            "planes": self.text(parameters, "PLANES", context),
            "lr": self.parameterAsDouble(parameters, "LR", context),
            "weight_decay": self.parameterAsDouble(parameters, "WEIGHT_DECAY", context),
            "batch_size": self.parameterAsInt(parameters, "BATCH_SIZE", context),
            "samples_per_epoch": self.parameterAsInt(parameters, "SAMPLES_PER_EPOCH", context),
            "augment": self.AUGMENT[self.parameterAsEnum(parameters, "AUGMENT", context)],
            "seed": self.parameterAsInt(parameters, "SEED", context),
            "accelerator": self.ACCELERATORS[self.parameterAsEnum(parameters, "ACCELERATOR",
                                                                  context)],
        }
        named = {
            "raster": self.raster_path(parameters, "INPUT_RASTER", context),
            "labels": self.vector_path(parameters, "LABELS", context, feedback),
            "out": out, "class_field": self.field(parameters, "CLASS_FIELD", context),
            "class_map": self.text(parameters, "CLASS_MAP", context),
            "bands": self.text(parameters, "BANDS", context),
            "epochs": self.parameterAsInt(parameters, "EPOCHS", context),
            "patience": self.parameterAsInt(parameters, "PATIENCE", context),
            "patch_size": self.parameterAsInt(parameters, "PATCH_SIZE", context),
            "block_size": self.parameterAsInt(parameters, "BLOCK_SIZE", context),
            "model": ARCHITECTURES[self.parameterAsEnum(parameters, "ARCHITECTURE", context)],
            **_terrain(self, parameters, context),
            "init_model": self.file(parameters, "INIT_MODEL", context),
            "cache_dir": self.file(parameters, "CACHE_DIR", context),
            "overwrite": True,
            **options,
        }
        if named["model"] != "patch_cnn":
            named["tile_size"] = self.parameterAsInt(parameters, "TILE_SIZE", context)
        named.update(extra)  # the JSON options win
        job = jobs.train_job(**named)
        result = self.run_engine(job, feedback)
        metrics = result.get("metrics") or {}
        val = metrics.get("val") or {}
        device = result.get("device") or {}
        return {"OUTPUT": result.get("model", out),
                "VAL_ACCURACY": val.get("accuracy"),
                "EPOCHS_RUN": result.get("epochs"),
                "BEST_EPOCH": result.get("best_epoch"),
                "DEVICE": device.get("description", "") if isinstance(device, dict)
                else str(device),
                "METRICS": json.dumps(metrics)}


class Predict(TerraSegAlgorithm):
    """Probability and class rasters of a model over a raster."""

    ALG_ID = "predict"
    DISPLAY_NAME = "Predict"
    HELP = ("Applies a TerraSeg model to a raster and writes probability.tif (one band per "
            "class) and classes.tif (class ids with a colour table) into the output folder. "
            "Optionally only over an extent. Both rasters are added to the project.")

    DEVICES = ["auto", "cpu", "cuda"]

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        """Parameters."""
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", self.tr("Model file"), fileFilter=MODEL_FILTER))
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT_RASTER", self.tr("Raster")))
        self.addParameter(QgsProcessingParameterString(
            "BANDS", self.tr("Bands (empty: the model's band indices)"), optional=True))
        self.addParameter(QgsProcessingParameterExtent(
            "EXTENT", self.tr("Extent (empty: the whole raster)"), optional=True))
        _add_terrain_inputs(self)
        self.addParameter(QgsProcessingParameterNumber(
            "THRESHOLD", self.tr("Threshold on P(first class) (two-class models; empty: the "
                                 "model's tuned threshold)"),
            QgsProcessingParameterNumber.Double, None, optional=True, minValue=0.0,
            maxValue=1.0))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            "OPENING", self.tr("Clean-up: opening radius of the first class (pixels)"),
            QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=64)))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            "CLOSING", self.tr("Clean-up: closing radius of the first class (pixels)"),
            QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=64)))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            "MIN_AREA", self.tr("Clean-up: minimum region area (m²)"),
            QgsProcessingParameterNumber.Double, 0.0, minValue=0.0)))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            "TILE_SIZE", self.tr("Tile size (output pixels; 0: the model's default)"),
            QgsProcessingParameterNumber.Integer, 0, minValue=0)))
        self.addParameter(_advanced(QgsProcessingParameterEnum(
            "DEVICE", self.tr("Device"), self.DEVICES, defaultValue=0)))
        self.addParameter(_advanced(QgsProcessingParameterBoolean(
            "PREVIEW", self.tr("Also write preview.png"), False)))
        self.addParameter(QgsProcessingParameterFolderDestination(
            "OUTPUT_FOLDER", self.tr("Output folder")))
        self.addOutput(QgsProcessingOutputRasterLayer("PROBABILITY", self.tr("Probability")))
        self.addOutput(QgsProcessingOutputRasterLayer("CLASSES", self.tr("Classes")))
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
            **_terrain(self, parameters, context))
        result = self.run_engine(job, feedback)
        prob, classes = result["probability"], result["classes"]
        self.load_on_completion(context, prob, "TerraSeg probability", "PROBABILITY")
        self.load_on_completion(context, classes, "TerraSeg classes", "CLASSES")
        return {"OUTPUT_FOLDER": out_dir, "PROBABILITY": prob, "CLASSES": classes,
                "PREVIEW_PNG": result.get("preview"),
                "CLASS_SHARES": json.dumps(result.get("class_shares", {}))}


class Evaluate(TerraSegAlgorithm):
    """Accuracy of a model against independent reference points or polygons."""

    ALG_ID = "evaluate"
    DISPLAY_NAME = "Evaluate"
    HELP = ("Measures a model's accuracy against an independent reference layer (points or "
            "polygons with a class attribute): metrics.json, per_class.csv and "
            "confusion_matrix.csv (and per_category.csv with a category field) in the output "
            "folder. Reference classes are matched to the model's classes by name, after the "
            "optional class mapping.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        """Parameters."""
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", self.tr("Model file"), fileFilter=MODEL_FILTER))
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT_RASTER", self.tr("Raster")))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "REFERENCE", self.tr("Reference layer"),
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            "CLASS_FIELD", self.tr("Class field"), None, "REFERENCE"))
        self.addParameter(QgsProcessingParameterString(
            "CLASS_MAP", self.tr("Class mapping (e.g. developed=sealed,*=unsealed)"),
            optional=True))
        self.addParameter(QgsProcessingParameterField(
            "CATEGORY_FIELD", self.tr("Category field (accuracy per category)"), None,
            "REFERENCE", optional=True))
        self.addParameter(QgsProcessingParameterString(
            "BANDS", self.tr("Bands (empty: the model's band indices)"), optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination(
            "OUTPUT_FOLDER", self.tr("Output folder")))
        self.addOutput(QgsProcessingOutputFile("METRICS", self.tr("Metrics (JSON)")))
        self.addOutput(QgsProcessingOutputFile("PER_CLASS", self.tr("Per-class table")))
        self.addOutput(QgsProcessingOutputFile("CONFUSION_MATRIX",
                                               self.tr("Confusion matrix")))
        self.addOutput(QgsProcessingOutputNumber("ACCURACY", self.tr("Overall accuracy")))
        self.addOutput(QgsProcessingOutputNumber("F1_WEIGHTED", self.tr("F1 (weighted)")))
        self.addOutput(QgsProcessingOutputNumber("N_SAMPLES", self.tr("Reference pixels")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run ``terraseg evaluate``."""
        out_dir = self.parameterAsFileOutput(parameters, "OUTPUT_FOLDER", context)
        if not out_dir:
            raise QgsProcessingException("No output folder given.")
        job = jobs.evaluate_job(
            model=self.file(parameters, "MODEL", context),
            raster=self.raster_path(parameters, "INPUT_RASTER", context),
            reference=self.vector_path(parameters, "REFERENCE", context, feedback),
            out_dir=out_dir, class_field=self.field(parameters, "CLASS_FIELD", context),
            class_map=self.text(parameters, "CLASS_MAP", context),
            category_field=self.field(parameters, "CATEGORY_FIELD", context),
            bands=self.text(parameters, "BANDS", context), overwrite=True)
        result = self.run_engine(job, feedback)
        files = {Path(f).name: f for f in result.get("files", [])}
        feedback.pushInfo(f"accuracy {result.get('accuracy')}, F1 weighted "
                          f"{result.get('f1_weighted')}, n={result.get('n_samples')}")
        return {"OUTPUT_FOLDER": out_dir, "METRICS": result.get("metrics"),
                "PER_CLASS": files.get("per_class.csv"),
                "CONFUSION_MATRIX": files.get("confusion_matrix.csv"),
                "ACCURACY": result.get("accuracy"), "F1_WEIGHTED": result.get("f1_weighted"),
                "N_SAMPLES": result.get("n_samples")}


def _add_terrain_inputs(alg: TerraSegAlgorithm) -> None:
    """Optional DEM (and slope derived from it) stacked onto the image: Train, Predict."""
    alg.addParameter(QgsProcessingParameterRasterLayer(
        "DEM", alg.tr("DEM (any grid; resampled bilinearly onto the raster)"), optional=True))
    alg.addParameter(QgsProcessingParameterBoolean(
        "SLOPE_FROM_DEM", alg.tr("Add slope derived from the DEM"), False))


def _terrain(alg: TerraSegAlgorithm, parameters: dict[str, Any],
             context: QgsProcessingContext) -> dict[str, Any]:
    """The engine's ``dem`` / ``slope_from_dem`` options from the terrain inputs."""
    derive = alg.parameterAsBoolean(parameters, "SLOPE_FROM_DEM", context)
    if not parameters.get("DEM"):
        if derive:
            raise QgsProcessingException("'Add slope derived from the DEM' needs a DEM.")
        return {}
    return {"dem": alg.raster_path(parameters, "DEM", context), "slope_from_dem": derive}


def _add_class_raster_inputs(alg: TerraSegAlgorithm) -> None:
    """CLASSES (classes.tif) and an optional MODEL for class names: Vectorise, Area statistics."""
    alg.addParameter(QgsProcessingParameterRasterLayer(
        "CLASSES", alg.tr("Class raster (classes.tif)")))
    alg.addParameter(QgsProcessingParameterFile(
        "MODEL", alg.tr("Model file (class names)"), fileFilter=MODEL_FILTER, optional=True))


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
        _add_class_raster_inputs(self)
        self.addParameter(QgsProcessingParameterNumber(
            "MIN_AREA", self.tr("Minimum area (m²)"), QgsProcessingParameterNumber.Double,
            0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", self.tr("Polygons"), QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("N_POLYGONS", self.tr("Number of polygons")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run ``terraseg vectorise``."""
        out = _check_suffix(self.parameterAsOutputLayer(parameters, "OUTPUT", context),
                            ".gpkg", "Polygons")
        job = jobs.vectorise_job(
            classes=self.raster_path(parameters, "CLASSES", context), out=out,
            min_area=self.parameterAsDouble(parameters, "MIN_AREA", context),
            model=self.file(parameters, "MODEL", context), overwrite=True)
        result = self.run_engine(job, feedback)
        return {"OUTPUT": result.get("polygons", out), "N_POLYGONS": result.get("n_polygons")}


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
        _add_class_raster_inputs(self)
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
        out_csv = _check_suffix(self.parameterAsFileOutput(parameters, "OUTPUT_CSV", context),
                                ".csv", "Area table")
        zones = self.vector_path(parameters, "ZONES", context, feedback, layer_spec=False)
        out_zones = None
        if parameters.get("OUTPUT_ZONES"):
            out_zones = self.parameterAsOutputLayer(parameters, "OUTPUT_ZONES", context) or None
        if out_zones and not zones:
            feedback.pushWarning("No zone layer given: 'Zones with class areas' is not written.")
            out_zones = None
        if out_zones:
            _check_suffix(out_zones, ".gpkg", "Zones with class areas")
        job = jobs.areas_job(
            classes=self.raster_path(parameters, "CLASSES", context), out_csv=out_csv,
            zones=zones, zone_field=self.field(parameters, "ZONE_FIELD", context),
            out_zones=out_zones, model=self.file(parameters, "MODEL", context), overwrite=True)
        result = self.run_engine(job, feedback)
        return {"OUTPUT_CSV": result.get("csv", out_csv), "OUTPUT_ZONES": result.get("zones")}


ALGORITHMS: tuple[type[TerraSegAlgorithm], ...] = (
    RasteriseLabels, TrainModel, Predict, Evaluate, Vectorise, AreaStatistics)
