"""Which labelled pixels a pixel classifier is fitted on: the study's sampling strategies.

Mirpulatov et al. (pseudo-labelling land cover with noisy labels) fit a random forest on a
balanced subset of the labelled pixels, one equal share per class; the share defaults to
the smallest class's pixel count. Four strategies choose the pixels:

- ``all``: every usable pixel (no balancing).
- ``random``: ``quota`` pixels per class, uniformly at random (seeded).
- ``uniform``: ``quota`` pixels per class spread evenly in space: the class's pixels in
  raster order, every n-th kept (n = count // quota), so they cover the class's extent.
- ``kmeans``: per class, ``k`` cluster centres of the pixels' channel values
  (MiniBatchKMeans on up to ``max_candidates`` random pixels), each replaced by the nearest
  real pixel: ``k`` spectrally representative pixels per class.

A pixel is usable when it is labelled (class id > 0) and holds data in every mapped band.
Validity is read window by window (``READ_BLOCK_PX`` squares), never the whole raster.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window
from sklearn.cluster import MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.neighbors import NearestNeighbors

from terraseg.core.forest import READ_BLOCK_PX, read_pixels
from terraseg.core.raster import RasterSource
from terraseg.protocol.errors import ConfigError, LabelError, RasterError

STRATEGIES = ("all", "random", "uniform", "kmeans")


@dataclass(frozen=True)
class SampleChoice:
    """The chosen pixels.

    Attributes:
        positions: Sorted int64 flat indices into the labels (row * W + col).
        counts: Class id -> pixels sampled.
        strategy: One of :data:`STRATEGIES`.
        quota: Per-class quota used (``k`` for ``kmeans``; None for ``all``).
    """

    positions: np.ndarray
    counts: dict[int, int]
    strategy: str
    quota: int | None


def usable_mask(source: RasterSource, labels: np.ndarray) -> np.ndarray:
    """Pixels that are labelled and valid in the image, read block by block.

    Blocks without a labelled pixel are not read.

    Args:
        source: The input raster.
        labels: Class ids on the source's grid, 0 unlabelled. Shape: (H, W).

    Returns:
        bool. Shape: (H, W).
    """
    labelled = labels > 0
    usable = np.zeros(labels.shape, dtype=bool)
    h, w = labels.shape
    b = READ_BLOCK_PX
    for r0 in range(0, h, b):
        for c0 in range(0, w, b):
            block = labelled[r0 : r0 + b, c0 : c0 + b]
            if not block.any():
                continue
            bh, bw = block.shape
            _, valid = source.read(Window(c0, r0, bw, bh))
            usable[r0 : r0 + bh, c0 : c0 + bw] = block & valid
    return usable


def choose_samples(source: RasterSource, labels: np.ndarray, strategy: str = "random",
                   quota: int | None = None, k: int = 50, seed: int = 0,
                   max_candidates: int = 50_000) -> SampleChoice:
    """Choose the labelled pixels a pixel classifier is fitted on.

    Args:
        source: The input raster (bands, engineered channels).
        labels: uint8 class ids on the source's grid, 0 unlabelled. Shape: (H, W).
        strategy: One of :data:`STRATEGIES`.
        quota: Pixels per class for ``random`` and ``uniform``; None: the smallest class's
            count of usable pixels. Not used by ``all`` and ``kmeans`` (which takes ``k``).
        k: Clusters, hence pixels, per class for ``kmeans``.
        seed: Seed of the random choices and of the clustering.
        max_candidates: Most pixels per class whose values ``kmeans`` clusters.

    Returns:
        The chosen pixels and their counts per class.

    Raises:
        ConfigError: Unknown strategy, or a quota, ``k`` or ``max_candidates`` below 1,
            or ``k`` above ``max_candidates``.
        LabelError: No labelled pixel; a class without usable pixels; a class with
            fewer usable pixels than the quota or ``k``; labels off the source's grid.
        RasterError: Every labelled pixel is nodata in the image.
    """
    _check_options(strategy, quota, k, max_candidates)
    grid = source.grid
    if labels.shape != (grid.height_px, grid.width_px):
        raise LabelError(
            f"The labels are {labels.shape[1]}x{labels.shape[0]} px but the raster "
            f"'{source.path}' is {grid.width_px}x{grid.height_px} px.",
            "Rasterise the labels on the raster's grid (core/label_raster.py) first.")
    members = _usable_by_class(source, labels)
    rng = np.random.default_rng(seed)
    if strategy == "all":
        parts = members
        used_quota = None
    elif strategy == "kmeans":
        _check_enough(members, k, "k", "Lower --k or label more pixels of that class.")
        parts = {cid: _kmeans_pick(source, labels, m, k, seed, max_candidates, rng)
                 for cid, m in members.items()}
        used_quota = k
    else:
        if quota is None:
            used_quota = min(len(m) for m in members.values())
        else:
            _check_enough(members, quota, "quota",
                          "Lower --quota or label more pixels of that class.")
            used_quota = quota
        pick = _random_pick if strategy == "random" else _uniform_pick
        parts = {cid: pick(m, used_quota, rng) for cid, m in members.items()}
    positions = np.sort(np.concatenate(list(parts.values()))).astype(np.int64)
    counts = {cid: len(p) for cid, p in parts.items()}
    return SampleChoice(positions, counts, strategy, used_quota)


def _check_options(strategy: str, quota: int | None, k: int, max_candidates: int) -> None:
    """Reject an unknown strategy and sizes below 1."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown sampling strategy '{strategy}'.",
                          f"Use one of: {', '.join(STRATEGIES)}.")
    if quota is not None and quota < 1:
        raise ConfigError(f"--quota is {quota}; at least one pixel per class is needed.",
                          "Use a positive quota, or leave it out to take the smallest "
                          "class's pixel count.")
    if strategy == "kmeans":
        if k < 1:
            raise ConfigError(f"--k is {k}; k-means sampling needs at least one cluster "
                              "per class.", "Use e.g. --k 50.")
        if max_candidates < k:
            raise ConfigError(f"k-means sampling clusters at most {max_candidates} pixels "
                              f"per class, fewer than k = {k} clusters.",
                              f"Raise max_candidates to at least {k} or lower --k.")


