"""Processing algorithm 'Train model': a model file from a raster and labelled features.

The training options' parameters are built from :mod:`terraseg.protocol.options`
(:data:`OPTION_PARAMETERS`), so their minimums and help are the engine's. Their defaults are
QGIS's interactive ones, the panel's (``protocol.options.INTERACTIVE``: 50 epochs, 64 px
tiles; batch size and samples per epoch by architecture, :data:`BY_ARCHITECTURE`), not the
command line's (300 epochs, 128 px tiles): the same task gives the same run from the panel
and from the toolbox.

Pseudo-labels (issue 11): PSEUDO_LABELS densifies the labels with a random forest first;
PSEUDO_SOURCE (a class raster on any grid, or polygons with PSEUDO_CLASS_FIELD) is what the
forest learns from instead of the labels, which then override its pseudo-labels where they
lie. The other ``pseudo_*`` options go through EXTRA_OPTIONS.
"""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)

from ...protocol.options import (
    INTERACTIVE_TILE_NETWORK,
    SPEC_BY_JOB_KEY,
    default,
    interactive_default,
)
from .. import jobs, presets
from .base import (
    MODEL_FILTER,
    TerraSegAlgorithm,
    add_terrain_inputs,
    advanced,
    check_suffix,
    model_parameter,
    option_parameter,
    terrain_options,
)

ARCHITECTURES = (*presets.PATCH_MODELS, *presets.TILE_MODELS)

# Parameters made from training options: Processing name -> the option's job key.
OPTION_PARAMETERS: dict[str, str] = {
    "EPOCHS": "epochs", "PATIENCE": "patience", "ARCHITECTURE": "model",
    "TILE_SIZE": "tile_size", "PATCH_SIZE": "patch_size", "BLOCK_SIZE": "block_size",
    "BLOCKS": "blocks", "PLANES": "planes", "LR": "lr", "WEIGHT_DECAY": "weight_decay",
    "BATCH_SIZE": "batch_size", "SAMPLES_PER_EPOCH": "samples_per_epoch",
    "AUGMENT": "augment", "SEED": "seed", "ACCELERATOR": "accelerator",
    "FREEZE_EPOCHS": "freeze_epochs", "ENCODER_LR": "encoder_lr",
}
# Pseudo-label options with a parameter of their own (sent only with pseudo-labels on).
PSEUDO_OPTION_PARAMETERS: dict[str, str] = {
    "PSEUDO_CLASS_MAP": "pseudo_class_map", "PSEUDO_STRATEGY": "pseudo_strategy",
    "PSEUDO_PROBABILITY": "pseudo_probability",
}
# Options whose default depends on the architecture (empty parameter: chosen at run time).
BY_ARCHITECTURE = tuple(INTERACTIVE_TILE_NETWORK)


def interactive_note(job_key: str) -> str:
    """Help text saying where a parameter's default comes from."""
    if job_key in BY_ARCHITECTURE:
        return (f"Empty: {default(job_key)} for patch CNNs, "
                f"{interactive_default(job_key, tile_network=True)} for U-Nets (the panel's "
                "defaults).")
    return (f"Default {interactive_default(job_key)}, the panel's (the command line's: "
            f"{default(job_key)}).")


def architecture_defaults(model: str) -> dict[str, Any]:
    """The values of the :data:`BY_ARCHITECTURE` options for ``model`` (the panel's)."""
    tile = model in presets.TILE_MODELS
    return {key: interactive_default(key, tile_network=tile) for key in BY_ARCHITECTURE}


