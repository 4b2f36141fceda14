"""Test-time rotation averaging and probability thresholds at prediction time."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.paths import TERRASEG
from rasterio.transform import from_origin

from terraseg.cli.bench import make_model
from terraseg.core.decision import resolve_threshold
from terraseg.core.inference import predict_raster
from terraseg.core.modelfile import load_model
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError
from terraseg.protocol.model_meta import Threshold


def _raster(path: Path, data: np.ndarray) -> Path:
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": 4,
               "dtype": "uint8", "crs": "EPSG:2056", "nodata": 0,
               "transform": from_origin(2600000.0, 1200000.0, 0.1, 0.1)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("tta")
    model = make_model(d / "m.tsm")
    rng = np.random.default_rng(0)
    data = rng.integers(1, 255, (4, 60, 60), dtype=np.uint8)
    return {"dir": d, "model": model, "data": data, "raster": _raster(d / "r.tif", data)}


def _probs(model_path: Path, raster: Path, out: Path, **kw: object) -> np.ndarray:
    predict_raster(load_model(model_path), RasterSource(raster), out, Reporter(),
                   overwrite=True, **kw)
    with rasterio.open(out / "probability.tif") as ds:
        return ds.read()


def test_tta_equals_mean_over_rotated_rasters(setup: dict) -> None:
    d = setup["dir"]
    tta = _probs(setup["model"], setup["raster"], d / "tta", tta=True)
    rotated = []
    for k in range(4):
        r = _raster(d / f"rot{k}.tif", np.ascontiguousarray(np.rot90(setup["data"], k, (1, 2))))
        p = _probs(setup["model"], r, d / f"p{k}")
        rotated.append(np.rot90(p, -k, (1, 2)))
    np.testing.assert_allclose(tta, np.mean(rotated, axis=0), atol=1e-5)
    assert np.abs(tta - rotated[0]).max() > 1e-3  # it really averaged


def test_threshold_sets_the_class_rule(setup: dict) -> None:
    d = setup["dir"]
    predict_raster(load_model(setup["model"]), RasterSource(setup["raster"]), d / "t0",
                   Reporter(), threshold=0.0)
    with rasterio.open(d / "t0" / "classes.tif") as ds:
        assert set(np.unique(ds.read(1))) == {1}
    predict_raster(load_model(setup["model"]), RasterSource(setup["raster"]), d / "t1",
                   Reporter(), threshold=1.0)
    with rasterio.open(d / "t1" / "classes.tif") as a, \
            rasterio.open(d / "t1" / "probability.tif") as b:
        cls, p1 = a.read(1), b.read(1)
    np.testing.assert_array_equal(cls == 1, p1 >= 1.0)


def test_threshold_outside_0_1_is_refused(setup: dict) -> None:
    model = load_model(setup["model"])
    with pytest.raises(ConfigError, match="outside 0..1"):
        resolve_threshold(model.meta, 1.5)
    proc = subprocess.run([*TERRASEG, "predict", "--model", str(setup["model"]), "--raster",
                           str(setup["raster"]), "--out-dir", str(setup["dir"] / "bad"),
                           "--threshold", "-0.2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "outside 0..1" in proc.stderr
    assert not (setup["dir"] / "bad" / "classes.tif").exists()


def test_stored_threshold_is_the_default(setup: dict, tmp_path: Path) -> None:
    model = load_model(setup["model"])
    assert resolve_threshold(model.meta, None) is None
    tuned = model.meta.replace(threshold=Threshold(0.3, 0.9))
    assert resolve_threshold(tuned, None) == 0.3
    assert resolve_threshold(tuned, 0.7) == 0.7
    assert json.dumps(tuned.to_dict()["threshold"]) == '{"value": 0.3, "f1": 0.9}'
