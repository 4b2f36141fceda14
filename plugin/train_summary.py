"""What the panel says after training: the summary lines and the new-vs-previous comparison.

Pure functions of the engine's train result (no widgets), so the wording is tested without
a panel. The comparison is the engine's: the model the run was retrained from, scored on
the same held-out pixels (``result["previous"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Comparison:
    """The new model next to the previous one on the same held-out pixels.

    Attributes:
        previous_name: File name of the previous model.
        rows: (label, new value, previous value) per row: accuracy, weighted F1, F1 per
            class; None where a model has no value.
        text: One line: which split, how many pixels, which model is better.
    """

    previous_name: str
    rows: tuple[tuple[str, float | None, float | None], ...]
    text: str


def format_eval(m: dict[str, Any]) -> str:
    """'Validation: accuracy ..., F1 (weighted) ... (n = N px)' and F1 per class."""
    parts = []
    for key, label in (("accuracy", "accuracy"), ("f1_weighted", "F1 (weighted)"),
                       ("mean_iou", "mean IoU")):
        if isinstance(m.get(key), int | float):
            parts.append(f"{label} {m[key]:.3f}")
    text = "Validation: " + ", ".join(parts)
    if m.get("n_samples") is not None:
        text += f" (n = {m['n_samples']} px)"
    f1 = m.get("f1_per_class") or {}
    if f1:
        text += "\nF1 per class: " + ", ".join(f"{k} {v:.3f}" for k, v in f1.items()
                                              if isinstance(v, int | float))
    return text


def summary_lines(result: dict[str, Any], model: str) -> list[str]:
    """The lines shown under Train after a run: model, epochs, validation, kept split."""
    metrics = result.get("metrics") or {}
    val = metrics.get("val") or metrics.get("test") or {}
    lines = [f"Model saved: {model}",
             f"Epochs run: {result.get('epochs')}, best epoch: {result.get('best_epoch')}"]
    if val:
        lines.append(format_eval(val))
    else:
        lines.append("No validation pixels: draw more polygons per class for held-out "
                     "metrics.")
    threshold = result.get("threshold") or {}
    if threshold.get("no_skill"):
        lines.append("Warning: the model has not learnt the first class yet: no threshold "
                     "beats marking every validation pixel as it, so the threshold stays at "
                     "0.5. Train longer or draw more polygons before trusting the map.")
    kept = result.get("split") or {}
    if kept.get("kept_from"):
        n_new = int(kept.get("regions", 0)) - int(kept.get("kept_regions", 0))
        lines.append(f"Split kept from {Path(str(kept['kept_from'])).name}: "
                     f"{kept.get('kept_regions')} polygon(s) keep their side, {n_new} new "
                     "one(s) split among themselves.")
    return lines


def comparison(result: dict[str, Any]) -> Comparison | None:
    """The new model next to the one it was retrained from, or None when there is none.

    Rows: accuracy, weighted F1 and F1 per class, on the validation pixels (else the test
    pixels). The verdict is the engine's (higher weighted F1, then accuracy).
    """
    previous = result.get("previous") or {}
    old_all = previous.get("metrics") or {}
    new_all = result.get("metrics") or {}
    split = next((s for s in ("val", "test") if s in old_all and s in new_all), None)
    if split is None:
        return None
    new, old = new_all[split], old_all[split]
    name = Path(str(previous.get("model", ""))).name
    rows = [("Accuracy", new.get("accuracy"), old.get("accuracy")),
            ("F1 (weighted)", new.get("f1_weighted"), old.get("f1_weighted"))]
    old_f1 = old.get("f1_per_class") or {}
    rows += [(f"F1 {cls}", value, old_f1.get(cls))
             for cls, value in (new.get("f1_per_class") or {}).items()]
    what = "validation" if split == "val" else "test"
    pixels = (previous.get("pixels") or {}).get(split, new.get("n_samples"))
    verdict = {"new": "the new model is better",
               "previous": f"the previous model ({name}) is better",
               "equal": "both models score the same"}.get(
        str((previous.get("better") or {}).get(split)), "")
    text = f"New model vs {name} on the same {pixels} {what} pixels: {verdict}."
    return Comparison(name, tuple(rows), text)
