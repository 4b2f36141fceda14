"""The contract every registered model meets, whatever its kind (patch CNN included).

Each registry entry is built through its kind from small training options, then checked:
forward shape (the kind's geometry: a patch model maps its cutout to its block, a tile
network maps a tile to a tile), backward with finite gradients on every parameter, the
number of input channels and classes, and a save/load round trip through a model file
whose metadata the kind wrote. A new family added to the registry runs these tests with
no test code of its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from terraseg.core.modelfile import load_model, save_model
from terraseg.core.models.kinds import KINDS
from terraseg.core.models.registry import MODELS, build_model, count_parameters
from terraseg.protocol.model_meta import (
    Architecture,
    Bands,
    ModelClass,
    ModelMeta,
    Normalisation,
    TrainingRaster,
)
from terraseg.protocol.options import NetworkOptions

#: Small networks of each kind (fast on a CPU).
SMALL = {"patch": NetworkOptions(patch_px=25, block_px=5, planes=(4, 4, 4), blocks=(1, 1, 1)),
         "tile": NetworkOptions(tile_px=32, base_width=4)}
IN_CH, N_CLS = 4, 4  # even: the change networks read two dates


def small(name: str) -> tuple[dict, torch.nn.Module, object]:
    entry = MODELS[name]
    opts = dataclasses.replace(SMALL[entry.kind.name], model=name)
    params = entry.kind.network_params(opts, IN_CH, N_CLS, entry.make_config)
    torch.manual_seed(0)
    return params, build_model(name, params), opts


def test_every_entry_has_a_known_kind() -> None:
    assert set(MODELS) >= {"patch_cnn", "unet", "unet_small"}
    for name, entry in MODELS.items():
        assert entry.kind in KINDS.values(), name
        assert entry.description, name


@pytest.mark.parametrize("name", sorted(MODELS))
class TestModelContract:
    def test_forward_follows_the_kind_geometry(self, name: str) -> None:
        params, net, opts = small(name)
        kind = MODELS[name].kind
        size = kind.example_input_px(params, MODELS[name].make_config)
        with torch.no_grad():
            out = net.eval()(torch.randn(2, IN_CH, size, size))
        _, block = kind.sample_px(opts)
        expected = block if kind.name == "patch" else size
        assert out.shape == (2, N_CLS, expected, expected)
        geometry = kind.geometry(opts, net)
        assert geometry.kind == kind.name and geometry.stride_px >= 1
        if kind.name == "patch":
            assert geometry.receptive_field_px - geometry.stride_px == size - block
        else:
            assert size % geometry.stride_px == 0
            assert opts.tile_px in geometry.valid_tile_sizes_px

    def test_backward_reaches_every_parameter(self, name: str) -> None:
        params, net, _ = small(name)
        size = MODELS[name].kind.example_input_px(params, MODELS[name].make_config)
        out = net.train()(torch.randn(2, IN_CH, size, size))
        target = torch.randint(0, N_CLS, out.shape[:1] + out.shape[2:])
        F.cross_entropy(out, target).backward()
        for pname, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert count_parameters(name, params) == sum(p.numel() for p in net.parameters())

    def test_round_trip_through_a_model_file(self, name: str, tmp_path: Path) -> None:
        params, net, opts = small(name)
        kind = MODELS[name].kind
        meta = ModelMeta(
            architecture=Architecture(name, params), geometry=kind.geometry(opts, net),
            bands=Bands((1, 2, 3, 4), ("r", "g", "b", "n")),
            normalisation=Normalisation((0.0,) * IN_CH, (1.0,) * IN_CH),
            classes=tuple(ModelClass(i + 1, f"c{i + 1}") for i in range(N_CLS)),
            training_raster=TrainingRaster((10.0, 10.0)), loss=kind.default_loss)
        loaded = load_model(save_model(tmp_path / "m.tsm", net, meta))
        assert loaded.meta == meta and loaded.kind is kind
        size = kind.example_input_px(params, MODELS[name].make_config)
        x = torch.randn(1, IN_CH, size, size)
        with torch.no_grad():
            torch.testing.assert_close(loaded.network(x), net.eval()(x), atol=0, rtol=0)
