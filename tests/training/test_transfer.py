"""Training from a pretrained encoder: encoder files, transfer across classes, freezing."""

from __future__ import annotations

import json
from pathlib import Path

import fiona
import pytest
import torch
from helpers.recording import LogRecorder as Log
from helpers.synthetic import make_scene
from safetensors import safe_open

from terraseg.core.encoder_file import (
    EncoderMeta,
    Pretraining,
    load_encoder,
    read_encoder_meta,
    save_encoder,
)
from terraseg.core.models.resnet_encoder import ResNetEncoder
from terraseg.protocol.errors import ConfigError, ModelFileError
from terraseg.protocol.options import TrainOptions
from terraseg.training.module import SegmentationTask
from terraseg.training.train import run_train

TINY = {"model": "unet_resnet18", "base_width": 8, "tile_px": 32, "epochs": 2,
        "samples_per_epoch": 32, "batch_size": 8, "accelerator": "cpu", "patience": 50}


def encoder_meta(in_channels: int = 4, width: int = 8) -> EncoderMeta:
    return EncoderMeta("resnet18", in_channels, width, ("b1", "b2", "b3", "b4")[:in_channels],
                       (0.0,) * in_channels, (1.0,) * in_channels, (10.0, 10.0),
                       Pretraining("simclr", ("/data/scene.tif",), epochs=3, samples=64))


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    d = tmp_path_factory.mktemp("transfer")
    return d, make_scene(d, size=64)


def options(d: Path, scene: object, out: str, **changes: object) -> TrainOptions:
    return TrainOptions.build(raster=str(scene.raster), labels=str(scene.labels),
                              class_field="klass", cache_dir=str(d / "cache"),
                              out=str(d / out), overwrite=True, **{**TINY, **changes})


