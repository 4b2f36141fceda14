"""Tests for terraseg.training.compare: the loss/architecture table with an RF baseline."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers.synthetic import make_scene

from terraseg.core.reporting import JsonLinesReporter
from terraseg.protocol.errors import ConfigError, OutputError, TerraSegError
from terraseg.protocol.options import TrainOptions
from terraseg.training.compare import (
    RF_NAME,
    CompareRun,
    parse_runs,
    rf_baseline,
    run_compare,
)


def base_config(d: Path, **kw) -> TrainOptions:
    scene = make_scene(d)
    opts = {"raster": str(scene.raster), "labels": str(scene.labels), "out": "unused.tsm",
            "class_field": "klass", "tile_px": 32, "base_width": 4, "epochs": 1,
            "samples_per_epoch": 32, "batch_size": 8, "split": "polygons",
            "val_fraction": 0.25, "test_fraction": 0.25, "cache_dir": str(d / "cache")}
    opts.update(kw)
    return TrainOptions.build(**opts)


def quiet() -> JsonLinesReporter:
    return JsonLinesReporter(io.StringIO())


def test_parse_runs_pairs_cross_product_and_bad_specs() -> None:
    assert parse_runs("unet_small:ce; unet_se:focal:0.7,dice:0.3", None, None) == [
        CompareRun("unet_small", "ce"), CompareRun("unet_se", "focal:0.7,dice:0.3")]
    assert parse_runs(None, "unet_small,unet_cbam", "ce;focal+iou") == [
        CompareRun("unet_small", "ce"), CompareRun("unet_small", "focal+iou"),
        CompareRun("unet_cbam", "ce"), CompareRun("unet_cbam", "focal+iou")]
    assert CompareRun("unet_se", "focal:0.7,dice:0.3").tag == "unet_se__focal_0.7_dice_0.3"
    with pytest.raises(ConfigError, match="has no loss"):
        parse_runs("unet_small", None, None)
    with pytest.raises(ConfigError, match="Nothing to compare"):
        parse_runs(None, None, "ce")
    with pytest.raises(ConfigError, match="twice"):
        parse_runs("unet_small:ce;unet_small:ce", None, None)
    with pytest.raises(TerraSegError, match="unet_small"):  # the registry lists the names
        parse_runs("unet_tiny:ce", None, None)


def test_rf_baseline_separates_a_separable_scene(tmp_path: Path) -> None:
    cfg = base_config(tmp_path)
    test, seconds = rf_baseline(cfg, trees=20)
    assert test["accuracy"] == pytest.approx(1.0)
    assert test["mean_iou"] == pytest.approx(1.0)
    assert test["n_samples"] > 0 and seconds >= 0
    # the same split as training: the test pixels are those of the test polygons
    assert sum(test["support_per_class"].values()) == test["n_samples"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("compare")
    cfg = base_config(d)
    runs = [CompareRun("unet_small", "ce"), CompareRun("unet_se", "focal+iou")]
    result = run_compare(cfg, runs, d / "out", quiet(), positive_class="sealed", rf_trees=20)
    return {"dir": d, "cfg": cfg, "result": result}


@pytest.mark.slow  # `compared` trains every run: ~18 s on 2 CPU cores
def test_compare_writes_one_row_per_run_and_the_baseline(compared: dict) -> None:
    out = compared["dir"] / "out"
    with open(out / "compare.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["loss"]) for r in rows] == [
        ("unet_small", "ce"), ("unet_se", "focal+iou"), (RF_NAME, "gini (pixels)")]
    for r in rows:
        assert 0.0 <= float(r["mean_iou"]) <= 1.0 and 0.0 <= float(r["f1"]) <= 1.0
        assert float(r["epoch_seconds"]) > 0 or r["model"] == RF_NAME
    # every row is measured on the same held-out pixels
    assert len({r["n_test_pixels"] for r in rows}) == 1 and int(rows[0]["n_test_pixels"]) > 0
    assert int(rows[0]["parameters"]) > 0
    assert float(rows[2]["mean_iou"]) == pytest.approx(1.0)  # separable scene
    for r in rows[:2]:
        assert (out / f"{r['model']}__{r['loss']}.tsm").exists()
    md = (out / "compare.md").read_text()
    assert "| Model | Loss | Param | mIoU | F1 (sealed) |" in md
    assert "**1.000**" in md and "20 trees" in md
    doc = json.loads((out / "compare.json").read_text())
    assert doc["positive_class"] == "sealed" and len(doc["rows"]) == 3


@pytest.mark.slow  # needs `compared` (~18 s)
def test_compare_refuses_to_overwrite_and_needs_a_test_split(compared: dict,
                                                             tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="already exists"):
        run_compare(compared["cfg"], [CompareRun("unet_small", "ce")],
                    compared["dir"] / "out", quiet())
    cfg = base_config(tmp_path, test_fraction=0.0)
    with pytest.raises(ConfigError, match="held-out test pixels"):
        run_compare(cfg, [CompareRun("unet_small", "ce")], tmp_path / "o", quiet())
    assert not (tmp_path / "o" / "compare.csv").exists()


@pytest.mark.slow  # runs x folds trainings: ~20 s on 2 CPU cores
def test_compare_k_folds_gives_mean_and_std(tmp_path: Path) -> None:
    cfg = base_config(tmp_path)
    res = run_compare(cfg, [CompareRun("unet_small", "ce")], tmp_path / "cv", quiet(),
                      rf_trees=10, k=2)
    rows = res["rows"]
    assert [r["folds"] for r in rows] == [2, 2]
    doc = json.loads((tmp_path / "cv" / "compare.json").read_text())
    rf = doc["folds"][RF_NAME]
    assert rows[1]["mean_iou"] == pytest.approx(np.mean([f["mean_iou"] for f in rf]), abs=1e-4)
    assert rows[1]["mean_iou_std"] == pytest.approx(np.std([f["mean_iou"] for f in rf]),
                                                    abs=1e-4)
    assert "±" in (tmp_path / "cv" / "compare.md").read_text()


def test_unknown_positive_class_is_refused(tmp_path: Path) -> None:
    cfg = base_config(tmp_path)
    with pytest.raises(ConfigError, match="Positive class 'landslide'"):
        run_compare(cfg, [CompareRun("unet_small", "ce")], tmp_path / "p", quiet(),
                    positive_class="landslide", rf_trees=0)
