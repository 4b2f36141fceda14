"""Model files written by TerraSeg 0.1.0 load and predict identically (tests/data/legacy_v0_1).

The files were written by the release before the typed metadata (ModelMeta), the model
kinds and the protocol package; the expected outputs are what that release's
``terraseg predict`` wrote for the same raster.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.paths import TERRASEG, TEST_DATA

from terraseg.core.modelfile import load_model, read_metadata, save_model
from terraseg.protocol.model_meta import ModelMeta

DATA = TEST_DATA / "legacy_v0_1"


@pytest.mark.parametrize("name, kind", [("legacy_patch", "patch"), ("legacy_unet", "tile")])
def test_legacy_model_predicts_identically(name: str, kind: str, tmp_path: Path) -> None:
    model = load_model(DATA / f"{name}.tsm")
    assert model.meta.kind == kind and model.kind.name == kind
    out = tmp_path / "pred"
    proc = subprocess.run([*TERRASEG, "--quiet", "predict", "--model", str(DATA / f"{name}.tsm"),
                           "--raster", str(DATA / "scene.tif"), "--out-dir", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(out / "probability.tif") as ds:
        prob = ds.read()
    with rasterio.open(out / "classes.tif") as ds:
        classes = ds.read(1)
    np.testing.assert_array_equal(classes, np.load(DATA / f"{name}.classes.npy"))
    np.testing.assert_allclose(prob, np.load(DATA / f"{name}.probability.npy"), atol=1e-6,
                               rtol=0)


@pytest.mark.parametrize("name", ["legacy_patch", "legacy_unet"])
def test_legacy_metadata_round_trips(name: str, tmp_path: Path) -> None:
    doc = read_metadata(DATA / f"{name}.tsm")
    meta = ModelMeta.from_dict(doc)
    assert meta.to_dict() == doc  # nothing lost, nothing added
    model = load_model(DATA / f"{name}.tsm")
    resaved = save_model(tmp_path / "again.tsm", model.network, model.meta)
    assert read_metadata(resaved) == doc
    assert json.dumps(doc)  # plain JSON


def test_legacy_tile_model_keeps_its_tuned_threshold() -> None:
    meta = load_model(DATA / "legacy_unet.tsm").meta
    assert meta.threshold is not None and meta.threshold.value == 0.55
    assert meta.geometry.tile_px == 32 and meta.geometry.step_px == 16
