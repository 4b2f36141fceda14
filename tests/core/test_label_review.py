"""Scores of mislabelled regions (core/label_review.py) on hand-made probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from terraseg.core.label_review import (
    RegionAccumulator,
    check_ranking,
    check_review_numbers,
    confident_learning,
    rank_order,
    region_scores,
    suspicion,
)
from terraseg.protocol.errors import ConfigError


def test_region_scores_average_loss_and_probabilities_per_region() -> None:
    probs = np.array([[0.9, 0.1], [0.5, 0.5],               # region 7, class 1
                      [0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])  # region 3, class 2
    given = np.array([1, 1, 2, 2, 2])
    regions = np.array([7, 7, 3, 3, 3])
    s = region_scores(probs, given, regions)
    assert s.region_ids.tolist() == [3, 7]
    assert s.given.tolist() == [2, 1]
    assert s.pixels.tolist() == [3, 2]
    np.testing.assert_allclose(s.mean_probs, [[0.7, 0.3], [0.7, 0.3]])
    np.testing.assert_allclose(s.loss, [-(np.log(0.2) + np.log(0.4) + np.log(0.3)) / 3,
                                        -(np.log(0.9) + np.log(0.5)) / 2])
    assert s.predicted.tolist() == [1, 1]
    np.testing.assert_allclose(s.given_probability, [0.3, 0.7])


def test_region_scores_take_the_majority_label_and_clip_zero_probabilities() -> None:
    probs = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    s = region_scores(probs, np.array([1, 3, 3]), np.array([1, 1, 1]))
    assert s.given.tolist() == [3]
    assert s.loss[0] == pytest.approx(-np.log(1e-12) / 3)
    with pytest.raises(ValueError, match="1..3"):
        region_scores(probs, np.array([0, 1, 1]), np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="one class and region per pixel"):
        region_scores(probs, np.array([1, 1]), np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="N > 0"):
        region_scores(np.zeros((0, 3)), np.zeros(0), np.zeros(0))


def test_accumulated_batches_score_as_all_pixels_at_once() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), 200)
    given = rng.integers(1, 4, 200)
    regions = rng.choice([2, 5, 9], 200)
    acc = RegionAccumulator(12, 3)
    for part in np.array_split(np.arange(200), 7):
        acc.add(probs[part], given[part], regions[part])
    acc.add(np.zeros((0, 3)), np.zeros(0), np.zeros(0))  # an empty batch changes nothing
    a, b = acc.result(), region_scores(probs, given, regions)
    assert a.region_ids.tolist() == [2, 5, 9]
    for field in ("given", "mean_probs", "loss", "pixels"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field))
    sel = regions == 5
    assert a.loss[1] == pytest.approx(-np.log(probs[sel, given[sel] - 1]).mean())
    with pytest.raises(ValueError, match="region ids must be 1..12"):
        acc.add(probs[:1], given[:1], np.array([13]))


def _regions_with_one_flip() -> tuple[np.ndarray, np.ndarray]:
    """18 regions of 3 classes; region 4 is labelled 1 but is a typical class-2 region.

    Confident learning counts a region as confidently of class j when P(j) reaches the mean
    P(j) of the regions labelled j, so the flipped region predicts its true class as
    confidently as the others of that class do (0.9; the rest 0.75-0.95).
    """
    rng = np.random.default_rng(0)
    given = np.repeat([1, 2, 3], 6)
    truth = given.copy()
    truth[4] = 2
    probs = rng.uniform(0.0, 0.1, (18, 3))
    probs[np.arange(18), truth - 1] = rng.uniform(0.75, 0.95, 18)
    probs /= probs.sum(axis=1, keepdims=True)
    probs[4] = [0.02, 0.97, 0.01]
    return given, probs


def test_cleanlab_flags_the_flipped_region_only() -> None:
    given, probs = _regions_with_one_flip()
    cl = confident_learning(given, probs)
    assert np.flatnonzero(cl.issue).tolist() == [4]
    # self-confidence: the probability of the given class
    np.testing.assert_allclose(cl.quality, probs[np.arange(18), given - 1])
    assert cl.quality.argmin() == 4


def test_cleanlab_handles_a_class_without_regions() -> None:
    given, probs = _regions_with_one_flip()
    keep = given < 3  # no region of class 3, yet three columns
    cl = confident_learning(given[keep], probs[keep])
    assert np.flatnonzero(cl.issue).tolist() == [4]
    assert any("too few examples" in w for w in cl.warnings)


def test_rankings_order_from_most_to_least_suspicious() -> None:
    loss = np.array([0.1, 2.0, 0.5, 2.0])
    quality = np.array([0.9, 0.2, 0.1, 0.3])
    by_loss = suspicion("loss", loss, quality)
    by_cl = suspicion("cleanlab", loss, quality)
    np.testing.assert_allclose(by_cl, [0.1, 0.8, 0.9, 0.7])
    assert rank_order(by_loss, 1 - quality).tolist() == [1, 3, 2, 0]  # tie: lower quality first
    assert rank_order(by_cl, loss).tolist() == [2, 1, 3, 0]
    assert check_ranking("cleanlab") == "cleanlab"
    with pytest.raises(ConfigError) as err:
        check_ranking("margin")
    assert "loss, cleanlab" in err.value.hint


def test_review_numbers_name_the_flag() -> None:
    check_review_numbers(2, 0)
    with pytest.raises(ConfigError, match="--k is 1"):
        check_review_numbers(1, 50)
    with pytest.raises(ConfigError, match="--top is -1"):
        check_review_numbers(5, -1)
