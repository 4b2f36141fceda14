"""Band coverage, suggested bands and undeclared nodata (core/coverage.py, core/nodata_guess.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.paths import ROOT, SHARED_DATA
from helpers.synthetic import pixel_box, write_polygons, write_raster

from terraseg.core.coverage import inspect_raster, read_shape, suggest_bands
from terraseg.core.mosaic import build_mosaic
from terraseg.core.raster import RasterSource
from terraseg.protocol.errors import RasterError

DEMO = ROOT / "data" / "demo"
CHITTAGONG = SHARED_DATA / "landslide_s2_rgbn_chittagong"


@pytest.mark.skipif(not (DEMO / "nc_landsat7_6band.tif").exists(), reason="no demo raster")
def test_demo_raster_band_6_blanks_a_fifth_of_the_map() -> None:
    """The issue's numbers: 62.4 % valid with all six bands, 84.7 % with bands 1-5."""
    report = inspect_raster(DEMO / "nc_landsat7_6band.tif",
                            labels=str(DEMO / "nc_reference_points.gpkg"), class_field="label")
    fractions = [round(b.valid_fraction, 3) for b in report.bands]
    assert fractions == [0.847, 0.847, 0.847, 0.847, 0.847, 0.624]
    assert [b.description for b in report.bands][4:] == ["swir1", "swir2"]
    assert report.chosen == (1, 2, 3, 4, 5, 6)
    assert report.chosen_valid_fraction == pytest.approx(1 - 0.376, abs=0.001)
    assert report.suggested == (1, 2, 3, 4, 5)
    assert report.suggested_valid_fraction == pytest.approx(1 - 0.153, abs=0.001)
    # 883 of the 1,000 reference points fall on distinct raster pixels; band 6 loses a third
    assert report.labelled_pixels == 883
    assert report.chosen_labelled_fraction == pytest.approx(561 / 883, abs=0.002)
    assert report.suggested_labelled_fraction == pytest.approx(751 / 883, abs=0.002)
    assert report.read_height_px == 443 and report.read_width_px == 489  # small: full grid
    assert report.nodata_suspect is None  # -99999 is declared
    assert report.bands[0].nodata == -99999.0


@pytest.mark.skipif(not (DEMO / "nc_landsat7_6band.tif").exists(), reason="no demo raster")
def test_decimated_read_keeps_the_shares() -> None:
    """Read at 100 px a side, the shares stay within a point of the full-resolution ones."""
    report = inspect_raster(DEMO / "nc_landsat7_6band.tif", band_spec="1,6", max_px=100)
    assert (report.read_height_px, report.read_width_px) == (91, 100)
    assert report.chosen == (1, 6)
    assert report.chosen_valid_fraction == pytest.approx(0.624, abs=0.01)
    assert report.suggested == (1, 2, 3, 4, 5)


def test_read_shape_is_bounded() -> None:
    assert read_shape(443, 489) == (443, 489)
    assert read_shape(20000, 5000) == (1024, 256)
    assert read_shape(3000, 3000, max_px=1024) == (1024, 1024)


def test_suggestion_drops_only_bands_that_cost_more_than_a_point() -> None:
    """A band missing 0.5 % stays; one missing 10 % goes; the labelled pixels count too."""
    h = w = 100
    full = np.ones((h, w), bool)
    speck = full.copy()
    speck[:5, :10] = False  # 0.5 %
    strip = full.copy()
    strip[:10] = False  # 10 %
    assert suggest_bands({1: full, 2: speck, 3: strip}, None) == (1, 2)
    labelled = np.zeros((h, w), bool)
    labelled[:5, :10] = True  # every labelled pixel lies in band 2's gap
    assert suggest_bands({1: full, 2: speck, 3: strip}, labelled) == (1,)
    assert suggest_bands({1: strip}, None) == (1,)  # one band always stays


def _zero_framed(tmp_path: Path, nodata: float | None = None) -> Path:
    """A 3-band uint16 raster whose data sits in a frame of zeros (no nodata declared)."""
    rng = np.random.default_rng(1)
    data = np.zeros((3, 60, 80), dtype=np.uint16)
    data[:, 10:50, 15:70] = rng.integers(100, 4000, (3, 40, 55))
    return write_raster(tmp_path / "framed.tif", data, nodata=nodata)


