"""``terraseg quickmap`` end to end: the command line, the worker job and the demo data.

Every test runs the real console script in a subprocess, as a user (or the panel) would.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.paths import ROOT, terraseg
from helpers.synthetic import make_scene

from terraseg.protocol.events import Progress, parse_line

DEMO = ROOT / "data" / "demo"




@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):
    return make_scene(tmp_path_factory.mktemp("quickmap"), size=128)


def test_quickmap_writes_predicts_outputs_with_held_out_accuracy(scene, tmp_path: Path) -> None:
    out = tmp_path / "quick"
    args = ["quickmap", "--raster", scene.raster, "--labels", scene.labels, "--class-field",
            "klass", "--out-dir", out, "--trees", "20", "--features", "ndvi"]
    proc = terraseg(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "validation accuracy 1.0000" in proc.stdout and "no model file" in proc.stdout
    assert "20 trees fitted on" in proc.stderr
    with rasterio.open(out / "classes.tif") as ds, rasterio.open(scene.raster) as src:
        assert (ds.crs, ds.transform, ds.shape) == (src.crs, src.transform, src.shape)
        assert (ds.read(1) == scene.truth).mean() > 0.97
    assert sorted(p.name for p in out.iterdir()) == ["classes.tif", "probability.tif"]
    assert not list(tmp_path.rglob("*.tsm"))

    # the same outputs again: refused without --overwrite, files left as they were
    before = (out / "classes.tif").read_bytes()
    again = terraseg(*args, cwd=tmp_path)
    assert again.returncode == 2, again.stderr
    assert "error:" in again.stderr and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    assert (out / "classes.tif").read_bytes() == before
    assert terraseg(*args, "--overwrite", cwd=tmp_path).returncode == 0


def test_quickmap_worker_job_ends_with_predict_shaped_result(scene, tmp_path: Path) -> None:
    job = {"command": "quickmap", "args": {
        "raster": str(scene.raster), "labels": str(scene.labels), "class_field": "klass",
        "out_dir": str(tmp_path / "q"), "trees": 10, "window": [0, 0, 64, 96]}}
    proc = terraseg("worker", cwd=tmp_path, stdin=json.dumps(job))
    events = [parse_line(line) for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 0, proc.stderr
    kinds = [e.kind for e in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1 and "error" not in kinds
    res = events[-1].payload
    assert set(res) >= {"probability", "classes", "window", "valid_pixels", "class_shares",
                        "class_list", "validation", "sampled_pixels", "model_file"}
    assert res["window"] == [0, 0, 64, 96] and res["valid_pixels"] == 64 * 96
    assert [c["name"] for c in res["class_list"]] == ["sealed", "unsealed"]
    assert res["validation"]["accuracy"] == pytest.approx(1.0)
    assert sum(res["sampled_pixels"]["val"].values()) == res["validation"]["n_samples"] > 0
    assert math.isclose(sum(res["class_shares"].values()), 1.0)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and progress[-1].stage == "quickmap" and progress[-1].fraction == 1.0


def _quickmap_job(scene, out_dir: Path, cwd: Path, **args) -> dict:
    """The result payload of a quickmap worker job."""
    job = {"command": "quickmap", "args": {
        "raster": str(scene.raster), "labels": str(scene.labels), "class_field": "klass",
        "out_dir": str(out_dir), "trees": 10, **args}}
    proc = terraseg("worker", cwd=cwd, stdin=json.dumps(job))
    assert proc.returncode == 0, proc.stderr
    return parse_line(proc.stdout.strip().splitlines()[-1]).payload


@pytest.mark.slow
def test_quickmap_keeps_the_split_of_a_model(scene, tmp_path: Path) -> None:
    """--split-from: the model's validation polygons are the quick map's, whatever the seed."""
    model = tmp_path / "m.tsm"
    trained = terraseg("train", "--raster", scene.raster, "--labels", scene.labels,
                       "--class-field", "klass", "--out", model, "--patch-size", "23",
                       "--blocks", "1,1,1", "--epochs", "1", "--samples-per-epoch", "64",
                       "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    from terraseg.core.modelfile import read_meta

    held_out = sorted(read_meta(model).split.keys_by_split["val"])
    assert held_out
    kept = _quickmap_job(scene, tmp_path / "kept", tmp_path, seed=5, split_from=str(model))
    assert sorted(kept["split"]["validation_regions"]) == held_out
    assert kept["split"]["kept_regions"] == 32 and kept["split"]["split_from"] == str(model)
    fresh = _quickmap_job(scene, tmp_path / "fresh", tmp_path, seed=5)
    assert sorted(fresh["split"]["validation_regions"]) != held_out
    assert fresh["split"]["kept_regions"] == 0
    assert fresh["split"]["regions"] == kept["split"]["regions"] == {"train": 26, "val": 6}


@pytest.mark.parametrize("flag, value, words", [
    ("--trees", "0", "--trees"), ("--seed", "-1", "--seed"),
    ("--val-fraction", "1.5", "val_fraction"), ("--max-samples", "5", "--max-samples")])
def test_quickmap_bad_option_values_are_input_errors(scene, tmp_path: Path, flag: str,
                                                     value: str, words: str) -> None:
    proc = terraseg("quickmap", "--raster", scene.raster, "--labels", scene.labels,
                    "--class-field", "klass", "--out-dir", tmp_path / "q", flag, value,
                    cwd=tmp_path)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "fix:" in proc.stderr
    assert not (tmp_path / "q" / "classes.tif").exists()


def test_quickmap_nodata_override_leaves_an_undeclared_frame_unmapped(scene,
                                                                     tmp_path: Path) -> None:
    """A frame of zeros with no declared nodata is mapped unless --nodata 0 is given."""
    framed = tmp_path / "framed.tif"
    with rasterio.open(scene.raster) as src:
        data, profile = src.read(), src.profile
    assert profile.get("nodata") is None
    data[:3, :8, :] = 0  # band 4 of the scene is its alpha band: left as it is
    data[:3, :, -8:] = 0
    with rasterio.open(framed, "w", **profile) as dst:
        dst.write(data)
    frame = np.zeros(data.shape[1:], bool)
    frame[:8, :] = frame[:, -8:] = True
    for nodata, out in ((None, "plain"), (0, "masked")):
        extra = ["--nodata", str(nodata)] if nodata is not None else []
        proc = terraseg("quickmap", "--raster", framed, "--labels", scene.labels,
                        "--class-field", "klass", "--trees", "10", "--bands", "1,2,3",
                        "--out-dir", tmp_path / out, *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        with rasterio.open(tmp_path / out / "classes.tif") as ds:
            classes = ds.read(1)
        if nodata is None:
            assert (classes[frame] > 0).all()
        else:
            assert (classes[frame] == 0).all() and (classes[~frame] > 0).all()


def test_quickmap_on_the_demo_data(tmp_path: Path) -> None:
    raster, polygons = DEMO / "nc_landsat7_6band.tif", DEMO / "nc_training_polygons.gpkg"
    if not (raster.is_file() and polygons.is_file()):
        pytest.skip("demo data absent: run `make demo-data` (data/demo)")
    proc = terraseg("quickmap", "--raster", raster, "--labels", polygons, "--class-field",
                    "label", "--bands", "1,2,3,4,5", "--out-dir", tmp_path / "q",
                    cwd=tmp_path, stdin=None)
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(tmp_path / "q" / "classes.tif") as ds, rasterio.open(raster) as src:
        assert (ds.crs, ds.transform, ds.shape) == (src.crs, src.transform, src.shape)
        classes = ds.read(1)
        valid = np.all(src.read([1, 2, 3, 4, 5]) != src.nodata, axis=0)
    assert (classes[~valid] == 0).all() and (classes[valid] > 0).all()
    line = proc.stdout.strip().splitlines()[-1]
    accuracy = float(line.split("validation accuracy ")[1].split()[0])
    assert 0.3 < accuracy <= 1.0
