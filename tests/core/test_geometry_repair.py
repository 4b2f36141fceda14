"""Tests for terraseg.core.geometry_repair: make-valid that keeps the geometry's dimension."""

from __future__ import annotations

import shapely

from terraseg.core.geometry_repair import parts_of_dimension, repair_geometry


def test_bowtie_becomes_its_two_triangles() -> None:
    bowtie = shapely.Polygon([(0, 0), (4, 4), (4, 0), (0, 4), (0, 0)])
    assert not bowtie.is_valid
    fixed = repair_geometry(bowtie)
    assert fixed.is_valid and shapely.get_dimensions(fixed) == 2
    assert fixed.area == 8.0  # two triangles of 4 each, meeting at (2, 2)
    assert fixed.equals(shapely.MultiPolygon([
        shapely.Polygon([(0, 0), (2, 2), (0, 4)]), shapely.Polygon([(4, 0), (4, 4), (2, 2)])]))


def test_collinear_ring_leaves_nothing_polygonal() -> None:
    sliver = shapely.Polygon([(0, 0), (1, 1), (2, 2), (0, 0)])
    assert not sliver.is_valid
    fixed = repair_geometry(sliver)
    assert fixed.is_empty and isinstance(fixed, shapely.GeometryCollection)


def test_parts_of_dimension_flattens_nested_collections() -> None:
    square = shapely.box(0, 0, 1, 1)
    line = shapely.LineString([(5, 5), (6, 6)])
    point = shapely.Point(9, 9)
    nested = shapely.GeometryCollection(
        [shapely.GeometryCollection([square, shapely.box(1, 0, 2, 1)]), line, point])
    polygons = parts_of_dimension(nested, 2)
    assert polygons.equals(shapely.box(0, 0, 2, 1))  # unioned
    lines = parts_of_dimension(nested, 1)
    assert isinstance(lines, shapely.MultiLineString) and lines.equals(line)
    points = parts_of_dimension(nested, 0)
    assert isinstance(points, shapely.MultiPoint) and points.equals(point)
    assert parts_of_dimension(point, 2).is_empty
