"""Processing algorithm 'Evaluate': a model's accuracy against independent reference data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .. import jobs
from .base import TerraSegAlgorithm, model_parameter, warn_if_checkpoint

HIERARCHY_HELP = ("A class hierarchy CSV (code,level1,level2,...: one row per fine class, "
                  "the coarsest level first; CORINE's published legend reads as it is), or "
                  "'corine' for the CORINE Land Cover legend shipped with TerraSeg. The "
                  "model's class names must be the file's codes or finest-level names.")


def hierarchy_parameter() -> QgsProcessingParameterString:
    """The optional HIERARCHY parameter: a CSV path or ``corine`` (Evaluate, Predict).

    A string, not a file parameter: Processing refuses a file value without a suffix, and
    ``corine`` names the shipped legend.
    """
    param = QgsProcessingParameterString(
        "HIERARCHY", TerraSegAlgorithm().tr("Class hierarchy (CSV file, or 'corine')"),
        optional=True)
    param.setHelp(HIERARCHY_HELP)
    return param


def level_summary(levels: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Accuracy, F1 weighted and mean IoU per level (``levels`` of the engine's result)."""
    return {level: {key: m.get(key) for key in ("accuracy", "f1_weighted", "mean_iou")}
            for level, m in levels.items()}


class Evaluate(TerraSegAlgorithm):
    """Accuracy of a model against independent reference points or polygons."""

    ALG_ID = "evaluate"
    DISPLAY_NAME = "Evaluate"
    HELP = ("Measures a model's accuracy against an independent reference layer (points or "
            "polygons with a class attribute): metrics.json, per_class.csv and "
            "confusion_matrix.csv (and per_category.csv with a category field) in the output "
            "folder. Reference classes are matched to the model's classes by name, after the "
            "optional class mapping. Evaluate NAME.tsm (the best epoch); NAME.last.tsm is the "
            "last epoch's checkpoint to resume training from. With a class hierarchy (a "
            "CSV of code,level1,level2,... or 'corine'), every level is scored too "
            "('levels' in metrics.json; LEVEL_METRICS).")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        """Parameters."""
        self.addParameter(model_parameter())
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
        self.addParameter(hierarchy_parameter())
        self.addParameter(QgsProcessingParameterFolderDestination(
            "OUTPUT_FOLDER", self.tr("Output folder")))
        self.addOutput(QgsProcessingOutputFile("METRICS", self.tr("Metrics (JSON)")))
        self.addOutput(QgsProcessingOutputFile("PER_CLASS", self.tr("Per-class table")))
        self.addOutput(QgsProcessingOutputFile("CONFUSION_MATRIX",
                                               self.tr("Confusion matrix")))
        self.addOutput(QgsProcessingOutputNumber("ACCURACY", self.tr("Overall accuracy")))
        self.addOutput(QgsProcessingOutputNumber("F1_WEIGHTED", self.tr("F1 (weighted)")))
        self.addOutput(QgsProcessingOutputNumber("N_SAMPLES", self.tr("Reference pixels")))
        self.addOutput(QgsProcessingOutputString(
            "LEVEL_METRICS", self.tr("Accuracy, F1 and IoU per hierarchy level (JSON)")))

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
            bands=self.text(parameters, "BANDS", context),
            hierarchy=self.text(parameters, "HIERARCHY", context), overwrite=True)
        warn_if_checkpoint(job["args"]["model"], feedback)
        result = self.run_engine(job, feedback)
        files = {Path(f).name: f for f in result.get("files", [])}
        feedback.pushInfo(f"accuracy {result.get('accuracy')}, F1 weighted "
                          f"{result.get('f1_weighted')}, n={result.get('n_samples')}")
        levels = level_summary(result.get("levels") or {})
        for level, m in levels.items():
            feedback.pushInfo(f"{level}: accuracy {m['accuracy']}, F1 weighted "
                              f"{m['f1_weighted']}, mean IoU {m['mean_iou']}")
        return {"OUTPUT_FOLDER": out_dir, "METRICS": result.get("metrics"),
                "PER_CLASS": files.get("per_class.csv"),
                "CONFUSION_MATRIX": files.get("confusion_matrix.csv"),
                "ACCURACY": result.get("accuracy"), "F1_WEIGHTED": result.get("f1_weighted"),
                "N_SAMPLES": result.get("n_samples"),
                "LEVEL_METRICS": json.dumps(levels) if levels else None}
