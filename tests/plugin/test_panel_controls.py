"""Every input control of the panel reaches the job it names, and no other (issue 10).

Predict's "Minimum region" once reached no job: the predict job carried Export's "Minimum
area" instead, because both sections stored their spin box under the same attribute. This
contract test sets each control through its widget, as an analyst would (``setValue``,
``setCurrentText``, ``setChecked``, a layer picked in a layer box, a table cell edited),
clicks every action button of the panel with the worker replaced by a recorder, and checks
the job JSON: the value is in the right field of the jobs the control names, and every
other job is exactly what it was before the control was touched.

One row of :data:`CONTROLS` per control. A second test enumerates the panel's input widgets
(spin boxes, combo boxes, check boxes, radio buttons, line edits) and fails for any that is
neither in the table nor in :data:`EXCLUDED` with the reason it reaches no job - a new
control is one row here. The panel gives every widget attribute its name as Qt object name
(``panel_common.name_widgets``), so rows name widgets as the panel's code does.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from helpers.paths import ROOT
from helpers.qgis_support import needs_engine, pixel_box
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer, QgsVectorLayerUtils
from qgis.PyQt.QtCore import QObject, Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QLineEdit,
    QRadioButton,
    QWidget,
)

pytestmark = needs_engine  # the scene raster is written by the engine's Python

LEGACY_MODEL = ROOT / "tests" / "data" / "legacy_v0_1" / "legacy_patch.tsm"  # 4 bands, 2 classes
ABSENT = object()
"""Expected value: the key is not in the job."""
# job fields that change on every run (time-stamped names, temporary copies of layers)
VOLATILE = {"out", "out_dir", "extent_layer", "zones"}
# the panel's action buttons and the job kind each one starts; 'review' is not among them:
# it sends Train's settings (so every Train row changes it too, by design) plus its own
# folds, ranking and length, whose rows name it
ACTIONS = ("train", "predict", "vectorise", "areas", "areas_zones", "evaluate", "quickmap",
           "pseudo-label", "pretrain", "change")
INPUT_TYPES = (QAbstractSpinBox, QComboBox, QCheckBox, QRadioButton, QLineEdit)

# Input widgets that reach no job, each with the reason.
EXCLUDED = {
    "debug_check": "Log: shows the engine's debug lines in the panel's log; no engine option",
    "change_from_combo": "Change: the from class that Add writes into Transitions of interest "
                         "(whose row checks the job)",
    "change_to_combo": "Change: the to class that Add writes into Transitions of interest",
}


# ----------------------------------------------------------------------------------------
# how a user sets a control
# ----------------------------------------------------------------------------------------
def spin(value: float) -> Callable[[QWidget, Any], None]:
    return lambda w, _ctx: w.setValue(value)


def check(on: bool) -> Callable[[QWidget, Any], None]:
    return lambda w, _ctx: w.setChecked(on)


def text(value: str) -> Callable[[QWidget, Any], None]:
    return lambda w, _ctx: w.setCurrentText(value) if isinstance(w, QComboBox) else (
        w.setText(value))


def pick_layer(name: str) -> Callable[[QWidget, Any], None]:
    """Choose the context's layer ``name`` in a layer box."""
    return lambda w, ctx: w.setLayer(getattr(ctx, name))


def pick_field(name: str) -> Callable[[QWidget, Any], None]:
    return lambda w, _ctx: w.setField(name)


def cell(row: int, col: int, value: str) -> Callable[[QWidget, Any], None]:
    """Type ``value`` into a table cell."""
    return lambda w, _ctx: w.item(row, col).setText(value)


# ----------------------------------------------------------------------------------------
# expected values
# ----------------------------------------------------------------------------------------
def path_of(name: str) -> Callable[[Any, Any], bool]:
    """The job names the file of the context's layer ``name``."""
    return lambda value, ctx: str(value).split("|")[0] == str(getattr(ctx, name + "_path"))


def copy_of(combo: str) -> Callable[[Any, Any], bool]:
    """The job names a GeoPackage copy of the layer chosen in the panel's ``combo``."""
    def test(value: Any, ctx: Any) -> bool:
        chosen = getattr(ctx.dock, combo).currentLayer()
        copy = QgsVectorLayer(str(value), "copy", "ogr")
        return (copy.isValid() and chosen is not None
                and copy.featureCount() == chosen.featureCount()
                and set(chosen.fields().names()) - {"fid"} <= set(copy.fields().names()))
    return test


