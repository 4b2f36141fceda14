"""``terraseg train --pseudo-labels``: the forest densifies the labels, then the network trains.

The scene is tests/helpers/synthetic.py's (sealed rectangles, 10 m pixels, EPSG:32632): its
polygons cover a few pixels of each rectangle; the coarse labels are its truth downsampled
4x by majority onto a 40 m grid (tests/core/test_pseudo_label.py), wrong at every edge.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.paths import ROOT, terraseg
from helpers.synthetic import make_scene, pixel_box, write_polygons

from terraseg.protocol.events import parse_line

sys.path.insert(0, str(ROOT / "tests" / "core"))
from test_pseudo_label import write_coarse_labels  # noqa: E402

pytestmark = pytest.mark.slow  # each trains a network through the worker (~15 s)

QUICK = ["--patch-size", "23", "--block-size", "5", "--blocks", "1,1,1", "--epochs", "2",
         "--samples-per-epoch", "256", "--pseudo-trees", "10"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("train_pseudo")
    sc = make_scene(folder, size=96)
    return sc, write_coarse_labels(folder / "coarse.tif", sc.truth), folder


def run_job(args: dict, cwd: Path) -> dict:
    """Run a train job through the worker; the result payload (asserts success)."""
    proc = terraseg("worker", cwd=cwd, stdin=json.dumps({"command": "train", "args": args}))
    events = [parse_line(line) for line in proc.stdout.splitlines() if line.strip()]
    kinds = [e.kind for e in events]
    assert proc.returncode == 0 and kinds[-1] == "result", proc.stdout[-3000:] + proc.stderr
    logs = " | ".join(e.message for e in events if e.kind == "log")
    return {**events[-1].payload, "_logs": logs}


@pytest.fixture(scope="module")
def densified(scene):
    """A model trained on its polygons densified by the forest, confidence as a channel."""
    sc, _, folder = scene
    out = folder / "dense.tsm"
    res = run_job({"raster": str(sc.raster), "labels": str(sc.labels), "class_field": "klass",
                   "out": str(out), "patch_size": 23, "block_size": 5, "blocks": "1,1,1",
                   "epochs": 2, "samples_per_epoch": 256, "pseudo_labels": True,
                   "pseudo_trees": 10, "pseudo_strategy": "all",
                   "pseudo_probability": "channel", "cache_dir": str(folder / "cache")},
                  folder)
    return sc, out, res


def test_densified_labels_cover_the_scene_and_match_the_truth(densified) -> None:
    sc, out, res = densified
    folder = out.with_name("dense.pseudo")
    assert sorted(p.name for p in folder.iterdir()) == ["classes.tif", "confidence.tif",
                                                         "probability.tif"]
    with rasterio.open(folder / "classes.tif") as ds:
        cls = ds.read(1)
    # 2 x 9 polygons of 8 x 8 px (1,152 px of 9,216) label every pixel through the forest
    assert (cls > 0).all()
    assert (cls == sc.truth).mean() > 0.97
    with rasterio.open(folder / "confidence.tif") as ds, \
            rasterio.open(folder / "probability.tif") as pr:
        conf, prob = ds.read(1), pr.read()
    np.testing.assert_allclose(conf, prob.max(axis=0), rtol=0, atol=1e-7)
    assert 0.5 <= conf.min() and conf.max() <= 1.0
    pl = res["pseudo_labels"]
    assert pl["strategy"] == "all" and pl["trees"] == 10
    assert pl["sampled_pixels"] == {"sealed": 576, "unsealed": 576}
    assert pl["agreement_accuracy"] > 0.99
    assert "split is by blocks of 24 px" in res["_logs"]  # 96 px: 4 blocks a side
    assert "split blocks of 24 px instead of 256 px" in res["_logs"]
    assert res["metrics"]["val"]["n_samples"] > 0  # validated on held-out blocks
    assert "override the pseudo-labels on 1152 px" in res["_logs"]
    # the network trained on every pixel of the scene, not only the polygons' 1,152
    assert sum(res["pixel_counts"].values()) == sc.height * sc.width


def test_confidence_channel_is_recorded_and_required_at_prediction(densified,
                                                                   tmp_path: Path) -> None:
    sc, out, _ = densified
    info = json.loads(terraseg("info", out, cwd=tmp_path).stdout)
    extras = info["extra_rasters"]
    assert [e["name"] for e in extras] == ["rf_confidence"]
    missing = terraseg("predict", "--model", out, "--raster", sc.raster, "--out-dir",
                       tmp_path / "p1", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "rf_confidence" in missing.stderr and "confidence.tif" in missing.stderr
    assert not (tmp_path / "p1" / "classes.tif").exists()
    conf = out.with_name("dense.pseudo") / "confidence.tif"
    ok = terraseg("predict", "--model", out, "--raster", sc.raster, "--out-dir",
                  tmp_path / "p2", "--extra-raster", f"rf_confidence={conf}", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    with rasterio.open(tmp_path / "p2" / "classes.tif") as ds:
        assert ds.read(1).shape == sc.truth.shape


def test_coarse_map_with_polygon_corrections(scene, tmp_path: Path) -> None:
    """The coarse raster is the forest's source; polygons drawn as corrections win."""
    sc, coarse, folder = scene
    # one correction: a 6 x 6 px square inside a sealed rectangle, drawn as unsealed
    fix = write_polygons(tmp_path / "fix.gpkg", [
        (pixel_box(40, 40, 46, 46), "unsealed", "x"),
        (pixel_box(70, 5, 76, 11), "sealed", "x")])
    out = tmp_path / "coarse.tsm"
    res = run_job({"raster": str(sc.raster), "labels": str(fix), "class_field": "klass",
                   "out": str(out), "patch_size": 23, "block_size": 5, "blocks": "1,1,1",
                   "epochs": 1, "samples_per_epoch": 128, "pseudo_labels": True,
                   "pseudo_source": str(coarse), "pseudo_class_map": "1=sealed,2=unsealed",
                   "pseudo_trees": 10, "cache_dir": str(folder / "cache")}, tmp_path)
    assert "override the pseudo-labels on 72 px" in res["_logs"]
    with rasterio.open(tmp_path / "coarse.pseudo" / "classes.tif") as ds:
        cls = ds.read(1)
    assert (cls == sc.truth).mean() > 0.97  # the forest mends the coarse map's edges
    assert res["pseudo_labels"]["strategy"] == "random"
    assert res["pseudo_labels"]["sampled_pixels"]["sealed"] == \
        res["pseudo_labels"]["sampled_pixels"]["unsealed"]