def _usable_by_class(source: RasterSource, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Flat indices (raster order) of each class's usable pixels; every class has some.

    Raises:
        LabelError: No labelled pixel, or a class whose pixels are all nodata.
        RasterError: Every labelled pixel is nodata.
    """
    flat_labels = labels.ravel()
    labelled_ids, labelled_counts = np.unique(flat_labels[flat_labels > 0], return_counts=True)
    if not len(labelled_ids):
        raise LabelError("The labels hold no labelled pixel (every class id is 0): there "
                         "is nothing to sample.",
                         "Draw training polygons over the raster, or check that the labels "
                         "overlap it and name their class field.")
    flat = np.flatnonzero(usable_mask(source, labels))
    if not len(flat):
        raise RasterError(
            f"All {int(labelled_counts.sum())} labelled pixels lie on nodata of "
            f"'{source.path}' (nodata in at least one mapped band): there is nothing to "
            "sample.", "Label areas where the raster holds data, or check the raster's "
            "nodata value (QGIS: Layer properties > Transparency).")
    ids = flat_labels[flat]
    members: dict[int, np.ndarray] = {}
    for cid, total in zip(labelled_ids.tolist(), labelled_counts.tolist(), strict=True):
        m = flat[ids == cid]
        if not len(m):
            raise LabelError(
                f"Class {cid}: all its {total} labelled pixels lie on nodata of the raster, "
                "so it cannot be sampled.",
                "Label that class where the raster holds data, or remove its labels.")
        members[int(cid)] = m
    return members


def _check_enough(members: dict[int, np.ndarray], need: int, what: str, fix: str) -> None:
    """Raise when some class has fewer usable pixels than ``need``."""
    for cid, m in members.items():
        if len(m) < need:
            raise LabelError(f"Class {cid} has only {len(m)} usable (labelled, not nodata) "
                             f"pixels, fewer than the {what} of {need} per class.", fix)


def _random_pick(members: np.ndarray, quota: int, rng: np.random.Generator) -> np.ndarray:
    """``quota`` of ``members`` uniformly at random."""
    return rng.choice(members, quota, replace=False)


def _uniform_pick(members: np.ndarray, quota: int, rng: np.random.Generator) -> np.ndarray:
    """Every n-th of ``members`` (raster order), n = count // quota: exactly ``quota``.

    The run of picks is centred in the class's pixels, so the first and last picks lie
    about n / 2 pixels inside its first and last pixel (``rng`` is unused: deterministic).
    """
    stride = len(members) // quota
    start = (len(members) - 1 - stride * (quota - 1)) // 2
    return members[start : start + stride * quota : stride]


def _kmeans_pick(source: RasterSource, labels: np.ndarray, members: np.ndarray, k: int,
                 seed: int, max_candidates: int, rng: np.random.Generator) -> np.ndarray:
    """The real pixel nearest each of ``k`` cluster centres of the class's values.

    Channels are standardised (mean 0, sd 1) before clustering so no band dominates by
    its range. Each centre takes a distinct pixel: centres are served nearest first, and a
    centre whose nearest pixel is taken gets its next nearest free one.
    """
    candidates = members
    if len(candidates) > max_candidates:
        candidates = np.sort(rng.choice(candidates, max_candidates, replace=False))
    x, cand = _values_in_order(source, labels, candidates)
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    with warnings.catch_warnings():
        # identical pixel values give fewer distinct clusters; the picks stay distinct
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3).fit(z)
    return cand[_distinct_nearest(z, km.cluster_centers_)]


def _values_in_order(source: RasterSource, labels: np.ndarray, positions: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Channel values of ``positions`` (core/forest.read_pixels), with matching positions.

    read_pixels returns the pixels grouped by read block, in ascending block order, keeping
    the given order within a block; the positions are put in that same order.

    Returns:
        float64 values (Shape: (N, C)) and int64 flat indices (Shape: (N,)).
    """
    width = labels.shape[1]
    b = READ_BLOCK_PX
    block = (positions // width // b) * (-(-width // b)) + (positions % width) // b
    ordered = positions[np.argsort(block, kind="stable")]
    sample = read_pixels(source, labels, positions)
    if sample.on_nodata:  # the positions are usable pixels: cannot happen unless it changed
        raise RasterError(f"'{source.path}' changed while it was sampled: "
                          f"{sample.on_nodata} pixels turned nodata.",
                          "Do not edit the raster while a job reads it; run again.")
    return sample.x.astype(np.float64), ordered


def _distinct_nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Row of ``x`` nearest each centre, each row used once (len(x) >= len(centres))."""
    picked = np.full(len(centres), -1, dtype=np.int64)
    taken = np.zeros(len(x), dtype=bool)
    nn = NearestNeighbors().fit(x)
    todo = np.arange(len(centres))
    n = min(len(x), 8)
    while len(todo):
        dist, idx = nn.kneighbors(centres[todo], n_neighbors=n)
        for j in np.argsort(dist[:, 0], kind="stable"):
            free = idx[j][~taken[idx[j]]]
            if len(free):
                picked[todo[j]] = free[0]
                taken[free[0]] = True
        todo = np.flatnonzero(picked < 0)
        n = min(len(x), n * 4)
    return picked
