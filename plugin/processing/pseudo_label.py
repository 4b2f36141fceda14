"""Processing algorithm 'Pseudo-labels from coarse labels (random forest)'.

Runs ``terraseg pseudo-label``: labelled pixels of coarse or noisy labels (a polygon layer,
or a label raster on any grid) are sampled, a random forest of single pixels is fitted on
them, and its classes over the whole raster become dense pseudo-labels on the raster's own
grid (core/pseudo_label.py, after the study of issue 11's seed 003).
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from .. import jobs
from .base import TerraSegAlgorithm, advanced

#: Sampling strategies of ``terraseg pseudo-label --strategy`` (core/pixel_sampling.py).
STRATEGIES = ("all", "random", "uniform", "kmeans")
DEFAULT_STRATEGY = "random"


class PseudoLabels(TerraSegAlgorithm):
    """Dense pseudo-labels and probabilities from coarse or noisy labels, no model file."""

    ALG_ID = "pseudo_label"
    DISPLAY_NAME = "Pseudo-labels from coarse labels (random forest)"
    HELP = ("Turns coarse or noisy labels into dense labels on the raster's own grid. The "
            "labels are a polygon layer (e.g. OpenStreetMap land use, or a few drawn "
            "polygons) or a label raster on any grid (e.g. a 30 m land-cover map, resampled "
            "onto the raster by nearest neighbour); give one of them. Labelled pixels are "
            "sampled per class (all, random, uniform in space, or k-means centres), a random "
            "forest of single pixels is fitted on them (trees of limited depth resist label "
            "noise), and the forest classifies every pixel. Writes classes.tif (the "
            "pseudo-labels, class ids with a colour table) and probability.tif (one band per "
            "class; with 'Zero disagreeing pixels', 0 where the pseudo-label differs from "
            "the source label) into the output folder, and reports how far the "
            "pseudo-labels agree with the source labels on the labelled pixels. No model "
            "file is written: train a model on classes.tif afterwards. After Mirpulatov et "
            "al., IEEE Access 2023 (pseudo-labelling with noisy labels).")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        """Parameters."""
        self.addParameter(QgsProcessingParameterRasterLayer(
            "INPUT_RASTER", self.tr("Raster (grid of the pseudo-labels)")))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "LABELS", self.tr("Labels: polygon or point layer"),
            [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint], optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "LABEL_RASTER", self.tr("Labels: label raster (any grid; instead of a layer)"),
            optional=True))
        self.addParameter(QgsProcessingParameterField(
            "CLASS_FIELD", self.tr("Class field (labels layer)"), None, "LABELS",
            optional=True))
        self.add_class_map_and_bands()
        self.addParameter(QgsProcessingParameterNumber(
            "NODATA", self.tr("Nodata value of the raster (empty: the raster's own)"),
            QgsProcessingParameterNumber.Double, None, optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            "STRATEGY", self.tr("Sampling of the labelled pixels"), list(STRATEGIES),
            defaultValue=STRATEGIES.index(DEFAULT_STRATEGY)))
        self.addParameter(QgsProcessingParameterNumber(
            "QUOTA", self.tr("Pixels sampled per class (empty: the smallest class's count)"),
            QgsProcessingParameterNumber.Integer, None, optional=True, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "K", self.tr("Clusters per class (kmeans sampling)"),
            QgsProcessingParameterNumber.Integer, 50, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "TREES", self.tr("Trees of the forest"),
            QgsProcessingParameterNumber.Integer, 50, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "MAX_DEPTH", self.tr("Deepest a tree grows (0: unlimited; deep trees learn the "
                                 "label noise)"),
            QgsProcessingParameterNumber.Integer, 10, minValue=0))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "SEED", self.tr("Seed of the sample and the forest"),
            QgsProcessingParameterNumber.Integer, 0, minValue=0)))
        self.addParameter(QgsProcessingParameterBoolean(
            "ZERO_DISAGREEING", self.tr("Zero disagreeing pixels (probability 0 where the "
                                        "pseudo-label differs from the source label)"),
            False))
        self.addParameter(QgsProcessingParameterFolderDestination(
            "OUTPUT_FOLDER", self.tr("Output folder")))
        self.addOutput(QgsProcessingOutputRasterLayer(
            "CLASSES", self.tr("Pseudo-labels (classes.tif)")))
        self.addOutput(QgsProcessingOutputRasterLayer(
            "PROBABILITY", self.tr("Probability (probability.tif)")))
        self.addOutput(QgsProcessingOutputNumber(
            "AGREEMENT", self.tr("Agreement with the source labels (accuracy)")))

    def labels_path(self, parameters: dict[str, Any], context: QgsProcessingContext,
                    feedback: QgsProcessingFeedback) -> str:
        """Path of the labels: the layer's, or the label raster's.

        Raises:
            QgsProcessingException: Neither or both given.
        """
        vector = self.vector_path(parameters, "LABELS", context, feedback)
        has_raster = parameters.get("LABEL_RASTER") not in (None, "")
        if vector and has_raster:
            raise QgsProcessingException("Give either a labels layer or a label raster, not "
                                         "both.")
        if vector:
            return vector
        if has_raster:
            return self.raster_path(parameters, "LABEL_RASTER", context)
        raise QgsProcessingException("No labels given: choose a polygon layer (with its "
                                     "class field) or a label raster.")

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run ``terraseg pseudo-label``."""
        out_dir = self.parameterAsFileOutput(parameters, "OUTPUT_FOLDER", context)
        if not out_dir:
            raise QgsProcessingException("No output folder given.")
        has = {name: parameters.get(name) not in (None, "") for name in ("NODATA", "QUOTA")}
        job = jobs.pseudo_label_job(
            raster=self.raster_path(parameters, "INPUT_RASTER", context),
            labels=self.labels_path(parameters, context, feedback), out_dir=out_dir,
            class_field=self.field(parameters, "CLASS_FIELD", context),
            class_map=self.text(parameters, "CLASS_MAP", context),
            bands=self.text(parameters, "BANDS", context),
            nodata=(self.parameterAsDouble(parameters, "NODATA", context)
                    if has["NODATA"] else None),
            overwrite=True,
            strategy=STRATEGIES[self.parameterAsEnum(parameters, "STRATEGY", context)],
            quota=self.parameterAsInt(parameters, "QUOTA", context) if has["QUOTA"] else None,
            k=self.parameterAsInt(parameters, "K", context),
            trees=self.parameterAsInt(parameters, "TREES", context),
            max_depth=self.parameterAsInt(parameters, "MAX_DEPTH", context),
            seed=self.parameterAsInt(parameters, "SEED", context),
            zero_disagreeing=self.parameterAsBoolean(parameters, "ZERO_DISAGREEING", context))
        result = self.run_engine(job, feedback)
        classes, prob = result["classes"], result["probability"]
        agreement = result.get("agreement") or {}
        if agreement:
            feedback.pushInfo(f"The pseudo-labels agree with the source labels on "
                              f"{agreement['n_samples']} labelled pixels: accuracy "
                              f"{agreement['accuracy']:.4f}.")
        self.load_on_completion(context, classes, "TerraSeg pseudo-labels", "CLASSES")
        self.load_on_completion(context, prob, "TerraSeg pseudo-label probability",
                                "PROBABILITY")
        return {"OUTPUT_FOLDER": out_dir, "CLASSES": classes, "PROBABILITY": prob,
                "AGREEMENT": agreement.get("accuracy")}
