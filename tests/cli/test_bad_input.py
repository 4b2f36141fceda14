"""Bad inputs given to the ``terraseg`` command line, as a user would give them.

Each case must end with a non-zero exit, an ``error:`` line that names the problem and a
``fix:`` line, no traceback, and leave every file that existed before untouched (and no
model or outputs written).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
from helpers.paths import terraseg
from helpers.synthetic import (
    CRS_UTM,
    ORIGIN,
    PIXEL_M,
    make_scene,
    pixel_box,
    write_polygons,
    write_raster,
)
from rasterio.transform import from_origin

QUICK = ["--patch-size", "23", "--blocks", "1,1,1", "--epochs", "1",
         "--samples-per-epoch", "256"]
SIZE = 96
BAND_NAMES = ("red", "green", "blue", "nir")




def snapshot(folder: Path) -> dict[str, str]:
    """Content hash of every file below ``folder`` (the Zarr cache excluded)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and "cache" not in p.relative_to(folder).parts}


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, one 'error:' line and a 'fix:' line naming the problem."""
    err = proc.stderr
    assert proc.returncode != 0, f"unexpected success\n{proc.stdout}\n{err}"
    assert proc.returncode == 2, f"exit {proc.returncode} (2 = input error)\n{err}"
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    fixes = [ln for ln in err.splitlines() if ln.strip().startswith("fix:")]
    assert len(errors) == 1, err
    assert fixes and len(fixes[0].strip()) > len("fix: ") + 10, err
    text = (errors[0] + " " + fixes[0]).lower()
    for needle in needles:
        assert needle.lower() in text, f"{needle!r} not in:\n{errors[0]}\n{fixes[0]}"
    return errors[0]


def train(case: Path, raster: Path, labels: Path, out: Path, *extra: object):
    return terraseg("train", "--raster", raster, "--labels", labels, "--class-field", "klass",
                    "--out", out, *QUICK, "--cache-dir", case / "cache", *extra, cwd=case)


def scene_data(raster: Path) -> np.ndarray:
    with rasterio.open(raster) as src:
        return src.read()


def label_boxes(scene_size: int = SIZE):
    """(pixel box, class, category) of the standard training polygons (see helpers/synthetic.py)."""
    out = []
    for r in range(4, scene_size - 12, 32):
        for c in range(4, scene_size - 12, 32):
            out.append(((r + 3, c + 3, r + 11, c + 11), "sealed", "roof"))
            out.append(((r + 18, c + 18, r + 26, c + 26), "unsealed", "meadow"))
    return out


@pytest.fixture
def case(tmp_path):
    """A fresh folder with the synthetic scene.tif and labels.gpkg."""
    make_scene(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A (barely trained) model of the synthetic scene, for the apply-a-model cases."""
    d = tmp_path_factory.mktemp("bad_model")
    scene = make_scene(d)
    out = d / "m.tsm"
    proc = train(d, scene.raster, scene.labels, out)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def applied(case, model):
    """A case folder that also holds a copy of the model."""
    shutil.copy2(model, case / "m.tsm")
    return case


# ------------------------------------------------------------------------------ labels


def test_labels_not_overlapping_raster(case):
    far = [(pixel_box(r0 + 100_000, c0, r1 + 100_000, c1), k, cat)  # 1000 km south
           for (r0, c0, r1, c1), k, cat in label_boxes()]
    labels = write_polygons(case / "far.gpkg", far)
    before = snapshot(case)
    proc = train(case, case / "scene.tif", labels, case / "out.tsm")
    assert_user_error(proc, "far.gpkg", "do not overlap", "raster extent", "EPSG:32632")
    assert snapshot(case) == before
    assert not (case / "out.tsm").exists()


def test_one_class_only(case):
    boxes = [(pixel_box(*b), k, cat) for b, k, cat in label_boxes() if k == "sealed"]
    labels = write_polygons(case / "one.gpkg", boxes)
    before = snapshot(case)
    proc = train(case, case / "scene.tif", labels, case / "out.tsm")
    assert_user_error(proc, "only one class", "sealed", "at least two")
    assert snapshot(case) == before
    assert not (case / "out.tsm").exists()


def test_empty_label_layer(case):
    schema = {"geometry": "Polygon", "properties": {"klass": "str", "cat": "str"}}
    with fiona.open(case / "empty.gpkg", "w", driver="GPKG", crs="EPSG:4326", schema=schema):
        pass
    before = snapshot(case)
    proc = train(case, case / "scene.tif", case / "empty.gpkg", case / "out.tsm")
    assert_user_error(proc, "empty.gpkg", "no features")
    assert snapshot(case) == before
    assert not (case / "out.tsm").exists()


