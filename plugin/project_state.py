"""The panel's state stored in the QGIS project, so a reopened project continues the work.

What is kept: the raster, band mapping, task preset and classes, label layer, last model,
last prediction (file paths, engine payload, probability and class layers), last
evaluation, Train's pseudo-label inputs (densify, the coarse map, its class field and
mapping), its pretrained encoder (file, frozen epochs, learning-rate factor), Evaluate's
class hierarchy (none, CORINE Land Cover or a CSV file) and Predict's "Also map level". It is one
versioned JSON document in the project (scope ``TerraSeg``, key ``panel_state``), written
when the project is saved and applied when it is read. Layers are found by layer id, then by
data source; file paths are stored as the project stores its own paths (relative to the
project file unless the project uses absolute paths).

Reading never raises for a bad document: unknown or malformed entries and documents of
another version are left out with a log line; a missing model or result file is a problem
the panel shows (:func:`apply_state` returns them), and the rest is restored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import QgsMapLayer, QgsProject, QgsRasterLayer, QgsVectorLayer

from . import presets, results
from .panel_evaluate import FILE_CHOICE, SHIPPED_LEVELS
from .presets import ClassDef

SCOPE = "TerraSeg"
KEY = "panel_state"
STATE_VERSION = 1
RESULT_PATHS = ("probability", "classes", "folder", "model")
EVALUATION_PATHS = ("folder", "metrics_file", "model")
ENCODER_PATHS = ("file",)
HIERARCHY_PATHS = ("file",)


@dataclass(frozen=True)
class LayerRef:
    """A project layer as stored: its id, data source and name."""

    id: str
    source: str
    name: str = ""

    @classmethod
    def of(cls, layer: QgsMapLayer | None) -> LayerRef | None:
        """The reference of ``layer`` (None for no layer)."""
        if layer is None:
            return None
        return cls(layer.id(), layer.source(), layer.name())

    def find(self, project: QgsProject, kind: type = QgsMapLayer) -> QgsMapLayer | None:
        """The layer in ``project``: by id, else the first of type ``kind`` with the source."""
        layer = project.mapLayer(self.id)
        if isinstance(layer, kind):
            return layer
        for candidate in project.mapLayers().values():
            if isinstance(candidate, kind) and candidate.source() == self.source:
                return candidate
        return None


@dataclass(frozen=True)
class PanelState:
    """What the panel restores from a project.

    Attributes:
        raster: The raster layer.
        bands: ``(band, role, include)`` per row of the band table.
        preset: Task preset name.
        classes: ``(name, colour)`` of the task's classes.
        label_layer: The label layer.
        model: Last model file (absolute).
        results: Last prediction: ``probability``, ``classes``, ``folder``, ``model``
            (absolute paths), ``result`` (engine payload), ``class_list`` and ``layers``
            (``[LayerRef, LayerRef]`` of the probability and class layers, as dicts).
        evaluation: Last evaluation (:attr:`~.dock.TerraSegDock.last_evaluation`).
        pseudo: Train's pseudo-label inputs: ``densify`` (bool), ``coarse`` (the coarse
            map's LayerRef as a dict, or None), ``class_field`` and ``class_map`` (text).
        encoder: Train's Pretrained encoder: ``file`` (absolute), ``freeze_epochs``,
            ``encoder_lr``, ``pretrain_epochs``
            (:meth:`~.panel_encoder.EncoderPanelMixin.encoder_state`).
        hierarchy: Evaluate's Class hierarchy and Predict's level map: ``kind`` (None,
            ``corine`` or ``file``), ``file`` (the CSV, absolute; None unless ``file``) and
            ``level`` (the level Predict also maps, or None).
    """

    raster: LayerRef | None = None
    bands: tuple[tuple[int, str, bool], ...] = ()
    preset: str | None = None
    classes: tuple[tuple[str, str], ...] = ()
    label_layer: LayerRef | None = None
    model: str | None = None
    results: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    pseudo: dict[str, Any] | None = None
    encoder: dict[str, Any] | None = None
    hierarchy: dict[str, Any] | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)
    """Entries left out while reading (log lines); not stored."""


def panel_state(panel: Any) -> PanelState:
    """The state of ``panel`` (a :class:`~.dock.TerraSegDock`) to store in the project."""
    res = None
    if panel.last_results:
        res = {k: panel.last_results.get(k) for k in (*RESULT_PATHS, "result", "class_list")}
        res["layers"] = [asdict(ref) if (ref := LayerRef.of(layer)) else None
                         for layer in panel.last_results.get("layers") or ()]
    evaluation = dict(panel.last_evaluation) if panel.last_evaluation else None
    return PanelState(
        raster=LayerRef.of(panel.raster_layer()),
        bands=tuple((int(b), str(r), bool(i)) for b, r, i in panel.band_rows()),
        preset=panel.preset_name() or None,
        classes=tuple((c.name, c.colour) for c in panel.classes()),
        label_layer=LayerRef.of(panel.label_layer()),
        model=panel.last_model,
        results=res,
        evaluation=evaluation,
        pseudo=_pseudo_inputs(panel),
        encoder=panel.encoder_state(),
        hierarchy=_hierarchy_choice(panel))


def _pseudo_inputs(panel: Any) -> dict[str, Any]:
    """Train's pseudo-label inputs (:mod:`.panel_pseudo`) as stored."""
    coarse = LayerRef.of(panel.coarse_layer())
    return {"densify": bool(panel.densify_check.isChecked()),
            "coarse": asdict(coarse) if coarse else None,
            "class_field": panel.coarse_field_combo.currentField() or "",
            "class_map": panel.coarse_map_edit.text().strip()}


