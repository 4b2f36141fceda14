"""Tile networks (U-Net family) through the command line: train, info, predict, evaluate."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import rasterio
from helpers.paths import TERRASEG
from helpers.synthetic import make_scene


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*TERRASEG, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("unet")
    scene = make_scene(d)
    model = d / "unet.tsm"
    run("train", "--raster", str(scene.raster), "--labels", str(scene.labels), "--class-field",
        "klass", "--out", str(model), "--model", "unet_small", "--base-width", "8",
        "--tile-size", "32", "--epochs", "4", "--samples-per-epoch", "256", "--cache-dir",
        str(d / "cache"))
    return {"dir": d, "scene": scene, "model": model}


def test_model_file_records_tile_geometry_and_loss(trained: dict) -> None:
    meta = json.loads(run("info", str(trained["model"])).stdout)
    assert meta["architecture"]["name"] == "unet_small"
    assert meta["architecture"]["params"]["base_width"] == 8
    g = meta["geometry"]
    assert g["kind"] == "tile" and g["tile_px"] == 32 and g["stride_px"] == 16
    assert g["valid_tile_sizes_px"][:3] == [16, 32, 48]
    assert meta["loss"] == "focal+iou"
    assert 0.05 <= meta["threshold"]["value"] <= 0.95  # tuned on validation pixels
    assert meta["threshold"]["f1"] > 0.9


def test_predict_and_evaluate_blended(trained: dict) -> None:
    d, scene = trained["dir"], trained["scene"]
    run("predict", "--model", str(trained["model"]), "--raster", str(scene.raster),
        "--out-dir", str(d / "pred"))
    with rasterio.open(d / "pred" / "classes.tif") as ds:
        cls = ds.read(1)
    with rasterio.open(d / "pred" / "probability.tif") as ds:
        prob = ds.read()
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
    # interior of each sealed square and of the unsealed ground
    assert float((cls == scene.truth).mean()) > 0.85
    run("evaluate", "--model", str(trained["model"]), "--raster", str(scene.raster),
        "--reference", str(scene.labels), "--class-field", "klass", "--out-dir",
        str(d / "eval"))
    metrics = json.loads((d / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.95


def test_window_equals_whole_run(trained: dict) -> None:
    d, scene = trained["dir"], trained["scene"]
    run("predict", "--model", str(trained["model"]), "--raster", str(scene.raster),
        "--out-dir", str(d / "whole"))
    run("predict", "--model", str(trained["model"]), "--raster", str(scene.raster),
        "--out-dir", str(d / "win"), "--window", "7,11,50,41")
    with rasterio.open(d / "whole" / "probability.tif") as a, \
            rasterio.open(d / "win" / "probability.tif") as b:
        np.testing.assert_allclose(b.read(), a.read()[:, 11:52, 7:57], atol=1e-5)


def test_tile_size_not_divisible_names_valid_sizes(trained: dict) -> None:
    d, scene = trained["dir"], trained["scene"]
    proc = run("train", "--raster", str(scene.raster), "--labels", str(scene.labels),
               "--class-field", "klass", "--out", str(d / "bad.tsm"), "--model", "unet_small",
               "--tile-size", "40", "--cache-dir", str(d / "cache"), ok=False)
    assert proc.returncode == 2
    assert "not divisible by the network stride 16" in proc.stderr
    assert "32 or 48" in proc.stderr
    assert not (d / "bad.tsm").exists()


def test_fine_tune_tile_model(trained: dict) -> None:
    d, scene = trained["dir"], trained["scene"]
    run("train", "--raster", str(scene.raster), "--labels", str(scene.labels), "--class-field",
        "klass", "--out", str(d / "ft.tsm"), "--init-model", str(trained["model"]),
        "--epochs", "1", "--samples-per-epoch", "64", "--cache-dir", str(d / "cache"))
    meta = json.loads(run("info", str(d / "ft.tsm")).stdout)
    assert meta["architecture"]["name"] == "unet_small"
    assert meta["geometry"]["tile_px"] == 32
    assert meta["training"]["init_model"] == str(trained["model"])


def test_cutmix_swaps_the_same_box_in_images_and_targets() -> None:
    import torch

    from terraseg.training.module import cutmix_batch

    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    y = (x[:, 0] * 10).long()
    gen = torch.Generator().manual_seed(3)
    xm, ym = cutmix_batch(x, y, generator=gen)
    changed = (xm != x)[:, 0]
    assert changed.any() and torch.equal(changed, ym != y)
    assert torch.equal(ym[changed], (xm[:, 0] * 10).long()[changed])  # pairs stay together
    rows, cols = torch.nonzero(changed[0], as_tuple=True)
    box = changed[0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert box.all()  # one rectangle
    same = torch.ones(1, 1, 4, 4), torch.ones(1, 2, 2, dtype=torch.long)
    assert cutmix_batch(*same)[0] is same[0]  # patch targets (smaller than input): unchanged


def test_adam_cosine_cutmix_bf16_train(trained: dict) -> None:
    d, scene = trained["dir"], trained["scene"]
    run("train", "--raster", str(scene.raster), "--labels", str(scene.labels), "--class-field",
        "klass", "--out", str(d / "opt.tsm"), "--model", "unet_small", "--base-width", "4",
        "--tile-size", "32", "--epochs", "2", "--samples-per-epoch", "64", "--optimizer",
        "adam", "--lr-schedule", "cosine", "--cutmix", "0.5", "--precision", "bf16-mixed",
        "--loss", "focal:0.7,dice:0.3", "--cache-dir", str(d / "cache"))
    meta = json.loads(run("info", str(d / "opt.tsm")).stdout)
    opts = meta["training"]["options"]
    assert (opts["optimizer"], opts["lr_schedule"], opts["cutmix"]) == ("adam", "cosine", 0.5)
    assert opts["precision"] == "bf16-mixed" and meta["loss"] == "focal:0.7,dice:0.3"
