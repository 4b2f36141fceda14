"""U-Net / FPN / DeepLabV3+ on ResNet-18/34/50 (core/models/encoder_decoder.py).

Parameter counts are compared with segmentation_models_pytorch 0.6 (``smp.Unet(
"resnet34", encoder_weights=None, in_channels=3, classes=1)`` and so on), whose figures
are written here; smp itself cannot be installed beside the engine's torch. Big networks
are built on the meta device (nothing allocated).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F  # noqa: N812
from helpers.paths import terraseg
from helpers.synthetic import make_scene

from terraseg.core.models.encoder_decoder import CONFIGS, EncoderDecoder, norm_groups
from terraseg.core.models.kinds import KINDS
from terraseg.core.models.patch_cnn import fuse_batchnorm
from terraseg.core.models.registry import (
    MODELS,
    build_model,
    build_on_meta_device,
    config_from_params,
    count_parameters,
)
from terraseg.core.models.resnet_encoder import ResNetEncoder, SafeBatchNorm2d
from terraseg.protocol.errors import ConfigError

FAMILIES = ("unet", "fpn", "deeplabv3plus")
NAMES = [f"{f}_resnet{d}" for f in FAMILIES for d in (18, 34, 50)]
#: Head: (kernel, input channels) -> parameters per class = kernel^2 * channels + 1.
HEAD_PER_CLASS = {"unet": 3 * 3 * 16 + 1, "fpn": 128 + 1, "deeplabv3plus": 256 + 1}


def smp_count(name: str) -> int:
    """Our count for smp's setting (3 bands, 1 class): TerraSeg needs >= 2 classes, so the
    2-class network minus one class of its head."""
    family = name.split("_")[0]
    return count_parameters(name, {"in_channels": 3, "num_classes": 2}) - HEAD_PER_CLASS[family]


def test_registry_has_the_nine_networks_as_tile_models() -> None:
    assert set(NAMES) == set(CONFIGS) and set(NAMES) <= set(MODELS)
    for name in NAMES:
        entry = MODELS[name]
        assert entry.kind is KINDS["tile"] and entry.build is EncoderDecoder
        cfg = config_from_params(name, {"in_channels": 4, "num_classes": 3})
        assert f"{cfg.decoder}_{cfg.encoder}" == name
        assert cfg.stride_px == (16 if name.startswith("deeplab") else 32)
        assert cfg.to_dict() == {"in_channels": 4, "num_classes": 3, "base_width": 64}
        assert config_from_params(name, cfg.to_dict()) == cfg
        assert str(cfg.stride_px) in entry.description


@pytest.mark.parametrize("name, smp_params", [
    ("unet_resnet18", 14_328_209), ("unet_resnet34", 24_436_369),
    ("fpn_resnet34", 23_155_393), ("deeplabv3plus_resnet34", 22_437_457)])
def test_parameter_counts_are_smps(name: str, smp_params: int) -> None:
    assert smp_count(name) == smp_params


def test_resnet50_counts() -> None:
    # torchvision's resnet50 without its fc layer (2048 * 1000 + 1000)
    enc = build_on_meta_device("unet_resnet50", {"in_channels": 3, "num_classes": 2}).encoder
    assert sum(p.numel() for p in enc.parameters()) == 25_557_032 - 2_049_000
    # 32,521,250, the figure quoted for smp's Unet-resnet50, is the count with 2 classes
    assert count_parameters("unet_resnet50", {"in_channels": 3, "num_classes": 2}) == 32_521_250
    assert smp_count("unet_resnet50") == 32_521_105
    # ResNet-18/34 encoders: torchvision's 11,689,512 / 21,797,672 without fc (513,000)
    for depth, total in ((18, 11_689_512), (34, 21_797_672)):
        net = build_on_meta_device(f"fpn_resnet{depth}", {"in_channels": 3, "num_classes": 2})
        assert sum(p.numel() for p in net.encoder.parameters()) == total - 513_000


def test_bands_change_only_the_first_convolution() -> None:
    counts = {c: count_parameters("unet_resnet34", {"in_channels": c, "num_classes": 2})
              for c in (1, 3, 13)}
    assert counts[13] - counts[3] == 10 * 64 * 7 * 7
    assert counts[3] - counts[1] == 2 * 64 * 7 * 7


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("bands", [1, 4, 13])
def test_output_is_logits_at_input_size(family: str, bands: int) -> None:
    torch.manual_seed(0)
    net = build_model(f"{family}_resnet18", {"in_channels": bands, "num_classes": 3}).eval()
    assert net.encoder.conv1.weight.shape == (64, bands, 7, 7)
    x = torch.randn(2, bands, 64, 96)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, 64, 96) and torch.isfinite(y).all()
    assert y.std() > 0  # the logits depend on the pixels, not just a bias
    with torch.no_grad():  # batch-independent in eval
        torch.testing.assert_close(net(x[1:]), y[1:], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["unet_resnet50", "fpn_resnet50", "deeplabv3plus_resnet50"])
def test_resnet50_shapes_on_the_meta_device(name: str) -> None:
    net = build_on_meta_device(name, {"in_channels": 13, "num_classes": 5})
    feats = net.encoder(torch.empty(1, 13, 128, 128, device="meta"))
    out_stride = net.stride_px
    assert [f.shape[1] for f in feats] == [13, 64, 256, 512, 1024, 2048]
    assert [f.shape[-1] for f in feats] == [128, 64, 32, 16, 8, 128 // out_stride]
    assert net(torch.empty(1, 13, 128, 128, device="meta")).shape == (1, 5, 128, 128)


def test_deeplab_dilates_layer4_as_smp() -> None:
    net = build_on_meta_device("deeplabv3plus_resnet34", {"in_channels": 3, "num_classes": 2})
    convs = [m for m in net.encoder.layer4.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {m.stride for m in convs} == {(1, 1)} and {m.dilation for m in convs} == {(2, 2)}
    assert {m.padding for m in convs if m.kernel_size == (3, 3)} == {(2, 2)}
    aspp = net.decoder.aspp[0]
    assert [branch[0][0].dilation for branch in aspp.convs[1:4]] == [(12, 12), (24, 24), (36, 36)]
    assert net.decoder.block1[0].out_channels == 48


def test_decoder_widths_and_norms_are_smps() -> None:
    unet = build_on_meta_device("unet_resnet18", {"in_channels": 3, "num_classes": 2})
    assert [b.conv2[0].out_channels for b in unet.decoder.blocks] == [256, 128, 64, 32, 16]
    assert [b.conv1[0].in_channels for b in unet.decoder.blocks] == [768, 384, 192, 128, 32]
    fpn = build_on_meta_device("fpn_resnet18", {"in_channels": 3, "num_classes": 2})
    assert fpn.decoder.p5.out_channels == 256 and fpn.decoder.dropout.p == 0.2
    norms = [m for m in fpn.decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 3 + 2 + 1 + 1 and {(n.num_groups, n.num_channels) for n in norms} == {
        (32, 128)}


def test_base_width_scales_every_layer() -> None:
    net = build_on_meta_device("fpn_resnet50", {"in_channels": 3, "num_classes": 2,
                                                "base_width": 16})
    assert net.encoder.out_channels == (3, 16, 64, 128, 256, 512)
    assert net.decoder.p5.out_channels == 64 and net.decoder.out_channels == 32
    # groups of 4 channels as smp's 32 groups of 128, so 1x1 maps still normalise
    assert {m.num_groups for m in net.modules() if isinstance(m, torch.nn.GroupNorm)} == {8}
    assert [norm_groups(c) for c in (128, 32, 8, 6, 2)] == [32, 8, 2, 1, 1]


def test_random_init_is_torchvisions_kaiming_normal() -> None:
    torch.manual_seed(0)
    enc = ResNetEncoder("resnet34", 4)
    w = enc.layer3[0].conv2.weight  # fan_out = 256 * 3 * 3
    assert abs(float(w.detach().std()) / (2 / (256 * 9)) ** 0.5 - 1) < 0.02
    assert enc.bn1.weight.detach().eq(1).all() and enc.bn1.bias.detach().eq(0).all()


@pytest.mark.parametrize("name, size, near", [
    ("unet_resnet18", 100, "96 or 128"), ("fpn_resnet18", 20, "use 32."),
    ("deeplabv3plus_resnet18", 40, "32 or 48")])
def test_tile_not_divisible_by_the_stride_names_the_nearest_sizes(name: str, size: int,
                                                                   near: str) -> None:
    net = build_model(name, {"in_channels": 1, "num_classes": 2, "base_width": 4})
    with pytest.raises(ConfigError) as exc:
        net(torch.zeros(1, 1, size, 64))
    assert f"Tile size {size}" in exc.value.message and near in exc.value.message
    assert net.valid_tile_sizes(128) == tuple(range(net.stride_px, 129, net.stride_px))


def test_bad_config_is_refused_with_a_fix() -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_params("unet_resnet34", {"in_channels": 3, "num_classes": 2, "base_width": 0})
    assert "base_width 0" in exc.value.message and "64" in exc.value.hint
    with pytest.raises(ConfigError) as exc:
        config_from_params("fpn_resnet18", {"in_channels": 3, "num_classes": 2, "encoder": "x"})
    assert "base_width" in exc.value.hint and "fpn_resnet18" in exc.value.message


@pytest.mark.parametrize("family", FAMILIES)
def test_training_with_batch_size_one_and_1x1_deep_features(family: str) -> None:
    torch.manual_seed(0)
    net = build_model(f"{family}_resnet18", {"in_channels": 2, "num_classes": 2,
                                             "base_width": 8}).train()
    size = net.stride_px  # deepest features (and the ASPP pooling) are 1x1
    deepest = net.encoder.layer4[-1].bn2
    before = deepest.running_mean.clone()
    out = net(torch.randn(1, 2, size, size))
    F.cross_entropy(out, torch.randint(0, 2, (1, size, size))).backward()
    assert out.shape == (1, 2, size, size) and torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    if family != "deeplabv3plus":  # a single value per channel leaves the statistics alone
        torch.testing.assert_close(deepest.running_mean, before, atol=0, rtol=0)


def test_safe_batchnorm_is_batchnorm_except_for_single_values() -> None:
    torch.manual_seed(0)
    safe, plain = SafeBatchNorm2d(3), torch.nn.BatchNorm2d(3)
    safe.running_mean.fill_(0.5)
    plain.load_state_dict(safe.state_dict())
    x = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(safe.train()(x), plain.train()(x))
    one = torch.tensor([[[[2.0]], [[0.5]], [[-1.0]]]])
    expected = (one - safe.running_mean.view(1, 3, 1, 1)) / torch.sqrt(
        safe.running_var.view(1, 3, 1, 1) + safe.eps)
    torch.testing.assert_close(safe(one), expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_folded_batchnorm_computes_the_same_function(family: str) -> None:
    torch.manual_seed(0)
    net = build_model(f"{family}_resnet18", {"in_channels": 3, "num_classes": 2,
                                             "base_width": 16})
    net.train()(torch.randn(4, 3, 64, 64))  # non-trivial running statistics
    net.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fuse_batchnorm(net)(x), net(x), atol=1e-4, rtol=1e-4)


def label_boxes(size: int) -> np.ndarray:
    """The training polygons of :func:`make_scene` as pixels: 1 sealed, 2 unsealed, 0 none."""
    boxes = np.zeros((size, size), dtype=np.uint8)
    for r in range(4, size - 12, 32):
        for c in range(4, size - 12, 32):
            boxes[r + 3 : r + 11, c + 3 : c + 11] = 1
            boxes[r + 18 : r + 26, c + 18 : c + 26] = 2
    return boxes


@pytest.mark.slow
def test_cli_train_then_predict(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, size=64)
    model = tmp_path / "unet.tsm"
    proc = terraseg("train", "--raster", scene.raster, "--labels", scene.labels,
                    "--class-field", "klass", "--out", model, "--model", "unet_resnet18",
                    "--base-width", "16", "--tile-size", "32", "--epochs", "3",
                    "--samples-per-epoch", "64", "--batch-size", "8", "--accelerator", "cpu",
                    "--cache-dir", tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(terraseg("info", model).stdout)
    assert meta["architecture"] == {"name": "unet_resnet18", "params": {
        "in_channels": 4, "num_classes": 2, "base_width": 16}}
    assert meta["geometry"]["stride_px"] == 32 and meta["geometry"]["tile_px"] == 32
    proc = terraseg("predict", "--model", model, "--raster", scene.raster, "--out-dir",
                    tmp_path / "pred")
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(tmp_path / "pred" / "probability.tif") as ds:
        prob = ds.read()
    with rasterio.open(tmp_path / "pred" / "classes.tif") as ds:
        classes = ds.read(1)
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
    sealed = prob[0] > meta["threshold"]["value"]  # the tuned threshold makes the classes
    assert np.array_equal(classes, np.where(sealed, 1, 2))
    boxes = label_boxes(64)  # what 3 tiny epochs learn: the labelled pixels
    assert float((classes[boxes > 0] == boxes[boxes > 0]).mean()) > 0.95
    assert prob[0][boxes == 1].mean() - prob[0][boxes == 2].mean() > 0.4