def test_a_label_raster_as_labels_is_only_the_source(scene, tmp_path: Path) -> None:
    sc, coarse, folder = scene
    res = run_job({"raster": str(sc.raster), "labels": str(coarse),
                   "class_map": "1=sealed,2=unsealed", "out": str(tmp_path / "r.tsm"),
                   "patch_size": 23, "block_size": 5, "blocks": "1,1,1", "epochs": 1,
                   "samples_per_epoch": 128, "pseudo_labels": True, "pseudo_trees": 10,
                   "cache_dir": str(folder / "cache")}, tmp_path)
    assert "override the pseudo-labels" not in res["_logs"]
    assert sum(res["pixel_counts"].values()) == sc.height * sc.width


def test_unknown_correction_class_and_existing_outputs_are_refused(scene,
                                                                   tmp_path: Path) -> None:
    sc, coarse, _ = scene
    fix = write_polygons(tmp_path / "fix.gpkg", [(pixel_box(40, 40, 46, 46), "water", "x")])
    base = ["train", "--raster", sc.raster, "--labels", fix, "--class-field", "klass",
            "--pseudo-labels", "--pseudo-source", coarse, "--pseudo-class-map",
            "1=sealed,2=unsealed", *QUICK, "--out", tmp_path / "m.tsm",
            "--cache-dir", tmp_path / "cache"]
    proc = terraseg(*base, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "['water']" in proc.stderr and "--class-map" in proc.stderr
    assert not (tmp_path / "m.tsm").exists()

    (tmp_path / "n.pseudo").mkdir()
    (tmp_path / "n.pseudo" / "classes.tif").write_bytes(b"mine")
    again = terraseg(*[a if a != tmp_path / "m.tsm" else tmp_path / "n.tsm" for a in base],
                     cwd=tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert (tmp_path / "n.pseudo" / "classes.tif").read_bytes() == b"mine"


def test_confidence_as_loss_weight_needs_nothing_at_prediction(scene, tmp_path: Path) -> None:
    sc, coarse, folder = scene
    out = tmp_path / "w.tsm"
    res = run_job({"raster": str(sc.raster), "labels": str(coarse),
                   "class_map": "1=sealed,2=unsealed", "out": str(out),
                   "patch_size": 23, "block_size": 5, "blocks": "1,1,1", "epochs": 1,
                   "samples_per_epoch": 128, "pseudo_labels": True, "pseudo_trees": 10,
                   "pseudo_zero_disagreeing": True, "pseudo_probability": "weight",
                   "cache_dir": str(folder / "cache")}, tmp_path)
    # the forest's confidence is 0 where it disagrees with the coarse map: mean below 1
    logs = res["_logs"]
    assert "weighs each pseudo-labelled pixel's loss (mean 0." in logs
    info = json.loads(terraseg("info", out, cwd=tmp_path).stdout)
    assert info["extra_rasters"] == []
    pred = terraseg("predict", "--model", out, "--raster", sc.raster, "--out-dir",
                    tmp_path / "p", cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr


def test_pseudo_pixels_split_by_blocks_with_stable_keys() -> None:
    from terraseg.training.pseudo import with_block_regions

    labels = np.ones((5, 7), dtype=np.uint8)
    regions = np.zeros((5, 7), dtype=np.int32)
    regions[0:2, 0:2] = 1  # one analyst polygon, key "p1"
    out, keys = with_block_regions(labels, regions, ("p1",), block_px=4)
    # 2 x 2 blocks of 4 px, numbered after the polygon: ids 2..5
    assert keys == ("p1", "pseudo:0,0", "pseudo:0,1", "pseudo:1,0", "pseudo:1,1")
    assert out[0, 0] == 1 and out[0, 3] == 2 and out[0, 4] == 3 and out[4, 0] == 4
    assert out[4, 6] == 5
    assert all(keys[rid - 1] for rid in np.unique(out))
