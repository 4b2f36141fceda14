"""Tests for terraseg.core.raster: dtypes, nodata, edge windows, band mappings, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.synthetic import ORIGIN, PIXEL_M, write_raster
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from terraseg.core.raster import (
    BandMapping,
    RasterSource,
    parse_band_mapping,
)
from terraseg.protocol.errors import InputError, RasterError
from terraseg.protocol.model_meta import pixel_size_ratio


def ramp(c: int, h: int, w: int, dtype: str, offset: int = 0) -> np.ndarray:
    """(C, H, W) array whose value encodes band, row and column: 100*b + 10*r + c."""
    b, r, col = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    return (100 * b + 10 * r + col + offset).astype(dtype)


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64"])
def test_read_dtypes_exact_values(tmp_path: Path, dtype: str) -> None:
    data = ramp(3, 6, 7, dtype)
    if dtype == "int16":
        data = (data.astype(np.int32) - 150).astype(dtype)  # negative values survive
    if dtype.startswith("float"):
        data = data + np.asarray(0.25, dtype)
    path = write_raster(tmp_path / f"r_{dtype}.tif", data)
    with RasterSource(path) as src:
        assert src.count == 3
        got, valid = src.read(Window(0, 0, 7, 6))
        assert got.dtype == np.float32 and valid.dtype == bool
        np.testing.assert_array_equal(got, data.astype(np.float32))
        assert valid.all()
        # a sub-window: rows 2..4, cols 3..6
        sub, sv = src.read(Window(3, 2, 4, 3))
        np.testing.assert_array_equal(sub, data[:, 2:5, 3:7].astype(np.float32))
        assert sv.all()


def test_grid_from_raster(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "g.tif", ramp(1, 5, 8, "uint8"))
    with RasterSource(path) as src:
        g = src.grid
        assert (g.height_px, g.width_px) == (5, 8)
        assert g.pixel_size == (PIXEL_M, PIXEL_M)
        assert g.crs == CRS.from_epsg(32632)
        assert g.bounds == (ORIGIN[0], ORIGIN[1] - 50, ORIGIN[0] + 80, ORIGIN[1])
        assert src.path == str(path)


def test_unsupported_dtype_is_refused(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "i8.tif", ramp(1, 4, 4, "int8"))
    with pytest.raises(RasterError) as exc:
        RasterSource(path)
    assert "int8" in exc.value.message
    assert "float32" in exc.value.hint


# --------------------------------------------------------------------------- nodata


def test_nodata_value_gives_invalid_zero(tmp_path: Path) -> None:
    data = ramp(2, 5, 5, "uint16", offset=1)
    data[0, 1, 2] = 9999  # band 1 nodata only -> pixel invalid (any band)
    data[1, 3, 4] = 9999  # band 2 nodata only
    data[:, 0, 0] = 9999  # both
    path = write_raster(tmp_path / "nd.tif", data, nodata=9999)
    with RasterSource(path) as src:
        assert src.nodata == 9999
        got, valid = src.read(Window(0, 0, 5, 5))
    expect_valid = np.ones((5, 5), bool)
    expect_valid[1, 2] = expect_valid[3, 4] = expect_valid[0, 0] = False
    np.testing.assert_array_equal(valid, expect_valid)
    expected = np.where(expect_valid[None], data, 0).astype(np.float32)
    np.testing.assert_array_equal(got, expected)
    # valid neighbours keep their values
    assert got[1, 1, 2] == 0 and got[0, 3, 4] == 0
    assert got[0, 2, 2] == data[0, 2, 2]


def test_nodata_only_on_unmapped_band_does_not_matter(tmp_path: Path) -> None:
    data = ramp(3, 4, 4, "int16", offset=1)
    data[2, 1, 1] = -1
    path = write_raster(tmp_path / "nd3.tif", data, nodata=-1)
    with RasterSource(path, parse_band_mapping("1,2", path)) as src:
        got, valid = src.read(Window(0, 0, 4, 4))
    assert valid.all()
    np.testing.assert_array_equal(got, data[:2].astype(np.float32))
    with RasterSource(path, parse_band_mapping("3", path)) as src:
        _, valid3 = src.read(Window(0, 0, 4, 4))
    assert not valid3[1, 1] and valid3.sum() == 15


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_and_inf_are_invalid(tmp_path: Path, dtype: str) -> None:
    data = ramp(2, 4, 6, dtype) + np.asarray(0.5, dtype)
    data[1, 2, 3] = np.nan
    data[0, 0, 5] = np.inf
    path = write_raster(tmp_path / "nan.tif", data)  # no nodata value set
    with RasterSource(path) as src:
        got, valid = src.read(Window(0, 0, 6, 4))
    expect_valid = np.ones((4, 6), bool)
    expect_valid[2, 3] = expect_valid[0, 5] = False
    np.testing.assert_array_equal(valid, expect_valid)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, np.where(expect_valid[None], data, 0).astype(np.float32))


def test_float_nodata_value(tmp_path: Path) -> None:
    data = ramp(1, 3, 3, "float32") + 1
    data[0, 1, 1] = -3.5
    path = write_raster(tmp_path / "fnd.tif", data, nodata=-3.5)
    with RasterSource(path) as src:
        got, valid = src.read(Window(0, 0, 3, 3))
    assert valid.sum() == 8 and not valid[1, 1]
    assert got[0, 1, 1] == 0.0 and got[0, 2, 2] == data[0, 2, 2]


# --------------------------------------------------------------------------- edge windows


def test_window_past_every_edge(tmp_path: Path) -> None:
    data = ramp(2, 5, 6, "uint8", offset=1)  # no zero inside
    path = write_raster(tmp_path / "edge.tif", data)
    with RasterSource(path) as src:
        got, valid = src.read(Window(-2, -3, 10, 11))  # cols -2..7, rows -3..7
    assert got.shape == (2, 11, 10) and valid.shape == (11, 10)
    expected = np.zeros((2, 11, 10), np.float32)
    expected[:, 3:8, 2:8] = data
    expect_valid = np.zeros((11, 10), bool)
    expect_valid[3:8, 2:8] = True
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(valid, expect_valid)


def test_window_partly_past_bottom_right(tmp_path: Path) -> None:
    data = ramp(1, 5, 6, "uint16", offset=7)
    path = write_raster(tmp_path / "br.tif", data)
    with RasterSource(path) as src:
        got, valid = src.read(Window(4, 3, 5, 4))  # cols 4..8 (4,5 inside), rows 3..6 (3,4)
    assert got[0, 0, 0] == data[0, 3, 4] == 7 + 34
    assert got[0, 1, 1] == data[0, 4, 5] == 7 + 45
    np.testing.assert_array_equal(got[0, :2, :2], data[0, 3:5, 4:6])
    assert (got[0, 2:, :] == 0).all() and (got[0, :, 2:] == 0).all()
    assert valid[:2, :2].all() and valid.sum() == 4


def test_window_entirely_outside(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "out.tif", ramp(3, 4, 4, "uint8", offset=1))
    with RasterSource(path) as src:
        for win in (Window(10, 0, 3, 3), Window(-5, -5, 4, 4), Window(0, 4, 2, 2)):
            got, valid = src.read(win)
            assert got.shape == (3, int(win.height), int(win.width))
            assert not got.any() and not valid.any()


def test_block_windows_tile_raster(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "bw.tif", ramp(1, 7, 10, "uint8"))
    with RasterSource(path) as src:
        wins = src.block_windows(4)
    got = [(int(w.col_off), int(w.row_off), int(w.width), int(w.height)) for w in wins]
    assert got == [(0, 0, 4, 4), (4, 0, 4, 4), (8, 0, 2, 4),
                   (0, 4, 4, 3), (4, 4, 4, 3), (8, 4, 2, 3)]


# --------------------------------------------------------------------------- band mapping


@pytest.fixture
def four_band(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "four.tif", ramp(4, 3, 3, "uint8"))


def test_mapping_numbers(four_band: Path) -> None:
    m = parse_band_mapping("1,2,3,4", four_band)
    assert m == BandMapping((1, 2, 3, 4), ("band_1", "band_2", "band_3", "band_4"))
    m = parse_band_mapping(" 4 , 2 ", four_band)
    assert m == BandMapping((4, 2), ("band_4", "band_2"))


def test_mapping_names_and_order_reach_the_data(four_band: Path) -> None:
    m = parse_band_mapping("red=1,nir=4", four_band)
    assert m.indices == (1, 4) and m.names == ("red", "nir")
    with RasterSource(four_band, parse_band_mapping("nir=4,red=1", four_band)) as src:
        assert src.count == 2
        got, _ = src.read(Window(0, 0, 3, 3))
    data = ramp(4, 3, 3, "uint8")
    np.testing.assert_array_equal(got, data[[3, 0]].astype(np.float32))


def test_mapping_none_uses_all_bands_and_descriptions(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "desc.tif", ramp(4, 2, 2, "uint8"),
                        descriptions=("red", "green", "blue", "nir"))
    for spec in (None, "", "  "):
        m = parse_band_mapping(spec, path)
        assert m.indices == (1, 2, 3, 4)
        assert m.names == ("red", "green", "blue", "nir")
    # explicit numbers also take names from descriptions; explicit names win
    assert parse_band_mapping("4,1", path).names == ("nir", "red")
    assert parse_band_mapping("x=2", path).names == ("x",)
    # RasterSource without a mapping = all bands
    with RasterSource(path) as src:
        assert src.bands.names == ("red", "green", "blue", "nir")


def test_mapping_none_without_descriptions(four_band: Path) -> None:
    m = parse_band_mapping(None, four_band)
    assert m.names == ("band_1", "band_2", "band_3", "band_4")


@pytest.mark.parametrize("spec", ["1,5", "0", "red=7", "-1"])
def test_mapping_index_out_of_range(four_band: Path, spec: str) -> None:
    with pytest.raises(RasterError) as exc:
        parse_band_mapping(spec, four_band)
    assert "4 band(s)" in exc.value.message
    assert "four.tif" in exc.value.message
    assert "between 1 and 4" in exc.value.hint


@pytest.mark.parametrize("spec", ["1,a", "red=x", "1.5", "1,,2"])
def test_mapping_not_a_number(four_band: Path, spec: str) -> None:
    with pytest.raises(RasterError) as exc:
        parse_band_mapping(spec, four_band)
    assert "not a band number" in exc.value.message
    assert isinstance(exc.value, InputError) and isinstance(exc.value, ValueError)


@pytest.mark.parametrize("spec", ["1,2,1", "red=3,nir=3"])
def test_mapping_repeated(four_band: Path, spec: str) -> None:
    with pytest.raises(RasterError, match="appears twice"):
        parse_band_mapping(spec, four_band)


def test_band_mapping_length_mismatch() -> None:
    with pytest.raises(RasterError, match="2 indices but 1 names"):
        BandMapping((1, 2), ("a",))


# --------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tif"
    with pytest.raises(RasterError) as exc:
        RasterSource(missing)
    assert "not found" in exc.value.message and "nope.tif" in exc.value.message
    with pytest.raises(RasterError, match="not found"):
        parse_band_mapping("1", missing)


def test_text_file_is_not_a_raster(tmp_path: Path) -> None:
    txt = tmp_path / "notes.tif"
    txt.write_text("this is not a raster\n" * 20)
    with pytest.raises(RasterError) as exc:
        RasterSource(txt)
    assert "Cannot read raster" in exc.value.message
    assert exc.value.hint
    with pytest.raises(RasterError):
        parse_band_mapping(None, txt)


def test_raster_without_crs_has_empty_wkt(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "nocrs.tif", ramp(1, 2, 2, "uint8"), crs=None,
                        transform=from_origin(0, 2, 1, 1))
    with RasterSource(path) as src:
        assert src.grid.crs_wkt == "" and src.grid.crs is None


# --------------------------------------------------------------------------- pixel size


def test_pixel_size_ratio() -> None:
    assert pixel_size_ratio((10, 10), (10, 10)) == 1.0
    assert pixel_size_ratio((10, 10), (20, 20)) == pytest.approx(2.0)
    assert pixel_size_ratio((20, 20), (10, 10)) == pytest.approx(2.0)  # symmetric
    assert pixel_size_ratio((10, 10), (0.5, 0.5)) == pytest.approx(20.0)
    # geometric mean of x and y: 10x40 has the area of 20x20
    assert pixel_size_ratio((10, 40), (20, 20)) == pytest.approx(1.0)
    assert pixel_size_ratio((10, 10), (19, 19)) == pytest.approx(1.9)