def _hierarchy_choice(panel: Any) -> dict[str, Any]:
    """Evaluate's Class hierarchy and Predict's 'Also map level' as stored."""
    kind = panel.hierarchy_combo.currentData()
    file = panel.hierarchy_file_edit.text().strip() if kind == FILE_CHOICE else ""
    level = panel.level_spin.value() if panel.level_check.isChecked() else None
    return {"kind": kind, "file": file or None, "level": level}


# ----------------------------------------------------------------------------------------
# JSON in the project
# ----------------------------------------------------------------------------------------
def _map_paths(entry: dict[str, Any] | None, keys: tuple[str, ...], convert: Any) -> Any:
    if not isinstance(entry, dict):
        return entry
    out = dict(entry)
    for key in keys:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = convert(out[key])
    if isinstance(out.get("files"), list):
        out["files"] = [convert(p) if isinstance(p, str) and p else p for p in out["files"]]
    return out


def to_json(state: PanelState, project: QgsProject) -> str:
    """The versioned JSON document of ``state`` (paths as the project writes its own)."""
    write = project.writePath
    doc = {
        "version": STATE_VERSION,
        "raster": asdict(state.raster) if state.raster else None,
        "bands": [list(row) for row in state.bands],
        "preset": state.preset,
        "classes": [list(c) for c in state.classes],
        "label_layer": asdict(state.label_layer) if state.label_layer else None,
        "model": write(state.model) if state.model else None,
        "results": _map_paths(state.results, RESULT_PATHS, write),
        "evaluation": _map_paths(state.evaluation, EVALUATION_PATHS, write),
        "pseudo": state.pseudo,
        "encoder": _map_paths(state.encoder, ENCODER_PATHS, write),
        "hierarchy": _map_paths(state.hierarchy, HIERARCHY_PATHS, write),
    }
    return json.dumps(doc, default=str)


def _layer_ref(value: Any) -> LayerRef | None:
    if value is None:
        return None
    return LayerRef(str(value["id"]), str(value["source"]), str(value.get("name", "")))


def _bands(value: Any) -> tuple[tuple[int, str, bool], ...]:
    return tuple((int(b), str(r), bool(i)) for b, r, i in value)


def _classes(value: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(n), str(c)) for n, c in value)


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise TypeError(f"expected an object, got {type(value).__name__}")


