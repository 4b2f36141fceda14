"""Tests for terraseg.core.layer_spec: QGIS layer strings, layer lookup, missing files."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.label_layers import TWO_SQUARES, cells, write_vector

from terraseg.core.layer_spec import check_exists, resolve_layer, split_layer_spec
from terraseg.protocol.errors import LabelError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("labels.gpkg", ("labels.gpkg", None)),
        ("labels.gpkg|layername=roofs", ("labels.gpkg", "roofs")),
        ("labels.gpkg|layerid=2", ("labels.gpkg", 2)),
        ("labels.gpkg|LayerName=roofs|subset=\"a\"=1", ("labels.gpkg", "roofs")),
        ("labels.gpkg|layerid=x", ("labels.gpkg", None)),
        ("labels.gpkg|layername=", ("labels.gpkg", None)),
    ],
)
def test_split_layer_spec(spec: str, expected: tuple[str, str | int | None]) -> None:
    assert split_layer_spec(spec) == expected


def test_resolve_layer_by_name_index_or_first(tmp_path: Path) -> None:
    path = tmp_path / "multi.gpkg"
    write_vector(path, [(cells(0, 0, 1, 1), {"class": "z"})], layer="first")
    write_vector(path, TWO_SQUARES, layer="second")
    assert resolve_layer(str(path), None) == "first"
    assert resolve_layer(str(path), "second") == "second"
    assert resolve_layer(str(path), 1) == "second"
    with pytest.raises(LabelError, match="Layer '2' not found in multi.gpkg; it has: first, "
                                         "second"):
        resolve_layer(str(path), 2)
    bad = tmp_path / "bad.gpkg"
    bad.write_text("not a geopackage")
    with pytest.raises(LabelError, match="Cannot read vector labels"):
        resolve_layer(str(bad), None)


def test_check_exists(tmp_path: Path) -> None:
    (tmp_path / "here.gpkg").write_text("x")
    check_exists(str(tmp_path / "here.gpkg"), "Label file")
    check_exists("/vsizip/missing.zip/labels.gpkg", "Label file")  # GDAL paths not checked
    check_exists("https://example.org/labels.geojson", "Label file")
    with pytest.raises(LabelError, match="Label raster not found: .*gone.tif") as err:
        check_exists(str(tmp_path / "gone.tif"), "Label raster")
    assert err.value.hint == "Check the path to the labels."
