"""Scores of how likely each labelled region's class is wrong (``terraseg review``).

Pure numpy (plus ``cleanlab``): the out-of-fold class probabilities of a region's
labelled pixels (from a model that never trained on that region, training/review.py)
become two scores per region.

- **Loss** (the study's way): the mean cross-entropy of the given class over the region's
  pixels, ``mean(-log p[given])``. High when the models confidently predict another class.
- **Confident learning** (``cleanlab``): each region is one example, its given class and its
  mean probability vector; :func:`cleanlab.rank.get_label_quality_scores` gives a quality in
  [0, 1] (self-confidence: the mean probability of the given class) and
  :func:`cleanlab.filter.find_label_issues` flags the regions whose class is likely wrong,
  from per-class confidence thresholds (the confident joint, pruned by noise rate).

A ranking orders the regions by ``score``, higher = more suspicious: the loss, or
``1 - quality`` for confident learning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from terraseg.protocol.errors import ConfigError

Ranking = Literal["loss", "cleanlab"]
RANKINGS: tuple[str, ...] = ("loss", "cleanlab")
#: Probabilities are clipped here before the logarithm (a loss of at most ~27.6).
EPS = 1e-12


@dataclass(frozen=True)
class RegionScores:
    """Per-region summary of out-of-fold pixel probabilities.

    Attributes:
        region_ids: Region ids (``LabelSet.regions`` values), ascending. Shape: (R,).
        given: Given class id 1..K per region (its pixels' most frequent label). Shape: (R,).
        mean_probs: Mean class probability vector of the region's pixels. Shape: (R, K).
        loss: Mean cross-entropy of the pixels' given class. Shape: (R,).
        pixels: Labelled pixels scored per region. Shape: (R,).
    """

    region_ids: np.ndarray
    given: np.ndarray
    mean_probs: np.ndarray
    loss: np.ndarray
    pixels: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        """Most probable class id 1..K of each region's mean probabilities. Shape: (R,)."""
        return self.mean_probs.argmax(axis=1) + 1

    @property
    def given_probability(self) -> np.ndarray:
        """Mean probability of the given class per region. Shape: (R,)."""
        return self.mean_probs[np.arange(len(self.given)), self.given - 1]


@dataclass(frozen=True)
class ConfidentLearning:
    """cleanlab's verdict per region.

    Attributes:
        quality: Label quality in [0, 1], low = likely wrong. Shape: (R,).
        issue: Whether ``find_label_issues`` flags the region. Shape: (R,).
        warnings: cleanlab's warnings (e.g. a class with too few regions), for the log.
    """

    quality: np.ndarray
    issue: np.ndarray
    warnings: tuple[str, ...] = ()


def region_scores(probs: np.ndarray, given: np.ndarray, regions: np.ndarray) -> RegionScores:
    """Aggregate pixel probabilities per region.

    Args:
        probs: Class probabilities of labelled pixels. Shape: (N, K).
        given: Given class id 1..K of each pixel. Shape: (N,).
        regions: Region id (> 0) of each pixel. Shape: (N,).

    Raises:
        ValueError: Mismatched lengths, a class id outside 1..K, or no pixel.
    """
    probs = np.asarray(probs, dtype=np.float64)
    given = np.asarray(given, dtype=np.int64)
    regions = np.asarray(regions, dtype=np.int64)
    n, k = probs.shape
    if n == 0 or len(given) != n or len(regions) != n:
        raise ValueError(f"need N > 0 pixels with one class and region each: probs {n}, "
                         f"given {len(given)}, regions {len(regions)}")
    if given.min() < 1 or given.max() > k:
        raise ValueError(f"given class ids must be 1..{k}")
    ids, inverse = np.unique(regions, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    sums = np.zeros((len(ids), k))
    np.add.at(sums, inverse, probs)
    pixel_loss = -np.log(np.clip(probs[np.arange(n), given - 1], EPS, 1.0))
    loss = np.bincount(inverse, weights=pixel_loss, minlength=len(ids)) / counts
    votes = np.zeros((len(ids), k), dtype=np.int64)
    np.add.at(votes, (inverse, given - 1), 1)
    return RegionScores(region_ids=ids, given=votes.argmax(axis=1) + 1,
                        mean_probs=sums / counts[:, None], loss=loss,
                        pixels=counts.astype(np.int64))


def confident_learning(given: np.ndarray, mean_probs: np.ndarray) -> ConfidentLearning:
    """Label quality and label issues of regions, as cleanlab finds them.

    Args:
        given: Given class id 1..K per region. Shape: (R,).
        mean_probs: Mean out-of-fold probabilities per region. Shape: (R, K).
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(given, dtype=np.int64) - 1
    p = np.clip(np.asarray(mean_probs, dtype=np.float64), 0.0, None)
    p = p / p.sum(axis=1, keepdims=True)  # exact rows of 1 (cleanlab checks them)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quality = get_label_quality_scores(labels, p, method="self_confidence")
        issue = find_label_issues(labels, p, filter_by="prune_by_noise_rate", n_jobs=1)
    notes = tuple(dict.fromkeys(str(w.message) for w in caught))
    return ConfidentLearning(np.asarray(quality, dtype=np.float64),
                             np.asarray(issue, dtype=bool), notes)


def check_review_numbers(k: int, top: int) -> None:
    """``--k`` of 2 or more and ``--top`` of 0 or more.

    Raises:
        ConfigError: Naming the flag and a valid value.
    """
    if k < 2:
        raise ConfigError(f"--k is {k}; review needs 2 or more folds so that no region is "
                          "scored by a model that trained on it.", "Use e.g. --k 5.")
    if top < 0:
        raise ConfigError(f"--top is {top}; it must be 0 or more.", "Use e.g. --top 50.")


def check_ranking(ranking: str) -> Ranking:
    """``loss`` or ``cleanlab``.

    Raises:
        ConfigError: Any other name (listing the valid ones).
    """
    if ranking not in RANKINGS:
        raise ConfigError(f"Unknown ranking '{ranking}'.", f"Use one of: {', '.join(RANKINGS)}.")
    return ranking  # type: ignore[return-value]


def suspicion(ranking: Ranking, loss: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """The score a ranking sorts by, higher = more suspicious: loss, or 1 - quality."""
    check_ranking(ranking)
    return np.asarray(loss if ranking == "loss" else 1.0 - np.asarray(quality), dtype=np.float64)


def rank_order(score: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
    """Indices from most to least suspicious: by ``score``, then ``tie_break``, descending."""
    return np.lexsort((-np.asarray(tie_break), -np.asarray(score)))
