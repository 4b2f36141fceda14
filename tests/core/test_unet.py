"""Tests for the U-Net family: one model contract for every registered U-Net, then exact
parameter counts, tile-size errors, the multires head, attention wiring and geometry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from terraseg.core.modelfile import load_model, save_model
from terraseg.core.models.patch_cnn import fuse_batchnorm
from terraseg.core.models.registry import MODELS, build_model, config_from_params
from terraseg.core.models.unet import (
    CBAM,
    ConvBlock,
    SqueezeExcitation,
    UNet,
    UNetConfig,
    nearest_valid_sizes,
    valid_tile_sizes,
)
from terraseg.protocol.errors import ConfigError

UNET_NAMES = sorted(name for name, entry in MODELS.items() if entry.build is UNet)
TINY = {"in_channels": 3, "num_classes": 4, "base_width": 4}


def randomise_bn(net: nn.Module, seed: int) -> nn.Module:
    """Non-default BatchNorm statistics and affine parameters (so they matter); eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.randn(n, generator=g) * 0.3 + 1.0)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
                m.num_batches_tracked.fill_(11)
    return net.eval()


def tiny(name: str = "unet", seed: int = 0, **params) -> UNet:
    torch.manual_seed(seed)
    return randomise_bn(build_model(name, {**TINY, **params}), seed)


