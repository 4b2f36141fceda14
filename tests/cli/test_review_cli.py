"""``terraseg review`` end to end: a deliberately flipped polygon ranks first.

The synthetic scene (helpers.synthetic, EPSG:32632, 96 x 96 px) has 9 sealed and 9
unsealed square polygons (labels in EPSG:4326); the sealed square at rows/cols 39..46 is
labelled 'unsealed' here (feature 9). Three fold models of the few-polygon recipe (3
epochs) score every polygon out of fold. Every test runs the real console script.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import fiona
import numpy as np
import pytest
from helpers.paths import terraseg
from helpers.synthetic import make_scene, pixel_box, write_polygons, write_raster
from shapely.geometry import shape

from terraseg.protocol.events import parse_line

FLIPPED = (36, 36)  # the pattern cell whose sealed square is labelled 'unsealed'
FAST = ("--preset", "few_polygons", "--epochs", "3", "--k", "3")
SUSPECT_KEYS = {"rank", "feature_id", "region_key", "given_class", "predicted_class",
                "predicted_probability", "score", "bbox"}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("review")
    sc = make_scene(folder, size=96)
    feats, label = [], np.zeros((96, 96), np.uint8)
    for r in range(4, 84, 32):
        for c in range(4, 84, 32):
            wrong = (r, c) == FLIPPED
            feats.append((pixel_box(r + 3, c + 3, r + 11, c + 11),
                          "unsealed" if wrong else "sealed", "roof"))
            feats.append((pixel_box(r + 18, c + 18, r + 26, c + 26), "unsealed", "meadow"))
            label[r + 3 : r + 11, c + 3 : c + 11] = 2 if wrong else 1
            label[r + 18 : r + 26, c + 18 : c + 26] = 2
    polygons = write_polygons(folder / "flipped.gpkg", feats)
    raster_labels = write_raster(folder / "flipped.tif", label[None])
    return sc, polygons, raster_labels, folder / "cache"


@pytest.mark.slow
def test_review_job_ranks_the_flipped_polygon_first(scene, tmp_path: Path) -> None:
    sc, polygons, _, cache = scene
    out = tmp_path / "rv"
    job = {"command": "review", "args": {
        "raster": str(sc.raster), "labels": str(polygons), "class_field": "klass",
        "preset": "few_polygons", "epochs": 3, "k": 3, "out_dir": str(out), "top": 4,
        "cache_dir": str(cache)}}
    proc = terraseg("worker", cwd=tmp_path, stdin=json.dumps(job))
    assert proc.returncode == 0, proc.stderr
    events = [parse_line(line) for line in proc.stdout.splitlines() if line.strip()]
    assert events[-1].kind == "result", proc.stderr
    res = events[-1].payload
    assert set(res) == {"command", "review_gpkg", "review_csv", "review_json", "ranking",
                        "scorer", "k", "regions", "flagged", "suspects"}
    assert (res["ranking"], res["scorer"], res["k"], res["regions"]) == ("loss", "network", 3,
                                                                        18)
    assert [e.fraction for e in events if e.kind == "progress"
            and e.stage == "review"] == pytest.approx([1 / 3, 2 / 3, 1, 1], abs=1e-3)
    top = res["suspects"]
    assert len(top) == 4 and all(set(s) == SUSPECT_KEYS for s in top)
    first = top[0]
    assert (first["rank"], first["feature_id"]) == (1, "9")
    assert (first["given_class"], first["predicted_class"]) == ("unsealed", "sealed")
    assert first["predicted_probability"] > 0.8
    assert first["score"] > 2 * top[1]["score"]  # well clear of the next polygon
    with fiona.open(polygons) as src:  # bbox and geometry: the feature's own, in EPSG:4326
        original = shape(next(f for f in src if f.id == "9").geometry)
    np.testing.assert_allclose(first["bbox"], original.bounds, atol=1e-9)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["review.gpkg", "review.csv", "review.json", "fold_0.tsm", "fold_1.tsm", "fold_2.tsm",
         *[p.name for p in out.glob("fold_*.last.tsm")]])

    rows = list(csv.DictReader(open(out / "review.csv", encoding="utf-8")))
    assert [int(r["rank"]) for r in rows] == list(range(1, 19))
    # every k-th polygon of each class per fold: 8 sealed (3, 3, 2), 10 unsealed (4, 3, 3)
    assert sorted(int(r["fold"]) for r in rows) == [0] * 7 + [1] * 6 + [2] * 5
    quality = [float(r["cleanlab_quality"]) for r in rows]
    assert int(np.argmin(quality)) == 0  # confident learning puts it first as well
    assert rows[0]["cleanlab_issue"] == "1" and res["flagged"] >= 1
    assert float(rows[0]["loss_score"]) == pytest.approx(
        -np.log(float(rows[0]["given_probability"])), rel=0.5)
    with fiona.open(out / "review.gpkg", layer="review") as layer:
        assert layer.crs.to_epsg() == 4326 and len(layer) == 18
        feat = next(iter(layer))
        assert feat.properties["rank"] == 1 and feat.properties["feature_id"] == "9"
        assert shape(feat.geometry).equals(original)
    doc = json.loads((out / "review.json").read_text(encoding="utf-8"))
    assert doc["regions"] == 18 and doc["rows"][0]["feature_id"] == "9"


def test_review_with_forests_ranks_the_flipped_polygon_first(scene, tmp_path: Path) -> None:
    """--scorer forest: k forests of pixels on the same folds, no network, no fold model."""
    sc, polygons, _, cache = scene
    out = tmp_path / "rf"
    proc = terraseg("review", "--raster", sc.raster, "--labels", polygons, "--class-field",
                    "klass", "--k", "3", "--scorer", "forest", "--trees", "30", "--out-dir",
                    out, "--cache-dir", cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "scored by forest models" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["review.csv", "review.gpkg",
                                                      "review.json"]
    rows = list(csv.DictReader(open(out / "review.csv", encoding="utf-8")))
    assert len(rows) == 18 and rows[0]["feature_id"] == "9"
    assert (rows[0]["given_class"], rows[0]["predicted_class"]) == ("unsealed", "sealed")
    assert float(rows[0]["given_probability"]) < 0.2  # the forests call it sealed
    # the same folds as the networks': every k-th polygon of each class per fold
    assert sorted(int(r["fold"]) for r in rows) == [0] * 7 + [1] * 6 + [2] * 5
    assert float(rows[0]["score"]) > 2 * float(rows[1]["score"])
    doc = json.loads((out / "review.json").read_text(encoding="utf-8"))
    assert (doc["scorer"], doc["trees"], doc["models"]) == ("forest", 30, [])


def test_review_refuses_an_unknown_scorer(scene, tmp_path: Path) -> None:
    sc, polygons, _, _ = scene
    job = {"command": "review", "args": {"raster": str(sc.raster), "labels": str(polygons),
                                         "class_field": "klass", "scorer": "svm",
                                         "out_dir": str(tmp_path / "x")}}
    proc = terraseg("worker", cwd=tmp_path, stdin=json.dumps(job))
    events = [parse_line(line) for line in proc.stdout.splitlines() if line.strip()]
    assert events[-1].kind == "error"
    assert "svm" in events[-1].message and "forest" in events[-1].message + events[-1].hint
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_review_of_a_label_raster_ranks_by_cleanlab(scene, tmp_path: Path) -> None:
    sc, _, raster_labels, cache = scene
    out = tmp_path / "rr"
    proc = terraseg("review", "--raster", sc.raster, "--labels", raster_labels,
                    "--class-map", "1=sealed,2=unsealed", *FAST, "--ranking", "cleanlab",
                    "--out-dir", out, "--cache-dir", cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ranked by cleanlab" in proc.stdout
    rows = list(csv.DictReader(open(out / "review.csv", encoding="utf-8")))
    first = rows[0]
    assert first["region_key"] == "r:unsealed:39,39,47,47" and first["feature_id"] == ""
    assert float(first["score"]) == pytest.approx(1 - float(first["cleanlab_quality"]))
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    with fiona.open(out / "review.gpkg", layer="review") as layer:
        assert layer.crs.to_epsg() == 32632
        geom = shape(next(iter(layer)).geometry)
    # the region's 8 x 8 pixels, vectorised on the image grid
    assert geom.equals(shape(pixel_box(39, 39, 47, 47)))


def test_review_refuses_more_folds_than_polygons_per_class(scene, tmp_path: Path) -> None:
    sc, polygons, _, cache = scene
    proc = terraseg("review", "--raster", sc.raster, "--labels", polygons, "--class-field",
                    "klass", "--preset", "few_polygons", "--k", "9", "--out-dir",
                    tmp_path / "o", "--cache-dir", cache, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    # 'sealed' has 8 polygons (the ninth is labelled 'unsealed'), 'unsealed' 10
    assert "Class 'sealed' has 8 labelled region(s)" in proc.stderr
    assert "--k 8 or fewer" in proc.stderr
    assert not list((tmp_path / "o").glob("*.tsm"))


def test_review_refuses_existing_outputs(scene, tmp_path: Path) -> None:
    sc, polygons, _, cache = scene
    out = tmp_path / "o"
    out.mkdir()
    (out / "review.csv").write_text("mine", encoding="utf-8")
    base = ("review", "--raster", sc.raster, "--labels", polygons, "--class-field", "klass",
            "--out-dir", out, "--cache-dir", cache)
    proc = terraseg(*base, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "review.csv" in proc.stderr and "--overwrite" in proc.stderr
    assert (out / "review.csv").read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["review.csv"]
