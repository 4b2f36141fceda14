"""End-to-end tests of the ``terraseg`` command line: train -> info -> predict -> evaluate.

Every test runs the real console script in a subprocess, as a user would. One model is
trained per module (the slow part) and shared by the tests below.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.paths import ROOT, TERRASEG, terraseg
from helpers.synthetic import (
    CRS_UTM,
    ORIGIN,
    PIXEL_M,
    make_scene,
    pixel_box,
    write_polygons,
)
from rasterio.crs import CRS
from rasterio.transform import Affine
from scipy import ndimage

from terraseg.core.modelfile import read_metadata

# Tiny, fast network geometry (receptive field 23 px, 5 px output blocks).
TINY = ["--patch-size", "23", "--blocks", "1,1,1"]
QUICK = [*TINY, "--epochs", "1", "--samples-per-epoch", "256"]




def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, str]:
    """Relative path -> content hash of every file below ``folder``."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Scene + a model that learns it (5 epochs), trained once for the module."""
    d = tmp_path_factory.mktemp("cli")
    scene = make_scene(d)
    model = d / "m.tsm"
    cache = d / "cache"
    proc = terraseg("train", "--raster", scene.raster, "--labels", scene.labels,
                    "--class-field", "klass", "--out", model, "--epochs", 5, *TINY,
                    "--cache-dir", cache, cwd=d)
    ok(proc)
    return {"dir": d, "scene": scene, "model": model, "cache": cache, "proc": proc}


@pytest.fixture(scope="module")
def info(trained):
    proc = ok(terraseg("info", trained["model"], cwd=trained["dir"]))
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def predicted(trained):
    out = trained["dir"] / "pred"
    proc = ok(terraseg("predict", "--model", trained["model"], "--raster",
                       trained["scene"].raster, "--out-dir", out, "--preview",
                       cwd=trained["dir"]))
    return {"out": out, "proc": proc}


def window_args(trained) -> list:
    return ["predict", "--model", trained["model"], "--raster", trained["scene"].raster,
            "--out-dir", trained["dir"] / "pred_window", "--window", "10,20,50,40"]


@pytest.fixture(scope="module")
def windowed(trained):
    proc = ok(terraseg(*window_args(trained), cwd=trained["dir"]))
    return {"out": trained["dir"] / "pred_window", "proc": proc}


@pytest.fixture(scope="module")
def evaluated(trained):
    out = trained["dir"] / "eval"
    proc = ok(terraseg("evaluate", "--model", trained["model"], "--raster",
                       trained["scene"].raster, "--reference", trained["scene"].labels,
                       "--class-field", "klass", "--category-field", "cat", "--out-dir", out,
                       cwd=trained["dir"]))
    return {"out": out, "proc": proc}


# ------------------------------------------------------------------------------ train / info


def test_train_writes_model(trained):
    model, proc = trained["model"], trained["proc"]
    assert model.is_file() and model.stat().st_size > 1000
    assert f"model: {model}" in proc.stdout.splitlines()
    # the first run fills the (empty) cache from the raster
    assert re.search(r"cache .*\((?!0 )\d+ chunk\(s\) read from the raster now\)", proc.stderr)
    assert re.search(r"^epoch 5: .*val_loss=", proc.stderr, re.M)
    assert not list(model.parent.glob("*.partial")) and not list(model.parent.glob(".*.partial"))


