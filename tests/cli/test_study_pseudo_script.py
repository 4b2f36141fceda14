"""scripts/study_pseudo_labels.py: its pure parts (scoring, folds, summaries) on tiny data."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import fiona
import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.transform import from_origin
from shapely.geometry import box, mapping

from terraseg.core.classes import make_classes
from terraseg.core.grid import Grid

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "study_pseudo_labels.py"
X0, Y0 = 330000.0, 5822040.0  # EPSG:32633, as the study's scene


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study_pseudo_labels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _write_polygons(path: Path, rows: list[tuple[dict, object]]) -> Path:
    props = {k: ("int" if isinstance(v, int) else "str") for k, v in rows[0][0].items()}
    schema = {"geometry": "Polygon", "properties": props}
    with fiona.open(path, "w", driver="GPKG", schema=schema, crs="EPSG:32633") as dst:
        for attrs, geom in rows:
            dst.write({"geometry": mapping(geom), "properties": attrs})
    return path


def _cols(c0: int, c1: int, rows: int = 2):
    """Columns c0..c1-1 of the first ``rows`` rows of the 10 m grid."""
    return box(X0 + 10 * c0, Y0 - 10 * rows, X0 + 10 * c1, Y0)


def test_score_map_against_polygons_with_the_studys_class_map(study, tmp_path: Path) -> None:
    # Reference: cid 1 (water) on columns 0-3, cid 2 (land) on columns 4-7, rows 0-1.
    ref = _write_polygons(tmp_path / "ref.gpkg", [({"cid": 1}, _cols(0, 4)),
                                                   ({"cid": 2}, _cols(4, 8))])
    grid = Grid(10, 10, from_origin(X0, Y0, 10, 10), CRS.from_epsg(32633).to_wkt())
    classes = make_classes(["water", "land"])
    pred = np.full((10, 10), 2, dtype=np.uint8)
    pred[:, :5] = 1  # column 4 is land in the reference but mapped as water
    m = study.score_map(pred, classes, grid, ref, "cid", "1=water,2=land")
    assert m.n_samples == 16
    assert m.f1_per_class["water"] == pytest.approx(2 * 0.8 / 1.8)  # P 8/10, R 1
    assert m.f1_per_class["land"] == pytest.approx(2 * 0.75 / 1.75)  # P 1, R 6/8
    held_out = np.zeros((10, 10), dtype=bool)
    held_out[:, 4] = True  # the pixels a forest was fitted on are left out
    m2 = study.score_map(pred, classes, grid, ref, "cid", "1=water,2=land", exclude=held_out)
    assert (m2.n_samples, m2.f1_macro) == (14, 1.0)
    row = study.brief(m)
    assert row["iou_water"] == pytest.approx(0.8) and row["pixels"] == 16


def test_split_polygons_keeps_every_class_in_both_folds(study, tmp_path: Path) -> None:
    rows = [({"fclass": name}, _cols(i, i + 1)) for i, name in
            enumerate(["water", "water", "farm", "farm", "farm", "grass"])]
    src = _write_polygons(tmp_path / "osm.gpkg", rows)
    fold_a, fold_b = study.split_polygons(src, tmp_path, seed=0)
    with fiona.open(fold_a) as a, fiona.open(fold_b) as b:
        names_a = sorted(f["properties"]["fclass"] for f in a)
        names_b = sorted(f["properties"]["fclass"] for f in b)
    assert sorted(names_a + names_b) == sorted(r[0]["fclass"] for r in rows)
    assert names_a.count("water") == names_b.count("water") == 1
    assert sorted([names_a.count("farm"), names_b.count("farm")]) == [1, 2]


def test_mean_std_and_sampling_labels(study) -> None:
    assert study.mean_std([0.5, 0.7]) == "0.600 ± 0.141"
    assert study.mean_std([None]) == "-"
    assert study.mean_std([0.25, None]) == "0.250"  # one seed: no spread to show
    assert [s.label for s in study.SAMPLINGS] == [
        "all", "random", "uniform", "kmeans-50", "kmeans-200", "kmeans-1000"]


def test_train_args_per_variant(study, tmp_path: Path) -> None:
    ctx = study.Context(tmp_path, tmp_path / "s.tif", tmp_path / "osm.gpkg", tmp_path / "r.gpkg",
                        tmp_path / "a.gpkg", tmp_path / "b.gpkg", np.zeros((1, 1), bool), {},
                        study.QUICK_TRAINING, False)
    km = study.Sampling("kmeans", 200)
    source = study.train_args(ctx, "fpn_resnet18", "source", 1, tmp_path / "m.tsm", km)
    assert "pseudo_labels" not in source
    assert (source["tile_size"], source["epochs"], source["samples_per_epoch"]) == (64, 5, 128)
    assert (source["preset"], source["class_map"]) == ("seed003", "water=water,*=land")
    conf = study.train_args(ctx, "fpn_resnet18", "pseudo+confidence", 1, tmp_path / "m.tsm",
                            km)
    assert (conf["pseudo_strategy"], conf["pseudo_k"], conf["pseudo_probability"]) == (
        "kmeans", 200, "channel")
    assert conf["pseudo_source"] == str(tmp_path / "osm.gpkg")
    argv = study.job_argv("train", conf)
    assert argv[:2] == ["terraseg", "train"] and "--pseudo-labels" in argv