def canvas_window(value: Any, ctx: Any) -> bool:
    return value == list(ctx.dock.canvas_window(ctx.dock.raster_layer()))


def slope_of(name: str) -> Callable[[Any, Any], bool]:
    return lambda value, ctx: value == f"slope={getattr(ctx, name + '_path')}"


@dataclass(frozen=True)
class Control:
    """One input control: how to set it and what the jobs must then carry.

    Attributes:
        widget: The widget's object name (its attribute name in the panel).
        set: Sets a non-default value through the widget, as a user would.
        expect: Per job kind, JSON key -> value, :data:`ABSENT`, or a predicate
            ``(value, ctx) -> bool``; :data:`ABSENT` for a kind: no such job is sent any
            more. Jobs of kinds not named here must not change.
        prepare: A step before the baseline (another control the row needs).
        why: Why the row looks as it does, when it is not obvious.
    """

    widget: str
    set: Callable[[QWidget, Any], None]
    expect: dict[str, dict[str, Any]]
    prepare: Callable[[Any], None] | None = None
    why: str = ""


NODATA_JOBS = ("train", "predict", "evaluate", "quickmap", "pseudo-label")
PIXEL_JOBS = ("train", "predict", "evaluate", "quickmap", "pseudo-label")  # raster and bands
LANDSLIDE_MAP = "landslide=landslide,no landslide=no landslide"

