"""The panel's words after training (plugin/train_summary.py): values in, exact text out."""

from __future__ import annotations

from terraseg.plugin import train_summary

RESULT = {
    "epochs": 12, "best_epoch": 7,
    "metrics": {"val": {"accuracy": 0.8125, "f1_weighted": 0.8, "n_samples": 160,
                        "f1_per_class": {"sealed": 0.75, "unsealed": 0.85}}},
    "split": {"kept_from": "/m/first.tsm", "kept_regions": 6, "regions": 8},
    "previous": {"model": "/m/first.tsm", "pixels": {"val": 160},
                 "better": {"val": "new"},
                 "metrics": {"val": {"accuracy": 0.75, "f1_weighted": 0.7,
                                     "f1_per_class": {"sealed": 0.6}}}},
}


def test_summary_lines_name_model_epochs_validation_and_kept_split() -> None:
    lines = train_summary.summary_lines(RESULT, "/m/second.tsm")
    assert lines == [
        "Model saved: /m/second.tsm",
        "Epochs run: 12, best epoch: 7",
        "Validation: accuracy 0.812, F1 (weighted) 0.800 (n = 160 px)\n"
        "F1 per class: sealed 0.750, unsealed 0.850",
        "Split kept from first.tsm: 6 polygon(s) keep their side, 2 new one(s) split among "
        "themselves.",
    ]
    bare = train_summary.summary_lines({"epochs": 1, "best_epoch": 1}, "m.tsm")
    assert bare[-1].startswith("No validation pixels")
    weak = train_summary.summary_lines(
        {**RESULT, "threshold": {"value": 0.5, "f1": 0.4, "trivial_f1": 0.46, "no_skill": 1.0}},
        "m.tsm")
    assert weak[3].startswith("Warning: the model has not learnt the first class yet")
    skilled = {**RESULT, "threshold": {"value": 0.3, "f1": 0.8, "no_skill": 0.0}}
    assert not any("Warning" in line for line in train_summary.summary_lines(skilled, "m"))


def test_comparison_rows_and_verdict_on_the_same_pixels() -> None:
    compared = train_summary.comparison(RESULT)
    assert compared is not None and compared.previous_name == "first.tsm"
    assert compared.rows == (("Accuracy", 0.8125, 0.75), ("F1 (weighted)", 0.8, 0.7),
                             ("F1 sealed", 0.75, 0.6), ("F1 unsealed", 0.85, None))
    assert compared.text == ("New model vs first.tsm on the same 160 validation pixels: the "
                             "new model is better.")
    worse = {**RESULT, "previous": {**RESULT["previous"], "better": {"val": "previous"}}}
    assert train_summary.comparison(worse).text.endswith(
        "the previous model (first.tsm) is better.")
    assert train_summary.comparison({"metrics": RESULT["metrics"]}) is None
