"""Tests for the dense-exact patch CNN and the model registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from terraseg.core.models.patch_cnn import BasicBlock, PatchCNN, PatchCNNConfig
from terraseg.core.models.registry import MODELS, build_model, config_from_params, get_entry
from terraseg.protocol.errors import ConfigError


def randomise(net: nn.Module, seed: int) -> nn.Module:
    """Random conv weights and random BatchNorm affine parameters and running stats; eval."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g)
                               * (1.0 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.randn(n, generator=g) * 0.3 + 1.0)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
    return net.eval()


CONFIGS = [
    pytest.param(PatchCNNConfig(4, 3), id="default-51-5"),
    pytest.param(PatchCNNConfig(4, 3, patch_px=51, block_px=3), id="51-3"),
    pytest.param(PatchCNNConfig(3, 2, patch_px=25, block_px=5, blocks=(1, 1, 1)), id="25-5-b111"),
    pytest.param(PatchCNNConfig(4, 3, patch_px=51, block_px=5, stride_px=1), id="51-5-stride1"),
    pytest.param(PatchCNNConfig(2, 4, patch_px=61, block_px=15, stride_px=5), id="61-15-stride5"),
]


def dense_and_cutouts(cfg: PatchCNNConfig, dtype: torch.dtype) -> tuple:
    """Dense output blocks and cutout outputs at every stride-aligned block origin."""
    net = randomise(PatchCNN(cfg), seed=cfg.patch_px + cfg.block_px).to(dtype)
    s, r, p, k = net.stride_px, net.receptive_field_px, cfg.patch_px, cfg.block_px
    t = k + 5 * s if s > 1 else k + 7  # output tile: a multiple of the stride, >= 6x6 blocks
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, cfg.in_channels, t + r - s, t + r - s, generator=g).to(dtype)
    with torch.no_grad():
        dense = net(x)
        assert dense.shape == (1, cfg.num_classes, t, t)
        origins = [(i, j) for i in range(0, t - k + 1, s) for j in range(0, t - k + 1, s)]
        cuts = torch.stack([x[0, :, i : i + p, j : j + p] for i, j in origins])
        out = net(cuts)
    assert out.shape == (len(origins), cfg.num_classes, k, k)
    assert len(origins) >= 36
    ref = torch.stack([dense[0, :, i : i + k, j : j + k] for i, j in origins])
    assert float(dense.std()) > 0.05  # not a degenerate constant map
    return out, ref


@pytest.mark.parametrize("cfg", CONFIGS)
def test_dense_equals_cutouts(cfg: PatchCNNConfig) -> None:
    """A tile evaluated densely equals cutout-by-cutout evaluation at every stride offset."""
    out, ref = dense_and_cutouts(cfg, torch.float32)
    assert float(ref.abs().max()) < 20  # float32 rounding stays far below the tolerance
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cfg", CONFIGS[:3])
def test_dense_equals_cutouts_float64(cfg: PatchCNNConfig) -> None:
    """In double precision the two agree to rounding noise: the equality is structural."""
    out, ref = dense_and_cutouts(cfg, torch.float64)
    torch.testing.assert_close(out, ref, atol=1e-11, rtol=0)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_receptive_field_and_patch_output_shape(cfg: PatchCNNConfig) -> None:
    net = PatchCNN(cfg).eval()
    s = cfg.stride_px or cfg.block_px
    assert net.stride_px == s
    assert net.receptive_field_px == cfg.patch_px - cfg.block_px + s
    assert net.context_px == cfg.patch_px - cfg.block_px
    x = torch.zeros(2, cfg.in_channels, cfg.patch_px, cfg.patch_px)
    with torch.no_grad():
        assert net(x).shape == (2, cfg.num_classes, cfg.block_px, cfg.block_px)