# Rows run in this order on one panel; a row's baseline is the jobs just before it.
CONTROLS = (
    # Train (fine-tuning takes the last model's architecture, so 'From scratch' comes first)
    Control("scratch_check", check(True), {"train": {"init_model": ABSENT}}),
    Control("epochs_spin", spin(7), {"train": {"epochs": 7}}),
    Control("patch_spin", spin(31), {"train": {"patch_size": 31}}),
    Control("block_spin", spin(9), {"train": {"block_size": 9}},
            why="not 3: the scene's 10 m pixels start the panel at the few-polygon recipe"),
    Control("blocks_edit", text("1,1,1"), {"train": {"blocks": "1,1,1"}}),
    Control("planes_edit", text("2,4,8"), {"train": {"planes": "2,4,8"}}),
    Control("patience_spin", spin(4), {"train": {"patience": 4}}),
    Control("lr_spin", spin(0.005), {"train": {"lr": 0.005}}),
    Control("batch_spin", spin(8), {"train": {"batch_size": 8}}),
    Control("samples_spin", spin(300), {"train": {"samples_per_epoch": 300}}),
    Control("val_spin", spin(0.3), {"train": {"val_fraction": 0.3},
                                    "quickmap": {"val_fraction": 0.3}}),
    Control("augment_edit", text("flip"), {"train": {"augment": "flip"}}),
    Control("accelerator_combo", text("cpu"), {"train": {"accelerator": "cpu"}}),
    Control("cache_edit", lambda w, ctx: w.setText(str(ctx.tmp / "cache")),
            {"train": {"cache_dir": lambda v, ctx: v == str(ctx.tmp / "cache")}}),
    Control("arch_combo", text("unet_small"), {"train": {"model": "unet_small",
                                                         "tile_size": 64}}),
    Control("tile_spin", spin(96), {"train": {"tile_size": 96}}),
    # Train > Recipe (issue 11): fills the widgets; what has no widget rides with the recipe
    Control("recipe_combo", text("Coarse labels, U-Net ResNet-50 (study 003)"),
            {"train": {"model": "unet_resnet50", "tile_size": 128, "epochs": 40,
                       "patience": 40, "lr": 1e-3, "augment": "flip", "batch_size": 16,
                       "samples_per_epoch": 512, "optimizer": "adam", "weight_decay": 0.0,
                       "loss": "dice", "stride": ABSENT},
             "pretrain": {"encoder": "resnet50", "task": "ssl", "epochs": 30,
                          "base_width": ABSENT, "accelerator": "cpu",
                          "bands": "red=1,green=2,blue=3,nir=4",
                          "raster": lambda v, ctx: v == [ctx.dock.raster_layer().source()],
                          "out": lambda v, ctx: "encoders" in v and v.endswith(".tse")}},
            why="a ResNet network: 'Pretrain on this raster' runs from now on (issue 12)"),
    # Train > Pretrained encoder (issue 12): sent while the run starts anew ('From scratch')
    Control("pretrain_epochs_spin", spin(3), {"pretrain": {"epochs": 3}}),
    Control("encoder_edit", lambda w, ctx: (ctx.tmp / "scene.tse").write_bytes(b"tse") and (
        w.setText(str(ctx.tmp / "scene.tse"))),
            {"train": {"encoder": lambda v, ctx: v == str(ctx.tmp / "scene.tse"),
                       "freeze_epochs": 5, "encoder_lr": 0.1}},
            why="a file that exists: a missing one is refused before any job"),
    Control("freeze_spin", spin(8), {"train": {"freeze_epochs": 8}}),
    Control("encoder_lr_spin", spin(0.5), {"train": {"encoder_lr": 0.5}}),
    Control("recipe_combo", text("Few polygons, 10-30 m imagery (5 px context)"),
            {"train": {"model": "patch_cnn", "patch_size": 7, "block_size": 3, "stride": 1,
                       "planes": "16", "blocks": "1", "epochs": 50, "patience": 10,
                       "batch_size": 128, "samples_per_epoch": 2048, "tile_size": ABSENT,
                       "optimizer": ABSENT, "weight_decay": ABSENT, "loss": ABSENT,
                       "encoder": ABSENT, "freeze_epochs": ABSENT, "encoder_lr": ABSENT},
             "pretrain": ABSENT},
            why="the second recipe row: every value the first one set changes back; the "
                "patch CNN has no ResNet encoder, so the encoder group is off"),
    Control("stride_spin", spin(2), {"train": {"stride": 2}}),
    # Train > pseudo-labels (issue 11); 'Show pseudo-labels' runs once a coarse map is chosen
    Control("densify_check", check(True), {"train": {"pseudo_labels": True}}),
    Control("coarse_combo", pick_layer("coarse"),
            {"train": {"pseudo_labels": True, "pseudo_source": path_of("coarse"),
                       "pseudo_class_field": ABSENT, "pseudo_class_map": "1=sealed,2=unsealed",
                       "labels": path_of("labels")},
             "pseudo-label": {"labels": path_of("coarse"), "class_field": ABSENT,
                              "class_map": "1=sealed,2=unsealed", "bands": "red=1,green=2,"
                              "blue=3,nir=4", "out_dir": lambda v, ctx: "pseudo_labels" in v}},
            why="a class raster: its values are the task's class ids unless mapped; the label "
                "layer has polygons, so they are the corrections"),
    Control("coarse_map_edit", text("3=sealed,*=unsealed"),
            {"train": {"pseudo_class_map": "3=sealed,*=unsealed"},
             "pseudo-label": {"class_map": "3=sealed,*=unsealed"}}),
    Control("coarse_field_combo", pick_field("cat"),
            {"train": {"pseudo_class_field": "cat"}, "pseudo-label": {"class_field": "cat"}},
            prepare=lambda ctx: ctx.dock.coarse_combo.setLayer(ctx.scene_labels),
            why="polygons: the field box is enabled and starts at a guessed field (klass)"),
    # Terrain inputs (the model has none, so prediction takes none)
    Control("dem_combo", pick_layer("dem"), {"train": {"dem": path_of("dem")}}),
    Control("slope_from_dem_check", check(True), {"train": {"slope_from_dem": True}}),
    Control("slope_combo", pick_layer("slope"), {"train": {"extra_raster": slope_of("slope")}},
            prepare=lambda ctx: ctx.dock.slope_from_dem_check.setChecked(False),
            why="a slope raster and a derived slope exclude each other"),
    # Predict (Evaluate applies Predict's threshold too)
    Control("threshold_check", check(True), {"predict": {"threshold": 0.5},
                                             "evaluate": {"threshold": 0.5}}),
    Control("threshold_spin", spin(0.35), {"predict": {"threshold": 0.35},
                                           "evaluate": {"threshold": 0.35}}),
    Control("opening_spin", spin(2), {"predict": {"opening": 2}}),
    Control("closing_spin", spin(3), {"predict": {"closing": 3}}),
    Control("min_region_spin", spin(500), {"predict": {"min_area": 500.0}},
            why="issue 10: once ignored, the job carried Export's Minimum area"),
    Control("area_whole_radio", check(True), {"predict": {"window": ABSENT}}),
    Control("area_canvas_radio", check(True), {"predict": {"window": canvas_window}}),
    Control("area_layer_radio", check(True),
            {"predict": {"window": ABSENT, "extent_layer": copy_of("extent_combo")}}),
    Control("extent_combo", pick_layer("labels"),
            {"predict": {"extent_layer": copy_of("extent_combo")}},
            prepare=lambda ctx: ctx.dock.extent_combo.setLayer(ctx.scene_labels),
            why="the box starts at the first vector layer; the row picks another one"),
    # Export
    Control("export_min_area_spin", spin(250), {"vectorise": {"min_area": 250.0}}),
    Control("zones_combo", pick_layer("scene_labels"),
            {"areas_zones": {"zones": copy_of("zones_combo")}}),
    Control("zone_field_combo", pick_field("cat"), {"areas_zones": {"zone_field": "cat"}}),
    # Evaluate
    Control("reference_combo", pick_layer("scene_labels"),
            {"evaluate": {"reference": path_of("scene_labels")}}),
    Control("reference_field_combo", pick_field("cat"), {"evaluate": {"class_field": "cat"}}),
    Control("reference_map_edit", text("1=sealed,*=unsealed"),
            {"evaluate": {"class_map": "1=sealed,*=unsealed"}}),
    # Class hierarchy (issue 12): Evaluate scores every level; Predict maps one when ticked
    Control("hierarchy_combo", text("CORINE Land Cover"), {"evaluate": {"hierarchy": "corine"}},
            why="Predict follows only with 'Also map level' ticked"),
    Control("level_check", check(True), {"predict": {"hierarchy": "corine", "level": 1}}),
    Control("level_spin", spin(3), {"predict": {"level": 3}}),
    Control("hierarchy_file_edit", lambda w, ctx: (
        (ctx.tmp / "levels.csv").write_text("code,level1,level2\nsealed,s,sealed\n"),
        w.setText(str(ctx.tmp / "levels.csv")), ctx.dock.hierarchy_combo.setCurrentText(
            "File…")),
            {"evaluate": {"hierarchy": lambda v, ctx: v == str(ctx.tmp / "levels.csv")},
             "predict": {"hierarchy": lambda v, ctx: v == str(ctx.tmp / "levels.csv"),
                         "level": 2}},
            why="the file's row shows for File…; the level box follows its 2 levels"),
    # Review labels (issue 12): Train's settings plus its own folds, ranking and length
    Control("review_folds_spin", spin(3), {"review": {"k": 3}}),
    Control("review_ranking_combo", text("cleanlab"), {"review": {"ranking": "cleanlab"}}),
    Control("review_top_spin", spin(20), {"review": {"top": 20}}),
    Control("review_scorer_combo", text("Random forests (seconds)"),
            {"review": {"scorer": "forest"}}),
    # Change (issue 13): the last model predicts Data & task's raster and the second date,
    # then two class layers are compared instead
    Control("change_raster_combo", pick_layer("raster2"),
            {"change": {"model": lambda v, ctx: v == ctx.dock.last_model,
                        "raster_a": lambda v, ctx: v == ctx.dock.raster_layer().source(),
                        "raster_b": path_of("raster2"), "bands": "red=1,green=2,blue=3,nir=4",
                        "max_shift": 1.0, "border": 0, "correct_shift": ABSENT,
                        "transition": ABSENT, "classes_a": ABSENT}},
            why="no second date, no change job: this row starts it"),
    Control("change_max_shift_spin", spin(2.5), {"change": {"max_shift": 2.5}}),
    Control("change_correct_shift_check", check(True), {"change": {"correct_shift": True}}),
    Control("change_border_spin", spin(2), {"change": {"border": 2}}),
    Control("change_transitions_edit", text("sealed=unsealed; *=sealed"),
            {"change": {"transition": ["sealed=unsealed", "*=sealed"]}}),
    Control("change_classes_a_combo", pick_layer("coarse"), {},
            why="unused while the last model predicts both dates"),
    Control("change_classes_b_combo", pick_layer("dem"), {}),
    Control("change_source_combo", text("Two class layers"),
            {"change": {"classes_a": path_of("coarse"), "classes_b": path_of("dem"),
                        "model": ABSENT, "raster_a": ABSENT, "raster_b": ABSENT,
                        "bands": ABSENT, "max_shift": 2.5, "border": 2}},
            why="from here on the change job ignores Data & task's raster and bands"),
    # Data & task, Labels
    Control("nodata_edit", text("7"), {kind: {"nodata": 7.0} for kind in NODATA_JOBS}),
    Control("band_table", cell(3, 3, "nir_b"),
            {kind: {"bands": "red=1,green=2,blue=3,nir_b=4"} for kind in PIXEL_JOBS}),
    Control("raster_combo", pick_layer("raster2"),
            {kind: {"raster": path_of("raster2")} for kind in PIXEL_JOBS}),
    Control("label_combo", pick_layer("labels2"), {kind: {"labels": path_of("labels2")}
                                                   for kind in ("train", "quickmap")}),
    Control("preset_combo", text("Landslides"),
            {"train": {"class_map": LANDSLIDE_MAP, "model": "unet_small", "tile_size": 64},
             "quickmap": {"class_map": LANDSLIDE_MAP}}),
    Control("class_table", cell(1, 0, "sealed"),
            {kind: {"class_map": "water=water,sealed=sealed,agriculture=agriculture,"
                                 "built-up=built-up"} for kind in ("train", "quickmap")},
            prepare=lambda ctx: ctx.dock.preset_combo.setCurrentText("Land cover"),
            why="only Land cover's classes are editable; 'water' and 'sealed' are labelled"),
)