def test_info_prints_model_metadata(info, trained):
    assert info["format"] == "terraseg-model"
    assert info["architecture"]["name"] == "patch_cnn"
    params = info["architecture"]["params"]
    assert params["in_channels"] == 4 and params["num_classes"] == 2
    assert info["bands"]["names"] == ["red", "green", "blue", "nir"]
    assert info["bands"]["indices"] == [1, 2, 3, 4]
    classes = info["classes"]
    assert [(c["id"], c["name"]) for c in classes] == [(1, "sealed"), (2, "unsealed")]
    colours = [c["colour"] for c in classes]
    assert all(re.fullmatch(r"#[0-9a-fA-F]{6}", c) for c in colours)
    assert len(set(colours)) == 2
    geom = info["geometry"]
    assert (geom["patch_px"], geom["block_px"], geom["stride_px"],
            geom["receptive_field_px"]) == (23, 5, 5, 23)
    norm = info["normalisation"]
    assert len(norm["mean"]) == 4 and len(norm["std"]) == 4
    assert all(s > 0 for s in norm["std"])
    raster = info["training_raster"]
    assert raster["pixel_size"] == [PIXEL_M, PIXEL_M]
    assert raster["crs_epsg"] == 32632
    assert re.fullmatch(r"[0-9a-f]{64}", info["labels"]["fingerprint"])
    assert info["labels"]["pixel_counts"] == {"sealed": 576, "unsealed": 576}
    version = (ROOT / "metadata.txt").read_text().split("version=", 1)[1].split()[0]
    assert info["software"]["name"] == "TerraSeg"
    assert info["software"]["version"] == version
    assert info["metrics"]["val"]["accuracy"] >= 0.95
    assert info["training"]["epochs_run"] == 5


# ------------------------------------------------------------------------------ predict


def test_predict_outputs_are_georeferenced_like_the_input(trained, predicted, info):
    out, proc = predicted["out"], predicted["proc"]
    for name in ("probability", "classes", "preview"):
        ext = "png" if name == "preview" else "tif"
        assert f"{name}: {out / f'{name}.{ext}'}" in proc.stdout.splitlines()
    assert sorted(p.name for p in out.iterdir()) == ["classes.tif", "preview.png",
                                                     "probability.tif"]
    with rasterio.open(trained["scene"].raster) as src:
        crs, transform, shape = src.crs, src.transform, src.shape
    with rasterio.open(out / "probability.tif") as p:
        assert p.crs == crs and p.transform == transform and p.shape == shape
        assert p.count == 2 and p.dtypes[0] == "float32"
        prob = p.read()
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-4)
    with rasterio.open(out / "classes.tif") as c:
        assert c.crs == crs and c.transform == transform and c.shape == shape
        assert c.count == 1 and c.dtypes[0] == "uint8"
        cls = c.read(1)
        cmap = c.colormap(1)
    assert set(np.unique(cls)) <= {1, 2}
    np.testing.assert_array_equal(cls, prob.argmax(0) + 1)
    for klass in info["classes"]:
        rgb = tuple(int(klass["colour"][i:i + 2], 16) for i in (1, 3, 5))
        assert cmap[klass["id"]][:3] == rgb
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predicted_classes_agree_with_synthetic_truth(trained, predicted):
    truth = trained["scene"].truth
    with rasterio.open(predicted["out"] / "classes.tif") as c:
        cls = c.read(1)
    agree = cls == truth
    # The training polygons stop 3 px inside every rectangle and the 'unsealed' polygons lie
    # away from the rectangles, so a class edge may sit a pixel or two off after a 5-epoch
    # run; everywhere at least 2 px from a class edge the answer is fully determined.
    inner = ndimage.minimum_filter(truth, 5) == ndimage.maximum_filter(truth, 5)
    assert agree[inner].mean() >= 0.95, agree[inner].mean()
    assert agree.mean() >= 0.85, agree.mean()


def test_predict_window_equals_same_window_of_full_run(predicted, windowed):
    out, proc = windowed["out"], windowed["proc"]
    assert "preview" not in proc.stdout  # no --preview, no preview.png
    with rasterio.open(predicted["out"] / "probability.tif") as full:
        full_prob, full_tf = full.read(), full.transform
    with rasterio.open(out / "probability.tif") as w:
        assert w.shape == (40, 50)
        assert w.transform == full_tf @ Affine.translation(10, 20)
        assert w.crs == CRS.from_user_input(CRS_UTM)
        win_prob = w.read()
    np.testing.assert_allclose(win_prob, full_prob[:, 20:60, 10:60], atol=1e-5)
    with rasterio.open(out / "classes.tif") as w, \
            rasterio.open(predicted["out"] / "classes.tif") as full:
        np.testing.assert_array_equal(w.read(1), full.read(1)[20:60, 10:60])


