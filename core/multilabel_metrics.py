"""Multi-label classification metrics: which labels each sample has, against the truth.

A sample (an image patch) carries a *set* of labels, Y_i for the truth and Z_i for the
prediction, given as (N, K) 0/1 arrays (row = sample, column = class). The measures are
those of seed 004's Tables 2 and 3, defined as in Sorower's survey of multi-label learning
(2010) and Bernardini et al. (2013); N samples, K classes:

- **exact match ratio** (MR): share of samples with Z_i = Y_i (every label right, none
  extra);
- **incorrect** share: samples that are not an exact match and have no correct label
  (Y_i and Z_i disjoint; an empty prediction for a labelled sample counts here);
- **partial** share: the rest, some but not all labels right (exact + partial + incorrect
  = 1);
- **Hamming loss**: share of the N x K sample-label pairs that are wrong;
- **example-based** accuracy |Y∩Z| / |Y∪Z|, precision |Y∩Z| / |Z|, recall |Y∩Z| / |Y| and
  F1 2|Y∩Z| / (|Y| + |Z|), each averaged over the samples (Godbole and Sarawagi 2004); a
  sample whose denominator is 0 scores 1 when Y_i and Z_i are both empty, else 0;
- **micro** precision, recall, F1: from the true/false positives and false negatives summed
  over every class;
- **macro** precision, recall, F1: the unweighted mean of the per-class values over the
  classes that occur in the truth or the prediction (as core/metrics.py does for maps);
- **per class**: precision, recall, F1 (0 where undefined) and support (samples that have
  the class);
- **label cardinality** (1/N) Σ|Y_i| and **density** cardinality / K, of the truth and of
  the prediction. The seed's density divides by |L|, the label set; its Table 2 values
  (1.78 / 0.357 at CORINE level 1 of 5 classes) show |L| = all classes, hence K here.

Single-label results fit the same arrays (one 1 per row): the exact match ratio is then
the overall accuracy and micro F1 equals it too.

Pure numpy; scikit-learn's ``samples``/``micro``/``macro`` averages give the same values
where they measure the same thing (tests/core/test_multilabel_metrics.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from terraseg.protocol.errors import InputError


@dataclass(frozen=True)
class ClassScores:
    """One class's scores over the samples.

    Attributes:
        precision: TP / (TP + FP); 0 when the class is never predicted.
        recall: TP / (TP + FN); 0 when no sample has it.
        f1: 2 TP / (2 TP + FP + FN); 0 when undefined.
        support: Samples whose truth has the class.
        predicted: Samples predicted to have it.
    """

    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


@dataclass(frozen=True)
class MultiLabelMetrics:
    """Multi-label scores of a prediction (see the module docstring for definitions).

    Attributes:
        n_samples: Samples scored (N).
        n_classes: Label columns (K).
        exact_match: Exact match ratio (MR).
        partial: Share of samples with some but not all labels right.
        incorrect: Share of samples with no correct label.
        hamming_loss: Share of wrong sample-label pairs.
        accuracy_examples: Example-based accuracy (mean Jaccard of the label sets).
        precision_examples: Example-based precision.
        recall_examples: Example-based recall.
        f1_examples: Example-based F1.
        precision_micro: Micro-averaged precision.
        recall_micro: Micro-averaged recall.
        f1_micro: Micro-averaged F1.
        precision_macro: Macro-averaged precision over the classes present.
        recall_macro: Macro-averaged recall over the classes present.
        f1_macro: Macro-averaged F1 over the classes present.
        cardinality_true: Mean number of labels per sample in the truth.
        density_true: ``cardinality_true / n_classes``.
        cardinality_pred: Mean number of labels per sample in the prediction.
        density_pred: ``cardinality_pred / n_classes``.
        per_class: Class name -> its scores, in column order.
    """

    n_samples: int
    n_classes: int
    exact_match: float
    partial: float
    incorrect: float
    hamming_loss: float
    accuracy_examples: float
    precision_examples: float
    recall_examples: float
    f1_examples: float
    precision_micro: float
    recall_micro: float
    f1_micro: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    cardinality_true: float
    density_true: float
    cardinality_pred: float
    density_pred: float
    per_class: dict[str, ClassScores]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (per-class scores as nested dicts)."""
        return asdict(self)

    def summary(self) -> dict[str, float]:
        """The headline figures as one flat dict (log lines, epoch metrics)."""
        return {k: v for k, v in asdict(self).items()
                if isinstance(v, float)}


