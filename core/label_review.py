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
Scorer = Literal["network", "forest"]
#: What predicts the held-out regions: k trained networks, or k random forests of pixels.
SCORERS: tuple[str, ...] = ("network", "forest")
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


class RegionAccumulator:
    """Per-region sums of pixel probabilities, losses and labels, added batch by batch.

    Memory is per region (ids up to ``max_region``), not per pixel, so dense label rasters
    can be scored block by block.

    Args:
        max_region: Largest region id that may be added.
        n_classes: K, the number of classes.
    """

    def __init__(self, max_region: int, n_classes: int) -> None:
        self.k = n_classes
        self.sums = np.zeros((max_region + 1, n_classes))
        self.votes = np.zeros((max_region + 1, n_classes), dtype=np.int64)
        self.loss = np.zeros(max_region + 1)

    def add(self, probs: np.ndarray, given: np.ndarray, regions: np.ndarray) -> None:
        """Add pixels.

        Args:
            probs: Class probabilities of labelled pixels. Shape: (N, K).
            given: Given class id 1..K of each pixel. Shape: (N,).
            regions: Region id (1..max_region) of each pixel. Shape: (N,).

        Raises:
            ValueError: Mismatched lengths, or a class or region id out of range.
        """
        probs = np.asarray(probs, dtype=np.float64).reshape(-1, self.k)
        given = np.asarray(given, dtype=np.int64)
        regions = np.asarray(regions, dtype=np.int64)
        n = len(probs)
        if len(given) != n or len(regions) != n:
            raise ValueError(f"need one class and region per pixel: probs {n}, given "
                             f"{len(given)}, regions {len(regions)}")
        if n == 0:
            return
        if given.min() < 1 or given.max() > self.k:
            raise ValueError(f"given class ids must be 1..{self.k}")
        if regions.min() < 1 or regions.max() >= len(self.loss):
            raise ValueError(f"region ids must be 1..{len(self.loss) - 1}")
        np.add.at(self.sums, regions, probs)
        np.add.at(self.votes, (regions, given - 1), 1)
        p_given = np.clip(probs[np.arange(n), given - 1], EPS, 1.0)
        self.loss += np.bincount(regions, weights=-np.log(p_given), minlength=len(self.loss))

    def result(self) -> RegionScores:
        """The scores of every region with pixels.

        Raises:
            ValueError: No pixel was added.
        """
        counts = self.votes.sum(axis=1)
        ids = np.flatnonzero(counts)
        if len(ids) == 0:
            raise ValueError("need N > 0 pixels to score regions")
        c = counts[ids].astype(np.float64)
        return RegionScores(region_ids=ids, given=self.votes[ids].argmax(axis=1) + 1,
                            mean_probs=self.sums[ids] / c[:, None], loss=self.loss[ids] / c,
                            pixels=counts[ids])


def region_scores(probs: np.ndarray, given: np.ndarray, regions: np.ndarray) -> RegionScores:
    """Aggregate pixel probabilities per region (:class:`RegionAccumulator` in one go).

    Args:
        probs: Class probabilities of labelled pixels. Shape: (N, K).
        given: Given class id 1..K of each pixel. Shape: (N,).
        regions: Region id (> 0) of each pixel. Shape: (N,).

    Raises:
        ValueError: Mismatched lengths, a class id outside 1..K, or no pixel.
    """
    probs = np.asarray(probs)
    regions = np.asarray(regions, dtype=np.int64)
    acc = RegionAccumulator(int(regions.max(initial=0)), probs.shape[1])
    acc.add(probs, given, regions)
    return acc.result()


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


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` when it is one of ``choices``, else a ConfigError listing them."""
    if value not in choices:
        raise ConfigError(f"Unknown {what} '{value}'.", f"Use one of: {', '.join(choices)}.")
    return value


def check_ranking(ranking: str) -> Ranking:
    """``loss`` or ``cleanlab``.

    Raises:
        ConfigError: Any other name (listing the valid ones).
    """
    return _check_choice(ranking, RANKINGS, "ranking")  # type: ignore[return-value]


def check_scorer(scorer: str) -> Scorer:
    """``network`` or ``forest``.

    Raises:
        ConfigError: Any other name (listing the valid ones).
    """
    return _check_choice(scorer, SCORERS, "scorer")  # type: ignore[return-value]


def suspicion(ranking: Ranking, loss: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """The score a ranking sorts by, higher = more suspicious: loss, or 1 - quality."""
    check_ranking(ranking)
    return np.asarray(loss if ranking == "loss" else 1.0 - np.asarray(quality), dtype=np.float64)


def rank_order(score: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
    """Indices from most to least suspicious: by ``score``, then ``tie_break``, descending."""
    return np.lexsort((-np.asarray(tie_break), -np.asarray(score)))
