"""Tests for terraseg.core.geotiff: the streaming, tiled, compressed GeoTIFF writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Compression
from rasterio.windows import Window

from terraseg.core.geotiff import GeoTiffWriter, overview_factors
from terraseg.core.grid import Grid
from terraseg.core.preview import colormap_from_colours
from terraseg.protocol.errors import OutputError

CRS_WKT = CRS.from_epsg(32119).to_wkt()


def make_grid(height: int, width: int) -> Grid:
    transform = Affine(28.5, 0.0, 610_000.0, 0.0, -28.5, 240_000.0)
    return Grid(height, width, transform, CRS_WKT)


def windows(grid: Grid, step: int):
    for row in range(0, grid.height_px, step):
        for col in range(0, grid.width_px, step):
            h = min(step, grid.height_px - row)
            w = min(step, grid.width_px - col)
            yield Window(col, row, w, h)


def probability_data(grid: Grid, count: int) -> np.ndarray:
    rows, cols = np.mgrid[0 : grid.height_px, 0 : grid.width_px].astype(np.float32)
    data = np.stack([(rows * 1000 + cols + b * 0.25) / 1e6 for b in range(count)])
    data[:, :7, :5] = -1.0  # nodata corner
    return data.astype(np.float32)


def test_geotiff_float_roundtrip(tmp_path: Path) -> None:
    grid = make_grid(600, 600)
    data = probability_data(grid, 3)
    path = tmp_path / "probability.tif"
    writer = GeoTiffWriter(path, grid, 3, "float32", -1.0, ["sealed", "unsealed", "water"],
                           block_px=256)
    for win in windows(grid, 256):
        r, c, h, w = win.row_off, win.col_off, win.height, win.width
        writer.write(data[:, r : r + h, c : c + w], win)
    writer.close()
    assert writer.closed
    writer.close()  # idempotent

    with rasterio.open(path) as src:
        assert src.driver == "GTiff"
        assert (src.count, src.height, src.width) == (3, 600, 600)
        assert src.dtypes == ("float32",) * 3
        np.testing.assert_array_equal(src.read(), data)
        assert src.transform == grid.transform
        assert src.transform.a == 28.5 and src.transform.e == -28.5
        assert src.crs == CRS.from_epsg(32119)
        assert src.descriptions == ("sealed", "unsealed", "water")
        assert src.nodata == -1.0
        assert src.block_shapes == [(256, 256)] * 3
        assert src.compression == Compression.zstd
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"
        assert src.overviews(1) == [2, 4]
        assert src.overviews(3) == [2, 4]
        masked = src.read(1, masked=True)
        assert masked.mask[:7, :5].all() and not masked.mask[7:, 5:].any()
    with rasterio.open(path, overview_level=0) as ovr:
        assert (ovr.height, ovr.width) == (300, 300)
        band = ovr.read(2)
        # average resampling: mean of the 2x2 block rows 20..21, cols 40..41 (no nodata there)
        expected = data[1, 20:22, 40:42].astype(np.float64).mean()
        assert band[10, 20] == pytest.approx(expected, rel=1e-6)


def test_geotiff_uint8_colormap_default_blocks(tmp_path: Path) -> None:
    grid = make_grid(600, 600)
    classes = (np.arange(600 * 600).reshape(600, 600) % 4).astype(np.uint8)
    cmap = colormap_from_colours({1: "#d7191c", 2: "#1a9641", 3: "#2b83ba"})
    path = tmp_path / "classes.tif"
    with GeoTiffWriter(path, grid, 1, "uint8", 0, ["class"], colormap=cmap) as writer:
        for win in windows(grid, 512):
            r, c, h, w = win.row_off, win.col_off, win.height, win.width
            writer.write(classes[r : r + h, c : c + w], win)  # 2-D accepted for one band
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(1), classes)
        assert src.dtypes == ("uint8",)
        assert src.nodata == 0
        assert src.descriptions == ("class",)
        assert src.block_shapes == [(512, 512)]
        assert src.compression == Compression.zstd
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
        assert src.overviews(1) == [2, 4]
        colours = src.colormap(1)
        assert colours[1] == (0xD7, 0x19, 0x1C, 255)
        assert colours[2] == (0x1A, 0x96, 0x41, 255)
        assert colours[3] == (0x2B, 0x83, 0xBA, 255)
        assert colours[0] == (0, 0, 0, 0)
    with rasterio.open(path, overview_level=1) as ovr:
        assert set(np.unique(ovr.read(1)).tolist()) <= {0, 1, 2, 3}  # nearest, no blends


def test_geotiff_no_overviews_when_small_or_disabled(tmp_path: Path) -> None:
    grid = make_grid(40, 30)
    path = tmp_path / "small.tif"
    writer = GeoTiffWriter(path, grid, 1, "float32", None, ["p"])
    writer.write(np.ones((1, 40, 30), np.float32), Window(0, 0, 30, 40))
    writer.close()
    with rasterio.open(path) as src:
        assert src.overviews(1) == []
        assert src.nodata is None
    big = make_grid(600, 600)
    path2 = tmp_path / "no_ovr.tif"
    writer = GeoTiffWriter(path2, big, 1, "uint8", 0, ["c"])
    writer.write(np.ones((600, 600), np.uint8), Window(0, 0, 600, 600))
    writer.close(overviews=False)
    with rasterio.open(path2) as src:
        assert src.overviews(1) == []


def test_geotiff_rejects_bad_input(tmp_path: Path) -> None:
    grid = make_grid(100, 100)
    with pytest.raises(ValueError):
        GeoTiffWriter(tmp_path / "a.tif", grid, 2, "float32", None, ["only one"])
    with pytest.raises(ValueError):
        GeoTiffWriter(tmp_path / "a.tif", grid, 1, "float32", None, ["p"], block_px=100)
    with pytest.raises(ValueError):
        cmap = {1: (1, 2, 3, 4)}
        GeoTiffWriter(tmp_path / "a.tif", grid, 1, "float32", None, ["p"], colormap=cmap)
    with pytest.raises(OutputError):
        GeoTiffWriter(tmp_path / "missing" / "a.tif", grid, 1, "uint8", 0, ["c"])
    with GeoTiffWriter(tmp_path / "b.tif", grid, 2, "float32", None, ["a", "b"]) as writer:
        with pytest.raises(ValueError, match="does not fit"):
            writer.write(np.zeros((1, 10, 10), np.float32), Window(0, 0, 10, 10))
        with pytest.raises(ValueError, match="outside"):
            writer.write(np.zeros((2, 10, 10), np.float32), Window(95, 0, 10, 10))


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((256, 256), []), ((257, 10), [2]), ((512, 512), [2]), ((600, 600), [2, 4]),
     ((300, 1000), [2, 4]), ((5000, 5000), [2, 4, 8, 16, 32])],
)
def test_overview_factors(shape: tuple[int, int], expected: list[int]) -> None:
    assert overview_factors(*shape) == expected
