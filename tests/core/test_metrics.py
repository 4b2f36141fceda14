"""Tests for terraseg.core.metrics with hand-computed expected values."""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from terraseg.core.classes import make_classes
from terraseg.core.metrics import Metrics, compute_metrics, write_metrics
from terraseg.protocol.errors import InputError, LabelError, OutputError

CLASSES = make_classes(["sealed", "unsealed", "water"])

# Hand-made confusion matrix, rows = reference, columns = prediction (deliberately asymmetric):
#              pred sealed  pred unsealed  pred water
# ref sealed        4             2             0
# ref unsealed      0             3             0
# ref water         1             0             2
CM = [[4, 2, 0], [0, 3, 0], [1, 0, 2]]


def pairs_from_cm(cm: list[list[int]], ids: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    truth, pred = [], []
    for i, row in enumerate(cm):
        for j, n in enumerate(row):
            truth += [ids[i]] * n
            pred += [ids[j]] * n
    return np.array(truth, dtype=np.uint8), np.array(pred, dtype=np.uint8)


def example_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The CM pairs plus pixels that must be ignored, shuffled into a 4x5 raster."""
    truth, pred = pairs_from_cm(CM, (1, 2, 3))
    # 3 pixels without reference (ignored), 2 without prediction (n_unpredicted), 1 neither
    truth = np.concatenate([truth, [0, 0, 0, 1, 3, 0]]).astype(np.uint8)
    pred = np.concatenate([pred, [1, 2, 3, 0, 0, 0]]).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(truth.size)
    return truth[order].reshape(3, 6), pred[order].reshape(3, 6)


# Hand-computed values for CM (TP, FP, FN per class):
# sealed:   TP 4, FP 1, FN 2 -> P 4/5, R 4/6, F1 8/11, IoU 4/7
# unsealed: TP 3, FP 2, FN 0 -> P 3/5, R 1,   F1 6/8,  IoU 3/5
# water:    TP 2, FP 0, FN 1 -> P 1,   R 2/3, F1 4/5,  IoU 2/3
PRECISION = {"sealed": Fraction(4, 5), "unsealed": Fraction(3, 5), "water": Fraction(1)}
RECALL = {"sealed": Fraction(4, 6), "unsealed": Fraction(1), "water": Fraction(2, 3)}
F1 = {"sealed": Fraction(8, 11), "unsealed": Fraction(6, 8), "water": Fraction(4, 5)}
IOU = {"sealed": Fraction(4, 7), "unsealed": Fraction(3, 5), "water": Fraction(2, 3)}
SUPPORT = {"sealed": 6, "unsealed": 3, "water": 3}
ACCURACY = Fraction(9, 12)
F1_WEIGHTED = (6 * F1["sealed"] + 3 * F1["unsealed"] + 3 * F1["water"]) / 12
F1_MACRO = sum(F1.values()) / 3
MEAN_IOU = sum(IOU.values()) / 3


def assert_close(actual: dict[str, float], expected: dict[str, Fraction]) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(float(value), abs=1e-12), key


def test_hand_computed_three_classes() -> None:
    truth, pred = example_arrays()
    m = compute_metrics(truth, pred, CLASSES)
    assert m.confusion_matrix == CM
    assert m.class_ids == (1, 2, 3)
    assert m.class_names == ("sealed", "unsealed", "water")
    assert m.n_samples == 12
    assert m.n_unpredicted == 2
    assert m.accuracy == pytest.approx(float(ACCURACY), abs=1e-12)
    assert m.f1_weighted == pytest.approx(float(F1_WEIGHTED), abs=1e-12)
    assert m.f1_macro == pytest.approx(float(F1_MACRO), abs=1e-12)
    assert m.mean_iou == pytest.approx(float(MEAN_IOU), abs=1e-12)
    assert_close(m.precision_per_class, PRECISION)
    assert_close(m.recall_per_class, RECALL)
    assert_close(m.f1_per_class, F1)
    assert_close(m.iou_per_class, IOU)
    assert m.support_per_class == SUPPORT
    assert m.accuracy_per_category is None


def test_confusion_matrix_rows_are_reference() -> None:
    # Every reference 'sealed' pixel predicted 'water': only cell [sealed][water] is set.
    truth = np.array([1, 1, 1, 2])
    pred = np.array([3, 3, 3, 2])
    m = compute_metrics(truth, pred, CLASSES)
    assert m.confusion_matrix == [[0, 0, 3], [0, 1, 0], [0, 0, 0]]
    # rows sum to reference support, columns to prediction counts
    assert [sum(r) for r in m.confusion_matrix] == [3, 1, 0]
    assert m.support_per_class == {"sealed": 3, "unsealed": 1, "water": 0}
    assert m.recall_per_class["sealed"] == 0.0
    assert m.precision_per_class["water"] == 0.0
    assert m.to_dict()["confusion_matrix_axes"].startswith("rows = reference")


def test_absent_class_gets_zero_row_and_column() -> None:
    classes = make_classes(["sealed", "unsealed", "water", "forest"])
    truth, pred = example_arrays()
    m = compute_metrics(truth, pred, classes)
    assert m.confusion_matrix == [[4, 2, 0, 0], [0, 3, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert m.class_ids == (1, 2, 3, 4)
    assert m.support_per_class["forest"] == 0
    assert m.f1_per_class["forest"] == 0.0
    assert m.iou_per_class["forest"] == 0.0
    assert m.precision_per_class["forest"] == 0.0
    assert m.recall_per_class["forest"] == 0.0
    # absent from reference and prediction: left out of the macro averages
    assert m.f1_macro == pytest.approx(float(F1_MACRO), abs=1e-12)
    assert m.mean_iou == pytest.approx(float(MEAN_IOU), abs=1e-12)
    assert m.f1_weighted == pytest.approx(float(F1_WEIGHTED), abs=1e-12)
    assert m.accuracy == pytest.approx(0.75, abs=1e-12)


def test_class_only_predicted_counts_in_macro_averages() -> None:
    # 'water' never in the reference but predicted once: IoU 0 and part of the mean.
    truth = np.array([1, 1, 2, 2])
    pred = np.array([1, 3, 2, 2])
    m = compute_metrics(truth, pred, CLASSES)
    assert m.confusion_matrix == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    # sealed: TP1 FP0 FN1 -> IoU 1/2, F1 2/3; unsealed: IoU 1, F1 1; water: IoU 0, F1 0
    assert m.iou_per_class == pytest.approx({"sealed": 0.5, "unsealed": 1.0, "water": 0.0})
    assert m.mean_iou == pytest.approx(0.5)
    assert m.f1_macro == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m.f1_weighted == pytest.approx((2 * 2 / 3 + 2 * 1) / 4)


def test_zeros_excluded() -> None:
    truth = np.array([[0, 1, 2], [2, 0, 1]])
    pred = np.array([[1, 0, 2], [2, 3, 1]])
    m = compute_metrics(truth, pred, CLASSES)
    # kept pixels: (2,2), (2,2), (1,1); ref 1 at [0,1] has no prediction
    assert m.n_samples == 3
    assert m.n_unpredicted == 1
    assert m.accuracy == 1.0
    assert m.confusion_matrix == [[1, 0, 0], [0, 2, 0], [0, 0, 0]]


def test_per_category_accuracy_codes() -> None:
    truth = np.array([1, 1, 2, 2, 3, 3, 1, 2, 3, 1, 0])
    pred = np.array([1, 2, 2, 2, 3, 1, 1, 0, 3, 3, 1])
    cats = np.array([1, 1, 1, 1, 2, 2, 2, 2, 0, 3, 3])
    m = compute_metrics(truth, pred, CLASSES, cats, ("urban", "rural", "coast", "empty"))
    # urban: idx 0-3 -> correct 1,0,1,1 -> 3/4; rural: idx 4,5,6 (7 unpredicted) -> 2/3;
    # coast: idx 9 (10 has no reference) -> 0/1; idx 8 has no category; 'empty' has no pixels
    assert m.accuracy_per_category == {
        "urban": {"accuracy": 0.75, "n_samples": 4},
        "rural": {"accuracy": pytest.approx(2 / 3, abs=1e-12), "n_samples": 3},
        "coast": {"accuracy": 0.0, "n_samples": 1},
    }
    assert list(m.accuracy_per_category) == ["urban", "rural", "coast"]
    assert m.n_samples == 9  # overall metrics include the uncategorised pixel
    assert m.accuracy == pytest.approx(6 / 9)


def test_per_category_accuracy_strings_and_unnamed_codes() -> None:
    truth = np.array([1, 2, 3, 1])
    pred = np.array([1, 2, 1, 2])
    names = np.array(["forest", "forest", "urban", ""])
    m = compute_metrics(truth, pred, CLASSES, names)
    assert m.accuracy_per_category == {
        "forest": {"accuracy": 1.0, "n_samples": 2},
        "urban": {"accuracy": 0.0, "n_samples": 1},
    }
    m2 = compute_metrics(truth, pred, CLASSES, np.array([5, 5, 7, 0]))
    assert m2.accuracy_per_category == {
        "5": {"accuracy": 1.0, "n_samples": 2},
        "7": {"accuracy": 0.0, "n_samples": 1},
    }
    with pytest.raises(InputError, match="no name"):
        compute_metrics(truth, pred, CLASSES, np.array([1, 2, 3, 0]), ("a", "b"))


def test_input_errors() -> None:
    with pytest.raises(InputError, match="shape"):
        compute_metrics(np.array([1, 2]), np.array([1, 2, 3]), CLASSES)
    with pytest.raises(LabelError, match="7"):
        compute_metrics(np.array([1, 7]), np.array([1, 2]), CLASSES)
    with pytest.raises(InputError, match="prediction") as info:
        compute_metrics(np.array([1, 2]), np.array([1, 9]), CLASSES)
    assert not isinstance(info.value, LabelError)
    with pytest.raises(LabelError, match="No pixel"):
        compute_metrics(np.array([0, 1, 0]), np.array([2, 0, 0]), CLASSES)
    with pytest.raises(InputError, match="shape"):
        compute_metrics(np.array([1, 2]), np.array([1, 2]), CLASSES, np.array([1]))


def test_to_dict_is_json_ready() -> None:
    truth, pred = example_arrays()
    d = compute_metrics(truth, pred, CLASSES).to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    for key in ("accuracy", "f1_weighted", "f1_per_class", "iou_per_class", "confusion_matrix",
                "n_samples", "confusion_matrix_axes", "class_ids", "class_names"):
        assert key in d
    assert d["confusion_matrix_axes"] == (
        "rows = reference class, columns = predicted class, in class_ids order"
    )


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_write_metrics_files(tmp_path: Path) -> None:
    truth, pred = example_arrays()
    cats = np.where(np.arange(truth.size).reshape(truth.shape) % 2 == 0, 1, 2)
    m = compute_metrics(truth, pred, CLASSES, cats, ("urban", "rural"))
    out = tmp_path / "eval"
    paths = write_metrics(m, out, extra={"model": Path("/models/m.terraseg"),
                                         "device": "cpu", "n_tiles": np.int64(4)})
    names = ["metrics.json", "per_class.csv", "confusion_matrix.csv", "per_category.csv"]
    assert paths == [out / n for n in names]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temp files left

    doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert doc["accuracy"] == pytest.approx(0.75, abs=1e-12)
    assert doc["f1_weighted"] == pytest.approx(float(F1_WEIGHTED), abs=1e-12)
    assert doc["confusion_matrix"] == CM
    assert doc["confusion_matrix_axes"].startswith("rows = reference class")
    assert doc["n_samples"] == 12 and doc["n_unpredicted"] == 2
    assert doc["class_names"] == ["sealed", "unsealed", "water"]
    assert doc["class_ids"] == [1, 2, 3]
    assert doc["f1_per_class"]["sealed"] == pytest.approx(8 / 11, abs=1e-12)
    assert doc["iou_per_class"]["water"] == pytest.approx(2 / 3, abs=1e-12)
    assert doc["support_per_class"] == SUPPORT
    assert doc["model"] == "/models/m.terraseg" and doc["device"] == "cpu"
    assert doc["n_tiles"] == 4
    assert doc["accuracy_per_category"] == {
        k: dict(v) for k, v in m.accuracy_per_category.items()  # type: ignore[union-attr]
    }

    per_class = read_csv(out / "per_class.csv")
    assert per_class[0] == ["class_id", "name", "precision", "recall", "f1", "iou", "support"]
    assert [r[:2] for r in per_class[1:]] == [["1", "sealed"], ["2", "unsealed"], ["3", "water"]]
    for row in per_class[1:]:
        name = row[1]
        values = [float(v) for v in row[2:6]]
        expected = [PRECISION[name], RECALL[name], F1[name], IOU[name]]
        assert values == pytest.approx([float(v) for v in expected], abs=1e-12)
        assert int(row[6]) == SUPPORT[name]

    confusion = read_csv(out / "confusion_matrix.csv")
    assert confusion[0] == ["reference\\predicted", "sealed", "unsealed", "water"]
    assert confusion[1:] == [
        ["sealed", "4", "2", "0"],
        ["unsealed", "0", "3", "0"],
        ["water", "1", "0", "2"],
    ]

    per_category = read_csv(out / "per_category.csv")
    assert per_category[0] == ["category", "accuracy", "n_samples"]
    assert m.accuracy_per_category is not None
    assert [r[0] for r in per_category[1:]] == list(m.accuracy_per_category)
    for row in per_category[1:]:
        ref = m.accuracy_per_category[row[0]]
        assert float(row[1]) == ref["accuracy"] and int(row[2]) == ref["n_samples"]
    assert sum(int(r[2]) for r in per_category[1:]) == 12


def test_write_metrics_without_categories_and_overwrite(tmp_path: Path) -> None:
    truth, pred = example_arrays()
    m = compute_metrics(truth, pred, CLASSES)
    paths = write_metrics(m, tmp_path)
    assert [p.name for p in paths] == ["metrics.json", "per_class.csv", "confusion_matrix.csv"]
    before = {p.name: p.read_bytes() for p in paths}

    other = compute_metrics(np.array([1, 2]), np.array([1, 1]), CLASSES)
    with pytest.raises(OutputError) as info:
        write_metrics(other, tmp_path)
    assert "--overwrite" in info.value.hint
    assert {p.name: p.read_bytes() for p in paths} == before  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)

    write_metrics(other, tmp_path, overwrite=True)
    assert json.loads((tmp_path / "metrics.json").read_text())["n_samples"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


def test_write_metrics_rejects_clashing_extra(tmp_path: Path) -> None:
    m = compute_metrics(np.array([1, 2]), np.array([1, 2]), CLASSES)
    with pytest.raises(ValueError, match="accuracy"):
        write_metrics(m, tmp_path, extra={"accuracy": 1.0})
    assert list(tmp_path.iterdir()) == []


def test_metrics_is_frozen() -> None:
    m = compute_metrics(np.array([1, 2]), np.array([1, 2]), CLASSES)
    assert isinstance(m, Metrics)
    with pytest.raises(AttributeError):
        m.accuracy = 0.0  # type: ignore[misc]