def from_json(text: str, project: QgsProject) -> PanelState | None:
    """Read a stored document; None when there is none or it cannot be used.

    Entries that are unknown or malformed are left out and named in
    :attr:`PanelState.notes`; a document of another version, or not JSON, gives a state
    with only notes.
    """
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return PanelState(notes=(f"The TerraSeg state in this project is not JSON ({exc}); "
                                 "the panel starts empty.",))
    version = doc.get("version") if isinstance(doc, dict) else None
    if version != STATE_VERSION:
        return PanelState(notes=(f"The TerraSeg state in this project has version "
                                 f"{version!r}, this plugin reads version {STATE_VERSION}; "
                                 "it is ignored.",))
    read = project.readPath
    parsers = {
        "raster": _layer_ref, "bands": _bands, "preset": lambda v: None if v is None else str(v),
        "classes": _classes, "label_layer": _layer_ref,
        "model": lambda v: read(str(v)) if v else None,
        "results": lambda v: _map_paths(_dict_or_none(v), RESULT_PATHS, read),
        "evaluation": lambda v: _map_paths(_dict_or_none(v), EVALUATION_PATHS, read),
        "pseudo": _dict_or_none,
        "encoder": lambda v: _map_paths(_dict_or_none(v), ENCODER_PATHS, read),
        "hierarchy": lambda v: _map_paths(_dict_or_none(v), HIERARCHY_PATHS, read),
    }
    values: dict[str, Any] = {}
    notes = []
    for key, value in doc.items():
        if key == "version":
            continue
        if key not in parsers:
            notes.append(f"Unknown TerraSeg project entry '{key}' ignored.")
            continue
        try:
            values[key] = parsers[key](value)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            notes.append(f"TerraSeg project entry '{key}' is malformed ({exc}); ignored.")
    return PanelState(**values, notes=tuple(notes))


def write_state(project: QgsProject, state: PanelState) -> None:
    """Store ``state`` in ``project`` (written to disk with the project)."""
    project.writeEntry(SCOPE, KEY, to_json(state, project))


def read_state(project: QgsProject) -> PanelState | None:
    """The state stored in ``project``, or None when it holds none."""
    text, found = project.readEntry(SCOPE, KEY, "")
    return from_json(text, project) if found else None


# ----------------------------------------------------------------------------------------
# Applying a state to the panel
# ----------------------------------------------------------------------------------------
def apply_state(panel: Any, state: PanelState, project: QgsProject) -> list[str]:
    """Restore ``state`` in ``panel``; returns the problems to show (missing files, layers).

    Each part is restored on its own: a missing model leaves the raster, bands, classes,
    label layer, results and evaluation restored.
    """
    for note in state.notes:
        panel._log("warning", note)
    problems: list[str] = []
    if state.model:
        if Path(state.model).is_file():
            if panel.load_model(state.model) is None:
                problems.append(f"The project's model {state.model} cannot be read; load a "
                                "model with 'Load model…'.")
        else:
            problems.append(f"The project's model {state.model} is missing (moved or "
                            "deleted): load it again with 'Load model…' under Data & task.")
            panel.model_label.setText(f"{Path(state.model).name} (missing)")
            panel.model_label.setToolTip(state.model)
    _apply_task(panel, state)
    if state.raster is not None:
        raster = state.raster.find(project, QgsRasterLayer)
        if raster is None:
            problems.append(f"The project's raster '{state.raster.name}' "
                            f"({state.raster.source}) is no longer in the project.")
        else:
            panel.set_raster_layer(raster)
            _apply_bands(panel, state.bands)
    if state.label_layer is not None:
        labels = state.label_layer.find(project, QgsVectorLayer)
        if labels is None:
            problems.append(f"The project's label layer '{state.label_layer.name}' is no "
                            "longer in the project.")
        else:
            panel.set_label_layer(labels)
    if state.results:
        problems.extend(_apply_results(panel, state.results, project))
    if state.evaluation and isinstance(state.evaluation.get("metrics"), dict):
        panel.last_evaluation = state.evaluation
        panel.show_evaluation(state.evaluation)
        reference = project.mapLayer(str(state.evaluation.get("reference_layer_id", "")))
        if isinstance(reference, QgsVectorLayer):
            field = state.evaluation.get("class_field")
            panel.set_reference_layer(reference, field if isinstance(field, str) else None)
    if state.pseudo:
        problems.extend(_apply_pseudo(panel, state.pseudo, project))
    if state.encoder:
        problems.extend(panel.apply_encoder_state(state.encoder))
    if state.hierarchy:
        problems.extend(_apply_hierarchy(panel, state.hierarchy))
    panel._update_buttons()
    return problems