def test_unknown_reference_class_when_evaluating(applied):
    case = applied
    ref = write_polygons(case / "water.gpkg", [
        (pixel_box(7, 7, 15, 15), "sealed", "a"), (pixel_box(22, 22, 30, 30), "water", "a")])
    before = snapshot(case)
    proc = terraseg("evaluate", "--model", case / "m.tsm", "--raster", case / "scene.tif",
                    "--reference", ref, "--class-field", "klass", "--out-dir", case / "ev",
                    cwd=case)
    assert_user_error(proc, "unknown class", "'water'", "water.gpkg", "1=sealed", "2=unsealed")
    assert snapshot(case) == before
    assert not (case / "ev" / "metrics.json").exists()


def test_invalid_geometry_is_repaired_and_reported(case):
    boxes = [(pixel_box(*b), k, cat) for b, k, cat in label_boxes()]
    # bow-tie (self-intersecting) polygon over open ground, rows 40-50 / cols 52-62
    x0, y0 = ORIGIN[0] + 52 * PIXEL_M, ORIGIN[1] - 40 * PIXEL_M
    d = 10 * PIXEL_M
    bow = {"type": "Polygon", "coordinates": [[(x0, y0), (x0 + d, y0 - d), (x0 + d, y0),
                                               (x0, y0 - d), (x0, y0)]]}
    labels = write_polygons(case / "bow.gpkg", [*boxes, (bow, "unsealed", "meadow")])
    with fiona.open(labels) as src:
        bow_fid = [f.id for f in src][-1]
    before = snapshot(case)
    proc = train(case, case / "scene.tif", labels, case / "out.tsm")
    assert proc.returncode == 0, proc.stderr
    assert (case / "out.tsm").is_file()
    assert re.search(rf"repaired invalid geometr\w* of feature\(s\) \['{bow_fid}'\]",
                     proc.stderr), proc.stderr
    assert f"feature {bow_fid}: invalid geometry repaired" in proc.stderr
    after = snapshot(case)
    new = {name for name in after if name not in before}
    assert new and new <= {"out.tsm", "out.last.tsm"}
    assert {k: v for k, v in after.items() if k not in new} == before


def test_raster_without_crs(case):
    raster = write_raster(case / "nocrs.tif", scene_data(case / "scene.tif"), crs=None)
    before = snapshot(case)
    proc = train(case, raster, case / "labels.gpkg", case / "out.tsm")
    assert_user_error(proc, "raster has no coordinate reference system", "assign")
    assert snapshot(case) == before
    assert not (case / "out.tsm").exists()


def test_labels_without_crs(case):
    """A Shapefile whose .prj was lost (fiona's GeoJSON would always claim EPSG:4326)."""
    schema = {"geometry": "Polygon", "properties": {"klass": "str"}}
    with fiona.open(case / "noprj.shp", "w", driver="ESRI Shapefile", crs=CRS_UTM,
                    schema=schema) as dst:
        for b, k, _ in label_boxes():
            dst.write({"geometry": pixel_box(*b), "properties": {"klass": k}})
    (case / "noprj.prj").unlink()
    before = snapshot(case)
    proc = train(case, case / "scene.tif", case / "noprj.shp", case / "out.tsm")
    assert_user_error(proc, "noprj.shp", "no coordinate reference system", ".prj")
    assert snapshot(case) == before
    assert not (case / "out.tsm").exists()


def test_labelled_area_all_nodata(case):
    data = scene_data(case / "scene.tif")
    for (r0, c0, r1, c1), _, _ in label_boxes():
        data[:, r0:r1, c0:c1] = 0
    raster = write_raster(case / "holes.tif", data, nodata=0, descriptions=BAND_NAMES)
    before = snapshot(case)
    proc = train(case, raster, case / "labels.gpkg", case / "out.tsm")
    assert not (case / "out.tsm").exists()
    assert_user_error(proc, "every labelled pixel lies on nodata", "nodata value")
    assert snapshot(case) == before


def test_band_index_out_of_range(case):
    before = snapshot(case)
    proc = train(case, case / "scene.tif", case / "labels.gpkg", case / "out.tsm",
                 "--bands", "1,2,9")
    assert_user_error(proc, "band index 9", "scene.tif has 4 band", "between 1 and 4")
    assert snapshot(case) == before
    assert not (case / "out.tsm").exists()


# ------------------------------------------------------------------------------ model files


