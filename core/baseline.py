"""A random-forest baseline scored beside a model in ``evaluate`` (``--baseline rf``).

The forest sees what the model sees: the model's input channels (its band mapping, extra
rasters and engineered channels, the same nodata) as raw values, one pixel at a time. It
is fitted on a bounded, stratified sample of *all* labelled pixels of the baseline labels
(the training labels, usually), as ``quickmap`` samples its training pixels
(core/forest.py), and predicts only at the reference pixels. Its metrics come from the
same function on the same pixels as the model's: a reference pixel where the model has no
prediction (nodata) is left out for both, so the two scores compare like with like.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window
from sklearn.ensemble import RandomForestClassifier

from terraseg.core.atomic import atomic_path
from terraseg.core.classes import ClassInfo, ClassMapping
from terraseg.core.decision import class_ids
from terraseg.core.forest import (
    READ_BLOCK_PX,
    ForestSettings,
    check_two_classes,
    class_probabilities,
    counts_by_name,
    read_pixels,
    sample_positions,
)
from terraseg.core.labels import load_labels
from terraseg.core.metrics import Metrics, compute_metrics
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import Reporter

#: The file written next to metrics.json.
BASELINE_FILE = "baseline_metrics.json"
#: ``result["baseline"]["method"]`` of the forest.
METHOD = "random_forest"


@dataclass(frozen=True)
class BaselineSpec:
    """Which labels the baseline forest is fitted on, and how.

    Attributes:
        labels: Vector labels or a label raster (the model's training labels, usually).
        class_field: Class attribute of vector labels.
        class_map: Mapping of the labels' classes onto the model's, e.g.
            ``developed=sealed,*=unsealed``.
        settings: Trees, most sampled pixels, seed.
    """

    labels: str
    class_field: str | None
    class_map: str | None
    settings: ForestSettings


def fit_baseline(spec: BaselineSpec, source: RasterSource, classes: tuple[ClassInfo, ...],
                 reporter: Reporter) -> tuple[RandomForestClassifier, dict[str, int]]:
    """Fit the forest on a stratified sample of every labelled pixel of ``spec.labels``.

    Returns:
        The forest and the sampled pixels per class name.

    Raises:
        LabelError: A class of the labels is not a class of the model, or no two classes
            have labelled pixels on image data.
    """
    labels = load_labels(spec.labels, source.grid, class_field=spec.class_field,
                         class_map=ClassMapping.parse(spec.class_map), classes=classes)
    rng = np.random.default_rng(spec.settings.seed)
    lab = labels.labels
    sample = read_pixels(source, lab, sample_positions(lab, lab > 0, spec.settings.max_samples,
                                                       rng, True))
    check_two_classes(sample, classes, f"The baseline forest needs pixels of {spec.labels}",
                      "Give --baseline-labels with labels of at least two classes where "
                      "the raster has data.")
    forest = RandomForestClassifier(n_estimators=spec.settings.trees,
                                    n_jobs=spec.settings.threads, class_weight="balanced",
                                    random_state=spec.settings.seed)
    start = time.perf_counter()
    forest.fit(sample.x, sample.y)
    reporter.log(f"baseline random forest: {spec.settings.trees} trees fitted on "
                 f"{len(sample.y)} labelled pixels of {spec.labels} in "
                 f"{time.perf_counter() - start:.1f} s")
    return forest, counts_by_name(sample.y, classes)


def read_at(source: RasterSource, rows: np.ndarray, cols: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Channel values at the given pixels, in their order, reading only windows holding them.

    Returns:
        float32 values, shape (N, C), and whether each pixel has image data, shape (N,).
    """
    x = np.zeros((len(rows), source.count), dtype=np.float32)
    ok = np.zeros(len(rows), dtype=bool)
    b = READ_BLOCK_PX
    block = (rows // b) * (-(-source.grid.width_px // b)) + cols // b
    for key in np.unique(block):
        sel = np.flatnonzero(block == key)
        r0, c0 = int(rows[sel[0]] // b * b), int(cols[sel[0]] // b * b)
        data, valid = source.read(Window(c0, r0, b, b))
        rr, cc = rows[sel] - r0, cols[sel] - c0
        x[sel] = data[:, rr, cc].T
        ok[sel] = valid[rr, cc]
    return x, ok


def baseline_metrics(spec: BaselineSpec, source: RasterSource,
                     classes: tuple[ClassInfo, ...], rows: np.ndarray, cols: np.ndarray,
                     truth: np.ndarray, model_pred: np.ndarray, reporter: Reporter,
                     categories: np.ndarray | None = None,
                     category_names: tuple[str, ...] = ()) -> tuple[Metrics, dict[str, Any]]:
    """Fit the forest and score it at the reference pixels the model predicted.

    Args:
        spec: The baseline's labels and forest settings.
        source: The model's input.
        classes: The model's classes.
        rows: Reference pixel rows. Shape: (N,).
        cols: Reference pixel columns. Shape: (N,).
        truth: Reference class ids. Shape: (N,).
        model_pred: The model's class ids (0: no prediction; left out for the forest too).
            Shape: (N,).
        reporter: Log events.
        categories: Reference categories as for compute_metrics, or None.
        category_names: Names of the category codes.

    Returns:
        The forest's metrics and ``result["baseline"]``'s fields other than the metrics.
    """
    forest, sampled = fit_baseline(spec, source, classes, reporter)
    keep = model_pred > 0
    pred = np.zeros(len(rows), dtype=np.int64)
    x, ok = read_at(source, rows[keep], cols[keep])
    ids = class_ids(class_probabilities(forest, x, len(classes)), None, axis=1)
    pred[keep] = np.where(ok, ids, 0)
    metrics = compute_metrics(truth, pred, classes, categories, category_names)
    info = {"method": METHOD, "trees": spec.settings.trees, "seed": spec.settings.seed,
            "labels": spec.labels, "sampled_pixels": sampled,
            "pixels": "the reference pixels the model predicted (the same for both)"}
    return metrics, info


def write_baseline(path: Path, baseline: dict[str, Any]) -> None:
    """Write ``baseline`` (method, trees, seed, metrics, ...) as JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(baseline, indent=2, allow_nan=False, default=_plain) + "\n",
                       encoding="utf-8")


def side_by_side(model: dict[str, Any], forest: dict[str, Any]) -> list[str]:
    """One ``NAME: model X vs forest Y`` line per headline metric (accuracy, F1s)."""
    lines = [f"accuracy: model {model['accuracy']:.4f} vs forest {forest['accuracy']:.4f}",
             f"F1 weighted: model {model['f1_weighted']:.4f} vs forest "
             f"{forest['f1_weighted']:.4f}"]
    for name, value in model["f1_per_class"].items():
        lines.append(f"F1 {name}: model {value:.4f} vs forest "
                     f"{forest['f1_per_class'][name]:.4f}")
    return lines


def _plain(obj: object) -> object:
    """JSON form of numpy scalars and arrays (``json.dumps``'s ``default``)."""
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
