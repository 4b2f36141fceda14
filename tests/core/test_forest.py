"""The quick map's random forest (core/forest.py): sampling, held-out metrics, outputs.

Scenes are tests/helpers/synthetic.py's: sealed rectangles (low NIR) on unsealed ground
(high NIR), separable by band values, in EPSG:32632.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.synthetic import make_scene, write_raster
from rasterio.windows import Window

from terraseg.core.forest import ForestSettings, PixelSample, quick_map, sample_positions
from terraseg.core.inference import CLASS_NODATA, PROB_NODATA
from terraseg.core.labels import load_labels
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError, LabelError, OutputError
from terraseg.training.sampling import SplitConfig, build_index

SETTINGS = ForestSettings(trees=20, max_samples=20_000, seed=0, n_jobs=1)


class Recorder(Reporter):
    """Keeps the events."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list = []

    def emit(self, event) -> None:
        self.events.append(event)


def _inputs(raster: Path, labels: Path, seed: int = 0):
    source = RasterSource(raster)
    ls = load_labels(labels, source.grid, class_field="klass")
    index = build_index(ls, SplitConfig(val_fraction=0.3, seed=seed), 64)
    return source, ls, index.split_map


def test_stratified_sample_caps_each_class_and_keeps_rare_ones() -> None:
    labels = np.zeros((40, 50), np.uint8)
    labels[:20] = 1  # 1,000 px
    labels[30, :10] = 2  # 10 px
    rng = np.random.default_rng(0)
    pos = sample_positions(labels, labels > 0, 100, rng, stratified=True)
    ids = labels.ravel()[pos]
    assert (ids == 1).sum() == 50 and (ids == 2).sum() == 10
    assert len(np.unique(pos)) == len(pos)
    uniform = sample_positions(labels, labels > 0, 101, rng, stratified=False)
    assert len(uniform) == 101 and set(labels.ravel()[uniform]) <= {1, 2}
    every = sample_positions(labels, labels > 0, 5000, rng, stratified=False)
    assert len(every) == 1010


def test_separable_scene_maps_correctly_and_reports_held_out_accuracy(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, size=128)
    source, labels, split_map = _inputs(scene.raster, scene.labels)
    rep = Recorder()
    res = quick_map(source, labels, split_map, tmp_path / "out", rep, SETTINGS)
    val = res["validation"]
    assert val["accuracy"] == pytest.approx(1.0)
    assert val["f1_per_class"] == {"sealed": pytest.approx(1.0), "unsealed": pytest.approx(1.0)}
    # every training and validation pixel is sampled (below the cap), each on its own side
    for side, code in (("train", 0), ("val", 1)):
        expected = {c.name: int(((split_map == code) & (labels.labels == c.id)).sum())
                    for c in labels.classes}
        assert res["sampled_pixels"][side] == expected
    assert val["n_samples"] == int((split_map == 1).sum()) > 0
    assert res["model_file"].startswith("none") and res["threshold"] is None
    with rasterio.open(res["classes"]) as cls_ds, rasterio.open(scene.raster) as src, \
            rasterio.open(res["probability"]) as prob_ds:
        assert (cls_ds.crs, cls_ds.transform, cls_ds.shape) == (src.crs, src.transform,
                                                                src.shape)
        assert prob_ds.transform == src.transform and prob_ds.count == 2
        classes = cls_ds.read(1)
        prob = prob_ds.read()
        assert cls_ds.colormap(1)[1][:3] == (0xD7, 0x19, 0x1C)  # sealed's colour, as predict
        assert json.loads(cls_ds.tags()["TERRASEG_CLASSES"])[0]["name"] == "sealed"
    agreement = (classes == scene.truth).mean()
    assert agreement > 0.97
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(classes, prob.argmax(0) + 1)
    assert res["class_shares"]["sealed"] == pytest.approx((classes == 1).mean())
    assert res["valid_pixels"] == 128 * 128
    importance = res["feature_importance"]
    assert list(importance) == res["channels"] == ["red", "green", "blue", "nir"]
    assert sum(importance.values()) == pytest.approx(1.0, abs=1e-3)
    assert [e.stage for e in rep.events if hasattr(e, "stage")][-1] == "quickmap"


