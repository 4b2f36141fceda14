"""Blended sliding-window inference for tile networks: partition of unity, seams, extent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.synthetic import write_raster
from rasterio.windows import Window

from terraseg.core.blend import TileGeometry, blend_weights, predict_blended, tile_starts
from terraseg.core.models.registry import build_model
from terraseg.core.normalise import BandStats
from terraseg.core.raster import RasterSource
from terraseg.protocol.errors import ConfigError


def test_weights_sum_to_one_at_half_tile_step() -> None:
    t = 32
    w = blend_weights(t)[0] / blend_weights(t)[0].max()
    total = np.zeros(3 * t)
    for k in range(5):
        start = k * t // 2
        total[start : start + t][: max(0, 3 * t - start)] += w[: max(0, min(t, 3 * t - start))]
    interior = total[t : 2 * t]
    np.testing.assert_allclose(interior, interior[0], rtol=1e-6)


def testtile_starts_cover_the_area() -> None:
    geom = TileGeometry(32, 16)
    starts = tile_starts(5, 70, geom)
    assert starts[0] <= 5 < starts[0] + 32 and starts[-1] < 70 <= starts[-1] + 32 + 16
    assert all(b - a == 16 for a, b in zip(starts, starts[1:], strict=False))
    assert all(s % 16 == (16 - 8) % 16 for s in starts)  # anchored to the raster origin
    with pytest.raises(ConfigError):
        TileGeometry(32, 0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[RasterSource, torch.nn.Module]:
    d = tmp_path_factory.mktemp("blend")
    rng = np.random.default_rng(0)
    data = rng.integers(1, 255, (3, 90, 77), dtype=np.uint8)
    data[:, 40:50, 30:40] = 0  # nodata block
    src = RasterSource(write_raster(d / "r.tif", data, nodata=0))
    torch.manual_seed(0)
    net = build_model("unet_small", {"in_channels": 3, "num_classes": 3, "base_width": 4,
                                     "depth": 3}).eval()
    return src, net


def _run(src: RasterSource, net: torch.nn.Module, region: Window) -> tuple:
    stats = BandStats((120.0,) * 3, (60.0,) * 3)
    parts = list(predict_blended(net, src, stats, region, TileGeometry(32, 16), 3,
                                 torch.device("cpu"), batch_tiles=3))
    probs = np.concatenate([p for _, p, _ in parts], axis=1)
    valid = np.concatenate([v for _, _, v in parts], axis=0)
    rows = [int(w.row_off) for w, _, _ in parts]
    assert rows == sorted(rows) and rows[0] == region.row_off
    return probs, valid


def test_whole_raster_probabilities_and_validity(scene: tuple) -> None:
    src, net = scene
    probs, valid = _run(src, net, Window(0, 0, 77, 90))
    assert probs.shape == (3, 90, 77)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert not valid[40:50, 30:40].any() and valid[:40].all()


def test_window_alone_equals_whole_run(scene: tuple) -> None:
    src, net = scene
    whole, _ = _run(src, net, Window(0, 0, 77, 90))
    part, valid = _run(src, net, Window(7, 13, 41, 50))
    np.testing.assert_allclose(part, whole[:, 13:63, 7:48], atol=1e-5)


def test_blending_softens_tile_borders(tmp_path: Path) -> None:
    """On a constant raster only tile borders (zero padding) make outputs vary; overlapping
    blended tiles vary less than tiles butted together."""
    src = RasterSource(write_raster(tmp_path / "c.tif", np.full((3, 96, 96), 100, np.uint8)))
    torch.manual_seed(1)
    net = build_model("unet_small", {"in_channels": 3, "num_classes": 2, "base_width": 4,
                                     "depth": 2}).eval()
    stats = BandStats((90.0,) * 3, (10.0,) * 3)

    def spread(step: int) -> float:
        parts = predict_blended(net, src, stats, Window(16, 16, 64, 64), TileGeometry(32, step),
                                2, torch.device("cpu"))
        probs = np.concatenate([p for _, p, _ in parts], axis=1)[0]
        return float(probs.max() - probs.min())

    assert spread(16) < 0.7 * spread(32)
