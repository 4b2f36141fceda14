"""Typed model metadata: every invalid field is refused on load, naming the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from helpers.paths import ROOT, TEST_DATA
from safetensors.torch import save_file

from terraseg.core.modelfile import load_model, read_meta
from terraseg.protocol.errors import ModelFileError
from terraseg.protocol.model_header import META_KEY, read_model_meta
from terraseg.protocol.model_meta import ModelMeta, field_table, pixel_size_ratio

DATA = TEST_DATA / "legacy_v0_1"
DOCS = ROOT / "docs" / "model-file.md"


def base_doc() -> dict:
    return json.loads(json.dumps(
        ModelMeta.from_dict(_legacy()).to_dict()))


def _legacy() -> dict:
    from terraseg.core.modelfile import read_metadata

    return read_metadata(DATA / "legacy_patch.tsm")


def write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "edited.tsm"
    save_file({"w": torch.zeros(1)}, str(p), metadata={META_KEY: json.dumps(doc)})
    return p


def edit(path: str, value: object) -> dict:
    doc = base_doc()
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(("path", "value", "field", "words"), [
    ("bands", KeyError, "bands", "is missing"),
    ("architecture.params.in_channels", KeyError, "in_channels", "is missing"),
    ("geometry.stride_px", 0, "geometry.stride_px", "at least 1"),
    ("geometry.patch_px", -51, "geometry.patch_px", "at least 1"),
    ("geometry.receptive_field_px", 2, "geometry.receptive_field_px", "smaller than the stride"),
    ("normalisation.std.2", 0.0, "normalisation.std[2]", "must be positive"),
    ("normalisation.mean", [1.0, 2.0], "normalisation", "2 mean(s) but 4 std(s)"),
    ("classes.0.id", 0, "classes[].id", "1..255"),
    ("classes.1.id", 256, "classes[].id", "1..255"),
    ("classes.1.id", 1, "classes", "repeated ids"),
    ("architecture.params.in_channels", 5, "in_channels", "bands.names lists 4"),
    ("architecture.params.num_classes", 3, "num_classes", "2 class(es)"),
    ("training_raster.pixel_size", [0.0, 10.0], "training_raster.pixel_size", "positive"),
    ("threshold", {"value": 1.5, "f1": 0.5}, "threshold.value", "outside 0..1"),
    ("geometry.kind", "hexagon", "geometry.kind", "not one of patch, tile"),
])
def test_invalid_field_is_named(tmp_path: Path, path: str, value: object, field: str,
                                words: str) -> None:
    p = write(tmp_path, edit(path, value))
    for reader in (read_model_meta, read_meta, load_model):
        with pytest.raises(ModelFileError) as exc:
            reader(p)
        assert field in exc.value.message and words in exc.value.message, exc.value.message
        assert exc.value.hint


def test_absurd_network_is_refused_before_it_is_built(tmp_path: Path) -> None:
    doc = edit("architecture.params.planes", [4096, 8192, 16384])
    with pytest.raises(ModelFileError) as exc:
        load_model(write(tmp_path, doc))
    assert "parameters" in exc.value.message and "architecture.params" in exc.value.message


def test_unknown_architecture_and_kind_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not buildable"):
        read_meta(write(tmp_path, edit("architecture.name", "transformer9000")))
    doc = edit("geometry", {"kind": "tile", "tile_px": 32, "stride_px": 16})
    with pytest.raises(ModelFileError, match="of kind 'patch'"):
        read_meta(write(tmp_path, doc))


def test_pixel_size_rule_is_one_formula() -> None:
    assert pixel_size_ratio((10, 10), (20, 20)) == pytest.approx(2.0)
    assert pixel_size_ratio((10, 40), (20, 20)) == pytest.approx(1.0)
    assert pixel_size_ratio((10, 10), (0, 10)) == float("inf")


def test_docs_model_file_lists_every_field() -> None:
    """docs/model-file.md cannot drift from the dataclasses: every key and field is named."""
    text = DOCS.read_text(encoding="utf-8")
    for key, fields in field_table().items():
        assert f"`{key}`" in text, key
        for name in fields:
            assert f"`{name}`" in text, f"{key}.{name}"


def test_unknown_keys_are_kept() -> None:
    doc = copy.deepcopy(base_doc())
    doc["made_by_a_newer_tool"] = {"x": 1}
    assert ModelMeta.from_dict(doc).to_dict()["made_by_a_newer_tool"] == {"x": 1}