def test_encoder_file_round_trip_records_provenance(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = ResNetEncoder("resnet18", 4, 8)
    path = save_encoder(tmp_path / "enc.tse", enc, encoder_meta())
    meta = read_encoder_meta(path)
    assert meta.encoder == "resnet18" and meta.in_channels == 4 and meta.base_width == 8
    assert meta.pretraining.method == "simclr" and meta.pretraining.epochs == 3
    assert meta.pretraining.created and meta.pretraining.software  # filled on save
    loaded = load_encoder(path)
    for k, v in enc.state_dict().items():
        assert torch.equal(loaded.state[k], v), k


def test_foreign_and_mismatched_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "notes.tse"
    bad.write_text("not weights")
    with pytest.raises(ModelFileError, match="not a readable"):
        load_encoder(bad)
    enc = ResNetEncoder("resnet18", 4, 8)
    path = save_encoder(tmp_path / "enc.tse", enc, encoder_meta(in_channels=4, width=16))
    with pytest.raises(ModelFileError, match="don't match a resnet18 encoder"):
        load_encoder(path)  # weights of width 8 recorded as width 16


def test_options_refuse_freeze_without_encoder() -> None:
    with pytest.raises(ConfigError, match="--freeze-epochs 3 needs a pretrained encoder"):
        TrainOptions.build(raster="r.tif", labels="l.gpkg", out="m.tsm",
                           freeze_epochs=3).validate()
    with pytest.raises(ConfigError, match="--encoder and --init-model"):
        TrainOptions.build(raster="r.tif", labels="l.gpkg", out="m.tsm", encoder="e.tse",
                           init_model="m0.tsm").validate()
    with pytest.raises(ConfigError, match="--freeze-epochs 12 is more than --epochs 10") as e:
        TrainOptions.build(raster="r.tif", labels="l.gpkg", out="m.tsm", encoder="e.tse",
                           freeze_epochs=12, epochs=10).validate()
    assert "--freeze-epochs 5" in e.value.hint
    TrainOptions.build(raster="r.tif", labels="l.gpkg", out="m.tsm", encoder="e.tse",
                       freeze_epochs=10, epochs=10).validate()  # frozen throughout: allowed


def test_discriminative_rates_put_the_encoder_in_its_own_group() -> None:
    from terraseg.core.models.registry import build_model

    net = build_model("unet_resnet18", {"in_channels": 4, "num_classes": 2, "base_width": 8})
    task = SegmentationTask(net, torch.ones(2), lr=1e-3, encoder_lr_factor=0.1)
    opt = task.configure_optimizers()
    enc, rest = opt.param_groups
    assert enc["lr"] == pytest.approx(1e-4) and rest["lr"] == pytest.approx(1e-3)
    assert len(enc["params"]) == len(list(net.encoder.parameters()))
    assert len(enc["params"]) + len(rest["params"]) == len(list(net.parameters()))


def test_frozen_encoder_keeps_pretrained_weights_and_provenance(scene_dir: tuple) -> None:
    d, scene = scene_dir
    torch.manual_seed(1)
    enc = ResNetEncoder("resnet18", 4, 8)
    path = save_encoder(d / "enc.tse", enc, encoder_meta())
    log = Log()
    res = run_train(options(d, scene, "frozen.tsm", encoder=str(path), freeze_epochs=2), log)
    assert res["encoder"]["pretraining"]["method"] == "simclr"
    assert any("encoder initialised from enc.tse" in line for line in log.lines)
    assert any("encoder frozen for 2 epoch(s)" in line for line in log.lines)  # all epochs
    with safe_open(res["model"], framework="pt") as fh:
        meta = json.loads(fh.metadata()["terraseg"])
        trained = {k[len("encoder."):]: fh.get_tensor(k) for k in fh.keys()  # noqa: SIM118
                   if k.startswith("encoder.")}
    assert meta["training"]["encoder"]["path"] == str(path.resolve())
    assert meta["training"]["encoder"]["freeze_epochs"] == 2
    assert meta["training"]["options"]["freeze_epochs"] == 2
    for k, v in enc.state_dict().items():  # weights and batch-norm statistics kept
        assert torch.equal(trained[k], v), k


def test_transfer_from_a_model_with_other_classes(scene_dir: tuple, tmp_path: Path) -> None:
    d, scene = scene_dir
    first = run_train(options(d, scene, "two.tsm"), Log())
    # relabel: three classes (split the unsealed polygons in two), so the head differs
    relabelled = tmp_path / "three.gpkg"
    with fiona.open(scene.labels) as src:
        schema, crs = src.schema, src.crs
        feats = list(src)
    with fiona.open(relabelled, "w", driver="GPKG", schema=schema, crs=crs) as dst:
        n_unsealed = 0
        for f in feats:
            props = dict(f["properties"])
            if props["klass"] == "unsealed":
                n_unsealed += 1
                if n_unsealed % 2:
                    props["klass"] = "grass"
            dst.write({"geometry": f["geometry"], "properties": props})
    opts = options(d, scene, "three.tsm", encoder=first["model"], freeze_epochs=1,
                   epochs=2).replace(labels=str(relabelled))
    log = Log()
    res = run_train(opts, log)
    assert any("epoch 2: encoder unfrozen" in line for line in log.lines)
    assert res["encoder"]["pretraining"]["method"] == "model"
    assert res["encoder"]["pretraining"]["classes"] == ["sealed", "unsealed"]
    meta = json.loads(safe_open(res["model"], framework="pt").metadata()["terraseg"])
    assert meta["architecture"]["params"]["num_classes"] == 3


def test_encoder_of_another_network_is_refused_before_work(scene_dir: tuple) -> None:
    d, scene = scene_dir
    path = save_encoder(d / "r18.tse", ResNetEncoder("resnet18", 4, 8), encoder_meta())
    with pytest.raises(ModelFileError, match="is a resnet18 .* 'unet_resnet34' has a resnet34"):
        run_train(options(d, scene, "x.tsm", encoder=str(path), model="unet_resnet34"), Log())
    with pytest.raises(ModelFileError, match="'patch_cnn' network has no ResNet encoder"):
        run_train(options(d, scene, "x.tsm", encoder=str(path), model="patch_cnn"), Log())
    assert not (d / "x.tsm").exists()
