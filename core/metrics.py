"""Accuracy metrics of a class map against reference pixels, computed with scikit-learn.

Class ids follow TerraSeg's convention (1..K, 0 = unlabelled / nodata). The confusion matrix
has one row per reference class and one column per predicted class, both in class-id order.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    jaccard_score,
    precision_recall_fscore_support,
)

from terraseg.core.atomic import AtomicOutputs
from terraseg.core.classes import ClassInfo
from terraseg.core.output_targets import check_output_dir
from terraseg.protocol.errors import InputError, LabelError

CONFUSION_AXES = "rows = reference class, columns = predicted class, in class_ids order"
CONFUSION_CORNER = "reference\\predicted"

METRICS_JSON = "metrics.json"
PER_CLASS_CSV = "per_class.csv"
CONFUSION_CSV = "confusion_matrix.csv"
PER_CATEGORY_CSV = "per_category.csv"


@dataclass(frozen=True)
class Metrics:
    """Accuracy of a prediction against reference pixels.

    Per-class dicts are keyed by class name, in class-id order. Macro averages (``f1_macro``,
    ``mean_iou``) are taken over the classes that occur in the reference or the prediction;
    classes absent from both still get a (zero) entry in the per-class dicts.

    Attributes:
        accuracy: Overall accuracy (fraction of evaluated pixels predicted correctly).
        f1_weighted: F1 averaged with reference support as weights.
        f1_macro: Unweighted mean F1 over the classes present.
        f1_per_class: F1 per class.
        iou_per_class: Intersection over union (TP / (TP + FP + FN)) per class.
        mean_iou: Unweighted mean IoU over the classes present.
        precision_per_class: Precision (user's accuracy) per class.
        recall_per_class: Recall (producer's accuracy) per class.
        support_per_class: Number of reference pixels per class.
        confusion_matrix: Counts; rows = reference class, columns = predicted class.
        class_names: Class names, in class-id order.
        class_ids: Class ids, the order of the confusion matrix rows and columns.
        n_samples: Number of pixels evaluated (reference and prediction both non-zero).
        accuracy_per_category: ``{category: {"accuracy": .., "n_samples": ..}}``, or None.
        n_unpredicted: Reference pixels left out because the prediction there is 0 (nodata).
    """

    accuracy: float
    f1_weighted: float
    f1_macro: float
    f1_per_class: dict[str, float]
    iou_per_class: dict[str, float]
    mean_iou: float
    precision_per_class: dict[str, float]
    recall_per_class: dict[str, float]
    support_per_class: dict[str, int]
    confusion_matrix: list[list[int]]
    class_names: tuple[str, ...]
    class_ids: tuple[int, ...]
    n_samples: int
    accuracy_per_category: dict[str, dict[str, float | int]] | None
    n_unpredicted: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with ``confusion_matrix_axes`` stating the matrix orientation."""
        return {
            "accuracy": self.accuracy,
            "f1_weighted": self.f1_weighted,
            "f1_macro": self.f1_macro,
            "mean_iou": self.mean_iou,
            "n_samples": self.n_samples,
            "n_unpredicted": self.n_unpredicted,
            "class_ids": list(self.class_ids),
            "class_names": list(self.class_names),
            "f1_per_class": dict(self.f1_per_class),
            "iou_per_class": dict(self.iou_per_class),
            "precision_per_class": dict(self.precision_per_class),
            "recall_per_class": dict(self.recall_per_class),
            "support_per_class": dict(self.support_per_class),
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "confusion_matrix_axes": CONFUSION_AXES,
            "accuracy_per_category": (
                None
                if self.accuracy_per_category is None
                else {k: dict(v) for k, v in self.accuracy_per_category.items()}
            ),
        }


def compute_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: tuple[ClassInfo, ...],
    categories: np.ndarray | None = None,
    category_names: tuple[str, ...] = (),
) -> Metrics:
    """Compare predicted class ids with reference class ids.

    Pixels where the reference or the prediction is 0 are left out; the number of reference
    pixels without a prediction is reported as ``n_unpredicted``.

    Args:
        y_true: Reference class ids (any shape; 0 = no reference).
        y_pred: Predicted class ids, same shape (0 = nodata).
        classes: Model classes; their ids are the confusion-matrix order.
        categories: Optional category per pixel, same shape. Either integer codes, where
            code ``c >= 1`` is ``category_names[c - 1]`` (or ``str(c)`` when no names are
            given) and 0 means no category, or strings, where "" means no category.
        category_names: Names of the integer category codes 1..N.

    Returns:
        The metrics. Categories without evaluated pixels are left out of the per-category
        table; pixels without a category count in the overall metrics only.

    Raises:
        InputError: Shapes differ, or the prediction holds ids that are not model classes.
        LabelError: The reference holds ids that are not model classes, or no pixel has
            both a reference and a prediction.
    """
    if not classes:
        raise InputError("No model classes given for the evaluation.", "Pass the model classes.")
    ids = tuple(int(c.id) for c in classes)
    names = tuple(c.name for c in classes)
    if len(set(names)) != len(names) or len(set(ids)) != len(ids) or 0 in ids:
        raise InputError(
            f"Model classes need unique names and non-zero ids; got {list(names)}, {list(ids)}.",
            "Check the class list of the model.",
        )
    truth = np.asarray(y_true).ravel()
    pred = np.asarray(y_pred).ravel()
    if np.asarray(y_true).shape != np.asarray(y_pred).shape:
        raise InputError(
            f"Reference {np.asarray(y_true).shape} and prediction {np.asarray(y_pred).shape} "
            "differ in shape.",
            "Evaluate the prediction on the reference's grid.",
        )
    cats = None
    if categories is not None:
        cats = np.asarray(categories)
        if cats.shape != np.asarray(y_true).shape:
            raise InputError(
                f"Categories {cats.shape} and reference {np.asarray(y_true).shape} differ "
                "in shape.",
                "Give one category per reference pixel.",
            )
        cats = cats.ravel()

    _check_ids(truth, ids, reference=True)
    _check_ids(pred, ids, reference=False)

    has_ref = truth != 0
    keep = has_ref & (pred != 0)
    n_unpredicted = int(np.count_nonzero(has_ref & (pred == 0)))
    t = truth[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    n = int(t.size)
    if n == 0:
        raise LabelError(
            "No pixel has both a reference class and a prediction "
            f"({int(np.count_nonzero(has_ref))} reference pixel(s), {n_unpredicted} of them "
            "without prediction).",
            "Check that the reference overlaps the predicted area and uses the model's classes.",
        )

    labels = list(ids)
    cm = confusion_matrix(t, p, labels=labels)  # rows = true (reference), cols = predicted
    precision, recall, f1, support = precision_recall_fscore_support(
        t, p, labels=labels, zero_division=0
    )
    iou = jaccard_score(t, p, labels=labels, average=None, zero_division=0)
    present = [cid for i, cid in enumerate(ids) if cm[i, :].sum() + cm[:, i].sum() > 0]
    f1_macro = f1_score(t, p, labels=present, average="macro", zero_division=0)
    mean_iou = jaccard_score(t, p, labels=present, average="macro", zero_division=0)
    f1_weighted = f1_score(t, p, labels=labels, average="weighted", zero_division=0)

    per_category = None
    if cats is not None:
        per_category = _per_category(t, p, cats[keep], category_names)

    return Metrics(
        accuracy=float(accuracy_score(t, p)),
        f1_weighted=float(f1_weighted),
        f1_macro=float(f1_macro),
        f1_per_class={nm: float(v) for nm, v in zip(names, f1, strict=True)},
        iou_per_class={nm: float(v) for nm, v in zip(names, iou, strict=True)},
        mean_iou=float(mean_iou),
        precision_per_class={nm: float(v) for nm, v in zip(names, precision, strict=True)},
        recall_per_class={nm: float(v) for nm, v in zip(names, recall, strict=True)},
        support_per_class={nm: int(v) for nm, v in zip(names, support, strict=True)},
        confusion_matrix=[[int(x) for x in row] for row in cm],
        class_names=names,
        class_ids=ids,
        n_samples=n,
        accuracy_per_category=per_category,
        n_unpredicted=n_unpredicted,
    )


def _check_ids(values: np.ndarray, ids: tuple[int, ...], reference: bool) -> None:
    found = np.unique(values)
    if not np.issubdtype(found.dtype, np.integer):
        fractional = [v for v in found.tolist() if not (math.isfinite(v) and v == int(v))]
        integral = [int(v) for v in found.tolist() if v not in fractional]
    else:
        fractional, integral = [], [int(v) for v in found.tolist()]
    unknown: list[object] = [v for v in integral if v != 0 and v not in ids] + fractional
    if not unknown:
        return
    shown = ", ".join(str(v) for v in unknown[:10])
    if reference:
        raise LabelError(
            f"The reference holds class id(s) {shown} that are not model classes {list(ids)}.",
            "Map the reference classes onto the model classes with --class-map.",
        )
    raise InputError(
        f"The prediction holds class id(s) {shown} that are not model classes {list(ids)}.",
        "Use a class map produced by the same model.",
    )


def _per_category(
    t: np.ndarray, p: np.ndarray, cats: np.ndarray, category_names: tuple[str, ...]
) -> dict[str, dict[str, float | int]]:
    """Accuracy and sample count per category (categories without pixels left out)."""
    groups: list[tuple[str, np.ndarray]] = []
    if np.issubdtype(cats.dtype, np.integer) or np.issubdtype(cats.dtype, np.floating):
        codes = cats.astype(np.int64)
        present = sorted(int(c) for c in np.unique(codes) if c != 0)
        if category_names:
            bad = [c for c in present if not 1 <= c <= len(category_names)]
            if bad:
                raise InputError(
                    f"Category code(s) {bad[:10]} have no name ({len(category_names)} given).",
                    "Give one category name per code 1..N.",
                )
            order = range(1, len(category_names) + 1)
            groups = [(category_names[c - 1], codes == c) for c in order if c in present]
        else:
            groups = [(str(c), codes == c) for c in present]
    else:
        text = cats.astype(str)
        for value in sorted(set(np.unique(text).tolist()) - {"", "None", "nan"}):
            groups.append((value, text == value))
    out: dict[str, dict[str, float | int]] = {}
    for name, mask in groups:
        n = int(np.count_nonzero(mask))
        if n:
            out[name] = {"accuracy": float(accuracy_score(t[mask], p[mask])), "n_samples": n}
    return out


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _csv_text(rows: list[list[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(rows)
    return buf.getvalue()


def _num(value: float) -> str:
    """Shortest round-tripping text of a float (never 'nan'/'inf' in our metrics)."""
    return repr(float(value)) if math.isfinite(value) else ""


def output_names(metrics: Metrics) -> list[str]:
    """File names :func:`write_metrics` writes for ``metrics``."""
    names = [METRICS_JSON, PER_CLASS_CSV, CONFUSION_CSV]
    if metrics.accuracy_per_category is not None:
        names.append(PER_CATEGORY_CSV)
    return names


def write_metrics(
    metrics: Metrics, out_dir: Path, extra: dict | None = None, overwrite: bool = False
) -> list[Path]:
    r"""Write metrics.json and CSV tables into ``out_dir``, all together or none at all.

    Files: ``metrics.json`` (:meth:`Metrics.to_dict` plus ``extra``), ``per_class.csv``
    (class_id,name,precision,recall,f1,iou,support), ``confusion_matrix.csv`` (corner cell
    ``reference\predicted``, one row per reference class, one column per predicted class)
    and, when categories were given, ``per_category.csv`` (category,accuracy,n_samples).

    Args:
        metrics: The metrics.
        out_dir: Output directory (created if missing).
        extra: Additional top-level JSON keys (model path, device, ...); must not clash with
            metric keys.
        overwrite: Replace existing files.

    Returns:
        The written paths.

    Raises:
        OutputError: The directory is not writable, or files exist and ``overwrite`` is False.
        ValueError: A key of ``extra`` clashes with a metric key.
    """
    out_dir = Path(out_dir)
    doc = metrics.to_dict()
    if extra:
        clash = sorted(set(extra) & set(doc))
        if clash:
            raise ValueError(f"Extra metrics.json keys clash with metric keys: {clash}.")
        doc.update(extra)
    json_text = json.dumps(doc, indent=2, default=_json_default, allow_nan=False) + "\n"

    per_class: list[list[object]] = [
        ["class_id", "name", "precision", "recall", "f1", "iou", "support"]
    ]
    for cid, name in zip(metrics.class_ids, metrics.class_names, strict=True):
        per_class.append([
            cid,
            name,
            _num(metrics.precision_per_class[name]),
            _num(metrics.recall_per_class[name]),
            _num(metrics.f1_per_class[name]),
            _num(metrics.iou_per_class[name]),
            metrics.support_per_class[name],
        ])
    confusion: list[list[object]] = [[CONFUSION_CORNER, *metrics.class_names]]
    for name, row in zip(metrics.class_names, metrics.confusion_matrix, strict=True):
        confusion.append([name, *row])
    texts = {
        METRICS_JSON: json_text,
        PER_CLASS_CSV: _csv_text(per_class),
        CONFUSION_CSV: _csv_text(confusion),
    }
    if metrics.accuracy_per_category is not None:
        rows: list[list[object]] = [["category", "accuracy", "n_samples"]]
        for cat, vals in metrics.accuracy_per_category.items():
            rows.append([cat, _num(float(vals["accuracy"])), int(vals["n_samples"])])
        texts[PER_CATEGORY_CSV] = _csv_text(rows)

    check_output_dir(out_dir, list(texts), overwrite)
    with AtomicOutputs(out_dir, overwrite=overwrite) as outputs:
        for name, text in texts.items():
            outputs.temp_path(name).write_text(text, encoding="utf-8", newline="")
    return [out_dir / name for name in texts]
