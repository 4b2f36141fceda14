"""Tests for terraseg.core.vector_labels on tiny generated layers with real CRSs (and real data)."""

from __future__ import annotations

from pathlib import Path

import fiona
import numpy as np
import pytest
import shapely
from helpers.label_layers import (
    TWO_SQUARES,
    UTM,
    X0,
    Y0,
    cells,
    expected,
    label_grid,
    px,
    write_raster,
    write_vector,
)
from helpers.paths import SHARED_DATA
from rasterio.crs import CRS
from rasterio.warp import transform_geom
from shapely.geometry import box

from terraseg.core.classes import ClassMapping, make_classes
from terraseg.core.grid import Grid
from terraseg.core.label_raster import load_raster_labels
from terraseg.core.label_set import LabelSet
from terraseg.core.labels import load_labels
from terraseg.core.raster import RasterSource
from terraseg.core.vector_labels import load_vector_labels
from terraseg.protocol.errors import LabelError, RasterError

DATA = SHARED_DATA / "aerial_nl_rgb_water_polygons"


@pytest.fixture
def grid() -> Grid:
    return label_grid()


# ------------------------------------------------------------------------------- vectors


def test_gpkg_in_4326_is_reprojected_and_rasterised_exactly(tmp_path: Path, grid: Grid) -> None:
    path = write_vector(tmp_path / "labels.gpkg", TWO_SQUARES)
    ls = load_vector_labels(path, grid, "class")
    assert isinstance(ls, LabelSet)
    assert [(c.id, c.name) for c in ls.classes] == [(1, "land"), (2, "water")]
    np.testing.assert_array_equal(ls.labels, expected((1, 1, 4, 4, 2), (5, 5, 9, 9, 1)))
    assert ls.labels.dtype == np.uint8 and ls.regions.dtype == np.int32
    # Region = 1-based feature position; its feature id is recorded.
    np.testing.assert_array_equal(ls.regions, expected((1, 1, 4, 4, 1), (5, 5, 9, 9, 2)))
    assert ls.feature_ids == ("1", "2")
    assert ls.pixel_counts == {"land": 16, "water": 9}
    assert ls.labelled_px == 25
    assert ls.categories is None and ls.category_names == ()
    assert ls.repaired_features == () and ls.skipped_features == ()
    assert len(ls.fingerprint) == 64
    assert load_vector_labels(path, grid, "class").fingerprint == ls.fingerprint


def test_fingerprint_changes_with_labels(tmp_path: Path, grid: Grid) -> None:
    a = load_vector_labels(write_vector(tmp_path / "a.gpkg", TWO_SQUARES), grid, "class")
    moved = [(cells(1, 1, 4, 5), {"class": "water"}), TWO_SQUARES[1]]
    b = load_vector_labels(write_vector(tmp_path / "b.gpkg", moved), grid, "class")
    assert a.fingerprint != b.fingerprint


def test_overlap_of_different_classes_is_unlabelled_same_class_kept(
    tmp_path: Path, grid: Grid
) -> None:
    feats = [
        (cells(0, 0, 5, 5), {"class": "a"}),  # feature 1
        (cells(3, 3, 7, 7), {"class": "b"}),  # feature 2 overlaps 1 at rows 3-4, cols 3-4
        (cells(6, 0, 9, 3), {"class": "a"}),  # feature 3
        (cells(7, 1, 10, 4), {"class": "a"}),  # feature 4 overlaps 3 (same class)
    ]
    ls = load_vector_labels(write_vector(tmp_path / "o.gpkg", feats), grid, "class")
    want = expected((0, 0, 5, 5, 1), (3, 3, 7, 7, 2), (6, 0, 9, 3, 1), (7, 1, 10, 4, 1))
    want[3:5, 3:5] = 0
    np.testing.assert_array_equal(ls.labels, want)
    regions = expected((0, 0, 5, 5, 1), (3, 3, 7, 7, 2), (6, 0, 9, 3, 3), (7, 1, 10, 4, 4))
    regions[3:5, 3:5] = 0
    np.testing.assert_array_equal(ls.regions, regions)  # later feature wins (4 over 3)
    assert ls.pixel_counts == {"a": 25 - 4 + 9 + 9 - 4, "b": 16 - 4}


