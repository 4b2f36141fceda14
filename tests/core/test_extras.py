"""Extra rasters on other grids (DEM, slope) stacked onto the image grid."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers.paths import TERRASEG
from helpers.synthetic import ORIGIN, PIXEL_M, make_scene, write_raster
from rasterio.transform import from_origin
from rasterio.windows import Window

from terraseg.core.extras import ExtraRaster, StackedSource, parse_extras
from terraseg.core.raster import parse_band_mapping
from terraseg.protocol.errors import RasterError

SLOPE = 0.25  # dz/dx of the synthetic DEM (metres per metre)


def plane_dem(path: Path, x0: float = ORIGIN[0] - 100, y0: float = ORIGIN[1] + 100) -> Path:
    """A 20 m DEM z = 100 + SLOPE * (x - ORIGIN_x), covering the scene with a margin."""
    n = 70
    xs = x0 + 20.0 * (np.arange(n) + 0.5)
    z = np.tile(100 + SLOPE * (xs - ORIGIN[0]), (n, 1)).astype(np.float32)
    return write_raster(path, z[None], nodata=-9999.0, transform=from_origin(x0, y0, 20, 20))


@pytest.fixture()
def scene(tmp_path: Path):
    return make_scene(tmp_path), plane_dem(tmp_path / "dem.tif")


def test_dem_and_slope_on_the_image_grid(scene) -> None:
    sc, dem = scene
    extras = parse_extras([], str(dem), True)
    src = StackedSource(sc.raster, parse_band_mapping(None, sc.raster), extras)
    assert src.count == 6 and src.bands.names[-2:] == ("dem", "slope")
    data, valid = src.read(Window(10, 10, 40, 30))
    x = ORIGIN[0] + PIXEL_M * (np.arange(10, 50) + 0.5)
    np.testing.assert_allclose(data[4, 0], 100 + SLOPE * (x - ORIGIN[0]), atol=1e-3)
    np.testing.assert_allclose(data[5], np.degrees(np.arctan(SLOPE)), atol=1e-3)
    assert valid.all()
    _, valid_out = src.read(Window(-5, 0, 10, 10))
    assert not valid_out[:, :5].any()


def test_slope_is_valid_up_to_the_image_border_when_the_dem_extends_beyond(scene) -> None:
    sc, dem = scene
    src = StackedSource(sc.raster, parse_band_mapping(None, sc.raster),
                        parse_extras([], str(dem), True))
    data, valid = src.read(Window(0, 0, sc.width, sc.height))
    assert valid.all()  # the border ring too: the slope reads the DEM one pixel beyond
    np.testing.assert_allclose(data[5], np.degrees(np.arctan(SLOPE)), atol=1e-3)
    # a DEM that ends at the image edge leaves the border ring without slope
    x0, y0 = ORIGIN
    n = sc.width // 2
    xs = x0 + 20.0 * (np.arange(n) + 0.5)
    z = np.tile(100 + SLOPE * (xs - x0), (n, 1)).astype(np.float32)
    tight = write_raster(Path(dem).with_name("tight.tif"), z[None], nodata=-9999.0,
                         transform=from_origin(x0, y0, 20, 20))
    src = StackedSource(sc.raster, parse_band_mapping(None, sc.raster),
                        parse_extras([], str(tight), True))
    _, valid = src.read(Window(0, 0, sc.width, sc.height))
    assert not valid[0].any() and not valid[:, -1].any() and valid[1:-1, 1:-1].all()


def test_dem_without_overlap_is_refused(tmp_path: Path) -> None:
    sc = make_scene(tmp_path)
    far = plane_dem(tmp_path / "far.tif", x0=ORIGIN[0] + 50_000)
    with pytest.raises(RasterError, match="does not overlap"):
        StackedSource(sc.raster, None, (ExtraRaster(str(far), "dem"),))
    with pytest.raises(RasterError, match="needs a DEM"):
        parse_extras([], None, True)


def test_train_and_predict_with_dem_and_slope(scene, tmp_path: Path) -> None:
    sc, dem = scene
    model = tmp_path / "m.tsm"
    common = ["--raster", str(sc.raster)]
    proc = subprocess.run([*TERRASEG, "train", *common, "--labels", str(sc.labels), "--class-field",
                           "klass", "--out", str(model), "--dem", str(dem), "--slope-from-dem",
                           "--patch-size", "23", "--blocks", "1,1,1", "--epochs", "1",
                           "--samples-per-epoch", "128", "--cache-dir", str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(subprocess.run([*TERRASEG, "info", str(model)], capture_output=True,
                                     text=True, timeout=120).stdout)
    assert meta["bands"]["names"] == ["red", "green", "blue", "nir", "dem", "slope"]
    assert [e["kind"] for e in meta["extra_rasters"]] == ["continuous", "slope_from_dem"]
    missing = subprocess.run([*TERRASEG, "predict", "--model", str(model), *common, "--out-dir",
                              str(tmp_path / "p0")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2
    assert "extra rasters ['dem', 'slope']" in missing.stderr
    assert "--slope-from-dem" in missing.stderr
    ok = subprocess.run([*TERRASEG, "predict", "--model", str(model), *common, "--dem", str(dem),
                         "--slope-from-dem", "--out-dir", str(tmp_path / "p1")],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "p1" / "classes.tif").exists()