# ----------------------------------------------------------------------------------------
# the panel and its recorded jobs
# ----------------------------------------------------------------------------------------
class RecordingWorker(QObject):
    """Stands in for the panel's WorkerJob: keeps the job dicts, starts no process.

    Every job ends at once without a result, except the overall area table, which reports
    an empty one so that the panel starts its zone job as after a real run.
    """

    progress = pyqtSignal(float, str, object, str)
    log = pyqtSignal(str, str)
    metrics = pyqtSignal(int, object)
    result = pyqtSignal(object)
    error = pyqtSignal(str, str, str)
    finished = pyqtSignal(int)
    jobs: dict[str, dict[str, Any]] = {}

    def __init__(self, engine: Any = None, parent: QObject | None = None) -> None:
        super().__init__(parent)

    def start(self, job: dict[str, Any]) -> None:
        args = job["args"]
        key = "areas_zones" if job["command"] == "areas" and "zones" in args else (
            job["command"])
        assert key not in self.jobs, f"{key} started twice by one round of clicks"
        RecordingWorker.jobs[key] = job
        if key == "areas":
            self.result.emit({"rows": [], "csv": args["out_csv"]})
        self.finished.emit(0)

    def is_running(self) -> bool:
        return False

    def cancel(self) -> None:
        pass

    def wait(self, _ms: int = 0) -> bool:
        return True