def test_predict_extent_layer(trained):
    d = trained["dir"]
    layer = write_polygons(d / "extent.gpkg", [(pixel_box(30, 40, 60, 90), "sealed", "x")],
                           crs=CRS_UTM)
    out = d / "pred_extent"
    ok(terraseg("predict", "--model", trained["model"], "--raster", trained["scene"].raster,
                "--out-dir", out, "--extent-layer", layer, cwd=d))
    for name in ("probability.tif", "classes.tif"):
        with rasterio.open(out / name) as r:
            assert r.shape == (30, 50)
            assert r.transform.c == pytest.approx(ORIGIN[0] + 40 * PIXEL_M)
            assert r.transform.f == pytest.approx(ORIGIN[1] - 30 * PIXEL_M)
            assert r.crs == CRS.from_user_input(CRS_UTM)


def test_predict_existing_outputs_need_overwrite(trained, windowed):
    out = windowed["out"]
    before = tree(out)
    assert set(before) == {"probability.tif", "classes.tif"}

    again = terraseg(*window_args(trained), "--preview", cwd=trained["dir"])
    assert again.returncode != 0
    assert re.search(r"^error: .*already exist", again.stderr, re.M), again.stderr
    assert "--overwrite" in again.stderr
    assert "fix:" in again.stderr
    assert tree(out) == before  # byte-identical, nothing added (no temp files either)

    ok(terraseg(*window_args(trained), "--overwrite", "--preview", cwd=trained["dir"]))
    after = tree(out)
    assert set(after) == {"probability.tif", "classes.tif", "preview.png"}


# ------------------------------------------------------------------------------ evaluate


