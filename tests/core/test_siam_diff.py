"""The direct change networks: fc_ef and fc_siam_diff (core/models/siam_diff.py).

The model contract (forward, backward, save/load) runs for both in test_model_contract.py;
here: the Siamese encoder is one module applied to both dates, its features are
|f_a - f_b| (so swapping the dates changes nothing and equal dates give zero), and odd
band counts are refused where training builds the network.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from terraseg.core.models.registry import MODELS, build_model
from terraseg.core.models.siam_diff import SiamDiffUNet
from terraseg.core.models.unet import UNet
from terraseg.protocol.errors import ConfigError
from terraseg.protocol.options import NetworkOptions

C, K = 3, 2
TINY = {"in_channels": 2 * C, "num_classes": K, "base_width": 4}


def randomised(name: str, seed: int = 0) -> nn.Module:
    """A tiny network with non-default BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = build_model(name, TINY)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval()


def pair(seed: int = 1, n: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, C, size, size, generator=g),
            torch.randn(n, C, size, size, generator=g))


@pytest.mark.parametrize("name", ["fc_ef", "fc_siam_diff"])
def test_logits_per_pixel_and_daudt_width(name: str) -> None:
    net = randomised(name)
    a, b = pair()
    with torch.no_grad():
        assert net(torch.cat([a, b], 1)).shape == (2, K, 32, 32)
        a2, b2 = pair(n=1, size=48)
        assert net(torch.cat([a2, b2], 1)[:, :, :16]).shape == (1, K, 16, 48)
    assert build_model(name, {"in_channels": 4, "num_classes": 2}).config.base_width == 16
    assert MODELS[name].kind.name == "tile" and net.stride_px == 16


def test_early_fusion_is_a_unet_on_both_dates_stacked() -> None:
    net = randomised("fc_ef")
    assert isinstance(net, UNet)
    assert net.encoder[0].conv1.weight.shape == (4, 2 * C, 3, 3)


def test_siamese_encoder_is_one_module_for_both_dates() -> None:
    net = randomised("fc_siam_diff")
    assert isinstance(net, SiamDiffUNet)
    assert net.config.in_channels == 2 * C  # the pair, as recorded in the model file
    assert net.encoder[0].conv1.weight.shape == (4, C, 3, 3)  # one date's bands
    ef = build_model("fc_ef", TINY)
    n_siam = sum(p.numel() for p in net.parameters())
    n_ef = sum(p.numel() for p in ef.parameters())
    assert n_ef - n_siam == 4 * C * 9  # only the first conv reads twice the bands
    a, b = pair()
    diffs, bottom = net.difference_features(torch.cat([a, b], 1))
    with torch.no_grad():
        fa, fb = net.encode(a), net.encode(b)
    for d, sa, sb in zip(diffs, fa[0], fb[0], strict=True):
        torch.testing.assert_close(d, (sa - sb).abs())
    torch.testing.assert_close(bottom, (fa[1] - fb[1]).abs())
    assert [d.shape[1] for d in diffs] == [4, 8, 16, 32] and bottom.shape[1] == 64


def test_swapping_the_dates_changes_nothing_and_equal_dates_give_zero() -> None:
    net = randomised("fc_siam_diff", seed=2)
    a, b = pair(seed=3)
    with torch.no_grad():
        ab, ba = net(torch.cat([a, b], 1)), net(torch.cat([b, a], 1))
        d_ab, bot_ab = net.difference_features(torch.cat([a, b], 1))
        d_ba, bot_ba = net.difference_features(torch.cat([b, a], 1))
        d_aa, bot_aa = net.difference_features(torch.cat([a, a], 1))
    torch.testing.assert_close(ab, ba, atol=1e-6, rtol=0)
    for x, y in zip(d_ab, d_ba, strict=True):
        torch.testing.assert_close(x, y, atol=0, rtol=0)
    torch.testing.assert_close(bot_ab, bot_ba, atol=0, rtol=0)
    assert all(float(d.abs().max()) == 0 for d in d_aa) and float(bot_aa.abs().max()) == 0
    assert float((ab - net(torch.cat([a, a], 1)).detach()).abs().max()) > 1e-3
    ef = randomised("fc_ef", seed=2)  # early fusion does see the order
    with torch.no_grad():
        assert float((ef(torch.cat([a, b], 1)) - ef(torch.cat([b, a], 1))).abs().max()) > 1e-3


def test_gradients_reach_the_shared_encoder_from_both_dates() -> None:
    net = build_model("fc_siam_diff", TINY).train()
    a, b = pair(seed=4)
    a.requires_grad_(True)
    b.requires_grad_(True)
    net(torch.cat([a, b], 1)).sum().backward()
    assert float(a.grad.abs().sum()) > 0 and float(b.grad.abs().sum()) > 0
    assert float(net.encoder[0].conv1.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", ["fc_ef", "fc_siam_diff"])
def test_odd_band_counts_are_refused_where_training_builds_the_network(name: str) -> None:
    entry = MODELS[name]
    opts = dataclasses.replace(NetworkOptions(tile_px=32, base_width=4), model=name)
    with pytest.raises(ConfigError) as exc:
        entry.kind.network_params(opts, 13, 2, entry.make_config)
    assert "even number of input bands; got 13" in exc.value.message
    assert f"'{name}'" in exc.value.message and "terraseg pair" in exc.value.hint
    params = entry.kind.network_params(opts, 26, 2, entry.make_config)
    assert params == {"in_channels": 26, "num_classes": 2, "base_width": 4}


def test_a_raster_with_other_band_counts_is_refused_at_prediction() -> None:
    net = randomised("fc_siam_diff")
    with pytest.raises(ConfigError) as exc:
        net(torch.zeros(1, 4, 32, 32))
    assert "4 bands but the network was built for 6" in exc.value.message