def add_labels(layer: QgsVectorLayer, classes: list[str]) -> None:
    """8x8-pixel squares of each class, committed."""
    assert layer.startEditing()
    for i, name in enumerate(classes):
        feature = QgsVectorLayerUtils.createFeature(
            layer, pixel_box(4 + 10 * i, 4, 12 + 10 * i, 12), {}, layer.createExpressionContext())
        feature.setAttribute("class", name)
        assert layer.addFeature(feature)
    assert layer.commitChanges()


@pytest.fixture(scope="module")
def ctx(qgis_iface, scene, tmp_path_factory):
    """A panel with raster, labels of every preset's classes, a model and a prediction."""
    from terraseg.plugin import panel_jobs
    from terraseg.plugin.dock import TerraSegDock

    tmp = tmp_path_factory.mktemp("controls")
    project = QgsProject.instance()
    project.removeAllMapLayers()
    raster = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    copies = {}
    for name in ("raster2", "dem", "slope", "coarse"):
        copies[name] = tmp / f"{name}.tif"
        shutil.copy(scene.raster, copies[name])
    layers = {name: QgsRasterLayer(str(path), name, "gdal") for name, path in copies.items()}
    scene_labels = QgsVectorLayer(f"{scene.labels}|layername=labels", "scene labels", "ogr")
    assert raster.isValid() and scene_labels.isValid(), scene.labels
    assert all(layer.isValid() for layer in layers.values())
    project.addMapLayers([raster, *layers.values(), scene_labels])

    dock = TerraSegDock(qgis_iface)
    dock.auto_answer = True
    dock.set_raster_layer(raster)
    # the scene's 10 m pixels: the panel starts at the few-polygon recipe (issue 11)
    assert dock.recipe_name().startswith("Few polygons") and dock.stride_spin.value() == 1
    labels = dock.new_label_layer(tmp / "labels.gpkg")
    add_labels(labels, ["sealed", "unsealed", "landslide", "no landslide", "water"])
    shutil.copy(tmp / "labels.gpkg", tmp / "labels2.gpkg")
    labels2 = QgsVectorLayer(f"{tmp / 'labels2.gpkg'}|layername=labels", "labels 2", "ogr")
    project.addMapLayer(labels2)
    model = tmp / "models" / "legacy.tsm"
    model.parent.mkdir()
    shutil.copy(LEGACY_MODEL, model)
    assert dock.load_model(model) is not None
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(raster.crs())
    canvas.setExtent(raster.extent())
    dock.reference_combo.setLayer(labels)
    dock.reference_field_combo.setField("class")
    dock.last_results = {"classes": str(scene.raster), "folder": str(tmp),
                         "model": str(model), "class_list": dock.result_classes()}
    dock._update_buttons()

    dialogs: list[tuple[str, Any]] = []

    def save_name(_parent, title, _default, _filter, **kwargs):
        dialogs.append((title, kwargs.get("options")))
        return str(tmp / ("classes.gpkg" if "polygon" in title.lower() else "areas.csv")), ""

    patch = pytest.MonkeyPatch()
    patch.setattr(QFileDialog, "getSaveFileName", save_name)
    patch.setattr(panel_jobs, "WorkerJob", RecordingWorker)  # no engine process is started
    yield SimpleNamespace(
        dock=dock, tmp=tmp, dialogs=dialogs, labels=labels,
        labels_path=tmp / "labels.gpkg", labels2=labels2, labels2_path=tmp / "labels2.gpkg",
        scene_labels=scene_labels, scene_labels_path=scene.labels,
        **layers, **{f"{name}_path": path for name, path in copies.items()})
    patch.undo()
    dock.shutdown()
    dock.deleteLater()
    project.removeAllMapLayers()


