"""Panel section 'Quick first map': a random-forest map in seconds, before the deep model.

The engine's ``quickmap`` command fits a random forest of single pixels on the label
layer's training polygons (the same split as training, so the validation polygons are
held out) and maps the raster with it. The panel adds its probability and class layers as
Predict does and shows the held-out accuracy; the forest is not kept (no model file), and
the panel says that a trained model gives the better map.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from qgis.core import Qgis
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from . import jobs, label_layer, presets, results
from .panel_common import TITLE, group_box, unique_path

QUICK_BUTTON_TEXT = "Quick map (random forest, ~seconds)"
NEXT_STEP = "Train a model for a better map (Train, below)."


def quick_summary(result: dict[str, Any]) -> str:
    """What the panel shows of a quick map: held-out accuracy, F1 per class, pixels fitted.

    Args:
        result: The engine's ``quickmap`` result.
    """
    val = result.get("validation")
    fitted = sum((result.get("sampled_pixels") or {}).get("train", {}).values())
    lines = [f"Quick map (random forest, {result.get('trees')} trees on {fitted} "
             f"training pixels; not kept as a model)"]
    if val:
        f1 = ", ".join(f"{k} {v:.3f}" for k, v in (val.get("f1_per_class") or {}).items())
        lines.append(f"Validation (held-out polygons, n = {val.get('n_samples')} px): "
                     f"accuracy {float(val.get('accuracy', 0.0)):.3f}; F1 {f1}")
    else:
        lines.append("No validation polygons: draw more polygons per class for a held-out "
                     "accuracy.")
    shares = result.get("class_shares") or {}
    if shares:
        lines.append("Map: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in shares.items())
                     + " of the pixels with data")
    lines.append(NEXT_STEP)
    return "\n".join(lines)


class QuickMapPanelMixin:
    """The quick first map of the panel.

    Mixed into :class:`~.dock.TerraSegDock`; relies on the panel's shared state and helpers
    (``_log``, ``_refuse``, ``_start_job``, ``models_dir``, ``classes``, ...).
    """

    def _build_quick_box(self) -> QWidget:
        box = group_box("Quick first map", "TerraSegQuickBox")
        layout = QVBoxLayout(box)
        intro = QLabel("A first map in seconds from the labels drawn so far (a random forest "
                       "of single pixels); then train a model for a better one.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.quick_button = QPushButton(QUICK_BUTTON_TEXT)
        self.quick_button.setToolTip(
            "Fits a random forest on the training polygons (validation polygons are held "
            "out, as in training) and maps the whole raster. No model file is kept.")
        self.quick_button.clicked.connect(lambda: self.quick_map())
        layout.addWidget(self.quick_button)
        self.quick_summary = QLabel()
        self.quick_summary.setWordWrap(True)
        self.quick_summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.quick_summary)
        return box

    def quick_results_dir(self) -> Path | None:
        """A new folder ``quick_maps/<time>`` beside the models folder; None before saving."""
        models = self.models_dir()
        if models is None:
            return None
        stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H%M%S")
        return unique_path(models.parent / "quick_maps" / stamp)

    def quick_map(self, wait: bool = False, timeout_s: float = 600.0) -> bool:
        """Map the whole raster with a random forest fitted on the label layer's polygons.

        Saves pending label edits first; the results go to 'TerraSeg results' as
        Predict's do. With a model trained or loaded, its split is kept (``split_from``):
        the quick map is measured on the model's validation polygons.

        Args:
            wait: Block (running the Qt event loop) until the job has ended.
            timeout_s: Longest wait.

        Returns:
            True when the job started (with ``wait``: when it also succeeded).
        """
        raster, layer, classes = self.raster_layer(), self._label_layer, self.classes()
        if raster is None:
            return self._refuse("Quick map", "Choose a raster layer first.")
        if layer is None or not label_layer.is_label_layer(layer):
            return self._refuse("Quick map", "Choose or create a label layer and draw "
                                "polygons of at least two classes first.")
        problem = presets.validate_classes(classes)
        if problem:
            return self._refuse("Quick map", problem)
        out_dir = self.quick_results_dir()
        if out_dir is None:
            return self._refuse("Quick map", "Save the project (or the label layer) first: "
                                "quick maps are kept in a 'quick_maps' folder next to it.")
        try:
            bands, raster_path = self.bands_spec(), jobs.raster_layer_path(raster)
        except ValueError as exc:
            return self._refuse("Quick map", str(exc))
        if not self.save_label_edits():
            return False
        stats = label_layer.class_stats(layer, classes)
        labelled = [c.name for c in classes if stats.get(c.name, (0.0, 0))[1] > 0]
        if len(labelled) < 2:
            return self._refuse("Quick map", "Draw polygons of at least two classes first "
                                f"(labelled so far: {', '.join(labelled) or 'none'}).")
        try:
            labels_path = jobs.vector_layer_path(layer, self._temp_folder(), layer_spec=True)
        except OSError as exc:
            return self._refuse("Quick map", str(exc))
        # after a training, the model's validation polygons stay held out here too
        split_from = (self.last_model if self.last_model and Path(self.last_model).is_file()
                      else None)
        job = jobs.quickmap_job(raster=raster_path, labels=labels_path, out_dir=str(out_dir),
                                class_field=label_layer.CLASS_FIELD,
                                class_map=presets.class_map(classes), bands=bands,
                                val_fraction=round(self.val_spin.value(), 4),
                                split_from=split_from)
        self._log("info", f"Quick map of {raster.name()} from {layer.name()} (random forest; "
                          f"bands {bands}) into {out_dir}")
        return self._start_job("quickmap", job, self._on_quickmap_result, wait, timeout_s)

    def _on_quickmap_result(self, result: dict[str, Any]) -> None:
        prob, cls = str(result["probability"]), str(result["classes"])
        colours = {c.name.lower(): c.colour for c in self.classes()}
        classes = [{**c, "colour": colours.get(str(c["name"]).lower(), c.get("colour"))}
                   for c in result.get("class_list") or []]
        layers = results.add_results(prob, cls, classes,
                                     name=f"quick map {Path(cls).parent.name}")
        self.last_results = {"probability": prob, "classes": cls,
                             "folder": str(Path(cls).parent), "layers": layers,
                             "result": result, "model": None, "class_list": classes}
        text = quick_summary(result)
        self.quick_summary.setText(text)
        for line in text.splitlines():
            self._log("info", line)
        self.iface.messageBar().pushMessage(
            TITLE, f"Quick map added to '{results.GROUP_NAME}'. {NEXT_STEP}",
            Qgis.MessageLevel.Success, 8)