def test_class_map_merges_source_classes(tmp_path: Path, grid: Grid) -> None:
    feats = [
        (cells(0, 0, 2, 2), {"class": "developed"}),
        (cells(0, 5, 2, 8), {"class": "Grass"}),
        (cells(5, 0, 7, 2), {"class": "water"}),
        (cells(8, 8, 10, 10), {"class": "Developed"}),
    ]
    path = write_vector(tmp_path / "m.gpkg", feats)
    cmap = ClassMapping.parse("developed=sealed,*=unsealed")
    ls = load_vector_labels(path, grid, "class", class_map=cmap)
    assert [(c.id, c.name) for c in ls.classes] == [(1, "sealed"), (2, "unsealed")]
    want = expected((0, 0, 2, 2, 1), (0, 5, 2, 8, 2), (5, 0, 7, 2, 2), (8, 8, 10, 10, 1))
    np.testing.assert_array_equal(ls.labels, want)
    assert ls.pixel_counts == {"sealed": 8, "unsealed": 10}


def test_integer_class_field(tmp_path: Path, grid: Grid) -> None:
    feats = [(cells(0, 0, 2, 2), {"code": 7}), (cells(4, 4, 6, 7), {"code": 3})]
    path = write_vector(tmp_path / "i.gpkg", feats, props={"code": "int"})
    ls = load_vector_labels(path, grid, "CODE")  # field name matched case-insensitively
    assert [(c.id, c.name) for c in ls.classes] == [(1, "3"), (2, "7")]
    np.testing.assert_array_equal(ls.labels, expected((0, 0, 2, 2, 2), (4, 4, 6, 7, 1)))
    assert ls.pixel_counts == {"3": 6, "7": 4}


def test_integer_values_accepted_as_ids_when_classes_given(tmp_path: Path, grid: Grid) -> None:
    feats = [(cells(0, 0, 2, 2), {"code": 2}), (cells(4, 4, 6, 7), {"code": 1})]
    path = write_vector(tmp_path / "i.gpkg", feats, props={"code": "int"})
    model = make_classes(["sealed", "unsealed"])
    ls = load_vector_labels(path, grid, "code", classes=model)
    assert ls.classes == model
    np.testing.assert_array_equal(ls.labels, expected((0, 0, 2, 2, 2), (4, 4, 6, 7, 1)))


def test_names_matched_case_insensitively_when_classes_given(tmp_path: Path, grid: Grid) -> None:
    feats = [(cells(0, 0, 1, 1), {"class": "SEALED"})]
    path = write_vector(tmp_path / "n.gpkg", feats)
    ls = load_vector_labels(path, grid, "class", classes=make_classes(["sealed", "unsealed"]))
    assert ls.pixel_counts == {"sealed": 1, "unsealed": 0}  # one class is fine for evaluation


def test_class_map_onto_given_classes(tmp_path: Path, grid: Grid) -> None:
    feats = [(cells(0, 0, 1, 2), {"class": "developed"}), (cells(5, 5, 6, 6), {"class": "lake"})]
    path = write_vector(tmp_path / "e.gpkg", feats)
    model = make_classes(["unsealed", "sealed"])
    ls = load_vector_labels(path, grid, "class", classes=model,
                            class_map=ClassMapping.parse("developed=Sealed,*=unsealed"))
    np.testing.assert_array_equal(ls.labels, expected((0, 0, 1, 2, 2), (5, 5, 6, 6, 1)))
    with pytest.raises(LabelError, match="'lake->water'"):
        load_vector_labels(path, grid, "class", classes=model,
                           class_map=ClassMapping.parse("developed=sealed,*=water"))


