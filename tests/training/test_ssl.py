"""Self-supervised pretraining: NT-Xent, the views, and the tile stream."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.synthetic import write_raster

from terraseg.core.normalise import BandStats, compute_band_stats
from terraseg.core.raster import RasterSource
from terraseg.protocol.errors import RasterError
from terraseg.training.ssl import (
    ProjectionHead,
    SimCLRTask,
    ViewAugment,
    ViewConfig,
    nt_xent,
    pair_accuracy,
)
from terraseg.training.tile_stream import TileSpec, TileStream, combined_stats, open_sources

NO_CHANGE = ViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_p=0.0,
                       blur_p=0.0, noise_p=0.0, band_drop_p=0.0)


def direct_nt_xent(z1: list[list[float]], z2: list[list[float]], t: float) -> float:
    """SimCLR's loss written out view by view (the paper's equation 1)."""
    views = [*z1, *z2]
    n = len(z1)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / (
            math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denom = sum(math.exp(cos(views[i], views[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(cos(views[i], views[j]) / t) / denom)
    return total / (2 * n)


def test_nt_xent_matches_the_formula_on_hand_made_embeddings() -> None:
    z1 = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]]
    z2 = [[0.9, 0.1, 0.0], [0.0, 1.0, 0.5], [-1.0, 1.0, 0.0]]
    for t in (0.1, 0.5, 1.0):
        got = float(nt_xent(torch.tensor(z1), torch.tensor(z2), t))
        assert got == pytest.approx(direct_nt_xent(z1, z2, t), rel=1e-5)
    # identical partners, orthogonal to the rest: the loss is the floor for this batch
    eye = torch.eye(4)
    assert float(nt_xent(eye[:2], eye[:2], 0.5)) == pytest.approx(
        math.log(math.exp(2) + 2) - 2, rel=1e-6)
    assert float(nt_xent(eye[:2], eye[:2], 0.5)) < float(nt_xent(eye[:2], eye[2:], 0.5))
    assert float(pair_accuracy(eye[:2], eye[:2])) == 1.0


@pytest.mark.parametrize("bands", [1, 3, 7])
def test_views_keep_shape_bands_and_dtype(bands: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(5, bands, 32, 32)
    y = ViewAugment()(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert not torch.equal(x, y)


def test_full_crop_view_is_an_exact_flip_or_rotation() -> None:
    torch.manual_seed(1)
    x = torch.randn(6, 4, 16, 16)
    y = ViewAugment(NO_CHANGE)(x)
    for i in range(6):
        candidates = [torch.rot90(x[i], k, (1, 2)) for k in range(4)]
        candidates += [torch.flip(c, (2,)) for c in candidates]
        assert any(torch.allclose(c, y[i], atol=1e-5) for c in candidates), i


def test_band_dropout_zeroes_exactly_one_band_and_jitter_moves_band_means() -> None:
    torch.manual_seed(2)
    x = torch.randn(8, 5, 16, 16) + 3.0
    drop = ViewAugment(ViewConfig(band_drop_p=1.0)).drop_band(x)
    zero_bands = (drop.abs().amax(dim=(2, 3)) == 0).sum(1)
    assert zero_bands.tolist() == [1] * 8
    # brightness shared by the bands: one shift per tile, the same in every band
    shared = ViewConfig(jitter_p=1.0, contrast=0.0, brightness=0.4, band_jitter=0.0)
    shift = (ViewAugment(shared).jitter(x) - x).mean(dim=(2, 3))
    assert (shift.abs() <= 0.4 + 1e-5).all() and shift[:, 0].std() > 0.05
    assert torch.allclose(shift, shift[:, :1].expand(8, 5), atol=1e-5)
    # contrast alone: each band's spread scales by the shared gain times 1 +- band_jitter
    contrast = ViewConfig(jitter_p=1.0, contrast=0.3, brightness=0.0, band_jitter=0.0)
    y = ViewAugment(contrast).jitter(x)
    gain = (y - y.mean(dim=(2, 3), keepdim=True)).std(dim=(2, 3)) / (
        x - x.mean(dim=(2, 3), keepdim=True)).std(dim=(2, 3))
    assert torch.allclose(gain, gain[:, :1].expand(8, 5), atol=1e-4)
    assert ((gain >= 0.7 - 1e-4) & (gain <= 1.3 + 1e-4)).all()
    y = ViewAugment(ViewConfig(jitter_p=1.0, contrast=0.0, brightness=0.0,
                               band_jitter=0.1)).jitter(x)
    assert ((y - x).mean(dim=(2, 3)).abs() <= 0.1 + 1e-5).all()
    assert not torch.allclose(y, x)


def test_blur_keeps_a_constant_tile_and_smooths_noise() -> None:
    torch.manual_seed(3)
    cfg = ViewConfig(blur_p=1.0, blur_sigma=(1.0, 1.5))
    const = torch.full((2, 3, 16, 16), 7.0)
    assert torch.allclose(ViewAugment(cfg).blur(const), const, atol=1e-5)
    noise = torch.randn(2, 3, 32, 32)
    assert ViewAugment(cfg).blur(noise).std() < 0.6 * noise.std()


def test_simclr_step_learns_on_a_tiny_batch() -> None:
    from terraseg.core.models.resnet_encoder import ResNetEncoder

    torch.manual_seed(4)
    enc = ResNetEncoder("resnet18", 3, 8)
    task = SimCLRTask(enc, enc.out_channels[-1], projection_dim=16, lr=1e-2)
    assert isinstance(task.head, ProjectionHead)
    assert task.embed(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    x = torch.randn(8, 3, 32, 32)
    opt = torch.optim.AdamW(task.parameters(), lr=1e-2)
    task.augment = ViewAugment(NO_CHANGE)
    losses = []
    for _ in range(15):
        z1, z2 = task.head(task.embed(torch.cat([x, x.flip(3)]))).chunk(2)
        loss = nt_xent(z1, z2, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3


# ------------------------------------------------------------------------- tile stream


def raster_with_nodata(path: Path, size: int = 64, nodata_cols: int = 32) -> Path:
    rng = np.random.default_rng(0)
    data = (100 + rng.random((3, size, size)) * 50).astype(np.float32)
    data[:, :, :nodata_cols] = -9999.0
    return write_raster(path, data, nodata=-9999.0)


def test_tile_stream_reads_tile_windows_only_and_skips_nodata(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = raster_with_nodata(tmp_path / "half.tif")
    windows = []
    real_read = RasterSource.read

    def counting_read(self: RasterSource, window: object) -> tuple:
        windows.append(window)
        return real_read(self, window)

    monkeypatch.setattr(RasterSource, "read", counting_read)
    spec = TileSpec((str(path),), None, None, tile_px=16, batch_size=8, batches=3,
                    max_nodata=0.1, seed=5)
    stats = BandStats((125.0,) * 3, (14.0,) * 3)
    batches = list(TileStream(spec, stats))
    assert len(batches) == 3 and batches[0].shape == (8, 3, 16, 16)
    assert all((w.width, w.height) == (16, 16) for w in windows)
    # every tile kept has at most 10 % nodata (nodata = exactly 0 after normalising)
    zero_share = (torch.cat(batches) == 0).float().mean(dim=(1, 2, 3))
    assert zero_share.max() <= 0.1
    # half the raster is nodata: about half the draws were skipped and read again
    assert len(windows) > 24 * 1.3
    assert windows[-1].col_off >= 31  # the last read gave the last tile kept


def test_tile_stream_is_reproducible_per_epoch_and_refuses_an_empty_raster(
        tmp_path: Path) -> None:
    path = raster_with_nodata(tmp_path / "half.tif", nodata_cols=0)
    spec = TileSpec((str(path),), "1,2", None, tile_px=16, batch_size=4, batches=2, seed=1)
    stream = TileStream(spec, BandStats((125.0, 125.0), (14.0, 14.0)))
    first = list(stream)
    again = list(stream)
    assert first[0].shape == (4, 2, 16, 16)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    stream.epoch = 1
    assert not torch.equal(list(stream)[0], first[0])
    empty = raster_with_nodata(tmp_path / "empty.tif", nodata_cols=64)
    spec = TileSpec((str(empty),), None, None, tile_px=16, batch_size=2, batches=1)
    with pytest.raises(RasterError, match="nodata"):
        list(TileStream(spec, BandStats((0.0,) * 3, (1.0,) * 3)))


def test_combined_stats_are_the_moments_of_both_rasters(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(10, 2, (2, 20, 30)).astype(np.float32)
    b = rng.normal(50, 5, (2, 40, 30)).astype(np.float32)
    pa, pb = write_raster(tmp_path / "a.tif", a), write_raster(tmp_path / "b.tif", b)
    stats = combined_stats(open_sources([str(pa), str(pb)], None, None))
    both = np.concatenate([a.reshape(2, -1), b.reshape(2, -1)], axis=1).astype(np.float64)
    assert np.allclose(stats.mean, both.mean(1), rtol=1e-5)
    assert np.allclose(stats.std, both.std(1), rtol=1e-5)
    single = combined_stats(open_sources([str(pa)], None, None))
    assert single == compute_band_stats(RasterSource(pa))
