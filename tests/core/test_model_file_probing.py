"""Probing model files as an attacker would: every metadata field, edited one at a time.

Each leaf of a real model file's metadata (the 0.1.0 legacy files) is replaced by values of
the wrong type or out of range. Loading must either refuse the file with a clean
ModelFileError naming a field, or - for edits that are harmless (a colour string, a CRS
code removed) - load and predict a finite map. No other exception, no NaN map, no output
written before a failure.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from safetensors.torch import load_file, save_file

from terraseg.core.inference import predict_raster
from terraseg.core.model_input import source_for_model
from terraseg.core.modelfile import load_model, read_metadata
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ModelFileError, TerraSegError
from terraseg.protocol.model_header import META_KEY

DATA = Path(__file__).parents[1] / "data" / "legacy_v0_1"
RECORD_ONLY = ("software", "created", "labels", "training", "metrics", "class_map",
               "class_field", "loss")
BAD_VALUES = [KeyError, None, -1, 0, math.nan, 1e308, "x", []]
#: Accepted (harmless) edits predicted per group; the rest are only loaded.
PREDICT_PER_GROUP = 4


def leaves(node, path=()):
    """Paths of every leaf (and every list/dict) under node."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:2]):
            yield from leaves(v, (*path, i))
    if path:
        yield path


def edited(doc: dict, path: tuple, value: object) -> dict:
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def cases() -> list[tuple[str, tuple, object]]:
    out = []
    for name in ("legacy_patch", "legacy_unet"):
        doc = read_metadata(DATA / f"{name}.tsm")
        for path in dict.fromkeys(leaves(doc)):
            if path[0] in RECORD_ONLY or path[0] in ("format", "format_version"):
                continue
            out += [(name, path, v) for v in BAD_VALUES]
    return out


CASES = cases()


@pytest.fixture(scope="module")
def originals() -> dict[str, tuple[dict, dict]]:
    return {n: (read_metadata(DATA / f"{n}.tsm"), load_file(str(DATA / f"{n}.tsm")))
            for n in ("legacy_patch", "legacy_unet")}


def test_every_validated_field_is_probed() -> None:
    fields = {(p[0], p[-1] if isinstance(p[-1], str) else p[-2]) for _, p, _ in CASES}
    for want in [("architecture", "in_channels"), ("geometry", "stride_px"),
                 ("geometry", "tile_px"), ("normalisation", "std"), ("classes", "id"),
                 ("bands", "indices"), ("training_raster", "pixel_size"),
                 ("threshold", "value")]:
        assert want in fields, want
    assert len(CASES) > 600


@pytest.mark.parametrize("group", ["architecture", "geometry", "bands", "normalisation",
                                   "classes", "training_raster", "threshold", "extra_rasters",
                                   "features"])
def test_edited_metadata_is_refused_or_harmless(group: str, originals, tmp_path: Path) -> None:
    refused = accepted = 0
    for name, path, value in (c for c in CASES if c[1][0] == group):
        doc, tensors = originals[name]
        try:
            bad = edited(doc, path, value)
        except (KeyError, IndexError, TypeError):
            continue
        model_path = tmp_path / "edited.tsm"
        save_file(tensors, str(model_path), metadata={META_KEY: json.dumps(bad)})
        where = f"{name} {'.'.join(map(str, path))} = {value!r}"
        try:
            model = load_model(model_path)
        except ModelFileError as exc:
            assert exc.message and exc.hint, where
            refused += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the probe
            pytest.fail(f"{where}: {type(exc).__name__}: {exc}")
        accepted += 1
        if accepted > PREDICT_PER_GROUP:
            continue
        out = tmp_path / "out"
        shutil.rmtree(out, ignore_errors=True)
        try:
            source = source_for_model(model.meta, str(DATA / "scene.tif"), None, ())
            predict_raster(model, source, out, Reporter())
        except TerraSegError as exc:
            assert not (out / "probability.tif").exists(), where
            assert exc.hint, where
            continue
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{where}: prediction raised {type(exc).__name__}: {exc}")
        with rasterio.open(out / "probability.tif") as ds:
            assert np.isfinite(ds.read()).all(), where
    assert refused >= 1, (group, refused, accepted)  # every group has validated fields
