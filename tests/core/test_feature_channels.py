"""Engineered channels through training and prediction (recomputed from the model file)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from helpers.paths import TERRASEG
from helpers.synthetic import make_scene
from rasterio.windows import Window

from terraseg.core.feature_source import FeatureSource, fit_on_source
from terraseg.core.features import FeatureSpec
from terraseg.core.raster import RasterSource, parse_band_mapping


def test_windows_do_not_depend_on_their_origin(tmp_path: Path) -> None:
    sc = make_scene(tmp_path)
    base = RasterSource(sc.raster, parse_band_mapping(None, sc.raster))
    spec = fit_on_source(FeatureSpec.parse("ndvi,gaussian,sobel,canny"), base)
    src = FeatureSource(base, spec)
    assert src.bands.names[4:] == ("ndvi", "gray_gaussian", "sobel_x", "sobel_y", "canny")
    big, _ = src.read(Window(0, 0, 96, 96))
    part, valid = src.read(Window(20, 30, 40, 25))
    np.testing.assert_allclose(part, big[:, 30:55, 20:60], atol=1e-5)
    data, _ = base.read(Window(20, 30, 40, 25))
    red, nir = data[0], data[3]
    np.testing.assert_allclose(part[4], (nir - red) / (nir + red), atol=1e-5)
    assert spec.params["canny_low"] is not None  # pinned on the training raster


def test_train_and_predict_with_features(tmp_path: Path) -> None:
    sc = make_scene(tmp_path)
    model = tmp_path / "m.tsm"
    proc = subprocess.run([*TERRASEG, "train", "--raster", str(sc.raster), "--labels",
                           str(sc.labels), "--class-field", "klass", "--out", str(model),
                           "--features", "ndvi,sobel", "--patch-size", "23", "--blocks",
                           "1,1,1", "--epochs", "1", "--samples-per-epoch", "128",
                           "--cache-dir", str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(subprocess.run([*TERRASEG, "info", str(model)], capture_output=True,
                                     text=True, timeout=120).stdout)
    assert meta["bands"]["names"][4:] == ["ndvi", "sobel_x", "sobel_y"]
    assert meta["features"]["names"] == ["ndvi", "sobel"]
    assert meta["architecture"]["params"]["in_channels"] == 7
    pred = subprocess.run([*TERRASEG, "predict", "--model", str(model), "--raster", str(sc.raster),
                           "--out-dir", str(tmp_path / "p")], capture_output=True, text=True,
                          timeout=120)
    assert pred.returncode == 0, pred.stderr


def test_index_without_its_bands_is_refused(tmp_path: Path) -> None:
    sc = make_scene(tmp_path)
    proc = subprocess.run([*TERRASEG, "train", "--raster", str(sc.raster), "--labels",
                           str(sc.labels), "--class-field", "klass", "--out",
                           str(tmp_path / "m.tsm"), "--bands", "1,2,3", "--features", "nbr",
                           "--cache-dir", str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "NBR needs bands 'nir' and 'swir2'" in proc.stderr
    assert not (tmp_path / "m.tsm").exists()
