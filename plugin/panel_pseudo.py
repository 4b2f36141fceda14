"""Panel, Train section: pseudo-labels of a random forest (issue 11, seed 003).

Two ways to train on more than the drawn polygons:

- **Densify**: the forest is fitted on the label layer's few polygons and labels every
  pixel; the network trains on its pseudo-labels, the polygons overriding them where they
  lie (``pseudo_labels`` in the train job).
- **A coarse map as labels**: a label raster on any grid (e.g. a 30 m land-cover map) or a
  polygon layer (e.g. OpenStreetMap land use) is what the forest learns from
  (``pseudo_source``); 'Show pseudo-labels' runs the engine's ``pseudo-label`` job and adds
  the forest's classes to the map, and the analyst corrects them by drawing polygons in the
  label layer. Train then sends the coarse map as the source and the label layer as the
  corrections (they win where they lie); an empty label layer sends the coarse map as the
  labels too, and the engine then overrides nothing.

The class map of the coarse map has the syntax of Data & task's (``source=class`` pairs,
``*`` for every other value). Left empty it is, for a raster, the class ids in the order of
the task's classes (``1=sealed,2=unsealed``, as TerraSeg's own class rasters are
numbered) and, for polygons, the task's class names.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsFeatureRequest,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QCheckBox, QFormLayout, QLabel, QLineEdit, QPushButton, QWidget

from . import jobs, label_layer, presets, results
from .panel_common import TITLE, group_box, layer_filter, unique_path
from .presets import ClassDef

DENSIFY_TEXT = "Densify labels with a random forest first"
PREVIEW_BUTTON_TEXT = "Show pseudo-labels"
PREVIEW_LAYER_NAME = "Pseudo-labels (random forest)"
PREVIEW_FOLDER = "pseudo_labels"  # beside 'models' and 'quick_maps'
CLASS_FIELD_GUESSES = ("class", "klass", "class_name", "label", "classname")
NEXT_STEP = ("Correct the pseudo-labels by drawing polygons in the label layer, then Train "
             "(the polygons win where they lie).")

#: The panel's words for the train job's pseudo-label fields (engine flags without dashes),
#: in the form of :data:`.worker_errors.PANEL_CONTROLS`, so engine messages can name them.
def positional_class_map(classes: list[ClassDef]) -> str:
    """``1=first,2=second,...``: raster values as the task's class ids (1..K, in order)."""
    return ",".join(f"{i}={c.name}" for i, c in enumerate(classes, start=1))


def is_polygon_layer(layer: QgsMapLayer | None) -> bool:
    """Whether ``layer`` is a vector layer of polygons."""
    return (isinstance(layer, QgsVectorLayer)
            and layer.geometryType() == QgsWkbTypes.PolygonGeometry)


def pseudo_summary(result: dict[str, Any], lead: str = "Pseudo-labels") -> str:
    """What the panel says of the forest's pseudo-labels; "" when there are none.

    Args:
        result: The ``pseudo-label`` job's result, or a train result's ``pseudo_labels``.
        lead: The words it starts with.
    """
    if not result:
        return ""
    shares = result.get("class_shares") or {}
    share_text = ", ".join(f"{k} {100 * float(v):.1f} %" for k, v in shares.items())
    sampled = result.get("sampled_pixels") or {}
    fitted = sum(int(v) for v in sampled.values()) if isinstance(sampled, dict) else None
    accuracy = result.get("agreement_accuracy")
    if accuracy is None:
        accuracy = (result.get("agreement") or {}).get("accuracy")
    text = (f"{lead} of a random forest ({result.get('trees')} trees, "
            f"{result.get('strategy')} sample" + (f" of {fitted} px" if fitted else "") + ")")
    if share_text:
        text += f": {share_text}"
    if isinstance(accuracy, int | float):
        text += f"; agreement with their source labels {accuracy:.3f}"
    folder = result.get("folder") or (Path(str(result["classes"])).parent
                                      if result.get("classes") else None)
    return text + (f" (files in {folder})" if folder else "")


