"""A quick first map: a random forest of single pixels, fitted in seconds (``quickmap``).

The forest sees one pixel at a time: the mapped bands (and any engineered channels) as
raw values; trees split on thresholds, so no normalisation is needed. It is fitted on a
bounded, stratified random sample of the *training* pixels of the same spatial split as
network training (training/sampling.py): the held-out validation polygons are never used
for fitting, and the forest's accuracy and F1 per class on them are measured with
core/metrics.py. The raster is then predicted window by window (never whole in memory)
into ``probability.tif`` and ``classes.tif`` with predict's conventions (core/inference.py):
the same writers, atomic outputs, output checks, nodata values and colour tables.

No model file is written: TerraSeg's model files hold network weights, and a forest would
have to be pickled (model files are never pickles). Rerun ``quickmap`` to map again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window
from sklearn.ensemble import RandomForestClassifier

from terraseg.core.atomic import AtomicOutputs
from terraseg.core.classes import ClassInfo
from terraseg.core.decision import class_ids
from terraseg.core.geotiff import GeoTiffWriter
from terraseg.core.grid import Grid
from terraseg.core.inference import (
    CLASS_NODATA,
    OUTPUT_BLOCK_PX,
    PROB_NODATA,
    WRITE_CACHE_MB,
    estimate_output_bytes,
    no_valid_pixel_error,
    resolve_region,
)
from terraseg.core.label_set import LabelSet
from terraseg.core.metrics import compute_metrics
from terraseg.core.output_targets import check_free_space, check_output_dir
from terraseg.core.preview import colormap_from_colours
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError, LabelError

#: What the result says about the model, in place of a model file's path.
NO_MODEL_FILE = ("none: a quick map keeps no model file (a random forest would have to be "
                 "pickled, and model files are never pickles); train a model for a better "
                 "map that can be reused")
#: Square windows the raster is read in, for samples and for the map.
READ_BLOCK_PX = OUTPUT_BLOCK_PX
OUTPUT_NAMES = ("probability.tif", "classes.tif")


@dataclass(frozen=True)
class ForestSettings:
    """How the quick map's forest is fitted.

    Attributes:
        trees: Number of trees.
        max_samples: Most training pixels fitted (a stratified sample: at most
            ``max_samples // classes`` per class); validation pixels are capped the same.
        seed: Seed of the pixel sample and of the forest.
        n_jobs: Worker threads of scikit-learn (default: every core).
    """

    trees: int = 50
    max_samples: int = 30_000
    seed: int = 0
    n_jobs: int = 0

    def __post_init__(self) -> None:
        if self.trees < 1:
            raise ConfigError(f"--trees is {self.trees}; a forest needs at least one tree.",
                              "Use e.g. --trees 50.")
        if self.max_samples < 100:
            raise ConfigError(f"--max-samples is {self.max_samples}; at least 100 labelled "
                              "pixels are needed to fit a forest.", "Use e.g. --max-samples "
                              "30000.")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed is {self.seed}; seeds are 0 to 2**32 - 1.",
                              "Use e.g. --seed 0.")

    @property
    def threads(self) -> int:
        """scikit-learn's ``n_jobs``: the given number, else every core."""
        return self.n_jobs or (os.cpu_count() or 1)


@dataclass(frozen=True)
class PixelSample:
    """Channel values and class ids of sampled labelled pixels.

    Attributes:
        x: float32 channel values. Shape: (N, C).
        y: Class ids 1..K. Shape: (N,).
        on_nodata: Sampled pixels dropped because the image is nodata there.
        positions: Flat indices of the kept pixels, in the order of ``x`` and ``y``.
    """

    x: np.ndarray
    y: np.ndarray
    on_nodata: int
    positions: np.ndarray | None = None


def sample_positions(labels: np.ndarray, mask: np.ndarray, max_total: int,
                     rng: np.random.Generator, stratified: bool) -> np.ndarray:
    """Flat indices of at most ``max_total`` pixels where ``mask`` holds.

    Stratified: at most ``max_total // K`` per class present (K classes present), so a rare
    class keeps all its pixels; otherwise a uniform sample keeps the classes' proportions
    (what accuracy on held-out pixels should see).

    Returns:
        Sorted int64 flat indices into ``labels``.
    """
    flat = np.flatnonzero(mask)
    if not stratified:
        if len(flat) > max_total:
            flat = rng.choice(flat, max_total, replace=False)
        return np.sort(flat)
    ids = labels.ravel()[flat]
    present = np.unique(ids)
    cap = max(1, max_total // max(1, len(present)))
    parts = []
    for cid in present:
        members = flat[ids == cid]
        if len(members) > cap:
            members = rng.choice(members, cap, replace=False)
        parts.append(members)
    return np.sort(np.concatenate(parts)) if parts else flat


def read_pixels(source: RasterSource, labels: np.ndarray, positions: np.ndarray
                ) -> PixelSample:
    """Channel values of the pixels at ``positions``, reading only the windows holding them.

    Args:
        source: The input (bands, engineered channels).
        labels: Class ids on the source's grid. Shape: (H, W).
        positions: Flat indices into ``labels``.
    """
    width = labels.shape[1]
    rows, cols = positions // width, positions % width
    b = READ_BLOCK_PX
    block = (rows // b) * (-(-width // b)) + cols // b
    xs, ys, ps, dropped = [], [], [], 0
    for key in np.unique(block):
        sel = block == key
        r, c = rows[sel], cols[sel]
        r0, c0 = int(r.min() // b * b), int(c.min() // b * b)
        data, valid = source.read(Window(c0, r0, b, b))
        ok = valid[r - r0, c - c0]
        dropped += int((~ok).sum())
        xs.append(data[:, r[ok] - r0, c[ok] - c0].T)
        ys.append(labels[r[ok], c[ok]])
        ps.append(r[ok] * width + c[ok])
    if not xs:
        return PixelSample(np.zeros((0, source.count), np.float32), np.zeros(0, np.uint8), 0,
                           np.zeros(0, np.int64))
    return PixelSample(np.concatenate(xs), np.concatenate(ys), dropped,
                       np.concatenate(ps).astype(np.int64))


def class_probabilities(forest: RandomForestClassifier, x: np.ndarray, n_classes: int
                        ) -> np.ndarray:
    """Probabilities in class-id order; 0 for a class the forest had no pixel of.

    Returns:
        float32. Shape: (N, K).
    """
    out = np.zeros((len(x), n_classes), dtype=np.float32)
    if len(x):
        proba = forest.predict_proba(x)
        for col, cid in enumerate(forest.classes_):
            out[:, int(cid) - 1] = proba[:, col]
    return out


def counts_by_name(y: np.ndarray, classes: tuple[ClassInfo, ...]) -> dict[str, int]:
    """Pixels per class name (every class a key)."""
    return {c.name: int((y == c.id).sum()) for c in classes}


def check_two_classes(sample: PixelSample, classes: tuple[ClassInfo, ...], needs: str,
                      fix: str) -> None:
    """Refuse a sample with image data of fewer than two classes.

    Args:
        sample: The sampled pixels.
        classes: Model classes.
        needs: Start of the message, e.g. "The quick map needs training pixels".
        fix: The hint.

    Raises:
        LabelError: Fewer than two classes in ``sample.y``.
    """
    present = [c.name for c in classes if (sample.y == c.id).any()]
    if len(present) < 2:
        raise LabelError(
            f"{needs} with image data of two classes; found {', '.join(present) or 'none'} "
            f"(labelled pixels on nodata: {sample.on_nodata}).", fix)


def new_forest(settings: ForestSettings) -> RandomForestClassifier:
    """An unfitted forest of ``settings`` (class-balanced, seeded)."""
    return RandomForestClassifier(n_estimators=settings.trees, n_jobs=settings.threads,
                                  class_weight="balanced", random_state=settings.seed)


def fit_forest(source: RasterSource, labels: LabelSet, split_map: np.ndarray,
               settings: ForestSettings, reporter: Reporter) -> tuple[RandomForestClassifier,
                                                                     dict[str, Any]]:
    """Fit the forest on sampled training pixels; measure it on the validation pixels.

    Args:
        source: The input.
        labels: Labels on the source's grid.
        split_map: Split of each labelled pixel (-1 none, 0 train, 1 val, 2 test).
            Shape: (H, W).
        settings: Trees, sample size, seed.
        reporter: Log events.

    Returns:
        The forest and a summary: ``sampled_pixels`` (train/val per class),
        ``labelled_on_nodata``, ``validation`` (metrics dict, or None without validation
        pixels), ``fit_seconds``, ``feature_importance`` (per channel name).

    Raises:
        LabelError: No training pixel of two classes with image data.
    """
    rng = np.random.default_rng(settings.seed)
    lab = labels.labels
    train = read_pixels(source, lab, sample_positions(lab, split_map == 0,
                                                      settings.max_samples, rng, True))
    val = read_pixels(source, lab, sample_positions(lab, split_map == 1,
                                                    settings.max_samples, rng, False))
    check_two_classes(train, labels.classes, "The quick map needs training pixels",
                      "Draw polygons of at least two classes where the raster has data in "
                      "every chosen band, or choose other bands.")
    forest = new_forest(settings)
    start = time.perf_counter()
    forest.fit(train.x, train.y)
    seconds = time.perf_counter() - start
    reporter.log(f"random forest: {settings.trees} trees fitted on {len(train.y)} training "
                 f"pixels in {seconds:.1f} s")
    validation = None
    if len(val.y):
        pred = class_ids(class_probabilities(forest, val.x, len(labels.classes)), None, axis=1)
        validation = compute_metrics(val.y, pred, labels.classes).to_dict()
        reporter.log(f"validation (held-out polygons, {len(val.y)} px): accuracy "
                     f"{validation['accuracy']:.4f}, F1 " + ", ".join(
                         f"{k} {v:.3f}" for k, v in validation["f1_per_class"].items()))
    else:
        reporter.log("no validation polygon (too few polygons per class): the quick map "
                     "has no held-out accuracy", "warning")
    names = list(source.bands.names)
    summary = {"sampled_pixels": {"train": counts_by_name(train.y, labels.classes),
                                  "val": counts_by_name(val.y, labels.classes)},
               "labelled_on_nodata": train.on_nodata + val.on_nodata,
               "validation": validation, "fit_seconds": round(seconds, 3),
               "feature_importance": {n: round(float(v), 4) for n, v in
                                      zip(names, forest.feature_importances_, strict=True)}}
    return forest, summary


def map_windows(region: Window) -> list[Window]:
    """Windows of at most ``READ_BLOCK_PX`` square tiling ``region``, row by row."""
    out = []
    r0, c0 = int(region.row_off), int(region.col_off)
    h, w = int(region.height), int(region.width)
    for r in range(r0, r0 + h, READ_BLOCK_PX):
        for c in range(c0, c0 + w, READ_BLOCK_PX):
            out.append(Window(c, r, min(READ_BLOCK_PX, c0 + w - c),
                              min(READ_BLOCK_PX, r0 + h - r)))
    return out


def class_map_writers(outputs: AtomicOutputs, grid: Grid, classes: tuple[ClassInfo, ...],
                      names: tuple[str, str]) -> tuple[GeoTiffWriter, GeoTiffWriter]:
    """Writers of a probability raster and a class raster, as predict writes them.

    One float band per class and a uint8 class band with the classes' colour table, both
    tagged with the classes (``TERRASEG_CLASSES``), tracked by ``outputs``.

    Args:
        outputs: The atomic outputs the two files belong to.
        grid: Their grid.
        classes: Classes (ids 1..K) in band order.
        names: (probability file, class file).
    """
    dicts = json.dumps([c.to_dict() for c in classes])
    prob_w = outputs.geotiff(names[0], grid, len(classes), "float32", PROB_NODATA,
                             [f"probability {c.name}" for c in classes],
                             block_px=OUTPUT_BLOCK_PX)
    cls_w = outputs.geotiff(names[1], grid, 1, "uint8", CLASS_NODATA, ["class"],
                            colormap=colormap_from_colours({c.id: c.colour for c in classes}),
                            block_px=OUTPUT_BLOCK_PX)
    for writer in (prob_w, cls_w):
        writer.set_tags(TERRASEG_CLASSES=dicts)
    return prob_w, cls_w


def write_forest_map(forest: RandomForestClassifier, source: RasterSource,
                     classes: tuple[ClassInfo, ...], out_dir: Path, region: Window,
                     reporter: Reporter, overwrite: bool,
                     zero_where_disagreeing: np.ndarray | None = None,
                     stage: str = "quickmap") -> np.ndarray:
    """Predict ``region`` window by window into probability.tif and classes.tif.

    Invalid pixels (nodata in a mapped band) are ``PROB_NODATA`` and class 0, as predict
    writes them. Both files are committed together or not at all.

    Args:
        forest: The fitted forest.
        source: The input.
        classes: Model classes (ids 1..K).
        out_dir: Folder of the two files.
        region: Pixel window of ``source`` to map.
        reporter: Progress events.
        overwrite: Replace existing outputs.
        zero_where_disagreeing: Reference class ids on the source's grid (0 = unlabelled),
            or None. Where given, every class probability of a valid pixel whose labelled
            reference differs from the mapped class is written as 0 (the pseudo-labelling
            study's marking of disagreeing pixels); the classes are unchanged.
            Shape: (H, W) of the source.
        stage: Name of the progress stage.

    Returns:
        Pixels per class id (index 0: nodata). Shape: (K + 1,).

    Raises:
        RasterError: The region holds no valid pixel (nothing is written).
    """
    k = len(classes)
    grid = source.grid.window_grid(region)
    counts = np.zeros(k + 1, dtype=np.int64)
    windows = map_windows(region)
    with rasterio.Env(GDAL_CACHEMAX=WRITE_CACHE_MB), \
            AtomicOutputs(out_dir, overwrite=overwrite) as outputs:
        prob_w, cls_w = class_map_writers(outputs, grid, classes, OUTPUT_NAMES)
        for i, win in enumerate(windows, start=1):
            data, valid = source.read(win)
            p = np.full((k, *valid.shape), PROB_NODATA, dtype=np.float32)
            p[:, valid] = class_probabilities(forest, data[:, valid].T, k).T
            cls = np.where(valid, class_ids(p, None), CLASS_NODATA).astype(np.uint8)
            if zero_where_disagreeing is not None:
                ref = zero_where_disagreeing[win.row_off:win.row_off + win.height,
                                             win.col_off:win.col_off + win.width]
                p[:, valid & (ref > 0) & (ref != cls)] = 0.0
            out_win = Window(win.col_off - region.col_off, win.row_off - region.row_off,
                             win.width, win.height)
            prob_w.write(p, out_win)
            cls_w.write(cls[None], out_win)
            counts += np.bincount(cls.ravel(), minlength=k + 1)
            reporter.progress(i / len(windows), stage)
        if not counts[1:].any():
            raise no_valid_pixel_error(source, region, "the processed area")
        reporter.progress(1.0, stage, "building overviews")
        prob_w.close(overviews=True, check_cancelled=reporter.check_cancelled)
        cls_w.close(overviews=True, check_cancelled=reporter.check_cancelled)
    return counts


def quick_map(source: RasterSource, labels: LabelSet, split_map: np.ndarray,
              out_dir: str | Path, reporter: Reporter, settings: ForestSettings,
              window: Window | None = None, extent_layer: str | None = None,
              overwrite: bool = False) -> dict[str, Any]:
    """Fit a forest on the training pixels and map a region of the raster with it.

    The outputs are checked (and the disk's free space) before any work.

    Args:
        source: The input (bands, engineered channels) on the labels' grid.
        labels: Labels on the source's grid.
        split_map: The spatial split of the labelled pixels (training/sampling.py).
            Shape: (H, W).
        out_dir: Folder for ``probability.tif`` and ``classes.tif``.
        reporter: Progress and log events.
        settings: Trees, sample size, seed.
        window: Pixel window to map (default: the whole raster).
        extent_layer: Map the extent of this vector layer instead.
        overwrite: Replace existing outputs.

    Returns:
        Predict's result fields (``probability``, ``classes``, ``window``, ``device``,
        ``valid_pixels``, ``class_shares``, ``threshold``, ``tta``) plus ``class_list``,
        ``validation``, ``sampled_pixels``, ``labelled_on_nodata``, ``trees``,
        ``fit_seconds``, ``feature_importance``, ``channels`` and ``model_file`` (none).
    """
    out = Path(out_dir)
    check_output_dir(out, OUTPUT_NAMES, overwrite)
    region = resolve_region(source, window, extent_layer)
    check_free_space(out, estimate_output_bytes(int(region.height), int(region.width),
                                                len(labels.classes)),
                     " and ".join(OUTPUT_NAMES))
    reporter.progress(0.0, "quickmap", "sampling labelled pixels")
    forest, summary = fit_forest(source, labels, split_map, settings, reporter)
    reporter.log(f"mapping {region.width}x{region.height} px with the forest")
    counts = write_forest_map(forest, source, labels.classes, out, region, reporter,
                              overwrite)
    n_valid = int(counts[1:].sum())
    return {"probability": str(out / OUTPUT_NAMES[0]), "classes": str(out / OUTPUT_NAMES[1]),
            "window": [int(region.col_off), int(region.row_off), int(region.width),
                       int(region.height)],
            "device": "cpu", "valid_pixels": n_valid,
            "class_shares": {c.name: float(counts[c.id]) / n_valid for c in labels.classes},
            "threshold": None, "tta": False,
            "class_list": [c.to_dict() for c in labels.classes],
            **summary, "trees": settings.trees, "channels": list(source.bands.names),
            "model_file": NO_MODEL_FILE}
