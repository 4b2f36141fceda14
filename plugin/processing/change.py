"""Processing algorithms 'Change between two dates' and 'Change between two class maps'.

Both run ``terraseg change`` (classification difference, issue 13): the second date is put
on the first's grid, its misregistration measured (refused above MAX_SHIFT pixels unless
CORRECT_SHIFT), and the from-to raster (one code per class pair, the engine's colours and
``from -> to`` names), the change mask, the from-to area table (CSV, m2 and %) and, for
transitions of interest, their raster and polygons are written into the output folder.
'Change between two dates' predicts both images with one model first; 'Change between two
class maps' compares two class rasters (two predictions, two land-cover maps), with their
probability rasters when both exist (then the mask is the change probability at
THRESHOLD).
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsRasterLayer,
    QgsVectorLayer,
)

from .. import change_layers, jobs
from .base import TerraSegAlgorithm, advanced, model_parameter

DEFAULT_MAX_SHIFT_PX = 1.0
DEFAULT_THRESHOLD = 0.5
#: Transitions logged after a run.
LOGGED = 10
_STYLERS: list[QgsProcessingLayerPostProcessorInterface] = []
"""Post-processors in use (Processing keeps no reference to them)."""


def parse_transitions(text: str | None) -> list[str]:
    """``from=to`` pairs from ``'sealed=unsealed; 1=2'`` (';' or ',' between pairs).

    Raises:
        QgsProcessingException: A pair without '='.
    """
    pairs = [p.strip() for p in (text or "").replace(";", ",").split(",") if p.strip()]
    bad = [p for p in pairs if p.count("=") != 1 or not all(s.strip() for s in p.split("="))]
    if bad:
        raise QgsProcessingException(
            f"Transitions of interest are written from=to (class names or codes, * for any), "
            f"separated by ';': not {', '.join(bad)}.")
    return ["=".join(s.strip() for s in p.split("=")) for p in pairs]


class FromToStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles a loaded layer of a change result: from-to names and colours, mask, polygons."""

    def __init__(self, kind: str, names: dict[int, str] | None = None) -> None:
        """``kind``: ``fromto``, ``mask`` or ``transitions``; ``names``: fallback names."""
        super().__init__()
        self.kind, self.names = kind, names or {}

    def postProcessLayer(self, layer: Any, context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> None:
        """Apply the style of :attr:`kind`."""
        if self.kind == "fromto" and isinstance(layer, QgsRasterLayer):
            change_layers.style_fromto(layer, self.names)
        elif self.kind == "mask" and isinstance(layer, QgsRasterLayer):
            change_layers.style_change_mask(layer)
        elif self.kind == "transitions" and isinstance(layer, QgsVectorLayer):
            change_layers.style_transitions(layer)

    @classmethod
    def create(cls, kind: str, names: dict[int, str] | None = None) -> FromToStyler:
        """A styler kept alive for Processing."""
        styler = cls(kind, names)
        _STYLERS.append(styler)
        return styler


class ChangeAlgorithm(TerraSegAlgorithm):
    """The options, outputs and run both change algorithms share."""

    def tags(self) -> list[str]:
        """Search words."""
        return [*super().tags(), "change", "change detection", "from-to", "transition"]

    def input_parameters(self) -> None:
        """The inputs of the variant (subclasses)."""
        raise NotImplementedError

    def input_args(self, parameters: dict[str, Any], context: QgsProcessingContext,
                   feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """The variant's inputs as job fields (subclasses)."""
        raise NotImplementedError

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        """The variant's inputs, the comparison options, the output folder and outputs."""
        self.input_parameters()
        self.addParameter(QgsProcessingParameterNumber(
            "MAX_SHIFT", self.tr("Largest misregistration accepted (pixels; negative: not "
                                 "checked)"),
            QgsProcessingParameterNumber.Double, DEFAULT_MAX_SHIFT_PX))
        self.addParameter(QgsProcessingParameterBoolean(
            "CORRECT_SHIFT", self.tr("Correct the measured shift instead of refusing"), False))
        self.addParameter(QgsProcessingParameterNumber(
            "BORDER", self.tr("Border band not compared (pixels from a class boundary)"),
            QgsProcessingParameterNumber.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterString(
            "TRANSITIONS", self.tr("Transitions of interest (from=to;... class names or "
                                   "codes, * = any)"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "ZONES", self.tr("Zones: a from-to table per polygon"),
            [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterField(
            "ZONE_FIELD", self.tr("Zone name field"), None, "ZONES", optional=True))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "THRESHOLD", self.tr("Change probability from which a pixel is changed (with "
                                 "probabilities)"),
            QgsProcessingParameterNumber.Double, DEFAULT_THRESHOLD, minValue=0.0,
            maxValue=1.0)))
        self.addParameter(QgsProcessingParameterFolderDestination(
            "OUTPUT_FOLDER", self.tr("Output folder (fromto.tif, change_mask.tif, "
                                     "fromto_area.csv, ...)")))
        self.addOutput(QgsProcessingOutputRasterLayer(
            "FROMTO", self.tr("From-to classes (fromto.tif)")))
        self.addOutput(QgsProcessingOutputRasterLayer(
            "CHANGE_MASK", self.tr("Change mask (change_mask.tif)")))
        self.addOutput(QgsProcessingOutputRasterLayer(
            "CHANGE_PROBABILITY", self.tr("Change probability (change_probability.tif)")))
        self.addOutput(QgsProcessingOutputVectorLayer(
            "TRANSITIONS", self.tr("Transitions of interest (transitions.gpkg)")))
        self.addOutput(QgsProcessingOutputFile(
            "AREA_CSV", self.tr("From-to area table (fromto_area.csv)")))
        self.addOutput(QgsProcessingOutputFile(
            "ZONES_CSV", self.tr("From-to table per zone (fromto_zones.csv)")))
        self.addOutput(QgsProcessingOutputNumber("CHANGED_M2", self.tr("Changed area (m2)")))
        self.addOutput(QgsProcessingOutputNumber("COMPARED_M2",
                                                 self.tr("Compared area (m2)")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run ``terraseg change``, log the largest transitions, load the layers."""
        out_dir = self.parameterAsFileOutput(parameters, "OUTPUT_FOLDER", context)
        if not out_dir:
            raise QgsProcessingException("No output folder given.")
        job = jobs.make_job(
            "change", **self.input_args(parameters, context, feedback), out_dir=out_dir,
            max_shift=self.parameterAsDouble(parameters, "MAX_SHIFT", context),
            correct_shift=self.parameterAsBoolean(parameters, "CORRECT_SHIFT", context),
            border=self.parameterAsInt(parameters, "BORDER", context),
            threshold=self.parameterAsDouble(parameters, "THRESHOLD", context),
            zones=self.vector_path(parameters, "ZONES", context, feedback),
            zone_field=self.field(parameters, "ZONE_FIELD", context),
            transition=parse_transitions(self.text(parameters, "TRANSITIONS", context)) or None,
            overwrite=True)
        result = self.run_engine(job, feedback)
        feedback.pushInfo(change_layers.change_summary(result))
        for row in change_layers.transition_rows(result)[:LOGGED]:
            feedback.pushInfo(f"  {row['from']} -> {row['to']}: {row['area_m2']:.1f} m2 "
                              f"({row['area_ha']:.2f} ha, {row['percent']:.2f} %)")
        self.load_styled(context, result["fromto_tif"], "TerraSeg from-to classes", "FROMTO",
                         FromToStyler.create("fromto", change_layers.fromto_names(result)))
        self.load_styled(context, result["change_mask_tif"], "TerraSeg change mask",
                         "CHANGE_MASK", FromToStyler.create("mask"))
        gpkg = result.get("transitions_gpkg")
        transitions = (f"{gpkg}|layername={change_layers.TRANSITIONS_LAYER}" if gpkg
                       else None)
        if transitions:
            self.load_styled(context, transitions, "TerraSeg transitions of interest",
                             "TRANSITIONS", FromToStyler.create("transitions"), vector=True)
        return {"OUTPUT_FOLDER": out_dir, "FROMTO": result["fromto_tif"],
                "CHANGE_MASK": result["change_mask_tif"],
                "CHANGE_PROBABILITY": result.get("change_probability_tif"),
                "TRANSITIONS": transitions, "AREA_CSV": result.get("fromto_area_csv"),
                "ZONES_CSV": result.get("fromto_zones_csv"),
                "CHANGED_M2": result.get("changed_m2"), "COMPARED_M2": result.get("compared_m2")}

    @staticmethod
    def load_styled(context: QgsProcessingContext, path: str, name: str, output: str,
                    styler: FromToStyler, vector: bool = False) -> None:
        """Load an output into the project when the algorithm finishes, styled by ``styler``."""
        details = QgsProcessingContext.LayerDetails(name, context.project(), output)
        if hasattr(QgsProcessingUtils, "LayerHint"):
            details.layerTypeHint = (QgsProcessingUtils.LayerHint.Vector if vector
                                     else QgsProcessingUtils.LayerHint.Raster)
        details.setPostProcessor(styler)
        context.addLayerToLoadOnCompletion(path, details)


class ChangeBetweenDates(ChangeAlgorithm):
    """One model predicts the images of both dates; their class maps are compared."""

    ALG_ID = "change_dates"
    DISPLAY_NAME = "Change between two dates"
    HELP = ("Maps what changed between two images of the same place (classification "
            "difference). The model predicts both images (into date_a and date_b in the "
            "output folder); the second date's classes are put on the first's grid and its "
            "misregistration is measured in pixels: above 'Largest misregistration' the run "
            "is refused with the figure, unless 'Correct the measured shift' is ticked. "
            "Writes fromto.tif (one code per from -> to class pair, coloured and named), "
            "change_mask.tif (1 changed: change probability at the threshold), "
            "change_probability.tif, fromto_area.csv (rows from, columns to, m2 and % of the "
            "compared area) and fromto.json. A border band ignores pixels near class "
            "boundaries (sliver changes). Transitions of interest (e.g. unsealed=sealed) get "
            "their own raster and polygons (transitions.gpkg); zones get one table per "
            "polygon (fromto_zones.csv).")

    def input_parameters(self) -> None:
        """MODEL, RASTER_A, RASTER_B, BANDS."""
        self.addParameter(model_parameter("MODEL", "Model file (predicts both dates)"))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "RASTER_A", self.tr("Image of the first date (its grid is the output grid)")))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "RASTER_B", self.tr("Image of the second date")))
        self.addParameter(QgsProcessingParameterString(
            "BANDS", self.tr("Bands of both images (e.g. red=1,green=2; empty: the model's)"),
            optional=True))

    def input_args(self, parameters: dict[str, Any], context: QgsProcessingContext,
                   feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """``model``, ``raster_a``, ``raster_b``, ``bands``."""
        model = self.file(parameters, "MODEL", context)
        if not model:
            raise QgsProcessingException("No model file given.")
        return {"model": model, "raster_a": self.raster_path(parameters, "RASTER_A", context),
                "raster_b": self.raster_path(parameters, "RASTER_B", context),
                "bands": self.text(parameters, "BANDS", context)}


class ChangeBetweenClassMaps(ChangeAlgorithm):
    """Two class rasters (predictions, land-cover maps) are compared."""

    ALG_ID = "change_class_maps"
    DISPLAY_NAME = "Change between two class maps"
    HELP = ("Compares two class rasters of the same place, e.g. two TerraSeg predictions "
            "(classes.tif) or two land-cover maps. The second is put on the first's grid "
            "(nearest neighbour) and its misregistration is measured in pixels: above "
            "'Largest misregistration' the run is refused with the figure, unless 'Correct "
            "the measured shift' is ticked. With both probability rasters the change mask is "
            "the change probability (1 - sum of p1 p2) at the threshold, else class differs. "
            "Class names come from the legend CSV (code,name[,colour]), else from TerraSeg's "
            "class rasters, else the codes. Writes fromto.tif, change_mask.tif, "
            "fromto_area.csv (rows from, columns to, m2 and %), fromto.json, and for "
            "transitions of interest transitions.tif and transitions.gpkg; zones get one "
            "table per polygon (fromto_zones.csv). A border band ignores pixels near class "
            "boundaries, where two maps drawn apart disagree most.")

    def input_parameters(self) -> None:
        """CLASSES_A, CLASSES_B, PROBABILITY_A, PROBABILITY_B, LEGEND."""
        self.addParameter(QgsProcessingParameterRasterLayer(
            "CLASSES_A", self.tr("Class raster of the first date (its grid is the output "
                                 "grid)")))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "CLASSES_B", self.tr("Class raster of the second date")))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "PROBABILITY_A", self.tr("Probability raster of the first date (optional)"),
            optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "PROBABILITY_B", self.tr("Probability raster of the second date (optional)"),
            optional=True))
        self.addParameter(QgsProcessingParameterFile(
            "LEGEND", self.tr("Legend CSV (code,name[,colour])"),
            fileFilter="CSV (*.csv)", optional=True))

    def input_args(self, parameters: dict[str, Any], context: QgsProcessingContext,
                   feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """``classes_a``/``_b``, ``probability_a``/``_b`` (both or neither), ``legend``.

        Raises:
            QgsProcessingException: Only one probability raster given.
        """
        probs = [self.raster_path(parameters, name, context)
                 if parameters.get(name) not in (None, "") else None
                 for name in ("PROBABILITY_A", "PROBABILITY_B")]
        if bool(probs[0]) != bool(probs[1]):
            raise QgsProcessingException("Only one date has a probability raster: give both, "
                                         "or neither.")
        return {"classes_a": self.raster_path(parameters, "CLASSES_A", context),
                "classes_b": self.raster_path(parameters, "CLASSES_B", context),
                "probability_a": probs[0], "probability_b": probs[1],
                "legend": self.file(parameters, "LEGEND", context)}
