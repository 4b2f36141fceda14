"""Tests for terraseg.core.preview: class colour tables and the RGBA PNG preview."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from terraseg.core.geotiff import GeoTiffWriter
from terraseg.core.grid import Grid
from terraseg.core.preview import write_preview_png

CRS_WKT = CRS.from_epsg(32119).to_wkt()


def make_grid(height: int, width: int) -> Grid:
    transform = Affine(28.5, 0.0, 610_000.0, 0.0, -28.5, 240_000.0)
    return Grid(height, width, transform, CRS_WKT)


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def write_class_raster(path: Path, classes: np.ndarray) -> None:
    grid = make_grid(*classes.shape)
    with GeoTiffWriter(path, grid, 1, "uint8", 0, ["class"]) as writer:
        writer.write(classes, Window(0, 0, classes.shape[1], classes.shape[0]))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_preview_png_exact_colours(tmp_path: Path) -> None:
    classes = np.array(
        [[0, 1, 2, 3], [1, 1, 2, 2], [3, 3, 0, 1], [2, 4, 1, 0]], dtype=np.uint8
    )
    tif = tmp_path / "classes.tif"
    write_class_raster(tif, classes)
    png = tmp_path / "preview.png"
    colours = {1: "#d7191c", 2: "#1A9641", 3: "#2b83ba"}
    write_preview_png(tif, png, colours)
    lut = {
        0: (0, 0, 0, 0),
        1: (0xD7, 0x19, 0x1C, 255),
        2: (0x1A, 0x96, 0x41, 255),
        3: (0x2B, 0x83, 0xBA, 255),
        4: (128, 128, 128, 255),  # no colour given: opaque grey
    }
    expected = np.array([[lut[v] for v in row] for row in classes.tolist()], dtype=np.uint8)
    with rasterio.open(png) as src:
        assert src.driver == "PNG"
        assert (src.count, src.height, src.width) == (4, 4, 4)
        np.testing.assert_array_equal(np.moveaxis(src.read(), 0, -1), expected)
    assert listing(tmp_path) == ["classes.tif", "preview.png"]  # no temp, no .aux.xml


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_preview_png_decimated_and_replaces(tmp_path: Path) -> None:
    classes = np.ones((600, 1200), dtype=np.uint8)
    classes[:, 600:] = 2
    tif = tmp_path / "classes.tif"
    write_class_raster(tif, classes)
    png = tmp_path / "preview.png"
    png.write_bytes(b"old preview")
    write_preview_png(tif, png, {1: "#ff0000", 2: "#0000ff"}, max_px=100)
    with rasterio.open(png) as src:
        assert (src.height, src.width) == (50, 100)
        rgba = src.read()
    assert (rgba[:, :, :50].reshape(4, -1).T == (255, 0, 0, 255)).all()
    assert (rgba[:, :, 50:].reshape(4, -1).T == (0, 0, 255, 255)).all()
    assert listing(tmp_path) == ["classes.tif", "preview.png"]
