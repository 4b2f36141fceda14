"""The few-polygon recipe beats a random forest on the demo's independent reference points.

Issue 11's bar, as `make demo` runs it: the NC Landsat 7 scene (28.5 m, bands 1-5), the 34
training polygons with *developed* as sealed and every other class unsealed, a model trained
with ``--preset few_polygons`` (seed 0), scored with ``evaluate --baseline rf`` on the 1,000
reference points beside a forest fitted on the same polygons in the same run. Measured
(docs/few_polygons.md, seeds 0-2): accuracy 0.803 +- 0.007 vs 0.786 +- 0.005, F1 sealed
0.653 +- 0.019 vs 0.537 +- 0.008; the assertions leave the spread of one seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.paths import ROOT, terraseg

DEMO = ROOT / "data" / "demo"
SEALED_MAP = "developed=sealed,*=unsealed"

pytestmark = pytest.mark.slow  # one training on the demo scene (~1 min on 2 cores)


def test_few_polygons_preset_beats_the_forest_on_the_reference_points(tmp_path: Path) -> None:
    raster = DEMO / "nc_landsat7_6band.tif"
    polygons = DEMO / "nc_training_polygons.gpkg"
    points = DEMO / "nc_reference_points.gpkg"
    if not all(p.is_file() for p in (raster, polygons, points)):
        pytest.skip("demo data absent: run `make demo-data` (data/demo)")
    model = tmp_path / "sealed.tsm"
    train = terraseg("train", "--raster", raster, "--labels", polygons, "--class-field", "label",
                     "--class-map", SEALED_MAP, "--bands", "1,2,3,4,5", "--class-weights",
                     "inverse", "--preset", "few_polygons", "--epochs", 30, "--seed", 0,
                     "--cache-dir", tmp_path / "cache", "--out", model, "--quiet",
                     cwd=tmp_path, timeout=900)
    assert train.returncode == 0, train.stderr[-2000:]
    info = json.loads(terraseg("info", model, cwd=tmp_path).stdout)
    params = info["architecture"]["params"]
    assert (params["patch_px"], params["block_px"], params["stride_px"]) == (7, 3, 1)
    ev = terraseg("evaluate", "--model", model, "--raster", raster, "--reference", points,
                  "--class-field", "label", "--class-map", SEALED_MAP, "--baseline", "rf",
                  "--baseline-labels", polygons, "--baseline-class-field", "label",
                  "--baseline-class-map", SEALED_MAP, "--seed", 0, "--out-dir",
                  tmp_path / "eval", "--quiet", cwd=tmp_path, timeout=600)
    assert ev.returncode == 0, ev.stderr[-2000:]
    mine = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    forest = json.loads((tmp_path / "eval" / "baseline_metrics.json").read_text())["metrics"]
    assert mine["n_samples"] == forest["n_samples"] == 751  # the same points for both
    assert 0.77 < forest["accuracy"] < 0.80
    assert mine["accuracy"] > forest["accuracy"]
    assert mine["f1_per_class"]["sealed"] > forest["f1_per_class"]["sealed"] + 0.05
