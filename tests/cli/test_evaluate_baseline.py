"""``terraseg evaluate --baseline rf``: a random forest scored beside the model.

Uses the legacy patch model (tests/data/legacy_v0_1, trained on make_scene(size=64,
seed=3)) on that same synthetic scene, so no network is trained here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from helpers.paths import ROOT
from helpers.synthetic import make_scene, pixel_box, write_polygons

from terraseg.cli.main import main
from terraseg.core.modelfile import load_model, save_model

MODEL = ROOT / "tests" / "data" / "legacy_v0_1" / "legacy_patch.tsm"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("baseline")
    sc = make_scene(d, size=64, seed=3)
    # Reference: whole sealed squares and unsealed strips beside them (not the labels).
    feats = []
    for r in range(4, 64 - 12, 32):
        for c in range(4, 64 - 12, 32):
            feats.append((pixel_box(r, c, r + 14, c + 14), "sealed", "roof"))
            feats.append((pixel_box(r + 16, c, r + 20, c + 14), "unsealed", "meadow"))
    reference = write_polygons(d / "reference.gpkg", feats)
    return {"dir": d, "scene": sc, "reference": reference}


def with_labels_path(path: Path, labels: Path) -> Path:
    """A copy of the legacy model whose metadata records ``labels`` as training labels."""
    model = load_model(MODEL)
    meta = dataclasses.replace(model.meta, labels=dataclasses.replace(model.meta.labels,
                                                                      path=str(labels)))
    return save_model(path, model.network, meta)


def evaluate(scene: dict, out: Path, *extra: str, model: Path = MODEL) -> int:
    return main(["--quiet", "evaluate", "--model", str(model), "--raster",
                 str(scene["scene"].raster), "--reference", str(scene["reference"]),
                 "--class-field", "klass", "--out-dir", str(out), "--device", "cpu",
                 *extra])


@pytest.fixture(scope="module")
def evaluated(scene):
    out = scene["dir"] / "eval"
    rc = evaluate(scene, out, "--baseline", "rf", "--baseline-labels",
                  str(scene["scene"].labels), "--trees", "20")
    assert rc == 0
    return out


def recomputed(doc: dict) -> dict:
    """Accuracy, weighted F1 and F1 per class from a confusion matrix (rows: reference)."""
    cm = np.array(doc["confusion_matrix"], dtype=float)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    f1 = np.where(support + predicted > 0, 2 * tp / np.maximum(support + predicted, 1), 0)
    return {"accuracy": tp.sum() / cm.sum(), "f1_weighted": (f1 * support).sum() / cm.sum(),
            "f1": dict(zip(doc["class_names"], f1, strict=True)), "n": int(cm.sum())}


def test_baseline_metrics_match_their_confusion_matrix(evaluated):
    base = json.loads((evaluated / "baseline_metrics.json").read_text())
    assert base["method"] == "random_forest"
    assert base["trees"] == 20 and base["seed"] == 0
    sampled = base["sampled_pixels"]
    assert sampled["sealed"] > 0 and sampled["unsealed"] > 0
    m = base["metrics"]
    want = recomputed(m)
    assert m["accuracy"] == pytest.approx(want["accuracy"])
    assert m["f1_weighted"] == pytest.approx(want["f1_weighted"])
    for name, value in want["f1"].items():
        assert m["f1_per_class"][name] == pytest.approx(value)
    # The scene's classes are far apart: a forest of pixels separates them well.
    assert m["accuracy"] > 0.85


def test_model_and_forest_are_scored_on_the_same_pixels(evaluated):
    model = json.loads((evaluated / "metrics.json").read_text())
    forest = json.loads((evaluated / "baseline_metrics.json").read_text())["metrics"]
    # 2 squares x (14x14 sealed + 4x14 unsealed) per row and column of squares.
    assert model["n_reference_pixels"] == 4 * (14 * 14 + 4 * 14)
    assert forest["n_samples"] == model["n_samples"] == recomputed(model)["n"]
    assert forest["support_per_class"] == model["support_per_class"]
    assert forest["n_unpredicted"] == model["n_unpredicted"]


def test_side_by_side_lines_are_printed(scene, capsys):
    out = scene["dir"] / "eval_print"
    assert evaluate(scene, out, "--baseline", "rf", "--baseline-labels",
                    str(scene["scene"].labels), "--trees", "5") == 0
    text = capsys.readouterr().out
    model = json.loads((out / "metrics.json").read_text())
    forest = json.loads((out / "baseline_metrics.json").read_text())["metrics"]
    assert (f"accuracy: model {model['accuracy']:.4f} vs forest "
            f"{forest['accuracy']:.4f}") in text
    assert "F1 weighted: model" in text and "F1 sealed: model" in text


def test_missing_baseline_labels_is_a_config_error(scene, capsys, tmp_path):
    gone = tmp_path / "moved_away.gpkg"
    model = with_labels_path(tmp_path / "m.tsm", gone)
    rc = evaluate(scene, tmp_path / "e", "--baseline", "rf", model=model)
    err = capsys.readouterr().err
    assert rc == 2
    assert "--baseline rf needs the training labels" in err
    assert f"training labels {gone} do not exist here" in err
    assert "--baseline-labels" in err
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_baseline_labels_default_to_the_recorded_training_labels(scene, tmp_path, evaluated):
    model = with_labels_path(tmp_path / "m.tsm", scene["scene"].labels)
    assert evaluate(scene, tmp_path / "e", "--baseline", "rf", "--trees", "20",
                    model=model) == 0
    base = json.loads((tmp_path / "e" / "baseline_metrics.json").read_text())
    assert base["labels"] == str(scene["scene"].labels)
    # Same labels, class field (the model's), seed and trees: the same forest and scores.
    first = json.loads((evaluated / "baseline_metrics.json").read_text())
    assert base["metrics"]["confusion_matrix"] == first["metrics"]["confusion_matrix"]


def test_unknown_class_in_baseline_labels_is_refused(scene, capsys, tmp_path):
    odd = write_polygons(tmp_path / "odd.gpkg",
                         [(pixel_box(7, 7, 15, 15), "sealed", "roof"),
                          (pixel_box(22, 22, 30, 30), "water", "lake")])
    rc = evaluate(scene, tmp_path / "e", "--baseline", "rf", "--baseline-labels", str(odd))
    err = capsys.readouterr().err
    assert rc == 2
    assert "water" in err
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_pixels_the_model_leaves_out_are_left_out_for_the_forest(scene, tmp_path):
    # Band 1 is 150 +- 12 in both classes: --nodata 150 makes ~6% of the pixels nodata.
    out = tmp_path / "e"
    assert evaluate(scene, out, "--baseline", "rf", "--baseline-labels",
                    str(scene["scene"].labels), "--nodata", "150", "--trees", "5") == 0
    model = json.loads((out / "metrics.json").read_text())
    forest = json.loads((out / "baseline_metrics.json").read_text())["metrics"]
    assert model["n_outside_valid_data"] > 0
    assert forest["n_unpredicted"] == model["n_unpredicted"] == model["n_outside_valid_data"]
    assert forest["n_samples"] == model["n_samples"] \
        == model["n_reference_pixels"] - model["n_outside_valid_data"]
    assert recomputed(forest)["n"] == forest["n_samples"]
