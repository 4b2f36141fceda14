"""Accuracy of a model against an independent reference layer (points or polygons)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from terraseg.core.baseline import (
    BASELINE_FILE,
    BaselineSpec,
    baseline_metrics,
    side_by_side,
    write_baseline,
)
from terraseg.core.classes import ClassMapping, classes_from_dicts
from terraseg.core.decision import check_finite, class_ids, resolve_threshold
from terraseg.core.hierarchy import ClassHierarchy, level_lookup, metrics_by_level
from terraseg.core.inference import no_valid_pixel_error
from terraseg.core.labels import load_labels
from terraseg.core.metrics import Metrics, compute_metrics, write_metrics
from terraseg.core.modelfile import LoadedModel, check_raster_fits
from terraseg.core.network_prep import pick_device, prepare_network
from terraseg.core.normalise import BandStats
from terraseg.core.output_targets import check_output_dir
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import LabelError

OUTPUT_NAMES = ("metrics.json", "per_class.csv", "confusion_matrix.csv")


def evaluate_model(model: LoadedModel, source: RasterSource, reference: str,
                   class_field: str | None, out_dir: str | Path, reporter: Reporter,
                   class_map: str | None = None, category_field: str | None = None,
                   overwrite: bool = False, tile_px: int = 0,
                   device: str = "auto", threshold: float | None = None,
                   tta: bool = False, baseline: BaselineSpec | None = None,
                   hierarchy: ClassHierarchy | None = None) -> dict[str, Any]:
    """Predict at the reference pixels and write metrics.json plus CSV tables.

    Only tiles that contain reference pixels are predicted. Reference classes are mapped
    to the model's classes by name (after ``class_map``); unknown classes are refused.
    With ``baseline``, a random forest fitted on its labels is scored on the same
    reference pixels (core/baseline.py) into ``baseline_metrics.json`` and
    ``result["baseline"]``, and the headline metrics are logged side by side. With
    ``hierarchy`` (core/hierarchy.py) the metrics are also computed at every level of it
    (``levels`` in metrics.json and the result).

    Raises:
        RasterError: No reference pixel lies on valid data of the raster (all nodata).
    """
    meta = model.meta
    check_raster_fits(meta, source)
    threshold = resolve_threshold(meta, threshold)
    out_dir = Path(out_dir)
    names = list(OUTPUT_NAMES) + (["per_category.csv"] if category_field else []) \
        + ([BASELINE_FILE] if baseline else [])
    check_output_dir(out_dir, names, overwrite)
    classes = classes_from_dicts(meta.class_dicts)
    if hierarchy is not None:
        level_lookup(hierarchy, classes, 0)  # every model class in it, before any work
    ref = load_labels(reference, source.grid, class_field=class_field,
                      class_map=ClassMapping.parse(class_map), classes=classes,
                      category_field=category_field)
    rows, cols = np.nonzero(ref.labels)
    if len(rows) == 0:
        raise LabelError(f"No reference feature of {reference} falls on the raster.",
                         "Use a reference layer that overlaps the raster.")
    region = Window(int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1),
                    int(rows.max() - rows.min() + 1))
    stats = BandStats(meta.normalisation.mean, meta.normalisation.std)
    dev = pick_device(device)
    network = prepare_network(model.network, dev, tta=tta)
    pred = np.zeros(len(rows), dtype=np.int64)
    for win, probs, valid, fraction in model.kind.probabilities(meta, network, source, stats,
                                                                region, dev, tile_px):
        check_finite(probs, valid, f"window {win}")
        r0, c0 = int(win.row_off), int(win.col_off)
        inside = ((rows >= r0) & (rows < r0 + win.height) & (cols >= c0)
                  & (cols < c0 + win.width))
        if inside.any():
            rr, cc = rows[inside] - r0, cols[inside] - c0
            pred[inside] = np.where(valid[rr, cc], class_ids(probs[:, rr, cc], threshold), 0)
        reporter.progress(fraction, "evaluate")
    outside = int((pred == 0).sum())
    if outside == len(rows):
        raise no_valid_pixel_error(source, region, f"the {len(rows)} reference pixels' area")
    if outside:
        reporter.log(f"{outside} of {len(rows)} reference pixels lie on nodata and are left "
                     "out of the metrics (n_outside_valid_data)", "warning")
    truth = ref.labels[rows, cols].astype(np.int64)
    cats = ref.categories[rows, cols] if ref.categories is not None else None
    metrics: Metrics = compute_metrics(truth, pred, classes, cats, ref.category_names)
    extra = {"reference": str(reference), "raster": source.path,
             "n_reference_pixels": int(len(rows)),
             "n_outside_valid_data": outside}
    if hierarchy is not None:
        extra["levels"] = metrics_by_level(hierarchy, classes, truth, pred)
        for level, m in extra["levels"].items():
            reporter.log(f"{level}: accuracy {m['accuracy']:.4f}, F1 weighted "
                         f"{m['f1_weighted']:.4f}, mean IoU {m['mean_iou']:.4f}")
    forest = None
    if baseline is not None:
        forest_metrics, info = baseline_metrics(baseline, source, classes, rows, cols, truth,
                                                pred, reporter, cats, ref.category_names)
        forest = {**info, "metrics": forest_metrics.to_dict()}
        for line in side_by_side(metrics.to_dict(), forest["metrics"]):
            reporter.log(line)
    paths = write_metrics(metrics, out_dir, extra=extra, overwrite=overwrite)
    result = {"metrics": str(out_dir / "metrics.json"), "files": [str(p) for p in paths],
              "accuracy": metrics.accuracy, "f1_weighted": metrics.f1_weighted,
              "f1_per_class": dict(metrics.f1_per_class), "n_samples": metrics.n_samples}
    if "levels" in extra:
        result["levels"] = extra["levels"]
    if forest is not None:
        write_baseline(out_dir / BASELINE_FILE, forest)
        result["files"].append(str(out_dir / BASELINE_FILE))
        result["baseline"] = forest
    return result
