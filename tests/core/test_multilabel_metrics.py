"""Multi-label metrics: hand-computed values, edge conventions, scikit-learn cross-checks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    hamming_loss,
    jaccard_score,
    precision_recall_fscore_support,
)

from terraseg.core.multilabel_metrics import multilabel_metrics, one_hot, threshold_probabilities
from terraseg.protocol.errors import InputError

# 4 samples, 3 classes: exact / partial (one extra) / no overlap / nothing predicted
Y = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1], [0, 0, 1]])
Z = np.array([[1, 1, 0], [0, 1, 1], [0, 1, 0], [0, 0, 0]])


def test_hand_computed_example() -> None:
    m = multilabel_metrics(Y, Z, ["urban", "crops", "forest"])
    assert (m.n_samples, m.n_classes) == (4, 3)
    assert m.exact_match == pytest.approx(0.25)
    assert m.partial == pytest.approx(0.25)
    assert m.incorrect == pytest.approx(0.5)  # rows 2 (disjoint) and 3 (empty prediction)
    assert m.hamming_loss == pytest.approx(5 / 12)
    assert m.accuracy_examples == pytest.approx((1 + 1 / 2) / 4)
    assert m.precision_examples == pytest.approx((1 + 1 / 2) / 4)
    assert m.recall_examples == pytest.approx((1 + 1) / 4)
    assert m.f1_examples == pytest.approx((1 + 2 / 3) / 4)
    assert m.precision_micro == pytest.approx(3 / 5)
    assert m.recall_micro == pytest.approx(3 / 6)
    assert m.f1_micro == pytest.approx(6 / 11)
    assert m.precision_macro == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert m.recall_macro == pytest.approx((0.5 + 1 + 0) / 3)
    assert m.f1_macro == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert m.cardinality_true == pytest.approx(1.5) and m.density_true == pytest.approx(0.5)
    assert m.cardinality_pred == pytest.approx(1.25)
    assert m.density_pred == pytest.approx(1.25 / 3)
    urban, crops = m.per_class["urban"], m.per_class["crops"]
    assert (urban.precision, urban.recall, urban.support, urban.predicted) == (1.0, 0.5, 2, 1)
    assert urban.f1 == pytest.approx(2 / 3)
    assert crops.precision == pytest.approx(2 / 3) and crops.f1 == pytest.approx(0.8)
    assert m.per_class["forest"].f1 == 0.0
    assert m.summary()["f1_micro"] == pytest.approx(6 / 11)
    assert m.to_dict()["per_class"]["crops"]["support"] == 2


def test_empty_sets_and_absent_classes() -> None:
    # both empty = agreement; a class nobody has nor predicts is left out of macro averages
    y = np.array([[0, 0, 0], [1, 0, 0]])
    z = np.array([[0, 0, 0], [1, 0, 0]])
    m = multilabel_metrics(y, z)
    assert m.exact_match == 1.0 and m.incorrect == 0.0 and m.hamming_loss == 0.0
    assert m.f1_examples == 1.0 and m.precision_examples == 1.0 and m.accuracy_examples == 1.0
    assert m.f1_macro == 1.0 and m.precision_macro == 1.0  # only class "1" is present
    assert m.per_class["2"].support == 0 and m.per_class["2"].f1 == 0.0


def test_single_label_as_label_sets() -> None:
    truth, pred = one_hot(np.array([0, 1, 2, 1]), 3), one_hot(np.array([0, 1, 1, 1]), 3)
    m = multilabel_metrics(truth, pred)
    assert m.exact_match == pytest.approx(0.75) and m.f1_micro == pytest.approx(0.75)
    assert m.incorrect == pytest.approx(0.25) and m.partial == 0.0
    assert m.cardinality_true == 1.0


def test_agrees_with_scikit_learn_on_random_label_sets() -> None:
    rng = np.random.default_rng(3)
    y = rng.random((200, 6)) < 0.3
    z = threshold_probabilities(np.clip(y * 0.6 + rng.random((200, 6)) * 0.6, 0, 1), 0.55)
    y[(~y.any(axis=1)) & (~z.any(axis=1)), 0] = True  # sklearn scores both-empty rows 0
    m = multilabel_metrics(y, z)
    assert m.exact_match == pytest.approx(accuracy_score(y, z))
    assert m.hamming_loss == pytest.approx(hamming_loss(y, z))
    assert m.accuracy_examples == pytest.approx(
        jaccard_score(y, z, average="samples", zero_division=0))
    for avg in ("samples", "micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(y, z, average=avg, zero_division=0)
        suffix = "examples" if avg == "samples" else avg
        assert getattr(m, f"precision_{suffix}") == pytest.approx(p), avg
        assert getattr(m, f"recall_{suffix}") == pytest.approx(r), avg
        assert getattr(m, f"f1_{suffix}") == pytest.approx(f), avg
    p, r, f, s = precision_recall_fscore_support(y, z, average=None, zero_division=0)
    for i, scores in enumerate(m.per_class.values()):
        assert (scores.precision, scores.recall, scores.f1) == pytest.approx((p[i], r[i], f[i]))
        assert scores.support == s[i]
    assert m.exact_match + m.partial + m.incorrect == pytest.approx(1.0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(InputError, match="do not match"):
        multilabel_metrics(Y, Z[:, :2])
    with pytest.raises(InputError, match="values other than 0 and 1"):
        multilabel_metrics(Y, Z * 0.7)
    with pytest.raises(InputError, match="expected \\(samples, classes\\)"):
        multilabel_metrics(Y[0], Z[0])
    with pytest.raises(InputError, match="2 class names for 3"):
        multilabel_metrics(Y, Z, ["a", "b"])
