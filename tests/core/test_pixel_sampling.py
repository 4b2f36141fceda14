"""The study's pixel sampling strategies (core/pixel_sampling.py): all, random, uniform, kmeans.

The raster is a 40 x 50 px, 3-band float32 GeoTIFF in EPSG:32632 with nodata -9999 in a
corner; class 1 (rows 0-19) holds three well-separated spectral clusters in row bands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.synthetic import write_raster

from terraseg.core import forest, pixel_sampling
from terraseg.core.pixel_sampling import STRATEGIES, choose_samples, usable_mask
from terraseg.core.raster import RasterSource
from terraseg.protocol.errors import ConfigError, LabelError, RasterError

H, W = 40, 50
NODATA = -9999.0
#: Class 1's spectral clusters: rows -> band values.
CLUSTERS = {(0, 7): (10.0, 10.0, 10.0), (7, 14): (100.0, 50.0, 0.0),
            (14, 20): (0.0, 200.0, 100.0)}


def _data() -> np.ndarray:
    rng = np.random.default_rng(1)
    data = rng.normal(60.0, 3.0, (3, H, W)).astype(np.float32)
    for (r0, r1), vals in CLUSTERS.items():
        for b, v in enumerate(vals):
            data[b, r0:r1] = v + rng.normal(0, 1.0, (r1 - r0, W))
    data[:, 0:5, 0:10] = NODATA  # 50 px of class 1 on nodata
    return data


def _labels() -> np.ndarray:
    labels = np.zeros((H, W), np.uint8)
    labels[0:20] = 1  # 1000 labelled, 950 usable
    labels[25:35, 10:30] = 2  # 200
    labels[36:40, 0:10] = 3  # 40
    return labels


@pytest.fixture()
def source(tmp_path: Path):
    path = write_raster(tmp_path / "img.tif", _data(), nodata=NODATA)
    with RasterSource(path) as src:
        yield src


def test_usable_mask_drops_nodata_and_unlabelled(source, monkeypatch) -> None:
    labels = _labels()
    expected = (labels > 0) & (_data()[0] != NODATA)
    assert (usable_mask(source, labels) == expected).all()
    monkeypatch.setattr(pixel_sampling, "READ_BLOCK_PX", 16)  # many blocks, ragged edges
    assert (usable_mask(source, labels) == expected).all()


def test_all_takes_every_usable_pixel(source) -> None:
    choice = choose_samples(source, _labels(), "all")
    assert choice.counts == {1: 950, 2: 200, 3: 40}
    assert choice.quota is None and choice.strategy == "all"
    assert len(choice.positions) == 1190 and choice.positions.dtype == np.int64
    assert (np.diff(choice.positions) > 0).all()
    rows, cols = choice.positions // W, choice.positions % W
    assert not ((rows < 5) & (cols < 10)).any()  # nodata never sampled


@pytest.mark.parametrize("strategy", ["random", "uniform"])
def test_quota_defaults_to_smallest_class(source, strategy: str) -> None:
    labels = _labels()
    choice = choose_samples(source, labels, strategy, seed=3)
    assert choice.quota == 40 and choice.counts == {1: 40, 2: 40, 3: 40}
    ids = labels.ravel()[choice.positions]
    assert [(ids == c).sum() for c in (1, 2, 3)] == [40, 40, 40]
    assert len(np.unique(choice.positions)) == 120
    assert (np.diff(choice.positions) > 0).all()
    rows, cols = choice.positions // W, choice.positions % W
    assert not ((rows < 5) & (cols < 10)).any()
    explicit = choose_samples(source, labels, strategy, quota=25)
    assert explicit.quota == 25 and explicit.counts == {1: 25, 2: 25, 3: 25}


def test_random_is_seeded(source) -> None:
    labels = _labels()
    a = choose_samples(source, labels, "random", seed=7)
    b = choose_samples(source, labels, "random", seed=7)
    c = choose_samples(source, labels, "random", seed=8)
    assert np.array_equal(a.positions, b.positions)
    assert not np.array_equal(a.positions, c.positions)


def test_uniform_is_evenly_strided_over_the_class_extent(source) -> None:
    labels = _labels()
    choice = choose_samples(source, labels, "uniform", quota=20)
    # class 2: rows 25-34, cols 10-29 (200 px) -> stride 10: one pick every half row
    members = np.flatnonzero(labels.ravel() == 2)
    picks = choice.positions[labels.ravel()[choice.positions] == 2]
    ranks = np.searchsorted(members, picks)
    assert len(picks) == 20 and set(np.diff(ranks)) == {10}
    rows = picks // W
    assert rows.min() == 25 and rows.max() == 34
    assert set(rows) == set(range(25, 35))  # two picks in every row of the class
    # class 1 (950 usable, nodata corner skipped): stride 47, rows 0..19 covered
    picks1 = choice.positions[labels.ravel()[choice.positions] == 1]
    usable1 = np.flatnonzero((labels.ravel() == 1) & (_data()[0].ravel() != NODATA))
    assert set(np.diff(np.searchsorted(usable1, picks1))) == {47}
    assert (picks1 // W).min() <= 1 and (picks1 // W).max() >= 18
    assert choose_samples(source, labels, "uniform", quota=20, seed=9).positions.tolist() \
        == choice.positions.tolist()  # deterministic


def _cluster_of(row: int) -> int:
    return next(i for i, (r0, r1) in enumerate(CLUSTERS) if r0 <= row < r1)


@pytest.mark.parametrize("block", [480, 16])
def test_kmeans_picks_one_pixel_per_spectral_cluster(source, monkeypatch, block) -> None:
    monkeypatch.setattr(pixel_sampling, "READ_BLOCK_PX", block)
    monkeypatch.setattr(forest, "READ_BLOCK_PX", block)
    labels = np.zeros((H, W), np.uint8)
    labels[0:20] = 1
    choice = choose_samples(source, labels, "kmeans", k=3, seed=0)
    assert choice.quota == 3 and choice.counts == {1: 3} and choice.strategy == "kmeans"
    rows = choice.positions // W
    assert sorted(_cluster_of(int(r)) for r in rows) == [0, 1, 2]
    # each pick is a real pixel close to its cluster's values, never on nodata
    data = _data()
    for p in choice.positions:
        r, c = divmod(int(p), W)
        vals = next(v for (r0, r1), v in CLUSTERS.items() if r0 <= r < r1)
        assert np.abs(data[:, r, c] - np.array(vals)).max() < 5.0


def test_kmeans_takes_k_distinct_pixels_per_class_from_a_capped_candidate_set(source) -> None:
    labels = _labels()
    choice = choose_samples(source, labels, "kmeans", k=30, seed=1, max_candidates=200)
    assert choice.counts == {1: 30, 2: 30, 3: 30} and choice.quota == 30
    assert len(np.unique(choice.positions)) == 90
    ids = labels.ravel()[choice.positions]
    assert [(ids == c).sum() for c in (1, 2, 3)] == [30, 30, 30]
    rows, cols = choice.positions // W, choice.positions % W
    assert not ((rows < 5) & (cols < 10)).any()
    # k equal to the class's count takes every pixel of it
    every = choose_samples(source, labels, "kmeans", k=40, seed=1)
    picks3 = every.positions[labels.ravel()[every.positions] == 3]
    assert picks3.tolist() == np.flatnonzero(labels.ravel() == 3).tolist()


def test_quota_above_a_class_count_names_class_count_and_fix(source) -> None:
    with pytest.raises(LabelError) as err:
        choose_samples(source, _labels(), "random", quota=100)
    msg = str(err.value)
    assert "Class 3" in msg and "40" in msg and "100" in msg and "--quota" in msg


def test_k_above_a_class_count_names_class_and_count(source) -> None:
    with pytest.raises(LabelError) as err:
        choose_samples(source, _labels(), "kmeans", k=41)
    msg = str(err.value)
    assert "Class 3" in msg and "only 40" in msg and "--k" in msg


def test_labels_all_on_nodata(source) -> None:
    labels = np.zeros((H, W), np.uint8)
    labels[0:5, 0:10] = 1
    with pytest.raises(RasterError) as err:
        choose_samples(source, labels, "all")
    assert "All 50 labelled pixels lie on nodata" in str(err.value)
    assert "Fix:" in str(err.value)


def test_a_class_only_on_nodata_is_named(source) -> None:
    labels = _labels()
    labels[0:5, 0:10] = 4
    with pytest.raises(LabelError, match="Class 4: all its 50 labelled pixels lie on nodata"):
        choose_samples(source, labels, "random")


def test_no_labels(source) -> None:
    with pytest.raises(LabelError, match="no labelled pixel"):
        choose_samples(source, np.zeros((H, W), np.uint8))


def test_labels_off_the_grid(source) -> None:
    with pytest.raises(LabelError, match="50x40 px"):
        choose_samples(source, np.ones((10, 10), np.uint8))


def test_unknown_strategy_and_bad_sizes(source) -> None:
    with pytest.raises(ConfigError) as err:
        choose_samples(source, _labels(), "stratified")
    assert "'stratified'" in str(err.value)
    assert all(s in str(err.value) for s in STRATEGIES)
    with pytest.raises(ConfigError, match="--quota is 0"):
        choose_samples(source, _labels(), "random", quota=0)
    with pytest.raises(ConfigError, match="--k is 0"):
        choose_samples(source, _labels(), "kmeans", k=0)
    with pytest.raises(ConfigError, match="Raise max_candidates"):
        choose_samples(source, _labels(), "kmeans", k=20, max_candidates=10)


def test_kmeans_values_line_up_with_their_positions(source, monkeypatch) -> None:
    """read_pixels groups pixels by read block; the positions are put in the same order."""
    monkeypatch.setattr(forest, "READ_BLOCK_PX", 16)
    monkeypatch.setattr(pixel_sampling, "READ_BLOCK_PX", 16)
    labels = _labels()
    positions = np.flatnonzero(usable_mask(source, labels))[::-7][::-1]
    values, ordered = pixel_sampling._values_in_order(source, labels, positions)
    assert sorted(ordered.tolist()) == positions.tolist()
    data = _data().reshape(3, -1)
    assert np.array_equal(values, data[:, ordered].T.astype(np.float64))
    assert not np.array_equal(ordered, positions)  # the blocks really reorder them
