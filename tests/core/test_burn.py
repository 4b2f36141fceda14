"""Tests for terraseg.core.burn: label, region and category arrays burnt from features."""

from __future__ import annotations

import numpy as np
import shapely
from helpers.label_layers import cells, expected, label_grid
from shapely.geometry import mapping

from terraseg.core.burn import LabelFeature, burn_categories, burn_labels


def feature(fid: str, geom: shapely.Geometry, category: object = None) -> LabelFeature:
    return LabelFeature(fid, mapping(geom), "value", category)


def test_overlap_rule_and_regions() -> None:
    feats = [feature("a", cells(0, 0, 4, 4)), feature("b", cells(2, 2, 6, 6)),
             feature("c", cells(3, 3, 5, 5))]
    labels, regions, ambiguous = burn_labels(feats, [1, 2, 2], label_grid(), 2, False)
    want = expected((0, 0, 4, 4, 1), (2, 2, 6, 6, 2))
    want[2:4, 2:4] = 0  # classes 1 and 2 overlap: unlabelled
    np.testing.assert_array_equal(labels, want)
    want_regions = expected((0, 0, 4, 4, 1), (2, 2, 6, 6, 2), (3, 3, 5, 5, 3))
    want_regions[want == 0] = 0  # the later feature c wins inside b (same class)
    np.testing.assert_array_equal(regions, want_regions)
    assert ambiguous and labels.dtype == np.uint8 and regions.dtype == np.int32


def test_no_overlap_is_not_ambiguous() -> None:
    feats = [feature("a", cells(0, 0, 1, 1)), feature("b", cells(9, 9, 10, 10))]
    labels, _, ambiguous = burn_labels(feats, [2, 1], label_grid(), 2, False)
    np.testing.assert_array_equal(labels, expected((0, 0, 1, 1, 2), (9, 9, 10, 10, 1)))
    assert not ambiguous


def test_categories_sorted_numerically_and_only_where_labelled() -> None:
    feats = [feature("a", cells(0, 0, 2, 2), 10), feature("b", cells(0, 2, 2, 4), 9),
             feature("c", cells(4, 4, 6, 6), None), feature("d", cells(8, 8, 10, 10), 10.0)]
    labels = expected((0, 0, 2, 4, 1), (4, 4, 6, 6, 1))  # d is not labelled
    cats, names = burn_categories(feats, label_grid(), labels, False)
    assert names == ("9", "10")
    np.testing.assert_array_equal(cats, expected((0, 0, 2, 2, 2), (0, 2, 2, 4, 1)))
    assert cats.dtype == np.int32


def test_no_categories_at_all() -> None:
    cats, names = burn_categories([feature("a", cells(0, 0, 1, 1))], label_grid(),
                                  expected((0, 0, 1, 1, 1)), False)
    assert names == () and not cats.any()