def _truncated(case: Path) -> Path:
    data = (case / "m.tsm").read_bytes()
    (case / "cut.tsm").write_bytes(data[: len(data) // 2])
    return case / "cut.tsm"


def _text(case: Path) -> Path:
    (case / "notes.tsm").write_text("these are my notes, not a model\n")
    return case / "notes.tsm"


@pytest.mark.parametrize("make_bad", [_truncated, _text], ids=["truncated", "text"])
@pytest.mark.parametrize("command", ["predict", "info"])
def test_broken_model_file(applied, make_bad, command):
    case = applied
    bad = make_bad(case)
    before = snapshot(case)
    if command == "info":
        proc = terraseg("info", bad, cwd=case)
    else:
        proc = terraseg("predict", "--model", bad, "--raster", case / "scene.tif",
                        "--out-dir", case / "pred", cwd=case)
    assert_user_error(proc, bad.name, "not a readable terraseg model", "terraseg train")
    assert proc.stdout == ""
    assert snapshot(case) == before
    assert not (case / "pred").exists()


# ------------------------------------------------------------------------------ outputs


def test_predict_output_dir_below_a_file(applied):
    case = applied
    (case / "afile").write_text("I am a file\n")
    before = snapshot(case)
    proc = terraseg("predict", "--model", case / "m.tsm", "--raster", case / "scene.tif",
                    "--out-dir", case / "afile" / "out", cwd=case)
    assert_user_error(proc, "afile", "cannot be created", "--out-dir")
    assert snapshot(case) == before


def test_train_output_below_a_file(case):
    (case / "afile").write_text("I am a file\n")
    before = snapshot(case)
    proc = train(case, case / "scene.tif", case / "labels.gpkg", case / "afile" / "m.tsm")
    assert_user_error(proc, "afile", "--out")
    assert snapshot(case) == before


def test_train_refuses_existing_model_without_overwrite(applied):
    case = applied
    before = snapshot(case)
    proc = train(case, case / "scene.tif", case / "labels.gpkg", case / "m.tsm")
    assert_user_error(proc, "m.tsm", "already exists", "--overwrite")
    assert snapshot(case) == before  # the existing model is byte-identical


# ------------------------------------------------------------------------------ model vs raster


def test_model_on_raster_with_other_band_count(applied):
    case = applied
    three = write_raster(case / "three.tif", scene_data(case / "scene.tif")[:3],
                         descriptions=BAND_NAMES[:3])
    before = snapshot(case)
    proc = terraseg("predict", "--model", case / "m.tsm", "--raster", three,
                    "--bands", "1,2,3", "--out-dir", case / "pred", cwd=case)
    assert_user_error(proc, "expects 4 band(s)", "red", "nir", "gives 3", "--bands")
    assert snapshot(case) == before
    assert not (case / "pred").exists()  # refused before any work


def test_model_on_raster_with_fewer_bands_default_mapping(applied):
    case = applied
    three = write_raster(case / "three.tif", scene_data(case / "scene.tif")[:3],
                         descriptions=BAND_NAMES[:3])
    before = snapshot(case)
    proc = terraseg("predict", "--model", case / "m.tsm", "--raster", three,
                    "--out-dir", case / "pred", cwd=case)
    assert snapshot(case) == before
    assert not (case / "pred").exists()
    assert_user_error(proc, "three.tif", "model", "4 band", "3 band")


def test_model_on_raster_with_other_pixel_size(applied):
    case = applied
    coarse = write_raster(case / "coarse.tif", scene_data(case / "scene.tif"),
                          descriptions=BAND_NAMES,
                          transform=from_origin(*ORIGIN, 3 * PIXEL_M, 3 * PIXEL_M))
    before = snapshot(case)
    for command in ("predict", "evaluate"):
        extra = (["--reference", case / "labels.gpkg", "--class-field", "klass"]
                 if command == "evaluate" else [])
        proc = terraseg(command, "--model", case / "m.tsm", "--raster", coarse, *extra,
                        "--out-dir", case / "out", cwd=case)
        assert_user_error(proc, "pixel size", "(30.0, 30.0)", "(10.0, 10.0)", "factor 3.0",
                          "resample")
        assert snapshot(case) == before
        assert not (case / "out").exists()  # refused before any work


def test_window_outside_raster(applied):
    case = applied
    before = snapshot(case)
    proc = terraseg("predict", "--model", case / "m.tsm", "--raster", case / "scene.tif",
                    "--window", f"{SIZE + 10},0,20,20", "--out-dir", case / "pred", cwd=case)
    assert_user_error(proc, "does not overlap", f"{SIZE}x{SIZE}")
    assert snapshot(case) == before
    assert not (case / "pred").exists() or not any((case / "pred").iterdir())
