"""Pretraining by classification: a patch classifier whose encoder starts a segmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.recording import LogRecorder as Log
from helpers.synthetic import PIXEL_M, make_scene, write_raster
from rasterio.transform import from_origin

from terraseg.core.encoder_file import load_encoder
from terraseg.core.model_input import assemble_source
from terraseg.protocol.errors import ConfigError, LabelError
from terraseg.protocol.options import TrainOptions
from terraseg.protocol.pretrain_options import PretrainOptions
from terraseg.training.cache import ImageCache
from terraseg.training.pretrain_classify import (
    BLOCK_PATCHES,
    Patch,
    index_patches,
    load_class_labels,
    patch_target,
    prior_baseline,
    run_classify_pretrain,
)
from terraseg.training.train import run_train

SIZE = 256  # image pixels a side (10 m); labels at 20 m
CELL = 16  # label cells of 16 x 16 label pixels (320 m): a 32-px patch meets 1 to 3 classes
TINY = {"task": "classify", "encoder": "resnet18", "base_width": 8, "patch_px": 32,
        "epochs": 8, "samples_per_epoch": 256, "batch_size": 32, "lr": 3e-3,
        "accelerator": "cpu", "seed": 0}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> object:
    """One torch thread: these tiny networks run faster so on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """4-band image where band c is bright on class c + 1; a CORINE-like code raster.

    Label codes are CORINE grid codes (12 arable, 23 broad-leaved forest, 41 water bodies),
    on a 20 m grid (the image is 10 m); the top-left label cell is unlabelled (0).
    """
    d = tmp_path_factory.mktemp("pretrain_classify")
    rng = np.random.default_rng(0)
    n = SIZE // 2 // CELL
    cells = rng.integers(1, 4, size=(n, n))
    fine = np.kron(cells, np.ones((CELL, CELL), dtype=np.int64))  # 20 m class ids 1..3
    codes = np.array([0, 12, 23, 41], dtype=np.uint8)[fine]
    codes[:CELL, :CELL] = 0
    write_raster(d / "labels.tif", codes[None], transform=from_origin(
        500000.0, 5200000.0, 2 * PIXEL_M, 2 * PIXEL_M), nodata=0)
    cls = np.kron(fine, np.ones((2, 2), dtype=np.int64))  # 10 m
    img = rng.normal(60, 12, size=(4, SIZE, SIZE))
    for c in range(3):
        img[c][cls == c + 1] += 100
    write_raster(d / "image.tif", np.clip(img, 0, 255).astype(np.uint8))
    legend = d / "legend.csv"
    legend.write_text("grid_code,clc_code,level1,level2,level3_label\n"
                      "12,211,2 Agricultural areas,21 Arable land,Non-irrigated arable land\n"
                      "23,311,3 Forest and semi natural areas,31 Forests,Broad-leaved forest\n"
                      "41,512,5 Water bodies,51 Inland waters,Water bodies\n", encoding="utf-8")
    return {"dir": d, "image": d / "image.tif", "labels": d / "labels.tif", "legend": legend}


def options(scene: dict[str, Path], out: str, **changes: object) -> PretrainOptions:
    d = scene["dir"]
    return PretrainOptions(rasters=(str(scene["image"]),), labels=str(scene["labels"]),
                           out=str(d / out), cache_dir=str(d / "cache"), overwrite=True,
                           **{**TINY, **changes})  # type: ignore[arg-type]


def test_patch_targets() -> None:
    lab = np.zeros((10, 10), dtype=np.uint8)
    lab[:, :6] = 1  # 60 labelled pixels of class 1
    lab[:2, 6:] = 2  # 8 pixels of class 2 (11.8 % of the labelled)
    lab[9, 9] = 3  # 1 pixel of class 3 (1.5 %: below 5 %)
    assert patch_target(lab, 3, "multi").tolist() == [1.0, 1.0, 0.0]
    assert int(patch_target(lab, 3, "single")) == 0
    sparse = np.zeros((10, 10), dtype=np.uint8)
    sparse[0, :9] = 1  # 9 % labelled: below the 10 % a patch needs
    assert patch_target(sparse, 3, "multi") is None
    sparse[1, 0] = 2
    assert patch_target(sparse, 3, "multi").tolist() == [1.0, 1.0, 0.0]


def test_prior_baseline() -> None:
    train = [Patch(0, 0, 0, np.array(t, np.float32)) for t in ([1, 0], [1, 1], [1, 0])]
    truth = np.array([[1, 0], [0, 1]], dtype=bool)  # constant prediction: class 1 only
    b = prior_baseline(train, truth, "multi")
    assert b["exact_match"] == 0.5 and b["hamming_loss"] == 0.5
    single = [Patch(0, 0, 0, np.array(c)) for c in (1, 1, 0)]
    assert prior_baseline(single, truth, "single")["exact_match"] == 0.5  # class 2 always


