"""Pseudo-labels from coarse labels (core/pseudo_label.py): sampled forest, dense outputs.

The scene is tests/helpers/synthetic.py's (sealed rectangles with low NIR on unsealed
ground, separable by band values, 10 m pixels in EPSG:32632). Its truth downsampled 4x by
majority onto a 40 m grid is the coarse label raster: resampled back onto the image grid
it is wrong along every rectangle's edge, which the forest's pseudo-labels should fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.synthetic import ORIGIN, PIXEL_M, make_scene, write_raster
from rasterio.transform import from_origin

from terraseg.core.classes import ClassMapping
from terraseg.core.forest import quick_map
from terraseg.core.inference import CLASS_NODATA, PROB_NODATA
from terraseg.core.labels import load_labels
from terraseg.core.pseudo_label import PseudoLabelSettings, pseudo_label
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError, LabelError, OutputError

FACTOR = 4
SETTINGS = PseudoLabelSettings(trees=20, seed=0, n_jobs=1)


def write_coarse_labels(path: Path, truth: np.ndarray, factor: int = FACTOR,
                        origin: tuple[float, float] = ORIGIN) -> Path:
    """The truth downsampled by majority of factor x factor blocks onto a coarser grid
    (its own transform: pixels ``factor`` times the scene's), values 1 sealed, 2 unsealed."""
    h, w = truth.shape
    blocks = truth.reshape(h // factor, factor, w // factor, factor)
    sealed_share = (blocks == 1).mean(axis=(1, 3))
    coarse = np.where(sealed_share >= 0.5, 1, 2).astype(np.uint8)
    return write_raster(path, coarse[None],
                        transform=from_origin(*origin, PIXEL_M * factor, PIXEL_M * factor))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("pseudo")
    sc = make_scene(folder, size=128)
    return sc, write_coarse_labels(folder / "coarse.tif", sc.truth)


def _inputs(scene):
    sc, coarse = scene
    source = RasterSource(sc.raster)
    labels = load_labels(coarse, source.grid,
                         class_map=ClassMapping.parse("1=sealed,2=unsealed"))
    assert [c.name for c in labels.classes] == ["sealed", "unsealed"]
    return sc, source, labels


def test_pseudo_labels_beat_the_upsampled_coarse_labels(scene, tmp_path: Path) -> None:
    sc, source, labels = _inputs(scene)
    coarse_agreement = float((labels.labels == sc.truth).mean())
    assert 0.8 < coarse_agreement < 0.97  # every rectangle edge is off by up to 2 px
    res = pseudo_label(source, labels, tmp_path / "out", Reporter(), SETTINGS)
    with rasterio.open(res["classes"]) as cls_ds, rasterio.open(res["probability"]) as p_ds, \
            rasterio.open(sc.raster) as src:
        assert (cls_ds.crs, cls_ds.transform, cls_ds.shape) == (src.crs, src.transform,
                                                                 src.shape)
        assert cls_ds.nodata == CLASS_NODATA and p_ds.nodata == PROB_NODATA
        hex_colour = labels.classes[0].colour.lstrip("#")
        assert cls_ds.colormap(1)[1][:3] == tuple(int(hex_colour[i:i + 2], 16)
                                                  for i in (0, 2, 4))
        cls, prob = cls_ds.read(1), p_ds.read()
    pseudo_agreement = float((cls == sc.truth).mean())
    assert pseudo_agreement > 0.99 > coarse_agreement + 0.02
    assert prob.shape == (2, 128, 128) and 0.0 <= prob.min() and prob.max() <= 1.0
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "classes.tif", "confidence.tif", "probability.tif"]
    with rasterio.open(res["confidence"]) as ds:  # the probability of the class given
        np.testing.assert_allclose(ds.read(1), prob.max(axis=0), rtol=0, atol=1e-7)
    # the result: random sampling balanced at the smallest class, agreement measured
    n_sealed = int((labels.labels == 1).sum())
    assert res["strategy"] == "random" and res["quota"] == n_sealed
    assert res["sampled_pixels"] == {"sealed": n_sealed, "unsealed": n_sealed}
    agree = res["agreement"]
    labelled = labels.labels > 0
    assert agree["n_samples"] == int(labelled.sum()) == 128 * 128
    assert agree["accuracy"] == pytest.approx(float((cls == labels.labels)[labelled].mean()))
    assert res["disagreeing_pixels"] == int((cls != labels.labels)[labelled].sum()) > 0
    assert set(agree["f1_per_class"]) == {"sealed", "unsealed"}
    assert res["valid_pixels"] == 128 * 128 and res["fit_seconds"] >= 0
    assert [c["name"] for c in res["class_list"]] == ["sealed", "unsealed"]
    assert res["max_depth"] == 10


def test_fully_grown_trees_learn_the_label_noise(scene, tmp_path: Path) -> None:
    """Why max_depth defaults to 10: unlimited trees reproduce the coarse labels' edges."""
    sc, source, labels = _inputs(scene)
    coarse_agreement = float((labels.labels == sc.truth).mean())
    res = pseudo_label(source, labels, tmp_path / "deep", Reporter(),
                       PseudoLabelSettings(trees=20, max_depth=None, n_jobs=1))
    with rasterio.open(res["classes"]) as ds:
        assert (ds.read(1) == sc.truth).mean() < coarse_agreement + 0.01


def test_zero_disagreeing_zeroes_probability_exactly_where_labels_differ(
        scene, tmp_path: Path) -> None:
    sc, source, labels = _inputs(scene)
    plain = pseudo_label(source, labels, tmp_path / "plain", Reporter(), SETTINGS)
    zeroed = pseudo_label(source, labels, tmp_path / "zero", Reporter(),
                          PseudoLabelSettings(trees=20, seed=0, n_jobs=1,
                                              zero_disagreeing=True))
    with rasterio.open(plain["classes"]) as a, rasterio.open(zeroed["classes"]) as b:
        cls = a.read(1)
        assert (b.read(1) == cls).all()  # the classes are unchanged
    with rasterio.open(plain["probability"]) as a, rasterio.open(zeroed["probability"]) as b:
        p_plain, p_zero = a.read(), b.read()
    disagree = (labels.labels > 0) & (cls != labels.labels)
    assert 0 < disagree.sum() < 0.1 * disagree.size
    assert (p_zero[:, disagree] == 0).all()
    assert (p_zero[:, ~disagree] == p_plain[:, ~disagree]).all()
    assert (p_zero.sum(axis=0)[~disagree] > 0.99).all()
    assert zeroed["zero_disagreeing"] and zeroed["disagreeing_pixels"] == int(disagree.sum())


def test_kmeans_and_uniform_sample_their_quota(scene, tmp_path: Path) -> None:
    """Few samples with label noise among them: shallow trees (depth 3) map the truth."""
    sc, source, labels = _inputs(scene)
    km = pseudo_label(source, labels, tmp_path / "km", Reporter(),
                      PseudoLabelSettings(strategy="kmeans", k=50, trees=10, max_depth=3,
                                          n_jobs=1))
    assert km["sampled_pixels"] == {"sealed": 50, "unsealed": 50} and km["quota"] == 50
    uni = pseudo_label(source, labels, tmp_path / "uni", Reporter(),
                       PseudoLabelSettings(strategy="uniform", quota=400, trees=10,
                                           max_depth=3, n_jobs=1))
    assert uni["sampled_pixels"] == {"sealed": 400, "unsealed": 400}
    for res in (km, uni):
        with rasterio.open(res["classes"]) as ds:
            assert (ds.read(1) == sc.truth).mean() > 0.98


def test_outputs_are_checked_before_work_and_settings_are_validated(
        scene, tmp_path: Path) -> None:
    sc, source, labels = _inputs(scene)
    out = tmp_path / "out"
    out.mkdir()
    (out / "classes.tif").write_bytes(b"keep")
    with pytest.raises(OutputError, match="overwrite"):
        pseudo_label(source, labels, out, Reporter(), SETTINGS)
    assert (out / "classes.tif").read_bytes() == b"keep"
    for bad in ({"strategy": "stratified"}, {"quota": 0}, {"trees": 0}, {"max_depth": 0},
                {"class_weight": "heavy"}, {"k": 0}):
        with pytest.raises(ConfigError):
            PseudoLabelSettings(**bad)


def test_quota_above_a_class_is_a_label_error(scene, tmp_path: Path) -> None:
    sc, source, labels = _inputs(scene)
    with pytest.raises(LabelError, match="quota"):
        pseudo_label(source, labels, tmp_path / "o", Reporter(),
                     PseudoLabelSettings(quota=10**6, trees=5, n_jobs=1))
    assert not (tmp_path / "o" / "classes.tif").exists()


def test_coarse_raster_off_the_image_is_a_clear_error(scene, tmp_path: Path) -> None:
    sc, _ = scene
    far = write_coarse_labels(tmp_path / "far.tif", sc.truth,
                              origin=(ORIGIN[0] + 50_000, ORIGIN[1]))
    with pytest.raises(LabelError, match="overlap"):
        load_labels(far, RasterSource(sc.raster).grid)


def test_quickmap_writes_no_zeroed_probability(tmp_path: Path) -> None:
    """write_forest_map's new option is off for quickmap: probabilities still sum to 1."""
    sc = make_scene(tmp_path, size=64)
    source = RasterSource(sc.raster)
    labels = load_labels(sc.labels, source.grid, class_field="klass")
    split = np.where(labels.labels > 0, 0, -1)
    from terraseg.core.forest import ForestSettings
    res = quick_map(source, labels, split, tmp_path / "q", Reporter(),
                    ForestSettings(trees=5, n_jobs=1))
    with rasterio.open(res["probability"]) as ds:
        np.testing.assert_allclose(ds.read().sum(axis=0), 1.0, atol=1e-5)
