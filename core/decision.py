"""From class probabilities to class ids: the one threshold rule.

Two-class models may carry a threshold on P(class 1), tuned on validation pixels at
training (:func:`tune_threshold`) and stored in the model file. Prediction, evaluation,
held-out metrics at training and the random-forest baseline of ``compare`` all turn
probabilities into classes with :func:`class_ids`, so the rule exists once.
"""

from __future__ import annotations

import numpy as np

from terraseg.protocol.errors import ConfigError, InputError
from terraseg.protocol.model_meta import ModelMeta

THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)
#: A tuned threshold must beat marking every pixel as class 1 by this much F1 (else 0.5).
SKILL_MARGIN = 0.02


def class_ids(probs: np.ndarray, threshold: float | None, axis: int = 0) -> np.ndarray:
    """Class ids 1..K: class 1 where P(class 1) >= threshold (two classes), else argmax.

    Args:
        probs: Class probabilities with the classes along ``axis``.
            Shape: (K, ...) for ``axis=0``; (N, K) for ``axis=1``.
        threshold: Threshold on P(class 1), or None for the most probable class.
        axis: The class axis.

    Returns:
        int64 class ids with the class axis removed.
    """
    if threshold is not None:
        return np.where(np.take(probs, 0, axis=axis) >= threshold, 1, 2)
    return probs.argmax(axis) + 1


def check_finite(probs: np.ndarray, valid: np.ndarray, where: str) -> None:
    """Refuse non-finite probabilities at valid pixels rather than write them as a map.

    Args:
        probs: Class probabilities. Shape: (K, h, w).
        valid: Output validity. Shape: (h, w).
        where: The window, for the message.

    Raises:
        InputError: NaN or infinite probabilities (the raster holds values outside the
            range the model's normalisation can take, or the model file is damaged).
    """
    bad = ~np.isfinite(probs).all(axis=0) & valid
    if bad.any():
        raise InputError(
            f"The model produced {int(bad.sum())} non-finite probabilities in {where}: the "
            "raster holds values the model's normalisation cannot take (inf, or far outside "
            "the training raster's range), or the model file is damaged.",
            "Check the raster's values and nodata setting (e.g. gdalinfo -stats), or retrain "
            "or re-copy the model; nothing was written.")


def resolve_threshold(meta: ModelMeta, threshold: float | None) -> float | None:
    """The threshold to use: the given one, else the model's tuned one (two classes only).

    Raises:
        ConfigError: Threshold outside 0..1, or given for a model with more than 2 classes.
    """
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"Threshold {threshold} is outside 0..1.",
                              "Give a probability, e.g. --threshold 0.4.")
        if len(meta.classes) != 2:
            raise ConfigError("A threshold applies to two-class models only.",
                              "Leave out --threshold: classes are the most probable ones.")
        return float(threshold)
    stored = meta.threshold
    return float(stored.value) if stored is not None and len(meta.classes) == 2 else None


def tune_threshold(p_first: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Threshold on P(class 1) that maximises class 1's F1 (grid 0.05..0.95, step 0.05).

    A model without skill is not rewarded: marking *every* pixel as class 1 already scores
    F1 = 2P / (N + P) (P pixels of class 1 among N), so a weak model's best threshold is
    often the lowest one, which maps (nearly) everything as class 1 - a silently wrong map.
    When the best F1 does not beat that trivial F1 by :data:`SKILL_MARGIN`, the threshold
    stays at 0.5 and ``no_skill`` is 1.0, so callers can warn.

    Args:
        p_first: P(class 1) per pixel. Shape: (N,).
        truth: Reference class ids 1..K. Shape: (N,).

    Returns:
        ``{"value": threshold, "f1": its F1, "trivial_f1": F1 of marking every pixel as
        class 1, "no_skill": 1.0 or 0.0}``.
    """
    positive = truth == 1
    n, n_pos = positive.size, float(positive.sum())
    trivial = 2 * n_pos / (n + n_pos) if n else 0.0

    def f1_at(t: float) -> float:
        pred = p_first >= t
        tp = float((pred & positive).sum())
        denom = float(pred.sum() + n_pos)
        return 2 * tp / denom if denom else 0.0

    best = {"value": 0.5, "f1": -1.0}
    for t in THRESHOLD_GRID:
        f1 = f1_at(float(t))
        if f1 > best["f1"]:
            best = {"value": float(t), "f1": f1}
    if best["f1"] < trivial + SKILL_MARGIN:
        return {"value": 0.5, "f1": f1_at(0.5), "trivial_f1": trivial, "no_skill": 1.0}
    return {**best, "trivial_f1": trivial, "no_skill": 0.0}
