"""Processing's 'Review labels (find mislabelled polygons)' (issue 12).

The algorithm's parameters are 'Train model''s (less its model file, fine-tuning and
pseudo-labels) plus K, RANKING, TOP, SCORER, TREES and an output folder; the job it sends
is compared with the job 'Train model' sends for the same parameters (run_engine replaced in
both). Runs go through the real engine on the synthetic scene (96x96, 9 polygons per class)
when the engine has the ``review`` command: with random forests (seconds), and with networks
(slow).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers.qgis_support import TINY_TRAIN
from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsVectorLayer

ALG = "terraseg:review_labels"
NOT_FOR_REVIEW = ["OUTPUT", "INIT_MODEL", "PSEUDO_LABELS", "PSEUDO_SOURCE",
                  "PSEUDO_CLASS_FIELD", "PSEUDO_CLASS_MAP", "PSEUDO_STRATEGY",
                  "PSEUDO_PROBABILITY"]
TINY = {"EPOCHS": TINY_TRAIN["epochs"], "PATIENCE": TINY_TRAIN["patience"],
        "PATCH_SIZE": TINY_TRAIN["patch_size"], "BLOCK_SIZE": TINY_TRAIN["block_size"],
        "BLOCKS": TINY_TRAIN["blocks"], "SAMPLES_PER_EPOCH": TINY_TRAIN["samples_per_epoch"],
        "BATCH_SIZE": TINY_TRAIN["batch_size"]}
RESULT = {"review_gpkg": "/r/review.gpkg", "review_csv": "/r/review.csv",
          "review_json": "/r/review.json", "ranking": "cleanlab", "scorer": "forest", "k": 3,
          "regions": 18, "flagged": 2, "suspects": [
              {"rank": 1, "feature_id": "7", "region_key": "v:a", "given_class": "sealed",
               "predicted_class": "unsealed", "predicted_probability": 0.91, "score": 2.5,
               "bbox": [0, 0, 1, 1]}]}


@pytest.fixture(scope="module")
def processing(terraseg_provider):
    import processing as qgis_processing

    return qgis_processing


class Feedback(QgsProcessingFeedback):
    """Keeps the algorithm's info lines."""

    def __init__(self) -> None:
        super().__init__()
        self.info: list[str] = []

    def pushInfo(self, info: str) -> None:  # noqa: N802
        self.info.append(info)
        super().pushInfo(info)


def has_review_command(engine) -> bool:
    out = subprocess.run([engine.terraseg, "review", "--help"], capture_output=True,
                         text=True, timeout=120)
    return out.returncode == 0


def test_listed_by_the_provider(terraseg_provider):
    from terraseg.plugin.processing.provider import ALGORITHMS
    from terraseg.plugin.processing.review_labels import ReviewLabels

    assert ReviewLabels in ALGORITHMS
    alg = terraseg_provider.algorithm("review_labels")
    assert alg.id() == ALG
    assert alg.displayName() == "Review labels (find mislabelled polygons)"
    train_names = [p.name() for p in terraseg_provider.algorithm("train_model")
                   .parameterDefinitions()]
    assert set(NOT_FOR_REVIEW) <= set(train_names)
    kept = [name for name in train_names if name not in NOT_FOR_REVIEW]
    assert kept[:5] == ["INPUT_RASTER", "LABELS", "CLASS_FIELD", "CLASS_MAP", "BANDS"]
    assert [p.name() for p in alg.parameterDefinitions()] == [
        *kept[:5], "K", "RANKING", "TOP", "SCORER", "TREES", *kept[5:], "OUTPUT_FOLDER"]
    assert {"EPOCHS", "ARCHITECTURE", "PATCH_SIZE", "CACHE_DIR", "EXTRA_OPTIONS"} <= set(kept)
    assert [o.name() for o in alg.outputDefinitions()] == [
        "OUTPUT_FOLDER", "REVIEW", "CSV", "REGIONS", "FLAGGED"]
    params = {p.name(): p for p in alg.parameterDefinitions()}
    assert params["RANKING"].options() == ["loss", "cleanlab"]
    assert (params["K"].defaultValue(), params["RANKING"].defaultValue(),
            params["TOP"].defaultValue()) == (5, 0, 50)
    assert params["K"].minimum() == 2
    assert params["SCORER"].options() == ["network", "forest"]
    assert (params["SCORER"].defaultValue(), params["TREES"].defaultValue(),
            params["TREES"].minimum()) == (0, 100, 1)
    # the training parameters are Train model's own: same defaults
    train = {p.name(): p for p in terraseg_provider.algorithm("train_model")
             .parameterDefinitions()}
    for name in ("EPOCHS", "PATIENCE", "ARCHITECTURE", "TILE_SIZE", "BATCH_SIZE", "LR"):
        assert params[name].defaultValue() == train[name].defaultValue(), name
        assert params[name].description() == train[name].description(), name
    help_text = alg.shortHelpString()
    assert all(word in help_text for word in ("review.gpkg", "k folds", "confident learning",
                                              "random weights", "random forests"))


