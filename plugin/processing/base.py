"""The shared base of TerraSeg's Processing algorithms and the parameters several of them use.

Every algorithm turns its parameters into a job with :mod:`terraseg.plugin.jobs` and runs
it with :func:`terraseg.plugin.worker_run.run_job` (the engine worker the panel starts too),
so the toolbox, batch mode, the graphical modeler and ``qgis_process`` run the same engine
code.
Layers reach the engine by their file path; layers that are not files (memory layers,
databases, filtered layers, selected features only) are written to a temporary
GeoPackage by Processing first.

Parameters of training options are built from :mod:`terraseg.protocol.options` by
:func:`option_parameter`, so their defaults, minimums and help are written once; 'Train
model' starts from QGIS's interactive defaults (``protocol.options.INTERACTIVE``), the
panel's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
)
from qgis.PyQt.QtCore import QCoreApplication

from ...protocol.options import SPEC_BY_JOB_KEY
from .. import jobs, modelinfo
from ..engine import find_engine
from ..worker_errors import WorkerError
from ..worker_run import run_job

MODEL_FILTER = "TerraSeg model (*.tsm)"
# The default of an option parameter when none is given: the spec's.
SPEC_DEFAULT: Any = object()
# Formats the engine reads (fiona/GDAL) without a conversion.
VECTOR_FORMATS = ["gpkg", "shp", "geojson", "json", "fgb", "gml", "kml", "sqlite"]


def tr(text: str) -> str:
    """Translated text (context 'TerraSeg')."""
    return QCoreApplication.translate("TerraSeg", text)


def advanced(param: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    """``param`` flagged as an advanced parameter (collapsed in the dialog)."""
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return param


def check_suffix(path: str, suffix: str, what: str) -> str:
    """``path`` when it ends in ``suffix`` (e.g. ``.tif``).

    Raises:
        QgsProcessingException: No path, or another suffix (naming ``what``).
    """
    if not path:
        raise QgsProcessingException(f"No {what} given.")
    if Path(path).suffix.lower() != suffix:
        raise QgsProcessingException(f"{what} must be a {suffix} file, not {path}.")
    return path


def model_parameter(name: str = "MODEL", description: str = "Model file (NAME.tsm, the best "
                                                              "epoch)",
                    optional: bool = False) -> QgsProcessingParameterFile:
    """A ``.tsm`` model file parameter whose help explains ``NAME.tsm`` and ``NAME.last.tsm``."""
    param = QgsProcessingParameterFile(name, tr(description), fileFilter=MODEL_FILTER,
                                       optional=optional)
    param.setHelp(modelinfo.MODEL_FILES_HELP)
    return param


def warn_if_checkpoint(path: str | None, feedback: QgsProcessingFeedback) -> str:
    """Warn when a model file to predict with is a last-epoch checkpoint (``NAME.last.tsm``).

    Returns:
        The warning (``""`` for a best-epoch model; an unreadable file is left to the
        engine's message).
    """
    if not path:
        return ""
    try:
        meta = modelinfo.read_model_metadata(path)
    except modelinfo.ModelInfoError:
        meta = None
    note = modelinfo.checkpoint_note(path, meta)
    if note:
        note = f"{Path(path).name} holds the {note}. Choose that file for the best map."
        feedback.pushWarning(note)
    return note


def option_parameter(job_key: str, description: str = "", *, name: str = "",
                     choices: Sequence[str] = (), default: Any = SPEC_DEFAULT,
                     note: str = "") -> QgsProcessingParameterDefinition:
    """A Processing parameter of a training option, its default and minimum from the spec.

    Integer and float options become number parameters (with the spec's minimum), options
    with choices (a ``Literal`` annotation or ``choices``) enums whose default is the
    spec's default, other options strings (tuples joined by commas). The spec's help text
    is the parameter's help, and its description unless ``description`` is given.

    Args:
        job_key: The option's key in a job (``epochs``, ``tile_size``).
        description: Label in the dialog (default: the spec's help text).
        name: Parameter name (default: the job key in upper case, ``TILE_SIZE``).
        choices: Values offered for a string option; must include the spec's default.
        default: Another default than the spec's (QGIS's interactive one); None makes the
            parameter optional without a default (the algorithm then chooses).
        note: Appended to the help (where the default comes from).

    Returns:
        The parameter definition.

    Raises:
        ValueError: The spec's default is not one of the choices.
        TypeError: The option's type has no Processing parameter here.
    """
    spec = SPEC_BY_JOB_KEY[job_key]
    value = spec.default if default is SPEC_DEFAULT else default
    optional = value is None and spec.default is not None
    name = name or job_key.upper()
    label = tr(description or spec.help[:1].upper() + spec.help[1:])
    options = tuple(choices) or spec.choices
    param: QgsProcessingParameterDefinition
    if options:
        if value not in options:
            raise ValueError(f"The default of '{job_key}' ({value!r}) is not one of "
                             f"its choices {options}.")
        param = QgsProcessingParameterEnum(name, label, list(options),
                                           defaultValue=options.index(value))
    elif spec.annotation in (int, float):
        kind = (QgsProcessingParameterNumber.Integer if spec.annotation is int
                else QgsProcessingParameterNumber.Double)
        limits = {} if spec.minimum is None else {"minValue": spec.minimum}
        param = QgsProcessingParameterNumber(name, label, kind, value, optional=optional,
                                             **limits)
    elif isinstance(spec.default, str | tuple):
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        param = QgsProcessingParameterString(name, label, value, optional=optional)
    else:
        raise TypeError(f"No Processing parameter for option '{job_key}' "
                        f"({spec.annotation}).")
    param.setHelp(f"{spec.help}. {note}" if note else spec.help)
    return param


class TerraSegAlgorithm(QgsProcessingAlgorithm):
    """Common base: names, help, engine check, running a job, reading parameters."""

    ALG_ID = ""
    DISPLAY_NAME = ""
    HELP = ""

    def tr(self, text: str) -> str:
        """Translated text."""
        return tr(text)

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
    def add_class_map_and_bands(self) -> None:
        """The optional CLASS_MAP and BANDS parameters of the algorithms that read labels."""
        self.addParameter(QgsProcessingParameterString(
            "CLASS_MAP", self.tr("Class mapping (e.g. developed=sealed,*=unsealed)"),
            optional=True))
        self.addParameter(QgsProcessingParameterString(
            "BANDS", self.tr("Bands (e.g. 1,2,3,4 or red=1,green=2; empty: all)"),
            optional=True))

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

    def option_value(self, parameters: dict[str, Any], name: str,
                     context: QgsProcessingContext) -> Any:
        """The engine value of a parameter made by :func:`option_parameter`.

        Returns:
            An enum's chosen text, a number as int or float, a string (None when empty,
            and for an optional parameter without a value).
        """
        param = self.parameterDefinition(name)
        optional = bool(param.flags() & QgsProcessingParameterDefinition.FlagOptional)
        if optional and parameters.get(name) in (None, ""):
            return None
        if param.type() == QgsProcessingParameterEnum.typeName():
            return param.options()[self.parameterAsEnum(parameters, name, context)]
        if param.type() == QgsProcessingParameterNumber.typeName():
            if param.dataType() == QgsProcessingParameterNumber.Integer:
                return self.parameterAsInt(parameters, name, context)
            return self.parameterAsDouble(parameters, name, context)
        return self.text(parameters, name, context)

    @staticmethod
    def load_on_completion(context: QgsProcessingContext, path: str, name: str,
                           output: str) -> None:
        """Load a raster output into the project when the algorithm finishes."""
        details = QgsProcessingContext.LayerDetails(name, context.project(), output)
        if hasattr(QgsProcessingUtils, "LayerHint"):
            details.layerTypeHint = QgsProcessingUtils.LayerHint.Raster
        context.addLayerToLoadOnCompletion(path, details)


def add_terrain_inputs(alg: TerraSegAlgorithm) -> None:
    """Optional DEM (and slope derived from it) stacked onto the image: Train, Predict."""
    alg.addParameter(QgsProcessingParameterRasterLayer(
        "DEM", alg.tr("DEM (any grid; resampled bilinearly onto the raster)"), optional=True))
    alg.addParameter(QgsProcessingParameterBoolean(
        "SLOPE_FROM_DEM", alg.tr("Add slope derived from the DEM"), False))


def terrain_options(alg: TerraSegAlgorithm, parameters: dict[str, Any],
                    context: QgsProcessingContext) -> dict[str, Any]:
    """The engine's ``dem`` / ``slope_from_dem`` options from the terrain inputs.

    Raises:
        QgsProcessingException: Slope asked for without a DEM.
    """
    derive = alg.parameterAsBoolean(parameters, "SLOPE_FROM_DEM", context)
    if not parameters.get("DEM"):
        if derive:
            raise QgsProcessingException("'Add slope derived from the DEM' needs a DEM.")
        return {}
    return {"dem": alg.raster_path(parameters, "DEM", context), "slope_from_dem": derive}


def add_class_raster_inputs(alg: TerraSegAlgorithm) -> None:
    """CLASSES (classes.tif) and an optional MODEL for class names: Vectorise, Area statistics."""
    alg.addParameter(QgsProcessingParameterRasterLayer(
        "CLASSES", alg.tr("Class raster (classes.tif)")))
    alg.addParameter(model_parameter("MODEL", "Model file (class names)", optional=True))
