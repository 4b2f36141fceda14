"""Option values and inputs that used to fail late, or succeed wrongly, through ``terraseg``.

Each case runs the engine's command line (or a worker job) as a user would and must end
with exit 2, one ``error:`` line naming the option or file and a ``fix:`` line, no
traceback, and nothing written: bad numbers are refused before any raster is read (no
cache, no model), a float probability raster is not vectorised, zones that miss the raster
are not measured, and a VRT whose source files are missing is refused with their paths.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from helpers.patch_models import metadata as patch_metadata
from helpers.patch_models import randomise
from helpers.paths import TERRASEG, terraseg
from helpers.synthetic import make_scene, pixel_box, write_polygons, write_raster
from rasterio.transform import from_origin

from terraseg.core.modelfile import save_model
from terraseg.core.models.registry import build_model
from terraseg.protocol.errors import ConfigError
from terraseg.protocol.options import TrainOptions
from terraseg.training.train import run_train

QUICK = ["--patch-size", "23", "--blocks", "1,1,1", "--epochs", "1",
         "--samples-per-epoch", "64", "--class-field", "klass"]




def snapshot(folder: Path) -> dict[str, str]:
    """Content hash of every file and folder below ``folder``."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest()
                                         if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one 'error:' line and a 'fix:' line, together naming every needle."""
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode} (2 = input error)\n{proc.stdout}\n{err}"
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    fixes = [ln for ln in err.splitlines() if ln.strip().startswith("fix:")]
    assert len(errors) == 1, err
    assert fixes and len(fixes[0].strip()) > len("fix: ") + 10, err
    text = errors[0] + " " + fixes[0]
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{errors[0]}\n{fixes[0]}"
    return errors[0]


def run_job(job: dict, cwd: Path) -> tuple[int, list[dict]]:
    """A worker job to completion: (exit code, its JSON events)."""
    proc = subprocess.run([*TERRASEG, "worker"], input=json.dumps(job), cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def final_error(rc: int, events: list[dict]) -> dict:
    """The job's one final event, an error with a hint (exit 2)."""
    final = [e for e in events if e["event"] in ("result", "error")]
    assert len(final) == 1 and events[-1] is final[0], events
    assert rc == 2 and final[0]["event"] == "error", events
    assert final[0]["hint"], final[0]
    return final[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 4-band patch model and a 4-band U-Net (stride 16), random weights, 10 m pixels."""
    d = tmp_path_factory.mktemp("option_models")
    patch = randomise(build_model("patch_cnn", {
        "in_channels": 4, "num_classes": 3, "patch_px": 51, "block_px": 5,
        "planes": [4, 8, 16], "blocks": [2, 2, 2], "stride_px": 0}), seed=1)
    torch.manual_seed(0)
    unet = build_model("unet_small", {"in_channels": 4, "num_classes": 2, "base_width": 4})
    unet_meta = {
        "architecture": {"name": "unet_small", "params": unet.config.to_dict()},
        "geometry": {"kind": "tile", "tile_px": 32, "stride_px": unet.stride_px,
                     "valid_tile_sizes_px": list(unet.valid_tile_sizes(128))},
        "bands": {"indices": [1, 2, 3, 4], "names": ["red", "green", "blue", "nir"]},
        "normalisation": {"mean": [100.0] * 4, "std": [50.0] * 4},
        "classes": [{"id": 1, "name": "sealed"}, {"id": 2, "name": "unsealed"}],
        "training_raster": {"pixel_size": [10.0, 10.0]}}
    return {"patch": save_model(d / "patch.tsm", patch, patch_metadata(patch)),
            "unet": save_model(d / "unet.tsm", unet.eval(), unet_meta)}


@pytest.fixture
def case(tmp_path: Path) -> Path:
    """A fresh folder with the synthetic scene.tif and labels.gpkg."""
    make_scene(tmp_path)
    return tmp_path


def train(case: Path, *extra: object, out: str | Path = "out.tsm") -> subprocess.CompletedProcess:
    return terraseg("train", "--raster", case / "scene.tif", "--labels", case / "labels.gpkg",
                    "--out", out, *QUICK, "--cache-dir", case / "cache", *extra, cwd=case)


# ------------------------------------------------------------------------------ train


@pytest.mark.parametrize("extra, needles", [
    (["--lr", "nan"], ["--lr", "finite", "--lr 0.001"]),
    (["--lr", "0"], ["--lr", "above 0"]),
    (["--epochs", "0"], ["--epochs", "1 or more"]),
    (["--batch-size", "-1"], ["--batch-size", "1 or more"]),
    (["--val-fraction", "1.5"], ["--val-fraction", "below 1"]),
    (["--model", "unet_small", "--tile-size", "8"], ["--tile-size", "16 or more"]),
    (["--model", "unet_small", "--tile-size", "40"], ["stride 16", "--tile-size 32 or 48"]),
    (["--patch-size", "22"], ["odd", "--patch-size"]),
    (["--accelerator", "foo"], ["--accelerator", "cpu"]),
])
def test_train_refuses_bad_values_before_any_work(case: Path, extra: list[str],
                                                  needles: list[str]) -> None:
    before = snapshot(case)
    proc = train(case, *extra)
    assert_user_error(proc, *needles)
    assert snapshot(case) == before  # no cache, no model: refused before reading anything


@pytest.mark.parametrize("out", ["existing", "newdir/"])
def test_train_refuses_out_that_is_a_directory(case: Path, out: str) -> None:
    (case / "existing").mkdir()
    (case / "existing" / "keep.txt").write_text("mine\n")
    before = snapshot(case)
    proc = train(case, out=out)
    assert_user_error(proc, "--out", out.rstrip("/"))
    assert snapshot(case) == before


@pytest.mark.parametrize("command, extra, needles", [
    ("cv", ["--k", "0"], ["--k is 0", "2 or more"]),  # was: an empty cv.csv, exit 0
    ("grid", ["--lrs", "1e-3,0"], ["--lrs holds 0", "above 0"]),  # was: after the 1st run
])
def test_commands_refuse_their_own_numbers(case: Path, command: str, extra: list[str],
                                           needles: list[str]) -> None:
    before = snapshot(case)
    proc = terraseg(command, "--raster", case / "scene.tif", "--labels",
                    case / "labels.gpkg", "--out-dir", case / "runs", *QUICK,
                    "--cache-dir", case / "cache", *extra, cwd=case)
    assert_user_error(proc, *needles)
    assert snapshot(case) == before


def test_worker_train_job_refuses_zero_learning_rate(case: Path) -> None:
    before = snapshot(case)
    rc, events = run_job({"command": "train", "args": {
        "raster": str(case / "scene.tif"), "labels": str(case / "labels.gpkg"),
        "class_field": "klass", "out": str(case / "out.tsm"), "lr": 0,
        "cache_dir": str(case / "cache")}}, case)
    err = final_error(rc, events)
    assert err["type"] == "ConfigError" and "--lr" in err["message"], err
    assert snapshot(case) == before


def test_run_train_validates_first(tmp_path: Path) -> None:
    """The Python entry point refuses the value before it looks for the raster."""
    opts = TrainOptions.build(raster=str(tmp_path / "missing.tif"), labels="missing.gpkg",
                              out=str(tmp_path / "m.tsm"), epochs=0)
    with pytest.raises(ConfigError, match="--epochs"):
        run_train(opts)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------ predict


@pytest.mark.parametrize("model, extra, needles", [
    ("patch", ["--tile-size", "8"], ["--tile-size", "16"]),
    ("patch", ["--tile-size", "100000"], ["--tile-size", "8192"]),
    ("unet", ["--tile-size", "40"], ["stride 16", "--tile-size 32 or 48"]),
    ("patch", ["--min-area", "nan"], ["--min-area", "finite"]),
    ("patch", ["--device", "meta"], ["--device meta", "cpu"]),
])
def test_predict_refuses_bad_values_before_any_work(case: Path, models: dict, model: str,
                                                    extra: list[str], needles: list[str]
                                                    ) -> None:
    before = snapshot(case)
    proc = terraseg("predict", "--model", models[model], "--raster", case / "scene.tif",
                    "--out-dir", case / "pred", *extra, cwd=case)
    assert_user_error(proc, *needles)
    assert snapshot(case) == before  # not even the output folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_predict_on_a_gpu_that_is_not_there(case: Path, models: dict) -> None:
    proc = terraseg("predict", "--model", models["patch"], "--raster", case / "scene.tif",
                    "--out-dir", case / "pred", "--device", "cuda", cwd=case)
    assert_user_error(proc, "--device cuda", "no CUDA GPU", "--device cpu")
    assert not (case / "pred").exists()


def test_worker_predict_job_refuses_small_tile(case: Path, models: dict) -> None:
    rc, events = run_job({"command": "predict", "args": {
        "model": str(models["patch"]), "raster": str(case / "scene.tif"),
        "out_dir": str(case / "pred"), "tile_size": 8}}, case)
    err = final_error(rc, events)
    assert err["type"] == "ConfigError" and "--tile-size" in err["message"], err
    assert not (case / "pred").exists()


# ------------------------------------------------------------------------------ exports


def _probabilities(case: Path) -> Path:
    """A float32 two-band probability raster like predict's probability.tif."""
    p = np.random.default_rng(0).random((1, 96, 96)).astype(np.float32)
    return write_raster(case / "probability.tif", np.concatenate([p, 1 - p]))


def _classes(case: Path) -> Path:
    """A uint8 class raster like predict's classes.tif (1 sealed, 2 unsealed)."""
    with rasterio.open(case / "scene.tif") as src:
        truth = np.where(src.read(4) > 130, 2, 1).astype(np.uint8)
    return write_raster(case / "classes.tif", truth[None])


def test_vectorise_refuses_probability_raster(case: Path) -> None:
    prob = _probabilities(case)
    before = snapshot(case)
    proc = terraseg("vectorise", "--classes", prob, "--out", case / "polys.gpkg", cwd=case)
    assert_user_error(proc, "probability.tif", "float32", "probabilities", "classes.tif")
    assert snapshot(case) == before


def test_areas_refuses_probability_raster(case: Path) -> None:
    prob = _probabilities(case)
    before = snapshot(case)
    proc = terraseg("areas", "--classes", prob, "--out-csv", case / "areas.csv", cwd=case)
    assert_user_error(proc, "probability.tif", "classes.tif")
    assert snapshot(case) == before


def test_areas_refuses_zones_that_miss_the_raster(case: Path) -> None:
    classes = _classes(case)
    zones = write_polygons(case / "far_zones.gpkg",  # 1000 km south, stored in EPSG:4326
                           [(pixel_box(100_000, 0, 100_010, 10), "a", "z")])
    before = snapshot(case)
    proc = terraseg("areas", "--classes", classes, "--out-csv", case / "areas.csv",
                    "--zones", zones, cwd=case)
    assert_user_error(proc, "far_zones.gpkg", "do not overlap", "EPSG:4326", "EPSG:32632",
                      "raster extent (500000, 5.19904e+06, 500960, 5.2e+06)")
    assert snapshot(case) == before


def test_areas_with_overlapping_zones_still_works(case: Path) -> None:
    classes = _classes(case)
    zones = write_polygons(case / "zones.gpkg", [(pixel_box(0, 0, 10, 10), "a", "z")])
    proc = terraseg("areas", "--classes", classes, "--out-csv", case / "areas.csv",
                    "--zones", zones, cwd=case)
    assert proc.returncode == 0, proc.stderr
    rows = (case / "areas.csv").read_text().splitlines()
    assert rows[0] == "zone,class_id,class_name,area_m2,percent" and len(rows) == 3


# ------------------------------------------------------------------------------ VRTs


VRT = """<VRTDataset rasterXSize="96" rasterYSize="96">
  <SRS>EPSG:32632</SRS>
  <GeoTransform>500000, 10, 0, 5200000, 0, -10</GeoTransform>
{bands}</VRTDataset>
"""
BAND = """  <VRTRasterBand dataType="Byte" band="{b}">
    <SimpleSource>
      <SourceFilename relativeToVRT="1">{source}</SourceFilename>
      <SourceBand>{b}</SourceBand>
    </SimpleSource>
  </VRTRasterBand>
"""


def _vrt(path: Path, source: str) -> Path:
    path.write_text(VRT.format(bands="".join(BAND.format(b=b, source=source)
                                             for b in range(1, 5))))
    return path


def test_predict_refuses_vrt_with_missing_source(case: Path, models: dict) -> None:
    vrt = _vrt(case / "scene.vrt", "moved_away.tif")
    before = snapshot(case)
    proc = terraseg("predict", "--model", models["patch"], "--raster", vrt,
                    "--out-dir", case / "pred", cwd=case)
    assert_user_error(proc, "scene.vrt", str(case / "moved_away.tif"), "rebuild the VRT")
    assert snapshot(case) == before


def test_train_refuses_vrt_with_missing_source(case: Path) -> None:
    vrt = _vrt(case / "scene.vrt", "moved_away.tif")
    before = snapshot(case)
    proc = terraseg("train", "--raster", vrt, "--labels", case / "labels.gpkg",
                    "--out", case / "out.tsm", *QUICK, "--cache-dir", case / "cache", cwd=case)
    assert_user_error(proc, str(case / "moved_away.tif"))
    assert snapshot(case) == before


def test_mosaic_whose_tile_was_removed_is_refused(case: Path, models: dict) -> None:
    with rasterio.open(case / "scene.tif") as src:
        data = src.read()
    tiles = case / "tiles"
    tiles.mkdir()
    for i, c0 in enumerate((0, 48)):
        write_raster(tiles / f"t{i}.tif", data[:, :, c0:c0 + 48],
                     transform=from_origin(500000.0 + c0 * 10, 5200000.0, 10, 10))
    proc = terraseg("mosaic", "--inputs", tiles, "--out", case / "mosaic.vrt", cwd=case)
    assert proc.returncode == 0, proc.stderr
    (tiles / "t1.tif").unlink()
    before = snapshot(case)
    proc = terraseg("predict", "--model", models["patch"], "--raster", case / "mosaic.vrt",
                    "--out-dir", case / "pred", cwd=case)
    assert_user_error(proc, "mosaic.vrt", str(tiles / "t1.tif"))
    assert snapshot(case) == before
    # a mosaic of a VRT that lost its source is refused too
    _vrt(tiles / "t2.vrt", "gone.tif")
    proc = terraseg("mosaic", "--inputs", tiles / "t2.vrt", "--out", case / "m2.vrt", cwd=case)
    assert_user_error(proc, str(tiles / "gone.tif"))
    assert not (case / "m2.vrt").exists()
