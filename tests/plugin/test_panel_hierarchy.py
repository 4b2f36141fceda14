"""The panel's Class hierarchy (issue 12): Evaluate per level, Predict's "Also map level".

Jobs are first recorded instead of run (``sent_jobs``): the hierarchy and level reach the
evaluate and predict jobs only when chosen. Then the real worker evaluates and predicts
with the tiny model of the synthetic scene (classes sealed, unsealed) and a hierarchy CSV
whose level 1 merges both into 'surface' and whose level 2 keeps them: the per-level table
shows the engine's figures (level 1 all 1.000, level 2 the model's own), the level-2 map
equals the fine map with the same names and colours. A bad hierarchy file ends in the
engine's message, in the panel's words (model classes that are no CORINE codes: in
test_processing_hierarchy.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.qgis_support import needs_engine, raster_values
from qgis.core import QgsProject, QgsRasterLayer

from tests.plugin.test_panel_evaluate import reference_points

LEVELS_CSV = "code,level1,level2\nsealed,surface,sealed\nunsealed,surface,unsealed\n"


@pytest.fixture
def ready(panel, scene, tiny_model, tmp_path: Path):
    """The panel with the scene raster and a copy of the tiny model (results beside it)."""
    raster = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    QgsProject.instance().addMapLayer(raster)
    panel.set_raster_layer(raster)
    model = tmp_path / "tiny.tsm"
    model.write_bytes(Path(tiny_model.path).read_bytes())
    assert panel.load_model(model) is not None
    csv_path = tmp_path / "levels.csv"
    csv_path.write_text(LEVELS_CSV)
    points = reference_points()
    QgsProject.instance().addMapLayer(points)
    panel.set_reference_layer(points, "klass")
    return panel, csv_path


def test_picker_and_level_controls(panel, tmp_path: Path) -> None:
    assert [panel.hierarchy_combo.itemText(i) for i in range(panel.hierarchy_combo.count())
            ] == ["None", "CORINE Land Cover", "File…"]
    assert panel.hierarchy() is None and not panel.level_check.isEnabled()
    assert not panel.hierarchy_file_row.isVisibleTo(panel)
    assert "under Evaluate" in panel.level_check.toolTip()
    panel.set_hierarchy("corine")
    assert panel.hierarchy_combo.currentText() == "CORINE Land Cover"
    assert panel.hierarchy() == "corine" and panel.level_check.isEnabled()
    assert panel.level_spin.maximum() == 3 and panel.level_note.text() == "of CORINE Land Cover"
    assert not panel.level_spin.isEnabled()  # until 'Also map level' is ticked
    panel.set_level_map(3)
    assert panel.level_spin.isEnabled() and panel.level_options() == {"hierarchy": "corine",
                                                                      "level": 3}
    two = tmp_path / "two.csv"
    two.write_text(LEVELS_CSV)
    panel.set_hierarchy(two)  # the level box follows the file's levels
    assert panel.hierarchy_combo.currentText() == "File…"
    assert panel.hierarchy_file_row.isVisibleTo(panel)
    assert panel.level_spin.maximum() == 2 and panel.level_spin.value() == 2
    assert panel.level_options() == {"hierarchy": str(two), "level": 2}
    assert panel.level_note.text() == "of two.csv"
    panel.set_hierarchy(None)
    assert panel.level_options() == {} and not panel.level_check.isEnabled()
    assert not panel.hierarchy_file_row.isVisibleTo(panel)


def test_jobs_carry_hierarchy_and_level(ready, sent_jobs) -> None:
    panel, csv_path = ready
    assert panel.evaluate()
    assert "hierarchy" not in sent_jobs[-1]["args"]
    assert panel.evaluate(hierarchy="corine")
    assert sent_jobs[-1]["command"] == "evaluate"
    assert sent_jobs[-1]["args"]["hierarchy"] == "corine"
    assert "level" not in sent_jobs[-1]["args"]  # evaluate scores every level
    assert panel.predict("whole")
    assert "hierarchy" not in sent_jobs[-1]["args"]  # 'Also map level' not ticked
    panel.set_hierarchy(csv_path)
    panel.set_level_map(1)
    assert panel.predict("whole")
    args = sent_jobs[-1]["args"]
    assert (args["hierarchy"], args["level"]) == (str(csv_path), 1)
    assert panel.evaluate()
    assert sent_jobs[-1]["args"]["hierarchy"] == str(csv_path)
    # File… without a file: refused, no job
    panel.hierarchy_file_edit.setText("")
    count = len(sent_jobs)
    assert not panel.evaluate() and not panel.predict("whole")
    assert len(sent_jobs) == count
    assert "hierarchy CSV" in panel.status_label.text()


@needs_engine
def test_levels_shown_and_level_map_added(ready) -> None:
    panel, csv_path = ready
    assert panel.evaluate(hierarchy=csv_path, wait=True, timeout_s=120), panel.log_text()
    saved = json.loads(Path(panel.last_evaluation["metrics_file"]).read_text())
    levels = saved["levels"]
    assert panel.last_evaluation["hierarchy"] == str(csv_path)
    assert panel.level_table.isVisibleTo(panel)
    fine = (f"{saved['accuracy']:.3f}", f"{saved['f1_weighted']:.3f}",
            f"{saved['mean_iou']:.3f}")
    assert panel.level_metrics_shown() == {
        "level1 (1)": ("1.000", "1.000", "1.000"),
        "level2 (2)": fine}
    assert levels["level2"]["confusion_matrix"] == saved["confusion_matrix"]
    assert 0.5 < saved["accuracy"] < 1.0  # a real score, not a merged one
    # restored evaluations (project state) show the same; none clears the table
    panel.show_evaluation(None)
    assert not panel.level_table.isVisibleTo(panel) and panel.level_table.rowCount() == 0

    panel.set_level_map(2)
    assert panel.predict("whole", wait=True, timeout_s=120), panel.log_text()
    level = panel.last_results["level"]
    assert Path(level["classes"]).name == "level2_classes.tif"
    _, fine_values = raster_values(panel.last_results["classes"])
    _, level_values = raster_values(level["classes"])
    assert level_values == fine_values  # level 2 keeps the model's classes apart
    layer = level["layer"]
    assert QgsProject.instance().mapLayer(layer.id()) is layer
    assert layer.name().endswith("at level2")
    fine_layer = panel.last_results["layers"][1]

    def palette(lyr):
        return [(c.value, c.label, c.color.name()) for c in lyr.renderer().classes()]

    assert palette(layer) == palette(fine_layer)
    assert [c[1] for c in palette(layer)] == ["sealed", "unsealed"]
    assert "Map at level2: sealed, unsealed" in panel.predict_summary.text()


@needs_engine
def test_bad_hierarchy_in_panel_words(ready, tmp_path: Path) -> None:
    panel, _ = ready
    bad = tmp_path / "bad.csv"
    bad.write_text("class,group\nsealed,surface\n")
    assert not panel.evaluate(hierarchy=bad, wait=True, timeout_s=120)
    kind, message, hint = panel.last_error
    assert kind == "ConfigError"
    assert "Hierarchy file bad.csv has columns ['class', 'group']" in message
    assert "code,level1,level2,level3" in hint
    assert "bad.csv has columns" in panel.status_label.text()
    assert not panel.level_table.isVisibleTo(panel) and panel.last_evaluation is None


def test_level_flag_in_panel_words() -> None:
    """The engine's level messages name the panel's controls, not --level/--hierarchy."""
    from terraseg.plugin.worker_errors import panel_wording

    assert panel_wording("--level 3 is not a level of levels.csv, which has 2.", "predict") == (
        "the level of 'Also map level' in Predict = 3 is not a level of levels.csv, which "
        "has 2.")
    assert panel_wording("Use --level 1 to 2.", "predict") == (
        "Use the level of 'Also map level' in Predict = 1 to 2.")
    assert panel_wording("Check --hierarchy.", "evaluate") == (
        "Check the Class hierarchy in Evaluate.")
