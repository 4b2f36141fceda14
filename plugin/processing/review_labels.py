"""Processing algorithm 'Review labels (find mislabelled polygons)'.

Runs ``terraseg review`` (issue 12): k models are trained on folds of the labelled polygons
(grouped by region), each polygon is scored by the model that did not train on it (the mean
loss of its given class, or confident learning), and the polygons are written sorted by how
likely their class is wrong: ``review.gpkg`` (layer ``review``: rank, feature_id,
region_key, given_class, predicted_class, predicted_probability, score), ``review.csv`` and
``review.json`` in the output folder.

SCORER chooses what predicts the held-out polygons: k networks (the default, the engine's)
or k random forests of pixels on the same folds (TREES trees each: seconds, no training, no
fold model written; the training parameters then go unused but for the seed and cache).

The data and training parameters are 'Train model''s own (:class:`~.train.TrainModel`'s
definitions, cloned), so a review trains as 'Train model' would; there is no model file to
write and no model to fine-tune from (each fold starts from random weights), and no
pseudo-labels.
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingUtils,
)

from .. import jobs
from .base import terrain_options
from .train import TrainModel

#: Rankings of ``terraseg review --ranking``.
RANKINGS = ("loss", "cleanlab")
#: Scorers of ``terraseg review --scorer``; the first is the default (the engine's).
SCORERS = ("network", "forest")
DEFAULT_TREES = 100
DEFAULT_FOLDS = 5
DEFAULT_TOP = 50
#: 'Train model' parameters a review does not take: its model file, the model to
#: fine-tune from, pseudo-labels.
NOT_FOR_REVIEW = ("OUTPUT", "INIT_MODEL", "PSEUDO_LABELS", "PSEUDO_SOURCE",
                  "PSEUDO_CLASS_FIELD", "PSEUDO_CLASS_MAP", "PSEUDO_STRATEGY",
                  "PSEUDO_PROBABILITY")
#: The review's own parameters go after this one of 'Train model''s.
REVIEW_AFTER = "BANDS"
#: 'Train model''s file parameters and their job keys, passed on when it has them.
FILE_PARAMETERS = {"CACHE_DIR": "cache_dir", "ENCODER": "encoder"}
#: Suspects written to the log.
LOGGED = 10


def suspect_line(suspect: dict[str, Any]) -> str:
    """One log line of a suspect: rank, feature, given -> predicted class, probability."""
    feature = suspect.get("feature_id") or suspect.get("region_key")
    return (f"{suspect.get('rank')}. feature {feature}: {suspect.get('given_class')} -> "
            f"{suspect.get('predicted_class')} (p {suspect.get('predicted_probability', 0):.2f}"
            f", score {suspect.get('score', 0):.3f})")


class ReviewLabels(TrainModel):
    """Ranks training polygons by how likely their class is wrong (out-of-fold models)."""

    ALG_ID = "review_labels"
    DISPLAY_NAME = "Review labels (find mislabelled polygons)"
    HELP = ("Finds training polygons whose class is probably wrong. The polygons are split "
            "into k folds (by region); k models are trained with the training parameters "
            "below, each without one fold, and every polygon is scored by the model that did "
            "not train on it: the mean loss of its given class ('loss'), or confident "
            "learning ('cleanlab', label quality from per-class confidence thresholds). "
            "Writes review.gpkg (layer 'review': the polygons sorted by score with rank, "
            "feature_id, given_class, predicted_class, predicted_probability and score), "
            "review.csv and review.json into the output folder; the log lists the most "
            "suspicious ones. Every class needs at least k polygons. Each fold starts from "
            "random weights (no fine-tuning: a model that saw a polygon cannot judge it), so "
            "a review takes about k trainings. Scorer 'forest' replaces the networks by random "
            "forests of pixels (Trees each) on the same folds: seconds instead of k trainings, "
            "a quicker but coarser first pass (no texture or shape); the training parameters "
            "then go unused but for the seed. Correct or delete the polygons in the label "
            "layer, then train again.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        """'Train model''s data and training parameters, the review's, the output folder."""
        train = TrainModel()
        train.initAlgorithm(config)
        for param in train.parameterDefinitions():
            if param.name() in NOT_FOR_REVIEW:
                continue
            self.addParameter(param.clone())
            if param.name() == REVIEW_AFTER:
                self.add_review_parameters()
        self.addParameter(QgsProcessingParameterFolderDestination(
            "OUTPUT_FOLDER", self.tr("Output folder (review.gpkg, review.csv, review.json)")))
        self.addOutput(QgsProcessingOutputVectorLayer(
            "REVIEW", self.tr("Reviewed polygons by score (review.gpkg)")))
        self.addOutput(QgsProcessingOutputFile("CSV", self.tr("Review table (review.csv)")))
        self.addOutput(QgsProcessingOutputNumber(
            "REGIONS", self.tr("Labelled regions scored")))
        self.addOutput(QgsProcessingOutputNumber(
            "FLAGGED", self.tr("Regions flagged as mislabelled by confident learning")))

    def add_review_parameters(self) -> None:
        """K (folds), RANKING, TOP, SCORER and TREES."""
        self.addParameter(QgsProcessingParameterNumber(
            "K", self.tr("Folds (k models; every class needs at least k polygons)"),
            QgsProcessingParameterNumber.Integer, DEFAULT_FOLDS, minValue=2))
        self.addParameter(QgsProcessingParameterEnum(
            "RANKING", self.tr("Ranking: mean out-of-fold loss, or confident learning"),
            list(RANKINGS), defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "TOP", self.tr("Most suspicious polygons listed in the result"),
            QgsProcessingParameterNumber.Integer, DEFAULT_TOP, minValue=1))
        self.addParameter(QgsProcessingParameterEnum(
            "SCORER", self.tr("Scored by: k networks (training parameters below), or k random "
                              "forests of pixels (seconds)"),
            list(SCORERS), defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "TREES", self.tr("Trees per random forest (scorer 'forest' only)"),
            QgsProcessingParameterNumber.Integer, DEFAULT_TREES, minValue=1))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run ``terraseg review``."""
        out_dir = self.parameterAsFileOutput(parameters, "OUTPUT_FOLDER", context)
        if not out_dir:
            raise QgsProcessingException("No output folder given.")
        options = self.training_option_values(parameters, context)
        named = {
            "raster": self.raster_path(parameters, "INPUT_RASTER", context),
            "labels": self.vector_path(parameters, "LABELS", context, feedback),
            "class_field": self.field(parameters, "CLASS_FIELD", context),
            "class_map": self.text(parameters, "CLASS_MAP", context),
            "bands": self.text(parameters, "BANDS", context),
            **terrain_options(self, parameters, context),
            **{key: self.file(parameters, name, context)
               for name, key in FILE_PARAMETERS.items()
               if self.parameterDefinition(name) is not None},
            **options,
            "k": self.parameterAsInt(parameters, "K", context),
            "ranking": RANKINGS[self.parameterAsEnum(parameters, "RANKING", context)],
            "top": self.parameterAsInt(parameters, "TOP", context),
            "scorer": SCORERS[self.parameterAsEnum(parameters, "SCORER", context)],
            "trees": self.parameterAsInt(parameters, "TREES", context),
            "out_dir": out_dir, "overwrite": True,
        }
        named.update(self.extra_options(parameters, context))  # the JSON options win
        result = self.run_engine(jobs.make_job("review", **named), feedback)
        suspects = result.get("suspects") or []
        feedback.pushInfo(f"{result.get('regions')} labelled regions scored by "
                          f"{result.get('scorer', 'network')} models, ranked by "
                          f"{result.get('ranking')} ({result.get('k')} folds), "
                          f"{result.get('flagged')} flagged by confident learning; the most "
                          "suspicious:")
        for suspect in suspects[:LOGGED]:
            feedback.pushInfo(suspect_line(suspect))
        gpkg = str(result["review_gpkg"])
        details = QgsProcessingContext.LayerDetails("TerraSeg label review", context.project(),
                                                    "REVIEW")
        if hasattr(QgsProcessingUtils, "LayerHint"):
            details.layerTypeHint = QgsProcessingUtils.LayerHint.Vector
        context.addLayerToLoadOnCompletion(f"{gpkg}|layername=review", details)
        return {"OUTPUT_FOLDER": out_dir, "REVIEW": f"{gpkg}|layername=review",
                "CSV": result.get("review_csv"), "REGIONS": result.get("regions"),
                "FLAGGED": result.get("flagged")}
