"""Tiles as one raster: VRT mosaics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.paths import SHARED_DATA
from helpers.synthetic import ORIGIN, PIXEL_M, write_raster
from rasterio.transform import from_origin

from terraseg.core.mosaic import build_mosaic
from terraseg.protocol.errors import InputError, OutputError, RasterError

CHITTAGONG = SHARED_DATA / "landslide_s2_rgbn_chittagong"


def _tile(folder: Path, full: np.ndarray, r: int, c: int, size: int, name: str) -> Path:
    t = from_origin(ORIGIN[0] + c * PIXEL_M, ORIGIN[1] - r * PIXEL_M, PIXEL_M, PIXEL_M)
    return write_raster(folder / name, full[:, r : r + size, c : c + size].copy(), nodata=0,
                        transform=t, descriptions=("red", "green"))


def test_overlapping_tiles_rebuild_the_image(tmp_path: Path) -> None:
    full = np.random.default_rng(0).integers(1, 255, (2, 48, 64), dtype=np.uint8)
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for i, (r, c) in enumerate([(0, 0), (0, 32), (16, 0), (16, 32), (0, 16)]):
        _tile(tiles, full, r, c, 32, f"t{i}.tif")
    res = build_mosaic([str(tiles)], tmp_path / "m.vrt")
    assert (res["tiles"], res["width_px"], res["height_px"]) == (5, 64, 48)
    with rasterio.open(tmp_path / "m.vrt") as ds:
        np.testing.assert_array_equal(ds.read(), full)
        assert ds.transform == from_origin(*ORIGIN, PIXEL_M, PIXEL_M)
        assert ds.crs.to_epsg() == 32632 and ds.descriptions == ("red", "green")
    with pytest.raises(OutputError):
        build_mosaic([str(tiles)], tmp_path / "m.vrt")


def test_mismatched_tiles_are_refused(tmp_path: Path) -> None:
    full = np.ones((2, 32, 32), dtype=np.uint8)
    a = _tile(tmp_path, full, 0, 0, 16, "a.tif")
    b = write_raster(tmp_path / "b.tif", full[:, :16, :16].copy(), crs="EPSG:32633")
    with pytest.raises(RasterError, match="crs"):
        build_mosaic([str(a), str(b)], tmp_path / "x.vrt")
    off = write_raster(tmp_path / "c.tif", full[:, :16, :16].copy(),
                       transform=from_origin(ORIGIN[0] + 5, ORIGIN[1], PIXEL_M, PIXEL_M))
    with pytest.raises(RasterError, match="pixel grid"):
        build_mosaic([str(a), str(off)], tmp_path / "y.vrt")
    with pytest.raises(InputError):
        build_mosaic([str(tmp_path / "nothing*.tif")], tmp_path / "z.vrt")


@pytest.mark.skipif(not CHITTAGONG.exists(), reason=f"{CHITTAGONG} absent (shared/data)")
def test_chittagong_tiles_as_one_mosaic(tmp_path: Path) -> None:
    img = build_mosaic([str(CHITTAGONG / "images")], tmp_path / "img.vrt")
    lab = build_mosaic([str(CHITTAGONG / "labels")], tmp_path / "lab.vrt")
    assert img["tiles"] == lab["tiles"] == 64
    assert (img["width_px"], img["height_px"]) == (lab["width_px"], lab["height_px"])
    with rasterio.open(tmp_path / "lab.vrt") as ds:
        labels = ds.read(1)
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels == 2).sum() > 0