def inputs(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_all_unet_variants_registered() -> None:
    assert UNET_NAMES == ["unet", "unet_cbam", "unet_multires", "unet_residual", "unet_se",
                          "unet_small"]


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", UNET_NAMES)
class TestUNetContract:
    """What every registered U-Net must do (built tiny: base width 4, depth 4)."""

    def test_output_shape_equals_input_shape(self, name: str) -> None:
        net = tiny(name)
        with torch.no_grad():
            assert net(inputs(2, 3, 64, 64)).shape == (2, 4, 64, 64)
            assert net(inputs(1, 3, 32, 80)).shape == (1, 4, 32, 80)  # any multiples of 16
        assert net.stride_px == 16

    def test_json_params_rebuild_the_same_config(self, name: str) -> None:
        net = build_model(name, TINY)
        assert isinstance(net.config, MODELS[name].config_cls)
        params = json.loads(json.dumps(net.config.to_dict()))
        assert config_from_params(name, params) == net.config
        assert {k: params[k] for k in TINY} == TINY

    def test_backward_gives_finite_grads_on_all_params(self, name: str) -> None:
        torch.manual_seed(0)
        net = build_model(name, TINY).train()
        out = net(inputs(2, 3, 64, 64))
        loss = F.cross_entropy(out, torch.randint(0, 4, (2, 64, 64)))
        loss.backward()
        for pname, p in net.named_parameters():
            assert p.grad is not None, pname
            assert torch.isfinite(p.grad).all(), pname
        assert sum(float(p.grad.abs().sum()) for p in net.parameters()) > 0

    def test_eval_is_deterministic_and_batch_independent(self, name: str) -> None:
        net, x = tiny(name), inputs(2, 3, 64, 64)
        with torch.no_grad():
            a, b, first = net(x), net(x), net(x[:1])
        assert torch.equal(a, b)
        torch.testing.assert_close(first, a[:1], atol=1e-5, rtol=0)
        assert float(a.std()) > 1e-3  # not a degenerate constant map

    def test_save_load_round_trip(self, name: str, tmp_path: Path) -> None:
        net, x = tiny(name, seed=3), inputs(2, 3, 64, 64)
        params = net.config.to_dict()
        n_in, n_cls = params["in_channels"], params["num_classes"]
        meta = {"architecture": {"name": name, "params": params},
                "geometry": {"kind": "tile", "tile_px": 64, "stride_px": net.stride_px,
                             "valid_tile_sizes_px": list(net.valid_tile_sizes(128))},
                "bands": {"indices": list(range(1, n_in + 1)),
                          "names": [f"b{i}" for i in range(n_in)]},
                "normalisation": {"mean": [0.0] * n_in, "std": [1.0] * n_in},
                "classes": [{"id": i + 1, "name": f"c{i}"} for i in range(n_cls)],
                "training_raster": {"pixel_size": [1.0, 1.0]}}
        loaded = load_model(save_model(tmp_path / "m.tsm", net, meta))
        assert loaded.meta.geometry.valid_tile_sizes_px == (16, 32, 48, 64, 80, 96, 112, 128)
        assert loaded.network.config == net.config
        with torch.no_grad():
            assert torch.equal(loaded.network(x), net(x))

    def test_refuses_tile_not_divisible_by_stride(self, name: str) -> None:
        with pytest.raises(ConfigError) as exc:
            tiny(name)(inputs(1, 3, 64, 72))
        assert exc.value.message == ("Tile size 72 is not divisible by the network stride 16; "
                                     "use 64 or 80.")


# --------------------------------------------------------------------------- sizes


def conv_block_params(c_in: int, c_out: int, residual: bool = False) -> int:
    """Two bias-free 3x3 convs with BN (weight + bias); residual adds a 1x1 conv + BN."""
    n = 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out
    return n + (c_in * c_out + 2 * c_out if residual else 0)


def unet_params(c_in: int, k: int, w: int, depth: int, residual: bool = False) -> int:
    """Closed-form parameter count of a U-Net with a single head."""
    widths = [w * 2**i for i in range(depth + 1)]
    n = conv_block_params(c_in, w, residual)
    pairs = zip(widths[:-1], widths[1:], strict=True)
    n += sum(conv_block_params(a, b, residual) for a, b in pairs)
    for c in widths[1:]:  # transposed conv c -> c/2 (2x2, bias) then block c -> c/2
        n += 4 * c * (c // 2) + c // 2 + conv_block_params(c, c // 2, residual)
    return n + w * k + k


def test_unet_default_is_the_31m_original() -> None:
    net = build_model("unet", {"in_channels": 1, "num_classes": 2})  # the paper's setting
    assert n_params(net) == unet_params(1, 2, 64, 4) == 31_036_546
    assert 30_000_000 <= n_params(net) <= 32_000_000
    assert unet_params(14, 2, 64, 4) == 31_044_034  # the study's 14 bands: 31.0M (slides: 31.4M)


def test_unet_small_is_about_2_6m() -> None:
    net = build_model("unet_small", {"in_channels": 14, "num_classes": 2})
    assert net.config.base_width == 18
    assert n_params(net) == unet_params(14, 2, 18, 4) == 2_459_864
    assert 2_400_000 <= n_params(net) <= 2_800_000


def test_residual_and_multires_parameter_counts() -> None:
    res = build_model("unet_residual", {"in_channels": 14, "num_classes": 2, "base_width": 8})
    assert n_params(res) == unet_params(14, 2, 8, 4, residual=True)
    mr = build_model("unet_multires", {"in_channels": 14, "num_classes": 2, "base_width": 8})
    extra = (16 * 2 + 2) + (32 * 2 + 2)  # 1x1 heads on the 1/2 and 1/4 decoder levels
    assert n_params(mr) == unet_params(14, 2, 8, 4) + extra


# --------------------------------------------------------------------------- tile sizes


def test_tile_error_names_nearest_valid_sizes() -> None:
    net = UNet(UNetConfig(3, 2, base_width=2))
    for h, w in ((250, 256), (256, 250)):
        with pytest.raises(ConfigError) as exc:
            net.check_tile(h, w)
        assert exc.value.message == ("Tile size 250 is not divisible by the network stride "
                                     "16; use 240 or 256.")
        assert "multiple of 16" in exc.value.hint
    with pytest.raises(ConfigError) as exc:
        net.check_tile(10, 16)
    assert exc.value.message.endswith("stride 16; use 16.")
    with pytest.raises(ConfigError) as exc:
        UNet(UNetConfig(3, 2, base_width=2, depth=3)).check_tile(250, 248)
    assert exc.value.message.endswith("stride 8; use 248 or 256.")
    net.check_tile(16, 240)  # valid sizes pass silently


def test_valid_tile_sizes() -> None:
    assert valid_tile_sizes(16, 64) == (16, 32, 48, 64)
    assert valid_tile_sizes(16, 63) == (16, 32, 48)
    cfg = UNetConfig(3, 2, depth=5)
    assert cfg.stride_px == 32 and cfg.valid_tile_sizes(100) == (32, 64, 96)
    assert len(cfg.valid_tile_sizes()) == 32  # up to 1024 by default
    assert nearest_valid_sizes(250, 16) == (240, 256)
    assert nearest_valid_sizes(5, 16) == (16,)


# --------------------------------------------------------------------------- multires head


def test_multires_output_is_mean_of_upsampled_scale_logits() -> None:
    net, x = tiny("unet_multires"), inputs(2, 3, 64, 64)
    raw: list[torch.Tensor] = []
    hooks = [h.register_forward_hook(lambda _m, _i, out: raw.append(out)) for h in net.heads]
    with torch.no_grad():
        out = net(x)
    for h in hooks:
        h.remove()
    assert [tuple(r.shape) for r in raw] == [(2, 4, 64, 64), (2, 4, 32, 32), (2, 4, 16, 16)]
    ups = [F.interpolate(r, size=(64, 64), mode="bilinear", align_corners=False) for r in raw]
    torch.testing.assert_close(out, (ups[0] + ups[1] + ups[2]) / 3, atol=1e-6, rtol=0)
    assert min(float((ups[i] - ups[j]).abs().max()) for i, j in ((0, 1), (0, 2), (1, 2))) > 1e-3
    with torch.no_grad():
        scales = net.scale_logits(x)
    for s, u in zip(scales, ups, strict=True):
        torch.testing.assert_close(s, u, atol=1e-6, rtol=0)


def test_multires_uses_fewer_scales_for_shallow_nets() -> None:
    assert len(tiny("unet_multires", depth=2).heads) == 2
    with pytest.raises(ConfigError) as exc:
        build_model("unet_multires", {**TINY, "depth": 1})
    assert "single" in exc.value.hint


# --------------------------------------------------------------------------- attention


@pytest.mark.parametrize("attention", ["se", "cbam"])
def test_attention_is_wired_in(attention: str) -> None:
    """Same shared weights: attention changes the output; removing it restores 'none'."""
    plain, x = tiny("unet"), inputs(2, 3, 64, 64)
    att = randomise_bn(build_model(f"unet_{attention}", TINY), 9)
    missing, unexpected = att.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(".attn." in k for k in missing)
    n_blocks = sum(isinstance(m, ConvBlock) for m in att.modules())
    assert n_blocks == 9  # 4 encoder + bottleneck + 4 decoder blocks, all with attention
    assert sum(isinstance(m, SqueezeExcitation | CBAM) for m in att.modules()) == n_blocks
    with torch.no_grad():
        base, with_att = plain(x), att(x)
        assert float((with_att - base).abs().max()) > 1e-2
        for m in att.modules():
            if isinstance(m, ConvBlock):
                m.attn = nn.Identity()
        torch.testing.assert_close(att(x), base, atol=1e-6, rtol=0)


def test_squeeze_excitation_values() -> None:
    torch.manual_seed(0)
    se, x = SqueezeExcitation(32), inputs(2, 32, 5, 7)
    assert se.fc1.out_channels == 2
    w1, b1 = se.fc1.weight[:, :, 0, 0], se.fc1.bias
    w2, b2 = se.fc2.weight[:, :, 0, 0], se.fc2.bias
    gate = torch.sigmoid(torch.relu(x.mean(dim=(2, 3)) @ w1.T + b1) @ w2.T + b2)
    with torch.no_grad():
        torch.testing.assert_close(se(x), x * gate[:, :, None, None], atol=1e-6, rtol=0)


def test_cbam_values() -> None:
    torch.manual_seed(0)
    cbam, x = CBAM(32), inputs(2, 32, 9, 11)
    l1, l2 = cbam.mlp[0], cbam.mlp[2]

    def mlp(v: torch.Tensor) -> torch.Tensor:
        h = torch.relu(v @ l1.weight[:, :, 0, 0].T + l1.bias)
        return h @ l2.weight[:, :, 0, 0].T + l2.bias

    with torch.no_grad():
        ch = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
        xc = x * ch[:, :, None, None]
        pooled = torch.stack([xc.mean(dim=1), xc.amax(dim=1)], dim=1)
        sp = torch.sigmoid(F.conv2d(pooled, cbam.spatial.weight, cbam.spatial.bias, padding=3))
        torch.testing.assert_close(cbam(x), xc * sp, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("name", ["unet", "unet_multires"])
def test_equivariant_to_shifts_by_the_stride_away_from_borders(name: str) -> None:
    net, x = tiny(name, depth=2), inputs(1, 3, 112, 112)  # stride 4
    with torch.no_grad():
        y = net(x)
        m = 34  # > half the receptive field (44 px) plus the shift
        for s, equal in ((4, True), (8, True), (2, False)):
            ys = net(torch.roll(x, shifts=(s, s), dims=(2, 3)))
            a, b = ys[..., m + s : -m, m + s : -m], y[..., m : -m - s, m : -m - s]
            assert a.shape[-1] >= 30
            if equal:
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
            else:  # max pooling and the 2x2 up-convolution are tied to the stride grid
                assert float((a - b).abs().max()) > 1e-4  # 10x the tolerance above


def test_fused_batchnorm_computes_the_same_function() -> None:
    net, x = tiny("unet_residual", attention="cbam", head="multires"), inputs(2, 3, 64, 64)
    fused = fuse_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net(x), atol=1e-5, rtol=0)


def test_dropout_only_in_training() -> None:
    net, x = tiny("unet", dropout=0.5), inputs(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        net.train()
        assert not torch.equal(net(x), net(x))


# --------------------------------------------------------------------------- config


def test_presets_change_only_their_defaults_and_stay_overridable() -> None:
    base = UNetConfig(3, 4).to_dict()
    changed = {"unet": {}, "unet_small": {"base_width": 18},
               "unet_residual": {"block": "residual"}, "unet_se": {"attention": "se"},
               "unet_cbam": {"attention": "cbam"}, "unet_multires": {"head": "multires"}}
    for name, diff in changed.items():
        assert config_from_params(name, {"in_channels": 3, "num_classes": 4}).to_dict() == {
            **base, **diff}
    cfg = config_from_params("unet_small", {**TINY, "attention": "se", "depth": 3})
    assert (cfg.base_width, cfg.attention, cfg.depth, cfg.stride_px) == (4, "se", 3, 8)


@pytest.mark.parametrize(("params", "in_message", "in_hint"), [
    ({"block": "dense"}, "block 'dense'", "plain, residual"),
    ({"attention": "eca"}, "attention 'eca'", "none, se, cbam"),
    ({"head": "fpn"}, "head 'fpn'", "single, multires"),
    ({"depth": 0}, "depth 0", "4"),
    ({"depth": 9}, "depth 9", "4"),
    ({"base_width": 0}, "base_width 0", "64"),
    ({"dropout": 1.0}, "Dropout 1.0", "0"),
    ({"num_classes": 1}, "2 classes", "labels"),
])
def test_bad_config_says_how_to_fix_it(params: dict, in_message: str, in_hint: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_model("unet", {**TINY, **params})
    assert in_message in exc.value.message
    assert in_hint in exc.value.hint


def test_unknown_parameter_lists_unet_parameters() -> None:
    with pytest.raises(ConfigError) as exc:
        build_model("unet_se", {**TINY, "patch_px": 51})
    assert "patch_px" in exc.value.message
    assert "base_width" in exc.value.hint and "attention" in exc.value.hint