ACTION_BUTTONS = ("train_button", "predict_button", "vectorise_button", "areas_button",
                  "evaluate_button", "quick_button", "review_button")


def run_actions(ctx: Any) -> dict[str, dict[str, Any]]:
    """Click every action button; the jobs they sent to the (recording) worker, by kind."""
    RecordingWorker.jobs = {}
    for name in ACTION_BUTTONS:
        button = getattr(ctx.dock, name)
        assert button.isEnabled(), f"{name}: {button.toolTip()}"
        button.click()
    if ctx.dock.coarse_layer() is not None:  # 'Show pseudo-labels' needs a coarse map
        assert ctx.dock.pseudo_preview_button.isEnabled(), ctx.dock.pseudo_preview_button.toolTip()
        ctx.dock.pseudo_preview_button.click()
    else:
        assert not ctx.dock.pseudo_preview_button.isEnabled()
    if not ctx.dock.button_blockers()["change_button"]:  # 'Map change' needs a second date
        assert ctx.dock.change_button.isEnabled(), ctx.dock.change_button.toolTip()
        ctx.dock.change_button.click()
    else:
        assert not ctx.dock.change_button.isEnabled()
    if ctx.dock.chosen_encoder() is not None:  # 'Pretrain on this raster' needs a ResNet
        assert ctx.dock.pretrain_button.isEnabled(), ctx.dock.pretrain_button.toolTip()
        ctx.dock.pretrain_button.click()
    else:
        assert not ctx.dock.pretrain_button.isEnabled()
    return {kind: dict(job["args"]) for kind, job in RecordingWorker.jobs.items()}


def stable(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if k not in VOLATILE}