def _ratio(num: np.ndarray, den: np.ndarray, both_empty: np.ndarray) -> np.ndarray:
    """Per sample num / den: 1 where both sets are empty, else 0 where den is 0."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    out[both_empty] = 1.0
    return out


def _safe(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 0.0


def as_label_matrix(a: np.ndarray | Sequence[Sequence[int]], name: str) -> np.ndarray:
    """A (N, K) 0/1 array as bool.

    Raises:
        InputError: Not two-dimensional, or values other than 0 and 1.
    """
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise InputError(f"The {name} labels have shape {arr.shape}; expected (samples, "
                         "classes).", "Give one row per sample and one 0/1 column per class.")
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise InputError(f"The {name} labels hold values other than 0 and 1.",
                         "Threshold probabilities first (e.g. probability >= 0.5).")
    return arr.astype(bool)


def multilabel_metrics(truth: np.ndarray | Sequence[Sequence[int]],
                       pred: np.ndarray | Sequence[Sequence[int]],
                       class_names: Sequence[str] | None = None) -> MultiLabelMetrics:
    """Score predicted label sets against the true ones.

    Args:
        truth: True labels, 0/1 or bool.
        pred: Predicted labels, 0/1 or bool, same shape.
        class_names: One name per column (default ``"1"``, ``"2"``, ...).

    Shape:
        truth, pred: (N, K), N >= 1.

    Raises:
        InputError: Shapes differ, no sample, values other than 0/1, or a wrong number of
            class names.
    """
    y = as_label_matrix(truth, "true")
    z = as_label_matrix(pred, "predicted")
    if y.shape != z.shape or y.shape[0] == 0:
        raise InputError(f"True labels {y.shape} and predictions {z.shape} do not match or "
                         "are empty.", "Give one row per sample in both, same classes.")
    n, k = y.shape
    names = [str(i + 1) for i in range(k)] if class_names is None else list(class_names)
    if len(names) != k:
        raise InputError(f"{len(names)} class names for {k} label columns.",
                         "Name every column once.")
    inter = (y & z).sum(axis=1)
    union = (y | z).sum(axis=1)
    n_true, n_pred = y.sum(axis=1), z.sum(axis=1)
    exact = (y == z).all(axis=1)
    incorrect = ~exact & (inter == 0)
    both_empty = (n_true == 0) & (n_pred == 0)

    tp = (y & z).sum(axis=0)
    fp = (~y & z).sum(axis=0)
    fn = (y & ~z).sum(axis=0)
    per_class = {}
    for i, name in enumerate(names):
        per_class[name] = ClassScores(
            precision=_safe(tp[i], tp[i] + fp[i]), recall=_safe(tp[i], tp[i] + fn[i]),
            f1=_safe(2 * tp[i], 2 * tp[i] + fp[i] + fn[i]), support=int(tp[i] + fn[i]),
            predicted=int(tp[i] + fp[i]))
    present = [s for s in per_class.values() if s.support or s.predicted]

    def macro(attr: str) -> float:
        return float(np.mean([getattr(s, attr) for s in present])) if present else 0.0

    card_t, card_p = float(n_true.mean()), float(n_pred.mean())
    return MultiLabelMetrics(
        n_samples=n, n_classes=k,
        exact_match=float(exact.mean()), partial=float((~exact & ~incorrect).mean()),
        incorrect=float(incorrect.mean()), hamming_loss=float((y ^ z).mean()),
        accuracy_examples=float(_ratio(inter, union, both_empty).mean()),
        precision_examples=float(_ratio(inter, n_pred, both_empty).mean()),
        recall_examples=float(_ratio(inter, n_true, both_empty).mean()),
        f1_examples=float(_ratio(2 * inter, n_true + n_pred, both_empty).mean()),
        precision_micro=_safe(tp.sum(), tp.sum() + fp.sum()),
        recall_micro=_safe(tp.sum(), tp.sum() + fn.sum()),
        f1_micro=_safe(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum()),
        precision_macro=macro("precision"), recall_macro=macro("recall"),
        f1_macro=macro("f1"),
        cardinality_true=card_t, density_true=card_t / k if k else 0.0,
        cardinality_pred=card_p, density_pred=card_p / k if k else 0.0,
        per_class=per_class)


def threshold_probabilities(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Predicted label sets from per-class probabilities: probability >= ``threshold``.

    Shape:
        prob: (N, K) -> bool (N, K).
    """
    return np.asarray(prob) >= threshold


def one_hot(class_index: np.ndarray, n_classes: int) -> np.ndarray:
    """Single-label results as label sets: one True per row at ``class_index``.

    Shape:
        class_index: (N,) 0-based -> bool (N, n_classes).
    """
    idx = np.asarray(class_index, dtype=np.int64)
    out = np.zeros((idx.shape[0], n_classes), dtype=bool)
    out[np.arange(idx.shape[0]), idx] = True
    return out
