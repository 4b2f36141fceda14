"""Threshold tuning on validation pixels never rewards a model without skill (issue 10).

Seen on a landslide run: a model that had barely learnt (probabilities 0.47-0.55) got the
threshold 0.05, which mapped every pixel as landslide, because marking everything as the
positive class already has a fair F1.
"""

from __future__ import annotations

import numpy as np
import pytest

from terraseg.core.decision import tune_threshold


def test_a_model_with_skill_gets_the_threshold_that_maximises_f1() -> None:
    truth = np.array([1] * 20 + [2] * 80)
    p = np.concatenate([np.full(20, 0.35), np.full(80, 0.1)])  # separable at 0.15..0.35
    tuned = tune_threshold(p, truth)
    assert tuned["no_skill"] == 0.0
    assert tuned["f1"] == pytest.approx(1.0)
    assert tuned["value"] == pytest.approx(0.15)  # the first threshold reaching F1 1
    assert tuned["trivial_f1"] == pytest.approx(2 * 20 / (100 + 20))


def test_a_model_without_skill_keeps_0_5_and_says_so() -> None:
    rng = np.random.default_rng(0)
    truth = np.array([1] * 300 + [2] * 700)
    p = rng.uniform(0.47, 0.55, truth.size)  # no relation to the truth
    tuned = tune_threshold(p, truth)
    trivial = 2 * 300 / (1000 + 300)
    assert tuned["trivial_f1"] == pytest.approx(trivial)
    assert tuned["no_skill"] == 1.0 and tuned["value"] == 0.5
    pred = p >= 0.5
    tp = (pred & (truth == 1)).sum()
    assert tuned["f1"] == pytest.approx(2 * tp / (pred.sum() + 300))


def test_everything_marked_positive_is_not_a_skill() -> None:
    truth = np.array([1] * 10 + [2] * 10)
    p = np.full(20, 0.9)  # every pixel called class 1
    tuned = tune_threshold(p, truth)
    assert tuned["no_skill"] == 1.0 and tuned["value"] == 0.5
    assert tuned["f1"] == pytest.approx(tuned["trivial_f1"]) == pytest.approx(2 / 3)
