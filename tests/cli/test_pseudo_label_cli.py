"""``terraseg pseudo-label`` end to end: the command line and the worker job.

Every test runs the real console script in a subprocess. The labels are a coarse raster
(the synthetic truth downsampled 4x by majority onto a 40 m grid of its own).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.paths import ROOT, terraseg
from helpers.synthetic import ORIGIN, make_scene

from terraseg.protocol.events import Progress, parse_line

sys.path.insert(0, str(ROOT / "tests" / "core"))
from test_pseudo_label import write_coarse_labels  # noqa: E402

CLASS_MAP = "1=sealed,2=unsealed"




@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("pseudo_cli")
    sc = make_scene(folder, size=128)
    return sc, write_coarse_labels(folder / "coarse.tif", sc.truth)


def test_pseudo_label_command_writes_pseudo_labels_and_refuses_overwrite(
        scene, tmp_path: Path) -> None:
    sc, coarse = scene
    out = tmp_path / "pl"
    args = ["pseudo-label", "--raster", sc.raster, "--labels", coarse, "--class-map",
            CLASS_MAP, "--out-dir", out, "--trees", "10", "--strategy", "random",
            "--zero-disagreeing"]
    proc = terraseg(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "agreement with the source labels" in proc.stdout
    assert "10 trees fitted on" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["classes.tif", "confidence.tif",
                                                     "probability.tif"]
    with rasterio.open(out / "classes.tif") as ds, rasterio.open(sc.raster) as src:
        assert (ds.crs, ds.transform, ds.shape) == (src.crs, src.transform, src.shape)
        cls = ds.read(1)
    assert (cls == sc.truth).mean() > 0.99
    with rasterio.open(out / "probability.tif") as ds:
        prob = ds.read()
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    assert (prob.sum(axis=0) == 0).any()  # --zero-disagreeing: edges of the coarse labels

    before = (out / "classes.tif").read_bytes()
    again = terraseg(*args, cwd=tmp_path)
    assert again.returncode == 2, again.stderr
    assert "error:" in again.stderr and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    assert (out / "classes.tif").read_bytes() == before


def test_pseudo_label_worker_job_returns_the_result(scene, tmp_path: Path) -> None:
    sc, coarse = scene
    job = {"command": "pseudo-label", "args": {
        "raster": str(sc.raster), "labels": str(coarse), "class_map": CLASS_MAP,
        "out_dir": str(tmp_path / "w"), "trees": 10, "strategy": "kmeans", "k": 20,
        "max_depth": 3, "seed": 1}}
    proc = terraseg("worker", cwd=tmp_path, stdin=json.dumps(job))
    assert proc.returncode == 0, proc.stderr
    events = [parse_line(line) for line in proc.stdout.splitlines() if line.strip()]
    kinds = [e.kind for e in events]
    assert kinds[-1] == "result" and "error" not in kinds
    res = events[-1].payload
    assert res["strategy"] == "kmeans" and res["quota"] == 20
    assert res["sampled_pixels"] == {"sealed": 20, "unsealed": 20}
    assert res["outputs"] == [str(tmp_path / "w" / "probability.tif"),
                              str(tmp_path / "w" / "classes.tif"),
                              str(tmp_path / "w" / "confidence.tif")]
    agree = res["agreement"]
    assert agree["n_samples"] == 128 * 128 and 0.9 < agree["accuracy"] < 1.0
    assert set(agree["f1_per_class"]) == {"sealed", "unsealed"}
    assert res["fit_seconds"] >= 0 and res["max_depth"] == 3
    with rasterio.open(res["classes"]) as ds:
        assert np.isclose(agree["accuracy"], 1 - res["disagreeing_pixels"] / (128 * 128))
        assert (ds.read(1) == sc.truth).mean() > 0.97
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].stage == "pseudo-label" and progress[-1].fraction == 1.0


def test_coarse_raster_off_the_image_is_refused(scene, tmp_path: Path) -> None:
    sc, _ = scene
    far = write_coarse_labels(tmp_path / "far.tif", sc.truth,
                              origin=(ORIGIN[0] + 50_000, ORIGIN[1]))
    proc = terraseg("pseudo-label", "--raster", sc.raster, "--labels", far, "--class-map",
                    CLASS_MAP, "--out-dir", tmp_path / "o", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "far.tif" in proc.stderr and "overlap" in proc.stderr
    assert not (tmp_path / "o" / "classes.tif").exists()