def test_classifier_learns_and_its_encoder_trains_a_unet(scene: dict[str, Path]) -> None:
    log = Log()
    res = run_classify_pretrain(options(scene, "clf.tse", hierarchy=str(scene["legend"])), log)
    m = res["metrics"]
    assert res["task"] == res["method"] == "classify" and res["epochs"] == TINY["epochs"]
    assert res["classes"] == ["Non-irrigated arable land", "Broad-leaved forest",
                              "Water bodies"]
    assert m["n_samples"] >= 20  # held-out patches
    assert 1.1 <= m["cardinality_true"] <= 2.5  # 32-px patches over 320 m cells
    # predicting every class would score a Hamming loss of 1 - density (about 0.5 here)
    assert m["exact_match"] >= 0.8 and m["hamming_loss"] <= 0.1, m
    assert m["f1_micro"] >= 0.9 and m["f1_examples"] >= 0.9, m
    assert res["baseline"]["exact_match"] <= m["exact_match"] - 0.3, res["baseline"]
    assert m["exact_match"] + m["partial"] + m["incorrect"] == pytest.approx(1.0)
    assert any("held out" in line for line in log.lines)
    enc = load_encoder(res["encoder_file"])
    pre = enc.meta.pretraining
    assert enc.meta.encoder == "resnet18" and enc.meta.in_channels == 4
    assert enc.meta.base_width == 8
    assert pre.method == "classify" and pre.classes == tuple(res["classes"])
    assert pre.metrics["exact_match"] == pytest.approx(m["exact_match"])
    assert pre.labels == str(scene["labels"].resolve())
    assert pre.options["patch_px"] == 32 and pre.epochs == TINY["epochs"]

    d = scene["dir"]
    train = TrainOptions.build(
        raster=str(scene["image"]), labels=str(scene["labels"]), model="unet_resnet18",
        base_width=8, tile_px=32, epochs=2, samples_per_epoch=32, batch_size=8,
        accelerator="cpu", patience=50, cache_dir=str(d / "cache"), out=str(d / "seg.tsm"),
        overwrite=True, encoder=res["encoder_file"], freeze_epochs=1)
    tlog = Log()
    seg = run_train(train, tlog)
    assert seg["encoder"]["pretraining"]["method"] == "classify"
    assert seg["encoder"]["pretraining"]["classes"] == res["classes"]
    assert any("encoder initialised from clf.tse" in line for line in tlog.lines)


def test_coarser_level_and_single_label(scene: dict[str, Path]) -> None:
    res = run_classify_pretrain(options(scene, "l1.tse", hierarchy=str(scene["legend"]),
                                        level=1, label_mode="single", epochs=1,
                                        samples_per_epoch=32), Log())
    assert res["classes"] == ["2 Agricultural areas", "3 Forest and semi natural areas",
                              "5 Water bodies"]
    m = res["metrics"]
    assert m["cardinality_true"] == 1.0 and m["cardinality_pred"] == 1.0  # one class each
    assert m["partial"] == 0.0


def test_polygon_labels(tmp_path: Path) -> None:
    sc = make_scene(tmp_path, size=128)  # polygons in EPSG:4326 over a UTM raster
    opts = PretrainOptions(rasters=(str(sc.raster),), labels=str(sc.labels),
                           class_field="klass", out=str(tmp_path / "p.tse"),
                           cache_dir=str(tmp_path / "cache"),
                           **{**TINY, "epochs": 1, "samples_per_epoch": 32})  # type: ignore[arg-type]
    res = run_classify_pretrain(opts, Log())
    assert res["classes"] == ["sealed", "unsealed"]
    assert res["metrics"]["n_samples"] == 9  # 4 blocks of 64 px, one held out
    assert load_encoder(res["encoder_file"]).meta.pretraining.labels == str(sc.labels.resolve())
    with pytest.raises(LabelError, match="no class field"):
        run_classify_pretrain(opts.replace(class_field=None, overwrite=True), Log())


def test_held_out_blocks_never_meet_training_patches(scene: dict[str, Path]) -> None:
    opts = options(scene, "x.tse")
    src = assemble_source(str(scene["image"]), None, ())[1]
    labels, classes = load_class_labels(opts, [src], Log())
    assert [c.name for c in classes] == ["12", "23", "41"]
    assert labels[0][0, 0] == 0 and labels[0].shape == (SIZE, SIZE)  # 20 m -> 10 m grid
    cache = ImageCache(src, opts.cache_dir)
    train, val = index_patches([cache], labels, 3, opts, Log())
    s = opts.patch_px * BLOCK_PATCHES
    val_blocks = {(p.row // s, p.col // s) for p in val}
    train_blocks = {(p.row // s, p.col // s) for p in train}
    assert len(val_blocks) == 3 and not val_blocks & train_blocks  # 16 blocks, 20 % held out
    for p in train:  # a training patch lies inside one training block
        assert p.row // s == (p.row + opts.patch_px - 1) // s
        assert p.col // s == (p.col + opts.patch_px - 1) // s
    assert all(p.target.sum() >= 1 for p in train + val)


def test_bad_input(scene: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--labels"):
        run_classify_pretrain(options(scene, "x.tse").replace(labels=None), Log())
    with pytest.raises(ConfigError, match="not in the hierarchy"):
        run_classify_pretrain(options(scene, "x.tse", hierarchy="corine"), Log())
    one = np.full((1, 16, 16), 12, dtype=np.uint8)
    write_raster(tmp_path / "one.tif", one, transform=from_origin(
        500000.0, 5200000.0, 8 * PIXEL_M, 8 * PIXEL_M))
    with pytest.raises(LabelError, match="single class"):
        run_classify_pretrain(options(scene, "x.tse").replace(labels=str(tmp_path / "one.tif")),
                              Log())
    other = write_raster(tmp_path / "other.tif", np.zeros((4, 64, 64), np.uint8),
                         descriptions=("blue", "green", "red", "nir"))
    with pytest.raises(ConfigError, match="maps bands \\['blue'"):
        run_classify_pretrain(options(scene, "x.tse").replace(
            rasters=(str(scene["image"]), str(other))), Log())
    with pytest.raises(LabelError, match="two or more are needed"):
        run_classify_pretrain(options(scene, "x.tse", patch_px=128), Log())
    assert not (scene["dir"] / "x.tse").exists()