def test_validation_pixels_are_never_fitted(tmp_path: Path) -> None:
    """Validation polygons labelled against their band values score 0: not memorised."""
    scene = make_scene(tmp_path, size=128)
    source, labels, split_map = _inputs(scene.raster, scene.labels)
    val = split_map == 1
    flipped = labels.labels.copy()
    flipped[val] = 3 - flipped[val]
    wrong = dataclasses.replace(labels, labels=flipped)
    res = quick_map(source, wrong, split_map, tmp_path / "out", Recorder(), SETTINGS)
    assert res["validation"]["accuracy"] == pytest.approx(0.0)
    assert res["validation"]["n_samples"] == int(val.sum())


def test_nodata_pixels_stay_nodata(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, size=96)
    with rasterio.open(scene.raster) as src:
        data = src.read()
    data[:, 40:60, :] = 0  # a stripe of nodata across labelled and unlabelled ground
    data[2, 0:10, 0:10] = 0  # one band alone is nodata: the pixel is invalid too
    raster = write_raster(tmp_path / "nodata.tif", data, nodata=0)
    source, labels, split_map = _inputs(raster, scene.labels)
    res = quick_map(source, labels, split_map, tmp_path / "out", Recorder(), SETTINGS)
    with rasterio.open(res["classes"]) as cls_ds, rasterio.open(res["probability"]) as p_ds:
        classes, prob = cls_ds.read(1), p_ds.read()
        assert cls_ds.nodata == CLASS_NODATA and p_ds.nodata == PROB_NODATA
    invalid = (data == 0).any(0)
    assert (classes[invalid] == 0).all() and (prob[:, invalid] == PROB_NODATA).all()
    assert (classes[~invalid] > 0).all()
    assert res["valid_pixels"] == int((~invalid).sum())
    on_nodata = int(((labels.labels > 0) & (split_map >= 0) & invalid).sum())
    assert on_nodata > 0 and res["labelled_on_nodata"] == on_nodata


def test_window_maps_only_the_window(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, size=96)
    source, labels, split_map = _inputs(scene.raster, scene.labels)
    res = quick_map(source, labels, split_map, tmp_path / "out", Recorder(), SETTINGS,
                    window=Window(10, 20, 30, 40))
    assert res["window"] == [10, 20, 30, 40]
    with rasterio.open(res["classes"]) as ds:
        assert ds.shape == (40, 30)
        assert ds.transform.c == source.grid.transform.c + 10 * 10.0
        assert (ds.read(1) == scene.truth[20:60, 10:40]).mean() > 0.95


def test_existing_outputs_are_refused_without_overwrite(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, size=64)
    source, labels, split_map = _inputs(scene.raster, scene.labels)
    out = tmp_path / "out"
    quick_map(source, labels, split_map, out, Recorder(), SETTINGS)
    before = (out / "classes.tif").read_bytes()
    with pytest.raises(OutputError) as exc:
        quick_map(source, labels, split_map, out, Recorder(), SETTINGS)
    assert "classes.tif" in exc.value.message or "probability.tif" in exc.value.message
    assert "overwrite" in exc.value.hint.lower()
    assert (out / "classes.tif").read_bytes() == before
    again = quick_map(source, labels, split_map, out, Recorder(),
                      dataclasses.replace(SETTINGS, seed=1), overwrite=True)
    assert again["validation"]["accuracy"] == pytest.approx(1.0)


def test_one_class_of_training_pixels_is_refused(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, size=64)
    source, labels, split_map = _inputs(scene.raster, scene.labels)
    only_train_sealed = np.where((split_map == 0) & (labels.labels == 2), 1, split_map)
    with pytest.raises(LabelError) as exc:
        quick_map(source, labels, only_train_sealed.astype(np.int8), tmp_path / "out",
                  Recorder(), SETTINGS)
    assert "two classes" in exc.value.message and exc.value.hint
    assert not (tmp_path / "out" / "classes.tif").exists()


@pytest.mark.parametrize("kw, words", [({"trees": 0}, "--trees"),
                                       ({"max_samples": 10}, "--max-samples"),
                                       ({"seed": -1}, "--seed")])
def test_settings_are_checked(kw: dict, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        ForestSettings(**kw)
    assert words in exc.value.message


def test_pixel_sample_type_is_frozen() -> None:
    sample = PixelSample(np.zeros((0, 1)), np.zeros(0), 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.on_nodata = 1  # type: ignore[misc]