def test_invalid_bowtie_is_repaired_and_reported(tmp_path: Path, grid: Grid) -> None:
    # Self-intersecting bow-tie over columns 0-6, rows 0-4 (no edge passes through a centre).
    bowtie = shapely.Polygon([px(0, 0), px(6, 4), px(6, 0), px(0, 4), px(0, 0)])
    # Degenerate (collinear) ring: make_valid gives a line, nothing polygonal remains.
    sliver = shapely.Polygon([px(7, 7), px(8, 8), px(9, 9), px(7, 7)])
    assert not bowtie.is_valid and not sliver.is_valid
    feats = [(bowtie, {"class": "x"}), (cells(8, 0, 10, 2), {"class": "y"}),
             (sliver, {"class": "y"})]
    ls = load_vector_labels(write_vector(tmp_path / "b.gpkg", feats, crs=UTM), grid, "class")
    want = np.zeros((10, 10), dtype=np.uint8)
    want[0:4, :7] = [
        [1, 0, 0, 0, 0, 1, 0],
        [1, 1, 0, 0, 1, 1, 0],
        [1, 1, 0, 0, 1, 1, 0],
        [1, 0, 0, 0, 0, 1, 0],
    ]
    want[8:10, 0:2] = 2
    np.testing.assert_array_equal(ls.labels, want)
    assert ls.repaired_features == ("1", "3")
    assert ls.skipped_features == ("3",)
    assert any("empty after repair" in n for n in ls.notes)


def test_null_geometry_and_null_class_are_skipped(tmp_path: Path, grid: Grid) -> None:
    feats = [TWO_SQUARES[0], (None, {"class": "land"}), (cells(0, 8, 2, 10), {"class": None}),
             TWO_SQUARES[1]]
    ls = load_vector_labels(write_vector(tmp_path / "n.gpkg", feats), grid, "class")
    assert ls.skipped_features == ("2", "3")
    assert ls.pixel_counts == {"land": 16, "water": 9}
    assert ls.feature_ids == ("1", "4")


def test_points_with_categories_for_reference(tmp_path: Path, grid: Grid) -> None:
    feats = [
        (shapely.Point(px(0.5, 0.5)), {"class": "sealed", "zone": "urban"}),
        (shapely.Point(px(3.2, 2.7)), {"class": "unsealed", "zone": "rural"}),
        (shapely.Point(px(9.9, 9.1)), {"class": "unsealed", "zone": None}),
        (shapely.Point(px(5.2, 5.2)), {"class": "sealed", "zone": "urban"}),
        (shapely.Point(px(5.8, 5.8)), {"class": "unsealed", "zone": "rural"}),  # same pixel
        (shapely.Point(px(20, 20)), {"class": "sealed", "zone": "urban"}),  # off the grid
    ]
    path = write_vector(tmp_path / "ref.gpkg", feats, props={"class": "str", "zone": "str"},
                        geometry="Point")
    model = make_classes(["sealed", "unsealed"])
    ls = load_vector_labels(path, grid, "class", classes=model, category_field="zone")
    want = np.zeros((10, 10), dtype=np.uint8)
    want[0, 0], want[2, 3], want[9, 9] = 1, 2, 2  # pixel (5, 5) is ambiguous -> 0
    np.testing.assert_array_equal(ls.labels, want)
    assert ls.category_names == ("rural", "urban")
    cats = np.zeros((10, 10), dtype=np.int32)
    cats[0, 0], cats[2, 3] = 2, 1
    np.testing.assert_array_equal(ls.categories, cats)
    assert ls.pixel_counts == {"sealed": 1, "unsealed": 2}
    assert ls.regions[0, 0] == 1 and ls.regions[2, 3] == 2 and ls.regions[9, 9] == 3


def test_small_polygons_need_all_touched(tmp_path: Path, grid: Grid) -> None:
    feats = [(box(X0 + 11, Y0 - 19, X0 + 13, Y0 - 17), {"class": "a"}),  # inside pixel (1, 1)
             (box(X0 + 61, Y0 - 49, X0 + 63, Y0 - 47), {"class": "b"})]  # inside pixel (4, 6)
    path = write_vector(tmp_path / "s.gpkg", feats, crs=UTM)
    with pytest.raises(LabelError, match="smaller than a pixel") as err:
        load_vector_labels(path, grid, "class")
    assert "all_touched" in err.value.hint
    ls = load_vector_labels(path, grid, "class", all_touched=True)
    np.testing.assert_array_equal(ls.labels, expected((1, 1, 2, 2, 1), (4, 6, 5, 7, 2)))


# ------------------------------------------------------------------------------ errors


def test_missing_field_lists_available_fields(tmp_path: Path, grid: Grid) -> None:
    path = write_vector(tmp_path / "f.gpkg", [(cells(0, 0, 1, 1), {"kind": "a", "note": "x"})],
                        props={"kind": "str", "note": "str"})
    with pytest.raises(LabelError, match="'class'.*kind, note") as err:
        load_vector_labels(path, grid, "class")
    assert err.value.hint
    with pytest.raises(LabelError, match="category field 'zone'"):
        load_vector_labels(path, grid, "kind", category_field="zone")