def test_job_is_train_models_with_the_review_fields(processing, scene, tmp_path,
                                                    monkeypatch):
    from terraseg.plugin.processing.review_labels import ReviewLabels
    from terraseg.plugin.processing.train import TrainModel

    sent: list[dict] = []
    monkeypatch.setattr(ReviewLabels, "run_engine",
                        lambda self, job, feedback: sent.append(job) or RESULT)
    monkeypatch.setattr(TrainModel, "run_engine",
                        lambda self, job, feedback: sent.append(job) or {"model": "m.tsm"})
    common = {"INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels),
              "CLASS_FIELD": "klass", "CLASS_MAP": "sealed=built,*=other", "BANDS": "1,2,4",
              **TINY, "SEED": 4, "CACHE_DIR": str(tmp_path),
              "EXTRA_OPTIONS": '{"val_fraction": 0.3}'}
    out = str(tmp_path / "review")
    feedback = Feedback()
    res = processing.run(ALG, {**common, "K": 3, "RANKING": 1, "TOP": 7, "SCORER": 1,
                               "TREES": 12, "OUTPUT_FOLDER": out}, feedback=feedback)
    processing.run("terraseg:train_model", {**common, "OUTPUT": str(tmp_path / "m.tsm")})
    review, train = sent
    assert review["command"] == "review"
    expected = {k: v for k, v in train["args"].items() if k != "out"}
    expected.update(k=3, ranking="cleanlab", top=7, scorer="forest", trees=12, out_dir=out)
    assert review["args"] == expected
    assert review["args"]["epochs"] == 2 and review["args"]["val_fraction"] == 0.3
    assert res == {"OUTPUT_FOLDER": out, "REVIEW": "/r/review.gpkg|layername=review",
                   "CSV": "/r/review.csv", "REGIONS": 18, "FLAGGED": 2}
    first = feedback.info.index("18 labelled regions scored by forest models, ranked by "
                                "cleanlab (3 folds), 2 flagged by confident learning; the "
                                "most suspicious:")
    assert feedback.info[first + 1] == "1. feature 7: sealed -> unsealed (p 0.91, score 2.500)"

    # defaults: 5 folds, loss, 50 listed, networks (the engine's default; trees unused)
    processing.run(ALG, {**common, "OUTPUT_FOLDER": out})
    assert {k: sent[-1]["args"][k] for k in ("k", "ranking", "top", "scorer", "trees")} == {
        "k": 5, "ranking": "loss", "top": 50, "scorer": "network", "trees": 100}
    with pytest.raises(QgsProcessingException):
        processing.run(ALG, {**common, "K": 1, "OUTPUT_FOLDER": out})
    with pytest.raises(QgsProcessingException):
        processing.run(ALG, {**common, "TREES": 0, "OUTPUT_FOLDER": out})
    assert len(sent) == 3


@pytest.mark.slow  # two trainings: about 20 s on 2 CPU cores
def test_review_of_the_scene_through_the_engine(processing, engine, scene, cache_dir,
                                                tmp_path):
    if not has_review_command(engine):
        pytest.skip("the engine has no `terraseg review` command yet")
    res = processing.run(ALG, {
        "INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels), "CLASS_FIELD": "klass",
        **TINY, "K": 2, "TOP": 5, "CACHE_DIR": str(cache_dir),
        "OUTPUT_FOLDER": str(tmp_path / "review")})
    assert res["REGIONS"] == 18
    assert res["CSV"] == str(tmp_path / "review" / "review.csv")
    layer = QgsVectorLayer(res["REVIEW"], "review", "ogr")
    assert layer.isValid() and layer.featureCount() == 18
    assert layer.crs().authid() == "EPSG:4326"  # the labels'
    names = {f.name() for f in layer.fields()}
    assert {"rank", "feature_id", "given_class", "predicted_class", "predicted_probability",
            "score"} <= names
    ranks = sorted(int(f["rank"]) for f in layer.getFeatures())
    assert ranks == list(range(1, 19))


def test_review_with_forests_through_the_engine(processing, engine, scene, cache_dir, tmp_path):
    """SCORER forest and TREES reach the engine: k forests, no training, no fold model."""
    if not has_review_command(engine):
        pytest.skip("the engine has no `terraseg review` command yet")
    out = tmp_path / "review"
    feedback = Feedback()
    res = processing.run(ALG, {
        "INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels), "CLASS_FIELD": "klass",
        "K": 3, "TOP": 5, "SCORER": 1, "TREES": 7, "CACHE_DIR": str(cache_dir),
        "OUTPUT_FOLDER": str(out)}, feedback=feedback)
    assert res["REGIONS"] == 18
    assert sorted(p.name for p in out.iterdir()) == ["review.csv", "review.gpkg", "review.json"]
    doc = json.loads((out / "review.json").read_text(encoding="utf-8"))
    assert (doc["scorer"], doc["trees"], doc["k"], doc["models"]) == ("forest", 7, 3, [])
    assert any(line.startswith("18 labelled regions scored by forest models, ranked by loss "
                               "(3 folds)") for line in feedback.info), feedback.info
    layer = QgsVectorLayer(res["REVIEW"], "review", "ogr")
    assert layer.isValid() and layer.featureCount() == 18
    assert sorted(int(f["rank"]) for f in layer.getFeatures()) == list(range(1, 19))