def _apply_pseudo(panel: Any, saved: dict[str, Any], project: QgsProject) -> list[str]:
    panel.densify_check.setChecked(bool(saved.get("densify")))
    if not saved.get("coarse"):
        return []
    try:
        ref = _layer_ref(saved["coarse"])
    except (KeyError, TypeError) as exc:
        panel._log("warning", f"The project's coarse map is malformed ({exc}); ignored.")
        return []
    layer = ref.find(project) if ref else None
    if layer is None:
        return [f"The project's coarse map '{ref.name}' ({ref.source}) is no longer in the "
                "project: choose it again under Train > Coarse map as labels."]
    field, class_map = saved.get("class_field"), saved.get("class_map")
    panel.set_coarse_map(layer, field if isinstance(field, str) else None,
                         class_map if isinstance(class_map, str) else "")
    return []


def _apply_hierarchy(panel: Any, saved: dict[str, Any]) -> list[str]:
    """Restore :func:`_hierarchy_choice`; a missing CSV is a problem and gives no hierarchy."""
    kind, file, level = saved.get("kind"), saved.get("file"), saved.get("level")
    problems = []
    if kind == FILE_CHOICE and isinstance(file, str) and file:
        if Path(file).is_file():
            panel.set_hierarchy(file)
        else:
            panel.hierarchy_file_edit.setText(file)  # kept for File…, not chosen
            panel.set_hierarchy(None)
            problems.append(f"The project's class hierarchy file {file} is missing (moved or "
                            "deleted): choose it again under Evaluate > Class hierarchy.")
    elif isinstance(kind, str) and kind in SHIPPED_LEVELS:
        panel.set_hierarchy(kind)
    else:
        if kind not in (None, FILE_CHOICE):
            panel._log("warning", f"Unknown class hierarchy '{kind}' in the project; ignored.")
        panel.set_hierarchy(None)
    valid_level = isinstance(level, int) and not isinstance(level, bool) and level >= 1
    panel.set_level_map(level if valid_level else None)
    return problems


def _apply_task(panel: Any, state: PanelState) -> None:
    if state.preset is None:
        return
    if state.preset not in presets.PRESETS:
        panel._log("warning", f"Unknown task '{state.preset}' in the project; ignored.")
        return
    if presets.PRESETS[state.preset].editable and state.classes:
        panel.set_classes([ClassDef(n, c) for n, c in state.classes], state.preset)
    else:
        panel.set_preset(state.preset)


def _apply_bands(panel: Any, bands: tuple[tuple[int, str, bool], ...]) -> None:
    if not bands:
        return
    count = len(panel.band_rows())
    if count != len(bands):
        panel._log("warning", f"The project's band mapping has {len(bands)} bands, the "
                              f"raster {count}; the bands are derived anew.")
        return
    for band, role, include in bands:
        panel.set_band_row(band, role=role, include=include)


def _apply_results(panel: Any, saved: dict[str, Any], project: QgsProject) -> list[str]:
    prob, cls = saved.get("probability"), saved.get("classes")
    if not (isinstance(prob, str) and isinstance(cls, str)):
        panel._log("warning", "The project's last results name no files; ignored.")
        return []
    missing = [p for p in (prob, cls) if not Path(p).is_file()]
    if missing:
        return [f"The last results are missing ({', '.join(missing)}): predict again."]
    refs = [_layer_ref(r) if isinstance(r, dict) else None for r in saved.get("layers") or ()]
    layers = tuple(ref.find(project, QgsRasterLayer) if ref else None for ref in refs)
    classes = saved.get("class_list") or panel.result_classes()
    if len(layers) != 2 or None in layers:
        try:
            layers = results.add_results(prob, cls, classes)
        except results.ResultLayerError as exc:
            return [f"The last results cannot be opened ({exc}): predict again."]
    panel.last_results = {"probability": prob, "classes": cls,
                          "folder": saved.get("folder") or str(Path(cls).parent),
                          "layers": layers, "result": saved.get("result") or {},
                          "model": saved.get("model"), "class_list": classes}
    panel.predict_summary.setText(f"Results in {panel.last_results['folder']} "
                                  "(restored with the project)")
    return []
