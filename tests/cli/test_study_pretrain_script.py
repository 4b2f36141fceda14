"""scripts/study_pretrain.py: its pure parts (polygon subsets, summaries, plot) on tiny data."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import fiona
import pytest
from shapely.geometry import box, mapping

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "study_pretrain.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study_pretrain", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture
def polygons(tmp_path: Path) -> Path:
    path = tmp_path / "p.gpkg"
    schema = {"geometry": "Polygon", "properties": {"label": "str"}}
    classes = ["developed"] * 3 + ["forest"] * 10 + ["water"] * 7
    with fiona.open(path, "w", driver="GPKG", schema=schema, crs="EPSG:32617") as dst:
        for i, c in enumerate(classes):
            dst.write({"geometry": mapping(box(i * 100, 0, i * 100 + 50, 50)),
                       "properties": {"label": c}})
    return path


def test_map_class(study) -> None:
    assert study.map_class("developed", "developed=sealed,*=unsealed") == "sealed"
    assert study.map_class("forest", "developed=sealed,*=unsealed") == "unsealed"
    assert study.map_class("forest", "water=water") == "forest"


def test_subsample_keeps_a_share_per_class_and_one_at_least(study, polygons, tmp_path) -> None:
    out = tmp_path / "sub.gpkg"
    counts = study.subsample(polygons, out, 0.1, 0, "label", "developed=sealed,*=unsealed")
    assert counts == {"sealed": 1, "unsealed": 2}  # 10 % of 3 -> 1 (at least one); of 17 -> 2
    with fiona.open(out) as src:
        kept = [f["properties"]["label"] for f in src]
    assert kept.count("developed") == 1 and len(kept) == 3
    again = tmp_path / "again.gpkg"
    study.subsample(polygons, again, 0.1, 0, "label", "developed=sealed,*=unsealed")
    with fiona.open(out) as a, fiona.open(again) as b:
        assert [f.geometry["coordinates"] for f in a] == [f.geometry["coordinates"] for f in b]
    other = tmp_path / "other.gpkg"
    study.subsample(polygons, other, 0.5, 1, "label", "developed=sealed,*=unsealed")
    with fiona.open(other) as src:
        assert len(src) == 2 + 8  # round(1.5) = 2 sealed, round(8.5) = 8 unsealed
    full = tmp_path / "full.gpkg"
    assert study.subsample(polygons, full, 1.0, 2, "label", "x=y") == {
        "developed": 3, "forest": 10, "water": 7}


def row(study, variant: str, fraction: float, seed: int, f1: float, forest: float) -> dict:
    return {"dataset": "nc", "variant": variant, "fraction": fraction, "seed": seed,
            "network": {"accuracy": f1, "f1_positive": f1, "f1_macro": f1, "n": 10},
            "forest": {"accuracy": forest, "f1_positive": forest, "f1_macro": forest, "n": 10}}


def test_table_counts_the_forest_once_and_reports_mean_sd(study) -> None:
    rows = [row(study, "scratch", 1.0, 0, 0.6, 0.5), row(study, "scratch", 1.0, 1, 0.8, 0.7),
            row(study, "ssl", 1.0, 0, 0.7, 0.5), row(study, "ssl", 1.0, 1, 0.9, 0.7)]
    summary = study.summarise(rows)
    assert summary[("nc", "forest", 1.0)]["f1_positive"] == [0.5, 0.7]
    ds = study.Dataset("nc", Path("r"), None, Path("l"), "label", "", Path("ref"), "label",
                       None, "sealed")
    table = study.table_markdown(rows, [ds])
    assert "| scratch | 0.700 ± 0.141 / 0.700 ± 0.141 (n=2) |" in table
    assert "| ssl | 0.800 ± 0.141" in table
    assert "| forest | 0.600 ± 0.141" in table
    svg = study.learning_curve_svg(rows, [ds])
    assert svg.startswith("<svg") and svg.count("<polyline") == 3  # scratch, ssl, forest