def test_empty_layer(tmp_path: Path, grid: Grid) -> None:
    path = write_vector(tmp_path / "e.gpkg", [])
    with pytest.raises(LabelError, match="no features") as err:
        load_vector_labels(path, grid, "class")
    assert err.value.hint


def test_all_features_unusable(tmp_path: Path, grid: Grid) -> None:
    feats = [(None, {"class": "a"}), (cells(0, 0, 1, 1), {"class": None})]
    path = write_vector(tmp_path / "u.gpkg", feats)
    with pytest.raises(LabelError, match="No usable features.*1, 2"):
        load_vector_labels(path, grid, "class")


def test_no_overlap_names_both_extents_and_crss(tmp_path: Path, grid: Grid) -> None:
    far = [(shapely.affinity.translate(g, 100_000, 0), a) for g, a in TWO_SQUARES]
    path = write_vector(tmp_path / "far.gpkg", far)
    with pytest.raises(LabelError, match="do not overlap") as err:
        load_vector_labels(path, grid, "class")
    msg = err.value.message
    assert "EPSG:4326" in msg and "EPSG:32633" in msg and "600010" in msg and "500000" in msg
    assert err.value.hint


def test_vector_without_crs(tmp_path: Path, grid: Grid) -> None:
    path = write_vector(tmp_path / "nocrs.shp", TWO_SQUARES, crs=None, driver="ESRI Shapefile",
                        geometry="Polygon")
    with pytest.raises(LabelError, match="no coordinate reference system") as err:
        load_vector_labels(path, grid, "class")
    assert "Assign" in err.value.hint


def test_grid_without_crs(tmp_path: Path, grid: Grid) -> None:
    path = write_vector(tmp_path / "l.gpkg", TWO_SQUARES)
    bare = Grid(10, 10, grid.transform, "")
    with pytest.raises(RasterError, match="no coordinate reference system"):
        load_vector_labels(path, bare, "class")
    raster = write_raster(tmp_path / "l.tif", np.ones((2, 2), np.uint8), grid.transform, UTM)
    with pytest.raises(RasterError):
        load_raster_labels(raster, bare)


def test_unknown_class_values_with_classes_given(tmp_path: Path, grid: Grid) -> None:
    feats = [(cells(0, 0, 1, 1), {"class": "sealed"}), (cells(1, 1, 2, 2), {"class": "forest"}),
             (cells(2, 2, 3, 3), {"class": "lake"})]
    path = write_vector(tmp_path / "u.gpkg", feats)
    with pytest.raises(LabelError, match="'forest', 'lake'") as err:
        load_vector_labels(path, grid, "class", classes=make_classes(["sealed", "unsealed"]))
    assert "1=sealed, 2=unsealed" in err.value.message


def test_class_map_without_fallback_must_cover_values(tmp_path: Path, grid: Grid) -> None:
    path = write_vector(tmp_path / "m.gpkg", [(cells(0, 0, 1, 1), {"class": "developed"}),
                                              (cells(1, 1, 2, 2), {"class": "grass"})])
    cmap = ClassMapping.parse("developed=sealed,water=unsealed")
    with pytest.raises(LabelError, match="'grass'.*not covered") as err:
        load_vector_labels(path, grid, "class", class_map=cmap)
    assert "*=" in err.value.hint


def test_one_class_only(tmp_path: Path, grid: Grid) -> None:
    path = write_vector(tmp_path / "one.gpkg", [TWO_SQUARES[0]])
    with pytest.raises(LabelError, match="Only one class \\(water\\)"):
        load_vector_labels(path, grid, "class")
    ls = load_vector_labels(path, grid, "class", require_two_classes=False)
    assert ls.pixel_counts == {"water": 9}
    # A class map whose second target never occurs is still a single class.
    with pytest.raises(LabelError, match="Only one class"):
        load_vector_labels(path, grid, "class", class_map=ClassMapping.parse("water=a,*=b"))