def test_block_depends_only_on_its_receptive_field() -> None:
    """Pixels outside the R x R window of an SxS output block do not change it."""
    cfg = PatchCNNConfig(2, 2, patch_px=25, block_px=5, blocks=(1, 1, 1))
    net = randomise(PatchCNN(cfg), seed=3)
    r, s = net.receptive_field_px, net.stride_px
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, r + 2 * s, r + 2 * s, generator=g)  # 3x3 coarse outputs
    with torch.no_grad():
        base = net(x)[0, :, s : 2 * s, s : 2 * s]  # centre coarse block, window x[s:s+r]
        y = x.clone()
        y[..., :s, :] = 100.0
        y[..., s + r :, :] = -100.0
        y[..., :, :s] = 50.0
        y[..., :, s + r :] = -50.0
        torch.testing.assert_close(net(y)[0, :, s : 2 * s, s : 2 * s], base, atol=1e-6, rtol=0)
        z = x.clone()
        z[..., s, s + r // 2] += 50.0  # first row of the window
        assert not torch.allclose(net(z)[0, :, s : 2 * s, s : 2 * s], base)


@pytest.mark.parametrize("stride,offset", [(1, 2), (2, 3), (3, 4), (5, 7)])
def test_residual_shortcut_is_centred(stride: int, offset: int) -> None:
    """With the residual branch silenced, a block returns relu of the input pixels at the
    centres of its output pixels' receptive fields."""
    c = 3
    blk = BasicBlock(c, c, stride).eval()
    with torch.no_grad():
        blk.conv1.weight.zero_()
        blk.conv2.weight.zero_()
        blk.bn2.bias.zero_()
        if blk.shortcut is not None:  # make the 1x1 projection an identity
            blk.shortcut[0].weight.copy_(torch.eye(c)[:, :, None, None])
        x = torch.randn(1, c, 40, 40, generator=torch.Generator().manual_seed(0))
        y = blk(x)
    k1 = 3 if stride <= 2 else stride
    assert blk.offset == offset == (k1 - 1 + 2 * stride) // 2
    h = y.shape[-1]
    assert h == (40 - k1) // stride + 1 - 2
    centre = x[..., offset : offset + (h - 1) * stride + 1 : stride,
               offset : offset + (h - 1) * stride + 1 : stride]
    torch.testing.assert_close(y, torch.relu(centre), atol=1e-6, rtol=1e-5)  # BN eps


def test_study_default_parameter_count() -> None:
    net = PatchCNN(PatchCNNConfig(in_channels=4, num_classes=2))
    n = sum(p.numel() for p in net.parameters())
    assert n == 14010
    assert n < 50_000
    assert (net.stem_kernel, net.head_kernel) == (1, 1)  # 51/5 is exactly the minimum size


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("patch,block", [(50, 5), (51, 4), (52, 6)])
def test_even_sizes_rejected(patch: int, block: int) -> None:
    with pytest.raises(ConfigError) as exc:
        PatchCNN(PatchCNNConfig(4, 2, patch_px=patch, block_px=block))
    assert "odd" in exc.value.message
    assert str(patch) in exc.value.message and str(block) in exc.value.message


def test_block_not_multiple_of_stride() -> None:
    with pytest.raises(ConfigError) as exc:
        PatchCNN(PatchCNNConfig(4, 2, patch_px=51, block_px=5, stride_px=3))
    assert "not a multiple of the network stride 3" in exc.value.message


def test_block_larger_than_patch() -> None:
    with pytest.raises(ConfigError, match="exceeds patch size"):
        PatchCNN(PatchCNNConfig(4, 2, patch_px=5, block_px=7))


@pytest.mark.parametrize(
    "patch,blocks,minimum",
    [(49, (2, 2, 2), 51), (21, (1, 1, 1), 23), (31, (2, 2, 2), 51)],
)
def test_patch_too_small_names_minimum(patch: int, blocks: tuple, minimum: int) -> None:
    with pytest.raises(ConfigError) as exc:
        PatchCNN(PatchCNNConfig(4, 2, patch_px=patch, block_px=5, blocks=blocks))
    assert f"at least {minimum} px" in exc.value.message
    assert f"--patch-size >= {minimum}" in exc.value.hint
    # and the minimum itself works
    net = PatchCNN(PatchCNNConfig(4, 2, patch_px=minimum, block_px=5, blocks=blocks))
    assert net.receptive_field_px == minimum


def test_bad_planes_classes_bands() -> None:
    with pytest.raises(ConfigError, match="same length"):
        PatchCNN(PatchCNNConfig(4, 2, planes=(4, 8), blocks=(1, 1, 1)))
    with pytest.raises(ConfigError, match="at least one block"):
        PatchCNN(PatchCNNConfig(4, 2, blocks=(2, 0, 2)))
    with pytest.raises(ConfigError, match="1 class"):
        PatchCNN(PatchCNNConfig(4, 1))
    with pytest.raises(ConfigError, match="0 band"):
        PatchCNN(PatchCNNConfig(0, 2))


# --------------------------------------------------------------------------- registry


def test_registry_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as exc:
        build_model("unet9000", {"in_channels": 4, "num_classes": 2})
    assert "unet9000" in exc.value.message
    for name in MODELS:
        assert name in exc.value.hint
    with pytest.raises(ConfigError):
        get_entry("")


def test_registry_builds_from_json_params() -> None:
    params = {"in_channels": 3, "num_classes": 4, "patch_px": 25, "block_px": 5,
              "planes": [4, 8, 16], "blocks": [1, 1, 1], "stride_px": 0}
    cfg = config_from_params("patch_cnn", params)
    assert cfg == PatchCNNConfig(3, 4, 25, 5, (4, 8, 16), (1, 1, 1), 0)
    assert cfg.to_dict() == {**params, "planes": (4, 8, 16), "blocks": (1, 1, 1)}
    net = build_model("patch_cnn", params)
    assert isinstance(net, PatchCNN) and net.config == cfg


def test_registry_unknown_parameter() -> None:
    with pytest.raises(ConfigError) as exc:
        build_model("patch_cnn", {"in_channels": 4, "num_classes": 2, "depth": 3})
    assert "depth" in exc.value.message
    assert "patch_px" in exc.value.hint