def test_zero_frame_without_nodata_is_suspected(tmp_path: Path) -> None:
    raster = _zero_framed(tmp_path)
    report = inspect_raster(raster)
    suspect = report.nodata_suspect
    assert suspect is not None and suspect.value == 0.0
    assert suspect.border_fraction == 1.0
    assert suspect.pixel_fraction == pytest.approx(1 - 40 * 55 / (60 * 80))
    assert report.chosen_valid_fraction == 1.0  # nothing is masked yet
    assert "0 in all 3 band(s)" in report.to_dict()["nodata_suspect"]["evidence"]
    # with the override the zeros are nodata and nothing is suspected any more
    fixed = inspect_raster(raster, nodata=0)
    assert fixed.nodata_suspect is None
    assert fixed.chosen_valid_fraction == pytest.approx(40 * 55 / (60 * 80))
    assert fixed.bands[0].nodata == 0.0
    # declared nodata: not a suspect either
    (tmp_path / "declared").mkdir()
    declared = inspect_raster(_zero_framed(tmp_path / "declared", nodata=0))
    assert declared.nodata_suspect is None


def test_natural_borders_are_not_suspected(tmp_path: Path) -> None:
    """Data up to the edge, and a border value inside the data range, are no nodata."""
    rng = np.random.default_rng(2)
    noisy = rng.integers(1, 4000, (3, 40, 40)).astype(np.uint16)
    assert inspect_raster(write_raster(tmp_path / "a.tif", noisy)).nodata_suspect is None
    mid = noisy.copy()
    mid[:, :2, :] = 2000  # constant border, but inside the range of the other values
    assert inspect_raster(write_raster(tmp_path / "b.tif", mid)).nodata_suspect is None
    per_band = np.zeros((2, 40, 40), dtype=np.uint16)
    per_band[0] = 7  # each band constant at another value: no common fill value
    per_band[1] = 9
    per_band[:, 10:30, 10:30] = rng.integers(100, 200, (2, 20, 20))
    assert inspect_raster(write_raster(tmp_path / "c.tif", per_band)).nodata_suspect is None


def test_labelled_coverage_counts_polygons_on_the_read_grid(tmp_path: Path) -> None:
    raster = _zero_framed(tmp_path)
    labels = write_polygons(tmp_path / "l.gpkg", [
        (pixel_box(0, 0, 10, 10), "a", "x"),       # 100 px on the zero frame
        (pixel_box(20, 20, 30, 40), "b", "x")])    # 200 px on data
    report = inspect_raster(raster, labels=str(labels), class_field="klass", nodata=0)
    assert report.labelled_pixels == 300
    assert report.chosen_labelled_fraction == pytest.approx(200 / 300)
    assert report.bands[2].labelled_fraction == pytest.approx(200 / 300)


def test_source_honours_the_nodata_override(tmp_path: Path) -> None:
    from rasterio.windows import Window

    raster = _zero_framed(tmp_path)
    with RasterSource(raster) as src:
        assert src.read(Window(0, 0, 80, 60))[1].all()
        src.override_nodata(0)
        _, valid = src.read(Window(0, 0, 80, 60))
        assert int(valid.sum()) == 40 * 55 and src.nodata == 0.0
    with pytest.raises(RasterError, match="not a finite number"):
        RasterSource(raster, nodata=float("nan"))
    # the training cache keeps another validity mask under another key
    from terraseg.training.cache import raster_fingerprint

    with RasterSource(raster) as plain, RasterSource(raster, nodata=0) as masked:
        assert raster_fingerprint(plain) != raster_fingerprint(masked)
        masked.override_nodata(None)
        assert raster_fingerprint(plain) == raster_fingerprint(masked)


@pytest.mark.skipif(not CHITTAGONG.exists(), reason="Chittagong chips not in ../shared/data")
def test_chittagong_mosaic_zeros_are_suspected(tmp_path: Path) -> None:
    """The issue's mosaic: 54.9 % zeros, undeclared; suspected as nodata 0."""
    build_mosaic([str(CHITTAGONG / "images")], tmp_path / "m.vrt")
    report = inspect_raster(tmp_path / "m.vrt")
    assert report.nodata_suspect is not None and report.nodata_suspect.value == 0.0
    assert report.nodata_suspect.pixel_fraction == pytest.approx(0.549, abs=0.005)
    assert report.nodata_suspect.border_fraction > 0.8
    assert report.read_height_px == 1024  # 1280 rows read at 1024
    fixed = inspect_raster(tmp_path / "m.vrt", nodata=0)
    assert fixed.chosen_valid_fraction == pytest.approx(0.451, abs=0.005)
