"""Processing's Evaluate and Predict with a class hierarchy (issue 12).

The tiny model of the synthetic scene has the classes sealed and unsealed; the hierarchy
CSV puts both under one level-1 group 'surface' and keeps them apart at level 2. The jobs
the algorithms send are checked with run_engine replaced; then the real worker scores and
maps the levels: level 1 merges everything (accuracy 1, every valid pixel 'surface', its
probability the sum of the fine ones = 1), level 2 scores as the model's own classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.qgis_support import needs_engine, raster_values
from qgis.core import QgsProcessingContext, QgsProcessingException

LEVELS_CSV = "code,level1,level2\nsealed,surface,sealed\nunsealed,surface,unsealed\n"


@pytest.fixture(scope="module")
def processing(terraseg_provider):
    import processing as qgis_processing

    return qgis_processing


@pytest.fixture
def levels_csv(tmp_path: Path) -> Path:
    path = tmp_path / "levels.csv"
    path.write_text(LEVELS_CSV)
    return path


def test_hierarchy_parameters_and_outputs(terraseg_provider):
    evaluate = terraseg_provider.algorithm("evaluate")
    predict = terraseg_provider.algorithm("predict")
    params = {p.name(): p for p in evaluate.parameterDefinitions()}
    assert params["HIERARCHY"].flags() & params["HIERARCHY"].FlagOptional
    assert "corine" in params["HIERARCHY"].help() and "level1" in params["HIERARCHY"].help()
    assert "LEVEL_METRICS" in [o.name() for o in evaluate.outputDefinitions()]
    params = {p.name(): p for p in predict.parameterDefinitions()}
    assert params["HIERARCHY"].flags() & params["HIERARCHY"].FlagOptional
    level = params["LEVEL"]
    assert level.flags() & level.FlagOptional and level.minimum() == 1
    assert level.defaultValue() is None
    outputs = [o.name() for o in predict.outputDefinitions()]
    assert {"LEVEL_PROBABILITY", "LEVEL_CLASSES"} <= set(outputs)
    # a string parameter: 'corine' has no suffix, which a file parameter would refuse
    assert params["HIERARCHY"].checkValueIsAcceptable("corine")


def test_jobs_carry_hierarchy_and_level(processing, scene, tiny_model, levels_csv, tmp_path,
                                        monkeypatch):
    from terraseg.plugin.processing.evaluate import Evaluate
    from terraseg.plugin.processing.predict import Predict

    sent: list[dict] = []
    levels = {"level1": {"accuracy": 1.0, "f1_weighted": 1.0, "mean_iou": 1.0,
                         "class_names": ["surface"]},
              "level2": {"accuracy": 0.75, "f1_weighted": 0.7, "mean_iou": 0.55,
                         "class_names": ["sealed", "unsealed"]}}
    monkeypatch.setattr(Evaluate, "run_engine", lambda self, job, feedback: sent.append(
        job) or {"metrics": "m.json", "files": [], "accuracy": 0.75, "f1_weighted": 0.7,
                 "n_samples": 8, "levels": levels})
    common = {"MODEL": str(tiny_model.path), "INPUT_RASTER": str(scene.raster),
              "REFERENCE": str(scene.labels), "CLASS_FIELD": "klass",
              "OUTPUT_FOLDER": str(tmp_path / "eval")}
    res = processing.run("terraseg:evaluate", {**common, "HIERARCHY": "corine"})
    assert sent[-1]["args"]["hierarchy"] == "corine"
    assert json.loads(res["LEVEL_METRICS"]) == {
        "level1": {"accuracy": 1.0, "f1_weighted": 1.0, "mean_iou": 1.0},
        "level2": {"accuracy": 0.75, "f1_weighted": 0.7, "mean_iou": 0.55}}
    processing.run("terraseg:evaluate", {**common, "HIERARCHY": str(levels_csv)})
    assert sent[-1]["args"]["hierarchy"] == str(levels_csv)
    processing.run("terraseg:evaluate", common)
    assert "hierarchy" not in sent[-1]["args"]

    monkeypatch.setattr(Predict, "run_engine", lambda self, job, feedback: sent.append(
        job) or {"probability": "p.tif", "classes": "c.tif",
                 "level": {"probability": "level1_probability.tif",
                           "classes": "level1_classes.tif", "level": 1,
                           "level_name": "level1", "class_list": []}})
    common = {"MODEL": str(tiny_model.path), "INPUT_RASTER": str(scene.raster),
              "OUTPUT_FOLDER": str(tmp_path / "pred")}
    res = processing.run("terraseg:predict", {**common, "HIERARCHY": str(levels_csv),
                                              "LEVEL": 2})
    args = sent[-1]["args"]
    assert (args["hierarchy"], args["level"]) == (str(levels_csv), 2)
    assert (res["LEVEL_PROBABILITY"], res["LEVEL_CLASSES"]) == (
        "level1_probability.tif", "level1_classes.tif")
    processing.run("terraseg:predict", common)
    assert "hierarchy" not in sent[-1]["args"] and "level" not in sent[-1]["args"]
    assert len(sent) == 5


@pytest.mark.slow  # three worker runs: ~10 s on 2 idle CPU cores, 40 s when they are busy
@needs_engine
def test_levels_scored_and_mapped_by_the_engine(processing, scene, tiny_model, levels_csv,
                                                tmp_path):
    res = processing.run("terraseg:evaluate", {
        "MODEL": str(tiny_model.path), "INPUT_RASTER": str(scene.raster),
        "REFERENCE": str(scene.labels), "CLASS_FIELD": "klass", "HIERARCHY": str(levels_csv),
        "OUTPUT_FOLDER": str(tmp_path / "eval")})
    levels = json.loads(res["LEVEL_METRICS"])
    metrics = json.loads(Path(res["METRICS"]).read_text())
    assert list(levels) == ["level1", "level2"]
    assert levels["level1"] == {"accuracy": 1.0, "f1_weighted": 1.0, "mean_iou": 1.0}
    assert levels["level2"]["accuracy"] == pytest.approx(res["ACCURACY"])
    assert levels["level2"]["f1_weighted"] == pytest.approx(res["F1_WEIGHTED"])
    assert metrics["levels"]["level2"]["confusion_matrix"] == metrics["confusion_matrix"]

    context = QgsProcessingContext()
    res = processing.run("terraseg:predict", {
        "MODEL": str(tiny_model.path), "INPUT_RASTER": str(scene.raster),
        "HIERARCHY": str(levels_csv), "LEVEL": 1, "OUTPUT_FOLDER": str(tmp_path / "pred")},
        context=context)
    assert Path(res["LEVEL_CLASSES"]) == tmp_path / "pred" / "level1_classes.tif"
    _, fine = raster_values(res["CLASSES"])
    _, coarse = raster_values(res["LEVEL_CLASSES"])
    _, summed = raster_values(res["LEVEL_PROBABILITY"])
    valid = [(r, c) for r in range(96) for c in range(96) if fine[r][c] in (1, 2)]
    assert len(valid) == 96 * 96
    assert all(coarse[r][c] == 1 for r, c in valid)  # one group: 'surface'
    assert all(summed[r][c] == pytest.approx(1.0, abs=1e-5) for r, c in valid)
    to_load = {Path(p).name: d.name for p, d in context.layersToLoadOnCompletion().items()}
    assert to_load["level1_classes.tif"] == "TerraSeg classes at level1"
    assert to_load["level1_probability.tif"] == "TerraSeg probability at level1"


@pytest.mark.slow  # one worker run
@needs_engine
def test_corine_refuses_a_model_of_other_classes(processing, scene, tiny_model, tmp_path):
    # the model's classes are no CORINE codes: the engine's message, before any work
    with pytest.raises(QgsProcessingException, match="not in the hierarchy"):
        processing.run("terraseg:evaluate", {
            "MODEL": str(tiny_model.path), "INPUT_RASTER": str(scene.raster),
            "REFERENCE": str(scene.labels), "CLASS_FIELD": "klass", "HIERARCHY": "corine",
            "OUTPUT_FOLDER": str(tmp_path / "bad")})
    assert not (tmp_path / "bad" / "metrics.json").exists()