class TrainModel(TerraSegAlgorithm):
    """Trains a patch CNN or a U-Net from a raster and labelled polygons or points."""

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
        self.add_class_map_and_bands()
        self.addParameter(option_parameter("epochs", default=interactive_default("epochs"),
                                           note=interactive_note("epochs")))
        self.addParameter(option_parameter("patience"))
        self.addParameter(option_parameter("model", "Architecture", name="ARCHITECTURE",
                                           choices=ARCHITECTURES))
        self.addParameter(option_parameter(
            "tile_size", "Tile size for U-Nets (pixels, multiple of "
                         f"{presets.TILE_STRIDE_PX})",
            default=interactive_default("tile_size"), note=interactive_note("tile_size")))
        add_terrain_inputs(self)
        self.addParameter(option_parameter("patch_size", "Patch size (pixels, odd)"))
        self.addParameter(option_parameter("block_size", "Block size (pixels, odd)"))
        self.addParameter(advanced(option_parameter("blocks")))
        self.addParameter(advanced(option_parameter("planes")))
        self.addParameter(advanced(option_parameter("lr")))
        self.addParameter(advanced(option_parameter("weight_decay")))
        self.addParameter(advanced(option_parameter(
            "batch_size", "Training batch size (empty: by architecture)", default=None,
            note=interactive_note("batch_size"))))
        self.addParameter(advanced(option_parameter(
            "samples_per_epoch", "Minimum training samples per epoch (empty: by "
                                 "architecture)", default=None,
            note=interactive_note("samples_per_epoch"))))
        self.addParameter(advanced(option_parameter("augment", "Augmentation",
                                                    choices=self.AUGMENT)))
        self.addParameter(advanced(option_parameter("seed")))
        self.addParameter(advanced(option_parameter("accelerator", "Device",
                                                    choices=self.ACCELERATORS)))
        self.add_pseudo_parameters()
        self.addParameter(advanced(model_parameter(
            "INIT_MODEL", "Fine-tune from model (NAME.last.tsm: resume from the last epoch)",
            optional=True)))
        encoder = QgsProcessingParameterFile(
            "ENCODER", self.tr("Pretrained encoder (terraseg pretrain's .tse, or a model of a "
                               "U-Net/FPN/DeepLabV3+ ResNet network)"),
            fileFilter="TerraSeg encoder or model (*.tse *.tsm)", optional=True)
        encoder.setHelp(self.tr("Starts the network's encoder from these weights; the head is "
                                "built for this run's classes. Freeze it for the first epochs "
                                "with FREEZE_EPOCHS."))
        self.addParameter(advanced(encoder))
        self.addParameter(advanced(option_parameter("freeze_epochs")))
        self.addParameter(advanced(option_parameter("encoder_lr")))
        self.addParameter(advanced(QgsProcessingParameterFile(
            "CACHE_DIR", self.tr("Cache folder (default ~/.cache/terraseg)"),
            QgsProcessingParameterFile.Folder, optional=True)))
        self.addParameter(advanced(QgsProcessingParameterString(
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

    def add_pseudo_parameters(self) -> None:
        """PSEUDO_LABELS, PSEUDO_SOURCE and its class field and map, strategy, probability."""
        self.addParameter(QgsProcessingParameterBoolean(
            "PSEUDO_LABELS", self.tr("Densify the labels with a random forest first "
                                     "(pseudo-labels; the labels override them)"), False))
        self.addParameter(QgsProcessingParameterMapLayer(
            "PSEUDO_SOURCE", self.tr("Coarse labels the forest learns from (class raster on "
                                     "any grid, or polygons; implies pseudo-labels)"),
            optional=True, types=[QgsProcessing.TypeRaster, QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            "PSEUDO_CLASS_FIELD", self.tr("Class field of the coarse polygons (empty: the "
                                          "class field)"), None, "PSEUDO_SOURCE",
            optional=True))
        class_map = QgsProcessingParameterString(
            "PSEUDO_CLASS_MAP", self.tr("Class mapping of the coarse labels (e.g. 1=sealed,"
                                        "2=unsealed; empty: the class mapping)"),
            optional=True)
        class_map.setHelp(SPEC_BY_JOB_KEY["pseudo_class_map"].help)
        self.addParameter(class_map)
        self.addParameter(advanced(option_parameter(
            "pseudo_strategy", "Sampling of the coarse labels' pixels for the forest",
            name="PSEUDO_STRATEGY")))
        self.addParameter(advanced(option_parameter(
            "pseudo_probability", "Use of the forest's confidence",
            name="PSEUDO_PROBABILITY")))

    def pseudo_options(self, parameters: dict[str, Any], context: QgsProcessingContext,
                       feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """The job's pseudo-label options ({} with pseudo-labels off and no source).

        Raises:
            QgsProcessingException: A source that is neither a raster file nor polygons.
        """
        source = self.pseudo_source_path(parameters, context, feedback)
        if not source and not self.parameterAsBoolean(parameters, "PSEUDO_LABELS", context):
            return {}
        options = {"pseudo_labels": True, "pseudo_source": source,
                   "pseudo_class_field": self.field(parameters, "PSEUDO_CLASS_FIELD", context)}
        options.update({key: self.option_value(parameters, name, context)
                        for name, key in PSEUDO_OPTION_PARAMETERS.items()})
        return options

    def pseudo_source_path(self, parameters: dict[str, Any], context: QgsProcessingContext,
                           feedback: QgsProcessingFeedback) -> str | None:
        """The PSEUDO_SOURCE layer's path for the engine (None when empty).

        Raises:
            QgsProcessingException: Not a raster file nor a polygon layer.
        """
        if parameters.get("PSEUDO_SOURCE") in (None, ""):
            return None
        layer = self.parameterAsLayer(parameters, "PSEUDO_SOURCE", context)
        if isinstance(layer, QgsRasterLayer):
            return self.raster_path(parameters, "PSEUDO_SOURCE", context)
        if isinstance(layer, QgsVectorLayer) and (
                layer.geometryType() == QgsWkbTypes.PolygonGeometry):
            try:
                return jobs.vector_layer_path(layer, QgsProcessingUtils.tempFolder())
            except OSError as exc:
                raise QgsProcessingException(str(exc)) from exc
        raise QgsProcessingException("The coarse labels (PSEUDO_SOURCE) must be a class raster "
                                     "or a polygon layer.")

    def extra_options(self, parameters: dict[str, Any],
                      context: QgsProcessingContext) -> dict[str, Any]:
        """The EXTRA_OPTIONS JSON object ({} when empty).

        Raises:
            QgsProcessingException: Not JSON, or not a JSON object.
        """
        extra_text = self.text(parameters, "EXTRA_OPTIONS", context)
        if not extra_text:
            return {}
        try:
            extra = json.loads(extra_text)
        except json.JSONDecodeError as exc:
            raise QgsProcessingException(f"Further engine options are not JSON: {exc}") \
                from exc
        if not isinstance(extra, dict):
            raise QgsProcessingException("Further engine options must be a JSON object.")
        return extra

    def training_option_values(self, parameters: dict[str, Any],
                               context: QgsProcessingContext) -> dict[str, Any]:
        """The training options' job values; blank ones by architecture (as the panel)."""
        options = {key: self.option_value(parameters, name, context)
                   for name, key in OPTION_PARAMETERS.items()}
        for key, value in architecture_defaults(options["model"]).items():
            if options[key] is None:
                options[key] = value
        if options["model"] in presets.PATCH_MODELS:
            del options["tile_size"]  # tile networks only
        return options

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run ``terraseg train``."""
        out = check_suffix(self.parameterAsFileOutput(parameters, "OUTPUT", context),
                           ".tsm", "Model file")
        extra = self.extra_options(parameters, context)
        options = self.training_option_values(parameters, context)
        named = {
            "raster": self.raster_path(parameters, "INPUT_RASTER", context),
            "labels": self.vector_path(parameters, "LABELS", context, feedback),
            "out": out, "class_field": self.field(parameters, "CLASS_FIELD", context),
            "class_map": self.text(parameters, "CLASS_MAP", context),
            "bands": self.text(parameters, "BANDS", context),
            **terrain_options(self, parameters, context),
            "init_model": self.file(parameters, "INIT_MODEL", context),
            "encoder": self.file(parameters, "ENCODER", context),
            "cache_dir": self.file(parameters, "CACHE_DIR", context),
            "overwrite": True,
            **options,
            **self.pseudo_options(parameters, context, feedback),
        }
        named.update(extra)  # the JSON options win
        job = jobs.train_job(**named)
        result = self.run_engine(job, feedback)
        if result.get("last_model"):
            feedback.pushInfo(f"{result.get('model', out)}: the best epoch's weights (predict "
                              f"with it); {result['last_model']}: the last epoch's, a "
                              "checkpoint to resume training from.")
        pseudo = result.get("pseudo_labels") or {}
        if pseudo:
            feedback.pushInfo(f"Trained on the pseudo-labels in {pseudo.get('folder')} "
                              f"(agreement with their source labels "
                              f"{pseudo.get('agreement_accuracy')}).")
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
