"""Tests for terraseg.core.labels: load_labels hands each path to the right loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.label_layers import TWO_SQUARES, UTM, cells, expected, label_grid, write_vector

from terraseg.core.grid import Grid
from terraseg.core.labels import load_labels
from terraseg.protocol.errors import LabelError


@pytest.fixture
def grid() -> Grid:
    return label_grid()


@pytest.mark.parametrize(
    ("name", "driver", "crs"),
    [("l.geojson", "GeoJSON", "EPSG:4326"), ("l.shp", "ESRI Shapefile", UTM),
     ("l.fgb", "FlatGeobuf", "EPSG:3857")],
)
def test_other_formats_give_the_same_labels(
    tmp_path: Path, grid: Grid, name: str, driver: str, crs: str
) -> None:
    path = write_vector(tmp_path / name, TWO_SQUARES, crs=crs, driver=driver, geometry="Polygon")
    ls = load_labels(path, grid, class_field="class")
    np.testing.assert_array_equal(ls.labels, expected((1, 1, 4, 4, 2), (5, 5, 9, 9, 1)))
    assert ls.pixel_counts == {"land": 16, "water": 9}


def test_layername_suffix_selects_layer(tmp_path: Path, grid: Grid) -> None:
    path = tmp_path / "multi.gpkg"
    write_vector(path, [(cells(0, 0, 1, 1), {"class": "z"})], layer="first")
    write_vector(path, TWO_SQUARES, layer="second")
    ls = load_labels(f"{path}|layername=second", grid, class_field="class")
    assert ls.pixel_counts == {"land": 16, "water": 9}
    with pytest.raises(LabelError, match="only one class|Only one class"):
        load_labels(path, grid, class_field="class")  # first layer has a single class
    with pytest.raises(LabelError, match="first, second"):
        load_labels(f"{path}|layername=nope", grid, class_field="class")


def test_file_missing(tmp_path: Path, grid: Grid) -> None:
    for p in ("missing.gpkg", "missing.tif", "missing.xyz"):
        with pytest.raises(LabelError, match="not found") as err:
            load_labels(tmp_path / p, grid, class_field="class")
        assert err.value.hint


def test_vector_needs_class_field(tmp_path: Path, grid: Grid) -> None:
    path = write_vector(tmp_path / "l.gpkg", TWO_SQUARES)
    with pytest.raises(LabelError, match="no class field"):
        load_labels(path, grid)