def test_every_control_reaches_its_job_and_no_other(ctx) -> None:
    dock = ctx.dock
    seen_keys: dict[str, set[str]] = {}
    for row in CONTROLS:
        if row.prepare is not None:
            row.prepare(ctx)
        before = run_actions(ctx)
        widget = dock.findChild(QWidget, row.widget)
        assert widget is not None, f"no widget named {row.widget!r} in the panel"
        row.set(widget, ctx)
        after = run_actions(ctx)
        sent = {kind for kind, fields in row.expect.items() if fields is not ABSENT}
        assert sent <= set(after), (row.widget, sorted(after), dock.log_text())
        for kind, fields in row.expect.items():
            if fields is ABSENT:
                assert kind not in after, f"{row.widget}: a {kind} job is still sent"
                continue
            for key, want in fields.items():
                got = after[kind].get(key, ABSENT)
                if want is ABSENT:
                    ok = got is ABSENT
                elif callable(want):
                    ok = got is not ABSENT and want(got, ctx)
                else:
                    ok = got == want
                assert ok, f"{row.widget}: {kind} job has {key}={got!r}, expected {want!r}"
        for kind in ACTIONS:
            if kind in row.expect:
                continue
            assert stable(after.get(kind, {})) == stable(before.get(kind, {})), (
                f"{row.widget} changed the {kind} job: {before.get(kind)} -> {after.get(kind)}")
        for kind, args in after.items():
            seen_keys.setdefault(kind, set()).update(args)
    # every field the panel sends has a name in the panel's own words (error messages)
    from terraseg.plugin.worker_errors import PANEL_CONTROLS

    assert {"train", "pseudo-label"} <= set(seen_keys)
    worded = PANEL_CONTROLS
    for kind, keys in seen_keys.items():
        unnamed = sorted(k for k in keys if k.replace("_", "-") not in worded)
        assert not unnamed, f"{kind} job fields without panel wording: {unnamed}"


def test_every_input_widget_is_in_the_contract(ctx) -> None:
    dock = ctx.dock
    found: dict[str, QWidget] = {}
    unnamed = []
    for widget in dock.findChildren(QWidget):
        if not isinstance(widget, INPUT_TYPES):
            continue
        parent = widget.parentWidget()
        inner = False
        while parent is not None and parent is not dock:
            inner = inner or isinstance(parent, (QAbstractSpinBox, QComboBox))
            parent = parent.parentWidget()
        if inner:  # a spin box's or combo box's own line edit
            continue
        if not widget.objectName():
            unnamed.append(f"{type(widget).__name__} {getattr(widget, 'text', str)()!r}")
            continue
        found[widget.objectName()] = widget
    assert not unnamed, ("input widgets without an object name (store them as panel "
                         f"attributes or name them): {unnamed}")
    covered = {row.widget for row in CONTROLS}
    missing = sorted(set(found) - covered - set(EXCLUDED))
    assert not missing, (f"controls that no row of CONTROLS checks: {missing}; add a row "
                         "(or an EXCLUDED entry saying why it reaches no job)")
    stale = sorted((covered | set(EXCLUDED)) - set(found) - {"band_table", "class_table"})
    assert not stale, f"rows for widgets the panel does not have: {stale}"
    assert dock.findChild(QWidget, "band_table") is not None
    assert dock.findChild(QWidget, "class_table") is not None


def test_predict_and_export_minimum_areas_are_separate_boxes(ctx) -> None:
    """The regression of issue 10 on its own: Minimum region -> predict, Minimum area ->
    vectorise, each box its own widget."""
    dock = ctx.dock
    assert dock.min_region_spin is not dock.export_min_area_spin
    dock.min_region_spin.setValue(700)
    dock.export_min_area_spin.setValue(40)
    jobs = run_actions(ctx)
    assert jobs["predict"]["min_area"] == 700.0
    assert jobs["vectorise"]["min_area"] == 40.0
    dock.min_region_spin.setValue(0)
    jobs = run_actions(ctx)
    assert "min_area" not in jobs["predict"]
    assert jobs["vectorise"]["min_area"] == 40.0
    # export file dialogs never ask about replacing (the panel asks once, for every file)
    assert ctx.dialogs
    for title, options in ctx.dialogs:
        assert options is not None and options & QFileDialog.Option.DontConfirmOverwrite, title


def test_band_table_untick_leaves_prediction_to_the_model(ctx) -> None:
    """Unticking a band: train gets the 3 bands; predict and evaluate give no band mapping
    (the model's 4 bands are read) rather than a mapping the model cannot take."""
    dock = ctx.dock
    dock.band_table.item(3, 2).setCheckState(Qt.CheckState.Unchecked)
    try:
        jobs = run_actions(ctx)
    finally:
        dock.band_table.item(3, 2).setCheckState(Qt.CheckState.Checked)
    assert jobs["train"]["bands"].count("=") == 3
    assert "bands" not in jobs["predict"] and "bands" not in jobs["evaluate"]