def test_evaluate_writes_metrics_and_tables(evaluated):
    out, proc = evaluated["out"], evaluated["proc"]
    assert proc.stdout.startswith("accuracy ")
    assert str(out / "metrics.json") in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["confusion_matrix.csv", "metrics.json",
                                                     "per_category.csv", "per_class.csv"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["accuracy"] >= 0.95
    assert m["n_samples"] == 1152
    assert m["class_names"] == ["sealed", "unsealed"]
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (2, 2) and cm.sum() == 1152
    # rows = reference: each row sums to the reference pixels of that class
    assert cm.sum(1).tolist() == [m["support_per_class"]["sealed"],
                                  m["support_per_class"]["unsealed"]] == [576, 576]
    assert set(m["accuracy_per_category"]) == {"roof", "meadow"}

    with open(out / "per_category.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["category"] for r in rows} == {"roof", "meadow"}
    assert sum(int(r["n_samples"]) for r in rows) == 1152
    with open(out / "per_class.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == ["sealed", "unsealed"]
    with open(out / "confusion_matrix.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][1:] == ["sealed", "unsealed"]
    assert [r[0] for r in rows[1:]] == ["sealed", "unsealed"]
    assert np.array([[int(v) for v in r[1:]] for r in rows[1:]]).tolist() == cm.tolist()


def test_evaluate_confusion_matrix_rows_are_the_reference(trained):
    """A reference that calls 16 sealed pixels 'unsealed' shows up in row 'unsealed'."""
    d = trained["dir"]
    ref = write_polygons(d / "ref_wrong.gpkg", [
        (pixel_box(7, 7, 15, 15), "sealed", "a"),         # inside a sealed rectangle
        (pixel_box(22, 22, 30, 30), "unsealed", "a"),     # open ground
        (pixel_box(71, 71, 75, 75), "unsealed", "a"),     # WRONG: inside a sealed rectangle
    ])
    out = d / "eval_wrong"
    ok(terraseg("evaluate", "--model", trained["model"], "--raster", trained["scene"].raster,
                "--reference", ref, "--class-field", "klass", "--out-dir", out, cwd=d))
    assert not (out / "per_category.csv").exists()
    m = json.loads((out / "metrics.json").read_text())
    assert m["support_per_class"] == {"sealed": 64, "unsealed": 80}
    assert m["confusion_matrix"] == [[64, 0], [16, 64]]
    assert m["accuracy"] == pytest.approx(128 / 144)


# ------------------------------------------------------------------------------ retrain


def test_retrain_from_model_reuses_cache(trained, info):
    d = trained["dir"]
    model2 = d / "m2.tsm"
    proc = ok(terraseg("train", "--raster", trained["scene"].raster, "--labels",
                       trained["scene"].labels, "--class-field", "klass", "--out", model2,
                       "--init-model", trained["model"], *QUICK, "--cache-dir",
                       trained["cache"], cwd=d))
    assert model2.is_file()
    assert f"fine-tuning from {trained['model']}" in proc.stderr
    assert re.search(r"cache .*\(0 chunk\(s\) read from the raster now\)", proc.stderr), \
        proc.stderr
    info2 = json.loads(ok(terraseg("info", model2, cwd=d)).stdout)
    assert info2["training"]["init_model"] == str(trained["model"])
    assert info2["classes"] == info["classes"]
    assert info2["normalisation"] == info["normalisation"]
    assert info2["architecture"] == info["architecture"]


def test_ctrl_c_during_training_cancels_cleanly(trained):
    d = trained["dir"]
    out_dir = d / "cancelled"
    model = out_dir / "c.tsm"
    proc = subprocess.Popen(
        [*TERRASEG, "train", "--raster", str(trained["scene"].raster), "--labels",
         str(trained["scene"].labels), "--class-field", "klass", "--out", str(model),
         *TINY, "--epochs", "200", "--patience", "200", "--samples-per-epoch", "256",
         "--cache-dir", str(trained["cache"])],
        cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        deadline = time.monotonic() + 120
        for line in proc.stderr:  # wait until the first epoch is done
            seen.append(line)
            if line.startswith("epoch 1:") or time.monotonic() > deadline:
                break
        assert seen and seen[-1].startswith("epoch 1:"), "".join(seen)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, rest = proc.communicate(timeout=20)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = "".join(seen) + rest
    assert elapsed < 20
    assert proc.returncode == 130, err
    assert re.search(r"^error: Cancelled", err, re.M), err
    assert "Traceback" not in err, err
    assert "model:" not in stdout
    assert not model.exists()
    assert not out_dir.exists() or not any(out_dir.iterdir())  # no temp/partial files


def test_model_file_permissions_follow_umask(trained, predicted):
    umask = os.umask(0)
    os.umask(umask)
    want = 0o666 & ~umask
    assert (predicted["out"] / "classes.tif").stat().st_mode & 0o777 == want
    assert trained["model"].stat().st_mode & 0o777 == want


# ------------------------------------------------------------------------------ grid


@pytest.mark.slow  # a grid of trainings: ~27 s on 2 CPU cores
def test_grid_ranks_all_combinations_with_class_map(trained):
    d = trained["dir"]
    out = d / "g"
    proc = ok(terraseg("grid", "--raster", trained["scene"].raster, "--labels",
                       trained["scene"].labels, "--class-field", "klass", *TINY,
                       "--samples-per-epoch", "256", "--cache-dir", trained["cache"],
                       "--lrs", "1e-3,1e-2", "--weight-decays", "0.01",
                       "--augment-options", "none;flip,rotate", "--epochs", "2",
                       "--class-map", "sealed=built,*=open", "--out-dir", out, cwd=d))
    csv_path = out / "grid.csv"
    assert f"grid_csv: {csv_path}" in proc.stdout
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    acc = [float(r["accuracy"]) for r in rows]
    assert acc == sorted(acc, reverse=True)
    combos = {(float(r["learning_rate"]), float(r["weight_decay"]), r["augmentation"])
              for r in rows}
    assert combos == {(lr, 0.01, aug) for lr in (1e-3, 1e-2) for aug in ("none", "flip,rotate")}
    assert all(int(r["epochs"]) == 2 for r in rows)
    assert len({r["model"] for r in rows}) == 4
    for r in rows:
        path = Path(r["model"]) if Path(r["model"]).is_absolute() else d / r["model"]
        assert path.parent == out and path.is_file()
        meta = read_metadata(path)
        assert [(c["id"], c["name"]) for c in meta["classes"]] == [(1, "built"), (2, "open")]
        assert meta["class_map"] == "sealed=built,*=open"
        assert meta["labels"]["pixel_counts"] == {"built": 576, "open": 576}
        opts = meta["training"]["options"]
        assert (opts["lr"], opts["weight_decay"], opts["augment"], opts["epochs"]) == (
            float(r["learning_rate"]), float(r["weight_decay"]), r["augmentation"], 2)
    assert not list(out.glob(".*.partial"))


def test_evaluate_reports_every_level_of_a_hierarchy(trained, tmp_path) -> None:
    """--hierarchy: metrics at each level; a level that merges both classes is all right."""
    csv_path = tmp_path / "levels.csv"
    csv_path.write_text("code,level1,level2\nsealed,surface,sealed\nunsealed,surface,unsealed\n")
    out = tmp_path / "eval_levels"
    proc = ok(terraseg("evaluate", "--model", trained["model"], "--raster",
                       trained["scene"].raster, "--reference", trained["scene"].labels,
                       "--class-field", "klass", "--hierarchy", csv_path, "--out-dir", out,
                       cwd=trained["dir"]))
    metrics = json.loads((out / "metrics.json").read_text())
    levels = metrics["levels"]
    assert list(levels) == ["level1", "level2"]
    assert levels["level1"]["accuracy"] == 1.0 and levels["level1"]["class_names"] == ["surface"]
    assert levels["level2"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert levels["level2"]["confusion_matrix"] == metrics["confusion_matrix"]
    assert "level1: accuracy 1.0000" in proc.stdout
    bad = terraseg("evaluate", "--model", trained["model"], "--raster", trained["scene"].raster,
                   "--reference", trained["scene"].labels, "--class-field", "klass",
                   "--hierarchy", "corine", "--out-dir", tmp_path / "bad", cwd=trained["dir"])
    assert bad.returncode == 2 and "not in the hierarchy" in bad.stderr
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_predict_writes_the_map_at_a_level_of_the_hierarchy(trained, predicted,
                                                             tmp_path) -> None:
    """--level sums the fine probabilities of each group; the coarse map follows them."""
    csv_path = tmp_path / "levels.csv"
    csv_path.write_text("code,level1,level2\nsealed,surface,sealed\nunsealed,surface,unsealed\n")
    out = tmp_path / "pred_level"
    proc = ok(terraseg("predict", "--model", trained["model"], "--raster",
                       trained["scene"].raster, "--out-dir", out, "--hierarchy", csv_path,
                       "--level", 1, cwd=trained["dir"]))
    with rasterio.open(out / "probability.tif") as fine, \
            rasterio.open(out / "level1_probability.tif") as coarse, \
            rasterio.open(out / "level1_classes.tif") as cls:
        p, q, c = fine.read(), coarse.read(), cls.read(1)
        assert json.loads(cls.tags()["TERRASEG_CLASSES"])[0]["name"] == "surface"
    valid = p[0] >= 0
    assert q.shape == (1, *p.shape[1:])
    np.testing.assert_allclose(q[0][valid], p[:, valid].sum(axis=0), atol=1e-6)
    assert (c[valid] == 1).all() and (q[0][~valid] == -1).all()
    assert "map at level1" in proc.stderr
    # refused before any work: a level the file lacks, and --level without --hierarchy
    for extra, words in ((["--hierarchy", csv_path, "--level", 3], "Use --level 1 to 2"),
                         (["--level", 1], "go together")):
        bad = terraseg("predict", "--model", trained["model"], "--raster",
                       trained["scene"].raster, "--out-dir", tmp_path / "bad", *extra,
                       cwd=trained["dir"])
        assert bad.returncode == 2 and words in bad.stderr, bad.stderr
        assert not (tmp_path / "bad").exists()