def test_unreadable_file(tmp_path: Path, grid: Grid) -> None:
    bad = tmp_path / "bad.gpkg"
    bad.write_text("not a geopackage")
    with pytest.raises(LabelError, match="Cannot read"):
        load_vector_labels(bad, grid, "class")


# ---------------------------------------------------------------------------- real data


def _merge_layers(dst: Path, sources: dict[str, Path]) -> Path:
    """Copy the features of several single-class files into one layer with a 'class' field."""
    first = next(iter(sources.values()))
    with fiona.open(first) as src:
        crs = src.crs
    schema = {"geometry": "Unknown", "properties": {"class": "str"}}
    with fiona.open(dst, "w", driver="GPKG", schema=schema, crs=crs) as out:
        for cls, path in sources.items():
            with fiona.open(path) as src:
                for f in src:
                    geom = dict(f.geometry) if f.geometry else None
                    out.write(fiona.Feature.from_dict(
                        {"geometry": geom, "properties": {"class": cls}}))
    return dst


def _polygon_px(path: Path, crs: CRS, grid: Grid) -> float:
    """Area of the layer's polygons in the grid CRS, in pixels."""
    with fiona.open(path) as src:
        geoms = [transform_geom(src.crs, crs, f.geometry) for f in src if f.geometry]
    area = sum(shapely.geometry.shape(g).area for g in geoms)
    return area / (grid.pixel_size[0] * grid.pixel_size[1])


@pytest.mark.skipif(not (DATA / "crop_512").is_dir(), reason=f"real data absent: {DATA}")
def test_real_crop_512_labels_in_raster_crs(tmp_path: Path) -> None:
    crop = DATA / "crop_512"
    with RasterSource(crop / "orthophoto_rgb_512x512_georef_offset.tif") as src:
        grid = src.grid
    water = crop / "labels_positive_water_epsg28992.gpkg"
    land = crop / "labels_negative_land_epsg28992.gpkg"
    merged = _merge_layers(tmp_path / "wl.gpkg", {"water": water, "land": land})
    ls = load_vector_labels(merged, grid, "class")
    assert [c.name for c in ls.classes] == ["land", "water"]
    assert len(ls.skipped_features) == 2  # one NULL geometry per source file
    for name, path in (("water", water), ("land", land)):
        want = _polygon_px(path, grid.crs, grid)
        assert abs(ls.pixel_counts[name] - want) / want < 0.02
    # Land rectangle starts at the left edge of the image; water is at the right edge.
    rows, cols = np.nonzero(ls.labels == 1)
    assert cols.min() == 0
    rows, cols = np.nonzero(ls.labels == 2)
    assert cols.max() >= 510 and rows.max() >= 509
    # The single water file: its 'id' value 2 is the id of "water" in (land, water).
    ref = load_vector_labels(water, grid, "id", classes=make_classes(["land", "water"]))
    assert ref.pixel_counts["water"] == ls.pixel_counts["water"] and ref.pixel_counts["land"] == 0
    with pytest.raises(LabelError, match="Only one class"):
        load_vector_labels(water, grid, "id")


@pytest.mark.skipif(not (DATA / "orthophoto_rgb_1210x718.tif").is_file(),
                    reason=f"real data absent: {DATA}")
def test_real_4326_labels_reprojected_to_rd_new(tmp_path: Path) -> None:
    with RasterSource(DATA / "orthophoto_rgb_1210x718.tif") as src:
        grid = src.grid
    assert grid.crs.to_epsg() == 28992
    water = DATA / "labels_positive_water_epsg4326.gpkg"
    land = DATA / "labels_negative_land_epsg4326.gpkg"
    merged = _merge_layers(tmp_path / "wl.gpkg", {"water": water, "land": land})
    ls = load_labels(merged, grid, class_field="class",
                     class_map=ClassMapping.parse("water=water,land=land"))
    assert [(c.id, c.name) for c in ls.classes] == [(1, "water"), (2, "land")]
    for name, path in (("water", water), ("land", land)):
        want = _polygon_px(path, grid.crs, grid)
        assert want > 1000
        assert abs(ls.pixel_counts[name] - want) / want < 0.02
    # Both rectangles lie inside the image and do not touch each other.
    assert np.count_nonzero(ls.labels) == sum(ls.pixel_counts.values())
    assert set(np.unique(ls.regions).tolist()) == {0, 1, 2}