class PseudoPanelMixin:
    """The pseudo-label controls of the Train section and the 'Show pseudo-labels' preview.

    Mixed into :class:`~.dock.TerraSegDock`; relies on the panel's shared state and helpers
    (``_log``, ``_refuse``, ``_start_job``, ``models_dir``, ``classes``, ``bands_spec``, ...).
    """

    def _build_densify_check(self) -> QCheckBox:
        self.densify_check = QCheckBox(DENSIFY_TEXT)
        self.densify_check.setToolTip(
            "For few polygons: a random forest of single pixels is fitted on them and labels "
            "every pixel; the network trains on these pseudo-labels, your polygons winning "
            "where they lie. The pseudo-labels are kept next to the model (NAME.pseudo).")
        self.densify_check.setProperty("terraseg_help", self.densify_check.toolTip())
        return self.densify_check

    def _build_pseudo_box(self) -> QWidget:
        box = group_box("Coarse map as labels", "TerraSegPseudoBox", collapsed=True)
        form = QFormLayout(box)
        intro = QLabel("A label raster (any grid) or polygons the forest learns from; draw "
                       "corrections in the label layer.")
        intro.setWordWrap(True)
        form.addRow(intro)
        self.coarse_combo = QgsMapLayerComboBox()
        self.coarse_combo.setFilters(layer_filter("RasterLayer") | layer_filter("PolygonLayer"))
        self.coarse_combo.setAllowEmptyLayer(True)
        self.coarse_combo.setLayer(None)
        self.coarse_combo.setToolTip(
            "Coarse labels: a class raster on any grid (e.g. a land-cover map) or a polygon "
            "layer. Empty: train on the label layer only.")
        form.addRow("Coarse map", self.coarse_combo)
        self.coarse_field_combo = QgsFieldComboBox()
        form.addRow("Class field", self.coarse_field_combo)
        self.coarse_map_edit = QLineEdit()
        self.coarse_map_edit.setToolTip(
            "Maps the coarse map's classes (raster values or names) to the task's classes: "
            "source=class pairs, '*' for every other one, as the Classes' mapping.")
        form.addRow("Class mapping", self.coarse_map_edit)
        self.pseudo_preview_button = QPushButton(PREVIEW_BUTTON_TEXT)
        self.pseudo_preview_button.setToolTip(
            "Fits the random forest on the coarse map and adds its classes over the raster "
            f"to the map ('{PREVIEW_LAYER_NAME}'), to check and correct before training.")
        self.pseudo_preview_button.clicked.connect(lambda: self.show_pseudo_labels())
        form.addRow("", self.pseudo_preview_button)
        self.pseudo_summary = QLabel()
        self.pseudo_summary.setWordWrap(True)
        self.pseudo_summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.pseudo_summary)
        self.last_pseudo: dict[str, Any] | None = None
        self.coarse_combo.layerChanged.connect(self._on_coarse_changed)
        self._on_coarse_changed(None)
        return box

    # ------------------------------------------------------------------------------------
    # Inputs
    # ------------------------------------------------------------------------------------
    def coarse_layer(self) -> QgsMapLayer | None:
        """The coarse map chosen (a raster or polygon layer), or None."""
        layer = self.coarse_combo.currentLayer()
        return layer if isinstance(layer, QgsRasterLayer) or is_polygon_layer(layer) else None

    def set_coarse_map(self, layer: QgsMapLayer | None, class_field: str | None = None,
                       class_map: str = "") -> None:
        """Choose the coarse map, its class field (polygons) and class mapping."""
        self.coarse_combo.setLayer(layer)
        self._on_coarse_changed(layer)
        if class_field:
            self.coarse_field_combo.setField(class_field)
        self.coarse_map_edit.setText(class_map)

    def _on_coarse_changed(self, layer: Any) -> None:
        polygons = is_polygon_layer(layer)
        self.coarse_field_combo.setLayer(layer if polygons else None)
        self.coarse_field_combo.setEnabled(polygons)
        self.coarse_field_combo.setToolTip(
            "Attribute of the coarse polygons holding the class." if polygons else
            "Disabled: only a polygon coarse map has a class field (a raster's values are "
            "its classes).")
        if polygons:
            names = {f.name().lower(): f.name() for f in layer.fields()}
            guess = next((names[g] for g in CLASS_FIELD_GUESSES if g in names), None)
            if guess:
                self.coarse_field_combo.setField(guess)
        self._update_coarse_placeholder()
        if hasattr(self, "status_label"):  # (not while the panel is being built)
            self._update_buttons()

    def _update_coarse_placeholder(self) -> None:
        layer = self.coarse_combo.currentLayer()
        if isinstance(layer, QgsRasterLayer):
            text = f"empty: {positional_class_map(self.classes())}"
        elif layer is not None:
            text = "empty: the names of the task's classes"
        else:
            text = "optional, e.g. 21=sealed,22=sealed,*=unsealed"
        self.coarse_map_edit.setPlaceholderText(text)

    def coarse_class_map(self) -> str:
        """The coarse map's class mapping: the box's text, else the default for its kind."""
        text = self.coarse_map_edit.text().strip()
        if text:
            return text
        classes = self.classes()
        if isinstance(self.coarse_layer(), QgsRasterLayer):
            return positional_class_map(classes)
        return presets.class_map(classes)

    def coarse_source(self) -> tuple[str, str | None]:
        """(path of the coarse map for the engine, its class field or None for a raster).

        Raises:
            ValueError: No coarse map, a raster that is not a file, polygons without a
                class field.
            OSError: Polygons that are not a file could not be written to a GeoPackage.
        """
        layer = self.coarse_layer()
        if layer is None:
            raise ValueError("Choose a coarse map (a class raster or polygons) under Train > "
                             "Coarse map as labels first.")
        if isinstance(layer, QgsRasterLayer):
            return jobs.raster_layer_path(layer), None
        field = self.coarse_field_combo.currentField()
        if not field:
            raise ValueError(f"Choose the class field of the coarse map '{layer.name()}'.")
        return jobs.vector_layer_path(layer, self._temp_folder(), layer_spec=True), field

    def pseudo_train_args(self, labels: str, has_labels: bool) -> dict[str, Any]:
        """The train job's pseudo-label fields (and ``labels``), {} without pseudo-labels.

        Args:
            labels: The label layer's path for the engine (the analyst's polygons).
            has_labels: Whether it holds polygons; without any, the coarse map is the
                labels too (the engine then overrides nothing).

        Raises:
            ValueError, OSError: See :meth:`coarse_source`.
        """
        if self.coarse_layer() is None:
            return {"pseudo_labels": True} if self.densify_check.isChecked() else {}
        source, field = self.coarse_source()
        return {"labels": labels if has_labels else source, "pseudo_labels": True,
                "pseudo_source": source, "pseudo_class_field": field,
                "pseudo_class_map": self.coarse_class_map()}

    def pseudo_log_note(self, pseudo: dict[str, Any]) -> str:
        """The training log line's note on :meth:`pseudo_train_args`' fields ("" without)."""
        if not pseudo:
            return ""
        coarse = self.coarse_layer()
        source = (f"the coarse map {coarse.name()}" if pseudo.get("pseudo_source") and coarse
                  else "the label layer")
        note = f"; pseudo-labels of a random forest fitted on {source}"
        if pseudo.get("pseudo_source") and pseudo.get("labels") == pseudo["pseudo_source"]:
            note += " (the label layer is empty: no corrections)"
        return note

    # ------------------------------------------------------------------------------------
    # Buttons
    # ------------------------------------------------------------------------------------
    def _update_pseudo_controls(self, busy: bool, has_raster: bool) -> None:
        """Enable the preview and the densify box as the inputs allow (dock._update_buttons)."""
        coarse = self.coarse_layer() is not None
        self.pseudo_preview_button.setEnabled(not busy and has_raster and coarse)
        self.densify_check.setEnabled(not coarse)
        self.densify_check.setToolTip(
            "Disabled: a coarse map is chosen under 'Coarse map as labels', so Train always "
            "fits the forest on it first." if coarse else
            self.densify_check.property("terraseg_help"))
        self._update_coarse_placeholder()

    def button_blockers(self) -> dict[str, list[str]]:
        """The panel's blockers (:class:`~.panel_jobs.JobsPanelMixin`) and the preview's."""
        blockers = super().button_blockers()  # type: ignore[misc]
        busy = self.busy_blockers()  # type: ignore[attr-defined]
        raster = self.raster_blockers()  # type: ignore[attr-defined]
        coarse = [] if self.coarse_layer() is not None else [
            "Choose a Coarse map (a class raster or polygons) above."]
        blockers["pseudo_preview_button"] = busy + raster + coarse
        return blockers

    # ------------------------------------------------------------------------------------
    # Show pseudo-labels
    # ------------------------------------------------------------------------------------
    def pseudo_preview_dir(self) -> Path | None:
        """A new folder ``pseudo_labels/<time>`` beside the models folder; None before saving."""
        models = self.models_dir()
        if models is None:
            return None
        stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H%M%S")
        return unique_path(models.parent / PREVIEW_FOLDER / stamp)

    def show_pseudo_labels(self, wait: bool = False, timeout_s: float = 600.0) -> bool:
        """Run the forest on the coarse map and add its classes to the map.

        The raster, bands and nodata value are Data & task's; the classes go to a new
        folder ``pseudo_labels/<time>`` next to the models folder.

        Args:
            wait: Block (running the Qt event loop) until the job has ended.
            timeout_s: Longest wait.

        Returns:
            True when the job started (with ``wait``: when it also succeeded).
        """
        title = PREVIEW_BUTTON_TEXT
        raster = self.raster_layer()
        if raster is None:
            return self._refuse(title, "Choose a raster layer first.")
        problem = presets.validate_classes(self.classes())
        if problem:
            return self._refuse(title, problem)
        out_dir = self.pseudo_preview_dir()
        if out_dir is None:
            return self._refuse(title, "Save the project (or the label layer) first: "
                                f"pseudo-labels are kept in a '{PREVIEW_FOLDER}' folder next "
                                "to it.")
        try:
            bands, raster_path = self.bands_spec(), jobs.raster_layer_path(raster)
            nodata = self.nodata_value()
            source, field = self.coarse_source()
        except (ValueError, OSError) as exc:
            return self._refuse(title, str(exc))
        job = jobs.pseudo_label_job(raster=raster_path, labels=source, out_dir=str(out_dir),
                                    class_field=field, class_map=self.coarse_class_map(),
                                    bands=bands, nodata=nodata)
        self._log("info", f"Pseudo-labels of {raster.name()} from the coarse map "
                          f"{self.coarse_layer().name()} (random forest; bands {bands}) into "
                          f"{out_dir}")
        return self._start_job("pseudo-label", job, self._on_pseudo_result, wait, timeout_s)

    def _on_pseudo_result(self, result: dict[str, Any]) -> None:
        colours = {c.name.lower(): c.colour for c in self.classes()}
        classes = [{**c, "colour": colours.get(str(c["name"]).lower(), c.get("colour"))
                    or "#808080"} for c in result.get("class_list") or []]
        project = QgsProject.instance()
        old = (self.last_pseudo or {}).get("layer_id")
        if old and project.mapLayer(old) is not None:
            project.removeMapLayer(old)  # one preview at a time: the newest
        layer = QgsRasterLayer(str(result["classes"]), PREVIEW_LAYER_NAME, "gdal")
        if not layer.isValid():
            raise results.ResultLayerError(f"Cannot open {result['classes']}.")
        results.style_classes(layer, classes)
        project.addMapLayer(layer, False)
        results.results_group(project, self._label_layer).insertLayer(0, layer)
        self.last_pseudo = {"classes": str(result["classes"]),
                            "probability": str(result.get("probability") or ""),
                            "folder": str(Path(str(result["classes"])).parent),
                            "layer_id": layer.id(), "class_list": classes, "result": result}
        text = pseudo_summary(result)
        self.pseudo_summary.setText(f"{text}\n{NEXT_STEP}")
        self._log("info", text)
        self.iface.messageBar().pushMessage(
            TITLE, f"'{PREVIEW_LAYER_NAME}' added. {NEXT_STEP}", Qgis.MessageLevel.Success, 8)

    def pseudo_preview_layer(self) -> QgsRasterLayer | None:
        """The layer of the last 'Show pseudo-labels', while it is in the project."""
        layer_id = (self.last_pseudo or {}).get("layer_id")
        layer = QgsProject.instance().mapLayer(layer_id) if layer_id else None
        return layer if isinstance(layer, QgsRasterLayer) else None


def has_polygons(layer: QgsVectorLayer | None) -> bool:
    """Whether the label layer holds a feature.

    Read, not counted: ``featureCount()`` is -1 for a new GeoPackage layer.
    """
    if layer is None or not label_layer.is_label_layer(layer):
        return False
    request = QgsFeatureRequest().setLimit(1).setNoAttributes()
    request.setFlags(QgsFeatureRequest.NoGeometry)
    return next(iter(layer.getFeatures(request)), None) is not None
