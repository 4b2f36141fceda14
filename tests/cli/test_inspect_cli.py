"""``terraseg inspect`` and ``--nodata`` of mosaic, predict and train, end to end.

Every command runs the real console script (or the worker) in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.patch_models import PARAMS, metadata, randomise, smooth_random
from helpers.paths import ROOT, terraseg
from helpers.synthetic import make_scene, pixel_box, write_polygons, write_raster

from terraseg.core.modelfile import read_metadata, save_model
from terraseg.core.models.registry import build_model

DEMO = ROOT / "data" / "demo"
TINY = ["--patch-size", "23", "--blocks", "1,1,1", "--epochs", "1",
        "--samples-per-epoch", "256"]




def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.skipif(not (DEMO / "nc_landsat7_6band.tif").exists(), reason="no demo raster")
def test_inspect_prints_band_coverage_of_the_demo_raster() -> None:
    out = ok(terraseg("inspect", DEMO / "nc_landsat7_6band.tif", "--labels",
                      DEMO / "nc_reference_points.gpkg", "--class-field", "label")).stdout
    lines = out.splitlines()
    swir2 = next(line for line in lines if "swir2" in line)
    assert "62.4 %" in swir2 and "63.5 %" in swir2
    assert "suggested bands 1,2,3,4,5:  84.7 % of the raster,  85.0 % of the labelled" in out
    assert json.loads(lines[-1]) == {"suggested_bands": [1, 2, 3, 4, 5], "nodata_suspect": None}


def _framed(folder: Path, bands: int = 4) -> Path:
    """A uint16 raster of smooth data inside a 12-px frame of zeros (no nodata declared)."""
    data = smooth_random((bands, 72, 72), seed=3)
    data[:, :12] = 0
    data[:, -12:] = 0
    data[:, :, :12] = 0
    data[:, :, -12:] = 0
    return write_raster(folder / "framed.tif", data)


def test_inspect_as_a_worker_job_suspects_the_zero_frame(tmp_path: Path) -> None:
    raster = _framed(tmp_path)
    job = json.dumps({"command": "inspect", "args": {"raster": str(raster), "bands": "1,2"}})
    proc = ok(terraseg("worker", stdin=job))
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    result = events[-1]
    assert result["event"] == "result" and result["command"] == "inspect"
    assert result["chosen_bands"] == [1, 2] and result["suggested_bands"] == [1, 2, 3, 4]
    assert result["valid_fraction"] == 1.0
    assert result["nodata_suspect"]["value"] == 0.0
    assert result["nodata_suspect"]["pixel_fraction"] == pytest.approx(1 - 48 * 48 / 72**2,
                                                                       abs=1e-4)
    assert any(e["event"] == "log" and e["level"] == "warning" and "--nodata 0" in e["message"]
               for e in events)


def test_mosaic_nodata_flag(tmp_path: Path) -> None:
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    data = np.ones((1, 8, 8), dtype=np.uint8)
    write_raster(tiles / "a.tif", data, nodata=0)
    write_raster(tiles / "b.tif", data)  # same place, no nodata
    refused = terraseg("mosaic", "--inputs", tiles, "--out", tmp_path / "m.vrt")
    assert refused.returncode == 2 and "different nodata values" in refused.stderr
    ok(terraseg("mosaic", "--inputs", tiles, "--out", tmp_path / "m.vrt", "--nodata", "0"))
    with rasterio.open(tmp_path / "m.vrt") as ds:
        assert ds.nodata == 0


def test_predict_with_nodata_leaves_the_frame_nodata(tmp_path: Path) -> None:
    raster = _framed(tmp_path)
    net = randomise(build_model("patch_cnn", PARAMS), seed=0)
    model = save_model(tmp_path / "m.tsm", net, metadata(net))
    outputs = {}
    for name, extra in (("plain", []), ("nodata", ["--nodata", "0"])):
        ok(terraseg("predict", "--model", model, "--raster", raster, "--out-dir",
                    tmp_path / name, "--device", "cpu", *extra))
        with rasterio.open(tmp_path / name / "classes.tif") as ds:
            outputs[name] = (ds.read(1, masked=True), ds.nodata)
    plain, _ = outputs["plain"]
    masked, _ = outputs["nodata"]
    inside = np.zeros((72, 72), bool)
    inside[12:60, 12:60] = True
    assert not plain.mask.any()  # zeros read as data: the frame gets classes
    assert masked.mask[~inside].all() and not masked.mask[inside].any()
    np.testing.assert_array_less(0, masked.data[inside])


def test_evaluate_with_nodata_leaves_reference_on_the_frame_out(tmp_path: Path) -> None:
    raster = _framed(tmp_path)
    net = randomise(build_model("patch_cnn", PARAMS), seed=0)
    model = save_model(tmp_path / "m.tsm", net, metadata(net))
    reference = write_polygons(tmp_path / "ref.gpkg", [
        (pixel_box(0, 0, 10, 10), "sealed", "x"),       # 100 px on the zero frame
        (pixel_box(30, 30, 40, 40), "unsealed", "x")])  # 100 px on data
    counts = {}
    for name, extra in (("plain", []), ("nodata", ["--nodata", "0"])):
        ok(terraseg("evaluate", "--model", model, "--raster", raster, "--reference", reference,
                    "--class-field", "klass", "--out-dir", tmp_path / name, "--device", "cpu",
                    *extra))
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        counts[name] = (metrics["n_reference_pixels"], metrics["n_outside_valid_data"])
    assert counts == {"plain": (200, 0), "nodata": (200, 100)}


def test_train_with_nodata_drops_labels_on_it_and_records_it(tmp_path: Path) -> None:
    scene = make_scene(tmp_path)
    with rasterio.open(scene.raster) as ds:
        data, profile = ds.read(), ds.profile
    data[:, :16] = 0  # the first row of "sealed" boxes (3 x 64 px) lies on the zeros
    with rasterio.open(scene.raster, "w", **profile) as dst:
        dst.write(data)
    out = tmp_path / "m.tsm"
    proc = ok(terraseg("train", "--raster", scene.raster, "--labels", scene.labels,
                       "--class-field", "klass", "--out", out, "--nodata", "0", *TINY,
                       timeout=600))
    assert "ignored 192 labelled pixel(s) on nodata" in proc.stdout + proc.stderr
    assert read_metadata(out)["training"]["options"]["nodata"] == 0.0
