"""Tests for terraseg.core.label_raster: label rasters resampled onto a grid (nearest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from helpers.label_layers import UTM, X0, Y0, label_grid, write_raster
from rasterio.warp import transform_bounds

from terraseg.core.classes import ClassMapping, make_classes
from terraseg.core.grid import Grid
from terraseg.core.label_raster import load_raster_labels
from terraseg.core.labels import load_labels
from terraseg.protocol.errors import LabelError


@pytest.fixture
def grid() -> Grid:
    return label_grid()


COARSE = np.array(
    [[1, 1, 0, 2, 2, 2],
     [1, 0, 0, 2, 9, 2],
     [0, 0, 1, 0, 0, 0],
     [3, 3, 0, 1, 0, 3],
     [3, 0, 0, 0, 1, 3],
     [0, 0, 0, 0, 0, 0]],
    dtype=np.uint8,
)


def coarse_transform() -> Affine:
    # 20 m pixels, shifted 10 m left and up of the 10 m grid.
    return Affine(20, 0, X0 - 10, 0, -20, Y0 + 10)


def nearest_expected(src: np.ndarray) -> np.ndarray:
    # Centre of fine pixel i lies at 15 + 10 i metres from the coarse origin -> index (15+10i)//20.
    idx = (15 + 10 * np.arange(10)) // 20
    return src[np.ix_(idx, idx)]


def test_label_raster_on_coarser_grid_is_resampled_nearest(tmp_path: Path, grid: Grid) -> None:
    path = write_raster(tmp_path / "coarse.tif", COARSE, coarse_transform(), UTM, nodata=9)
    ls = load_labels(path, grid)
    src = np.where(COARSE == 9, 0, COARSE)
    want = nearest_expected(src)
    assert want.tolist()[0] == [1, 1, 1, 0, 0, 2, 2, 2, 2, 2]
    np.testing.assert_array_equal(ls.labels, want)
    assert [(c.id, c.name) for c in ls.classes] == [(1, "1"), (2, "2"), (3, "3")]
    assert ls.pixel_counts == {str(k): int((want == k).sum()) for k in (1, 2, 3)}
    assert ls.feature_ids == () and ls.categories is None


def test_label_raster_regions_are_8_connected_components_per_class(
    tmp_path: Path, grid: Grid
) -> None:
    path = write_raster(tmp_path / "coarse.tif", COARSE, coarse_transform(), UTM, nodata=9)
    ls = load_raster_labels(path, grid)
    regions = ls.regions
    assert np.array_equal(regions > 0, ls.labels > 0)
    # Class 1: top-left blob, and the diagonal chain (2,2)-(3,3)-(4,4) joined by corners.
    # Class 2: one blob. Class 3: two separate blobs. -> 5 regions in all.
    assert len(np.unique(regions[regions > 0])) == 5
    for k in (1, 2, 3):
        ids = set(np.unique(regions[ls.labels == k]).tolist())
        assert len(ids) == {1: 2, 2: 1, 3: 2}[k]
    assert len(set(np.unique(regions[ls.labels == 1]).tolist())
               & set(np.unique(regions[ls.labels == 3]).tolist())) == 0


def test_label_raster_class_map_and_reprojection(tmp_path: Path, grid: Grid) -> None:
    # Same labels in EPSG:3857 with 1 m pixels: majority classes survive nearest resampling.
    data = np.zeros((200, 200), dtype=np.uint8)
    path = tmp_path / "r3857.tif"
    left, bottom, right, top = transform_bounds(UTM, "EPSG:3857", *grid.bounds)
    tr = Affine((right - left) / 200, 0, left, 0, -(top - bottom) / 200, top)
    data[:100, :] = 5
    data[100:, :] = 7
    write_raster(path, data, tr, "EPSG:3857")
    ls = load_raster_labels(path, grid, class_map=ClassMapping.parse("5=sealed,*=unsealed"))
    assert [c.name for c in ls.classes] == ["sealed", "unsealed"]
    assert set(np.unique(ls.labels).tolist()) <= {1, 2}
    assert ls.pixel_counts["sealed"] > 30 and ls.pixel_counts["unsealed"] > 30
    assert ls.labelled_px == 100


def test_label_raster_errors(tmp_path: Path, grid: Grid) -> None:
    nocrs = write_raster(tmp_path / "nocrs.tif", COARSE, coarse_transform(), None)
    with pytest.raises(LabelError, match="no coordinate reference system"):
        load_raster_labels(nocrs, grid)
    far = Affine(20, 0, X0 + 50_000, 0, -20, Y0)
    path = write_raster(tmp_path / "far.tif", COARSE, far, UTM)
    with pytest.raises(LabelError, match="does not overlap.*EPSG:32633"):
        load_raster_labels(path, grid)
    one = write_raster(tmp_path / "one.tif", np.ones((6, 6), np.uint8), coarse_transform(), UTM)
    with pytest.raises(LabelError, match="Only one class"):
        load_raster_labels(one, grid)
    coarse = write_raster(tmp_path / "c.tif", COARSE, coarse_transform(), UTM, nodata=9)
    with pytest.raises(LabelError, match="Unknown class value\\(s\\) '3'"):
        load_raster_labels(coarse, grid, classes=make_classes(["a", "b"]))
    empty = write_raster(tmp_path / "z.tif", np.zeros((6, 6), np.uint8), coarse_transform(), UTM)
    with pytest.raises(LabelError, match="no labelled pixels"):
        load_raster_labels(empty, grid)
    frac = write_raster(tmp_path / "f.tif", np.full((6, 6), 1.5, np.float32), coarse_transform(),
                        UTM)
    with pytest.raises(LabelError, match="non-integer"):
        load_raster_labels(frac, grid)


def test_a_terraseg_class_raster_brings_its_class_names(grid: Grid, tmp_path: Path) -> None:
    """classes.tif of predict/quickmap/pseudo-label trains with its names, not '1', '2'."""
    import json

    import rasterio

    data = np.zeros((10, 10), dtype=np.uint8)
    data[:5] = 1
    data[5:] = 2
    path = write_raster(tmp_path / "classes.tif", data, Affine(10, 0, X0, 0, -10, Y0), UTM)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(TERRASEG_CLASSES=json.dumps(
            [{"id": 1, "name": "sealed", "colour": "#ff0000"},
             {"id": 2, "name": "unsealed", "colour": "#00ff00"}]))
    labels = load_raster_labels(path, grid)
    assert [(c.id, c.name) for c in labels.classes] == [(1, "sealed"), (2, "unsealed")]
    assert labels.pixel_counts == {"sealed": 50, "unsealed": 50}
    # a class map given wins over the tag
    mapped = load_raster_labels(path, grid, class_map=ClassMapping.parse("1=a,2=b"))
    assert [c.name for c in mapped.classes] == ["a", "b"]
    # a tag that is not TerraSeg's JSON is ignored: integer names as before
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(TERRASEG_CLASSES="not json")
    assert [c.name for c in load_raster_labels(path, grid).classes] == ["1", "2"]


def test_dense_label_raster_regions_are_cut_at_tiles() -> None:
    """A dense map's one-class component spanning the scene becomes one region per tile, so
    a split can send parts of it to validation (it went whole to one side before)."""
    from terraseg.core.label_raster import raster_regions

    labels = np.ones((600, 300), dtype=np.uint8)
    labels[:, 200:] = 2
    classes = tuple(make_classes(["a", "b"]))
    regions, keys = raster_regions(labels, classes, tile_px=256)
    # tiles: rows 0-255, 256-511, 512-599 x cols 0-255, 256-299; class b spans the column
    # border (200-299): 3 x (a, b) in the left tiles + 3 b-only pieces on the right
    assert len(keys) == int(regions.max()) == 9
    assert keys[0] == "r:a:0,0,256,200" and keys[1] == "r:b:0,200,256,256"
    for rid in range(1, 10):
        rows, cols = np.nonzero(regions == rid)
        assert rows.min() // 256 == rows.max() // 256 and cols.min() // 256 == cols.max() // 256
    assert (regions > 0).all()
