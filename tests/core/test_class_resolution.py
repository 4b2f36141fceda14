"""Tests for terraseg.core.class_resolution: source values -> model classes and ids."""

from __future__ import annotations

import math

import numpy as np
import pytest

from terraseg.core.class_resolution import as_int, is_missing, resolve_classes, value_key
from terraseg.core.classes import ClassMapping, make_classes
from terraseg.protocol.errors import LabelError


def test_value_key_and_as_int() -> None:
    assert [value_key(v) for v in (3, 3.0, np.int16(3), np.float32(3.0), " 3 ")] == ["3"] * 5
    assert value_key(2.5) == "2.5" and value_key(True) == "True"
    assert [as_int(v) for v in (7, 7.0, np.uint8(7), 7.5, "7", True, None)] == [
        7, 7, 7, None, None, None, None]


def test_is_missing() -> None:
    assert all(is_missing(v) for v in (None, math.nan, "", "  "))
    assert not any(is_missing(v) for v in (0, 0.0, "x", False))


def test_training_integers_sorted_numerically() -> None:
    classes, lookup = resolve_classes([7, 3, 10, 3.0], None, None, "l.gpkg")
    assert [(c.id, c.name) for c in classes] == [(1, "3"), (2, "7"), (3, "10")]
    assert lookup == {"7": 2, "3": 1, "10": 3}


def test_training_text_sorted() -> None:
    classes, lookup = resolve_classes(["water", "land", " water"], None, None, "l.gpkg")
    assert [c.name for c in classes] == ["land", "water"]
    assert lookup == {"water": 2, "land": 1}


def test_training_class_map_targets_in_rule_order() -> None:
    cmap = ClassMapping.parse("developed=sealed,*=unsealed")
    classes, lookup = resolve_classes(["grass", "developed"], cmap, None, "l.gpkg")
    assert [(c.id, c.name) for c in classes] == [(1, "sealed"), (2, "unsealed")]
    assert lookup == {"grass": 2, "developed": 1}


def test_given_classes_by_name_or_id() -> None:
    model = make_classes(["sealed", "unsealed"])
    classes, lookup = resolve_classes(["Sealed", 2], None, model, "ref.gpkg")
    assert classes == model and lookup == {"Sealed": 1, "2": 2}
    with pytest.raises(LabelError, match=r"Unknown class value\(s\) '3', 'lake' in ref.gpkg; "
                                         r"the model's classes are 1=sealed, 2=unsealed\."):
        resolve_classes(["lake", 3], None, model, "ref.gpkg")


def test_class_map_must_cover_every_value() -> None:
    cmap = ClassMapping.parse("developed=sealed")
    with pytest.raises(LabelError, match="'grass' in l.gpkg are not covered") as err:
        resolve_classes(["developed", "grass"], cmap, None, "l.gpkg")
    assert "*=<class>" in err.value.hint
