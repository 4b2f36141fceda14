"""Pseudo-labels: a random forest fitted on sampled (coarse or noisy) labels maps every pixel.

After Mirpulatov et al. (IEEE Access 2023, "Pseudo-labeling approach for land cover
classification through remote sensing observations with noisy labels"): labels that are
coarser than the image (e.g. 30 m classes on 10 m pixels, resampled onto the image grid by
nearest neighbour) or partly wrong are sampled (core/pixel_sampling.py: all, random,
uniform or k-means per class), a random forest of single pixels is fitted on the samples
(trees are robust to label noise), and the forest's classes become a dense label raster on
the image's own grid: ``classes.tif`` (the pseudo-labels), with the per-class probabilities
in ``probability.tif`` and the forest's confidence (its probability of the class it gives)
in ``confidence.tif``, written window by window as quickmap writes them (core/forest.py).

With ``zero_disagreeing`` (the study's option) the probability is 0 wherever the
pseudo-label disagrees with a labelled source pixel, so a later step can leave such pixels
out. The result says how far the pseudo-labels agree with the source labels on the
labelled pixels (accuracy and F1 per class, core/metrics.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window
from sklearn.ensemble import RandomForestClassifier

from terraseg.core.atomic import AtomicOutputs
from terraseg.core.extras import RF_CONFIDENCE
from terraseg.core.forest import (
    OUTPUT_NAMES,
    ForestSettings,
    check_two_classes,
    counts_by_name,
    map_windows,
    read_pixels,
    write_forest_map,
)
from terraseg.core.grid import Grid
from terraseg.core.inference import OUTPUT_BLOCK_PX, PROB_NODATA, estimate_output_bytes
from terraseg.core.label_set import LabelSet
from terraseg.core.metrics import compute_metrics
from terraseg.core.output_targets import check_free_space, check_output_dir
from terraseg.core.pixel_sampling import STRATEGIES, choose_samples
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError

#: Class weightings of the forest (``none``: every sample weighs the same).
CLASS_WEIGHTS = ("balanced", "balanced_subsample", "none")
STAGE = "pseudo-label"
#: Default depth limit of the trees (see :attr:`PseudoLabelSettings.max_depth`).
DEFAULT_MAX_DEPTH = 10
#: Name of the confidence channel in model files (``--extra-raster rf_confidence=PATH``).
CONFIDENCE_CHANNEL = RF_CONFIDENCE
CONFIDENCE_NAME = "confidence.tif"
#: Every file :func:`pseudo_label` writes.
PSEUDO_OUTPUTS = (*OUTPUT_NAMES, CONFIDENCE_NAME)


@dataclass(frozen=True)
class PseudoLabelSettings:
    """How the pixels are sampled and the forest is fitted.

    Attributes:
        strategy: Sampling strategy, one of core/pixel_sampling.py's ``STRATEGIES``.
        quota: Pixels sampled per class (None: the sampler's default).
        k: Clusters per class of the ``kmeans`` strategy.
        trees: Trees of the forest.
        max_depth: Deepest a tree grows (None: unlimited). Fully grown trees learn the
            label noise: on the synthetic scene with 4x coarser labels (tests) unlimited
            trees reproduce the coarse edges (agreement with the truth 0.93, below the
            coarse labels' 0.95), trees of depth 10 correct them (0.996).
        class_weight: One of :data:`CLASS_WEIGHTS`.
        seed: Seed of the sample and the forest.
        zero_disagreeing: Write probability 0 where the pseudo-label differs from a
            labelled source pixel.
        n_jobs: Worker threads of scikit-learn (0: every core).
    """

    strategy: str = "random"
    quota: int | None = None
    k: int = 50
    trees: int = 50
    max_depth: int | None = DEFAULT_MAX_DEPTH
    class_weight: str = "balanced"
    seed: int = 0
    zero_disagreeing: bool = False
    n_jobs: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy is {self.strategy!r}; it is not a sampling "
                              "strategy.", f"Use one of: {', '.join(STRATEGIES)}.")
        if self.quota is not None and self.quota < 1:
            raise ConfigError(f"--quota is {self.quota}; at least one pixel per class must "
                              "be sampled.", "Use e.g. --quota 5000, or leave it out.")
        if self.k < 1:
            raise ConfigError(f"--k is {self.k}; k-means needs at least one cluster.",
                              "Use e.g. --k 50.")
        if self.max_depth is not None and self.max_depth < 1:
            raise ConfigError(f"--max-depth is {self.max_depth}; a tree needs depth 1 or "
                              "more.", "Use e.g. --max-depth 10, or --max-depth 0 for unlimited.")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ConfigError(f"--class-weight is {self.class_weight!r}.",
                              f"Use one of: {', '.join(CLASS_WEIGHTS)}.")
        # trees and seed are checked as quickmap checks them
        ForestSettings(trees=self.trees, seed=self.seed, n_jobs=self.n_jobs)

    @property
    def threads(self) -> int:
        """scikit-learn's ``n_jobs``: the given number, else every core."""
        return ForestSettings(n_jobs=self.n_jobs).threads

    def forest(self) -> RandomForestClassifier:
        """The unfitted forest."""
        return RandomForestClassifier(
            n_estimators=self.trees, max_depth=self.max_depth, n_jobs=self.threads,
            class_weight=None if self.class_weight == "none" else self.class_weight,
            random_state=self.seed)


def pseudo_label(source: RasterSource, labels: LabelSet, out_dir: str | Path,
                 reporter: Reporter, settings: PseudoLabelSettings,
                 overwrite: bool = False) -> dict[str, Any]:
    """Sample the labels, fit a forest, and write the pseudo-label raster of the whole image.

    The outputs (and the disk's free space) are checked before any work.

    Args:
        source: The input (bands, engineered channels) on the labels' grid.
        labels: The source labels on the source's grid (coarse rasters already resampled).
        out_dir: Folder for ``probability.tif`` and ``classes.tif``.
        reporter: Progress and log events.
        settings: Sampling and forest settings.
        overwrite: Replace existing outputs.

    Returns:
        ``probability``, ``classes``, ``confidence``, ``outputs`` (the three paths),
        ``class_list``,
        ``valid_pixels``, ``class_shares``, ``sampled_pixels`` (per class name),
        ``labelled_on_nodata``, ``strategy``, ``quota``, ``k``, ``trees``, ``max_depth``,
        ``zero_disagreeing``, ``agreement`` (core/metrics.py's dict of the pseudo-labels
        against the source labels on labelled pixels), ``disagreeing_pixels``,
        ``fit_seconds``, ``feature_importance`` and ``channels``.

    Raises:
        LabelError: The sample holds pixels with image data of fewer than two classes.
    """
    out = Path(out_dir)
    check_output_dir(out, PSEUDO_OUTPUTS, overwrite)
    h, w = labels.labels.shape
    region = Window(0, 0, w, h)
    check_free_space(out, estimate_output_bytes(h, w, len(labels.classes) + 1),
                     ", ".join(PSEUDO_OUTPUTS))
    reporter.progress(0.0, STAGE, f"sampling labelled pixels ({settings.strategy})")
    choice = choose_samples(source, labels.labels, strategy=settings.strategy,
                            quota=settings.quota, k=settings.k, seed=settings.seed)
    sample = read_pixels(source, labels.labels, choice.positions)
    check_two_classes(sample, labels.classes, "Pseudo-labelling needs sampled pixels",
                      "Use labels of at least two classes where the raster has data in "
                      "every chosen band, or other bands.")
    forest = settings.forest()
    start = time.perf_counter()
    forest.fit(sample.x, sample.y)
    seconds = time.perf_counter() - start
    reporter.log(f"random forest: {settings.trees} trees fitted on {len(sample.y)} "
                 f"{settings.strategy} samples in {seconds:.1f} s")
    reporter.log(f"pseudo-labelling {w}x{h} px")
    counts = write_forest_map(
        forest, source, labels.classes, out, region, reporter, overwrite,
        zero_where_disagreeing=labels.labels if settings.zero_disagreeing else None,
        stage=STAGE)
    write_confidence(out / OUTPUT_NAMES[0], source.grid.window_grid(region),
                     out / CONFIDENCE_NAME, overwrite)
    agreement = _agreement(out / OUTPUT_NAMES[1], labels)
    if agreement is not None:
        reporter.log(f"pseudo-labels agree with the source labels on {agreement['n_samples']}"
                     f" labelled px: accuracy {agreement['accuracy']:.4f}, F1 " + ", ".join(
                         f"{k} {v:.3f}" for k, v in agreement["f1_per_class"].items()))
    n_valid = int(counts[1:].sum())
    names = list(source.bands.names)
    paths = [str(out / name) for name in PSEUDO_OUTPUTS]
    return {"probability": paths[0], "classes": paths[1], "confidence": paths[2],
            "outputs": paths,
            "class_list": [c.to_dict() for c in labels.classes], "valid_pixels": n_valid,
            "class_shares": {c.name: float(counts[c.id]) / n_valid for c in labels.classes},
            "sampled_pixels": counts_by_name(sample.y, labels.classes),
            "labelled_on_nodata": sample.on_nodata, "strategy": settings.strategy,
            "quota": choice.quota, "k": settings.k, "trees": settings.trees,
            "max_depth": settings.max_depth, "zero_disagreeing": settings.zero_disagreeing,
            "agreement": agreement,
            "disagreeing_pixels": (None if agreement is None else
                                   agreement["n_samples"] - int(np.trace(
                                       np.asarray(agreement["confusion_matrix"])))),
            "fit_seconds": round(seconds, 3),
            "feature_importance": {n: round(float(v), 4) for n, v in
                                   zip(names, forest.feature_importances_, strict=True)},
            "channels": names}


def write_confidence(probability: Path, grid: Grid, out: Path, overwrite: bool) -> None:
    """The largest class probability of each pixel, window by window (-1 = nodata).

    Args:
        probability: The forest's probability raster (K bands, -1 = nodata) on ``grid``.
        grid: The raster's grid.
        out: The confidence raster to write (committed whole or not at all).
        overwrite: Replace an existing file.
    """
    with rasterio.open(probability) as src, \
            AtomicOutputs(out.parent, overwrite=overwrite) as outputs:
        writer = outputs.geotiff(out.name, grid, 1, "float32", PROB_NODATA,
                                 [CONFIDENCE_CHANNEL], block_px=OUTPUT_BLOCK_PX)
        for win in map_windows(Window(0, 0, src.width, src.height)):
            p = src.read(window=win)
            conf = np.where(p[0] == PROB_NODATA, PROB_NODATA, p.max(axis=0))
            writer.write(conf.astype(np.float32)[None], win)


def _agreement(classes_tif: Path, labels: LabelSet) -> dict[str, Any] | None:
    """Metrics of the written pseudo-labels against the labelled source pixels.

    Reads ``classes_tif`` window by window and keeps only the labelled pixels.

    Returns:
        core/metrics.py's dict, or None when no labelled pixel has a pseudo-label.
    """
    truth, pred = [], []
    h, w = labels.labels.shape
    with rasterio.open(classes_tif) as ds:
        for win in map_windows(Window(0, 0, w, h)):
            ref = labels.labels[win.row_off:win.row_off + win.height,
                                win.col_off:win.col_off + win.width]
            mask = ref > 0
            if mask.any():
                truth.append(ref[mask])
                pred.append(ds.read(1, window=win)[mask])
    if not truth:
        return None
    y_true, y_pred = np.concatenate(truth), np.concatenate(pred)
    if not (y_pred > 0).any():
        return None
    return compute_metrics(y_true, y_pred, labels.classes).to_dict()
