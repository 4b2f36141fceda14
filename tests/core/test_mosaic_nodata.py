"""Nodata of VRT mosaics: carried from the tiles, refused when they disagree, or set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.synthetic import ORIGIN, PIXEL_M, write_raster
from rasterio.transform import from_origin

from terraseg.core.mosaic import build_mosaic
from terraseg.core.raster import RasterSource
from terraseg.protocol.errors import ConfigError, RasterError


def _tiles(folder: Path, nodata: tuple[float | None, float | None]) -> Path:
    """Two 20x20 2-band tiles side by side, each with a 5-px frame of zeros."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, nd in enumerate(nodata):
        data = np.zeros((2, 20, 20), dtype=np.uint16)
        data[:, 5:15, 5:15] = rng.integers(10, 500, (2, 10, 10))
        t = from_origin(ORIGIN[0] + 20 * i * PIXEL_M, ORIGIN[1], PIXEL_M, PIXEL_M)
        write_raster(folder / f"t{i}.tif", data, nodata=nd, transform=t)
    return folder


def _valid_share(vrt: Path) -> float:
    from rasterio.windows import Window

    with RasterSource(vrt) as src:
        return float(src.read(Window(0, 0, 40, 20))[1].mean())


def test_tiles_nodata_is_carried_into_the_vrt(tmp_path: Path) -> None:
    tiles = _tiles(tmp_path / "tiles", (0, 0))
    res = build_mosaic([str(tiles)], tmp_path / "m.vrt")
    assert res["nodata"] == 0
    with rasterio.open(tmp_path / "m.vrt") as ds:
        assert ds.nodatavals == (0.0, 0.0)
    assert _valid_share(tmp_path / "m.vrt") == pytest.approx(200 / 800)


def test_disagreeing_tiles_are_refused_unless_nodata_is_given(tmp_path: Path) -> None:
    tiles = _tiles(tmp_path / "tiles", (0, None))
    with pytest.raises(RasterError, match="different nodata values") as err:
        build_mosaic([str(tiles)], tmp_path / "m.vrt")
    assert "--nodata" in err.value.hint
    assert not (tmp_path / "m.vrt").exists()
    res = build_mosaic([str(tiles)], tmp_path / "m.vrt", nodata=0)
    assert res["nodata"] == 0
    with rasterio.open(tmp_path / "m.vrt") as ds:
        assert ds.nodatavals == (0.0, 0.0)
    assert _valid_share(tmp_path / "m.vrt") == pytest.approx(200 / 800)


def test_nodata_for_tiles_that_declare_none(tmp_path: Path) -> None:
    tiles = _tiles(tmp_path / "tiles", (None, None))
    res = build_mosaic([str(tiles)], tmp_path / "plain.vrt")
    assert res["nodata"] is None and _valid_share(tmp_path / "plain.vrt") == 1.0
    build_mosaic([str(tiles)], tmp_path / "set.vrt", nodata=0)
    assert _valid_share(tmp_path / "set.vrt") == pytest.approx(200 / 800)
    with pytest.raises(ConfigError, match="not a finite number"):
        build_mosaic([str(tiles)], tmp_path / "nan.vrt", nodata=float("nan"))


def test_tile_nodata_other_than_the_mosaics_becomes_it(tmp_path: Path) -> None:
    """A tile masked by 9 in a mosaic with nodata 0: its 9s are left out and read as 0."""
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    data = np.full((1, 10, 10), 9, dtype=np.uint16)
    data[0, 2:8, 2:8] = 100
    write_raster(tiles / "a.tif", data, nodata=9)
    build_mosaic([str(tiles)], tmp_path / "m.vrt", nodata=0)
    with rasterio.open(tmp_path / "m.vrt") as ds:
        out = ds.read(1)
        assert ds.nodata == 0
    assert int((out == 0).sum()) == 64 and int((out == 100).sum()) == 36
