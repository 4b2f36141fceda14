"""Panel section 'Review labels': the training polygons whose class is most likely wrong.

'Review labels' runs the engine's ``review`` command in a worker with the raster, the label
layer and the Train section's settings: k models are trained on folds of the polygons
(grouped by region), each polygon is scored by the model that did not train on it (its mean
loss, or confident learning), and the most suspicious polygons come back as
``review.gpkg`` / ``review.csv`` / ``review.json`` in a new folder ``review/<time>`` next to
the models folder. The folds start from random weights: fine-tuning the last model would
score polygons with a model that has seen them. 'Scored by' can replace the k networks with
k random forests of pixels on the same folds (``scorer`` forest: seconds instead of k
trainings, no fold models written); Train's settings are still sent then (its seed,
cache and split settings apply, its network options go unused).

The panel lists the suspects (rank, given -> predicted class, probability); zooming to
one and accepting, relabelling or deleting it are :mod:`.panel_review_suspects`. Then Train
retrains on the corrected labels.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsClassificationQuantile,
    QgsFillSymbol,
    QgsGraduatedSymbolRenderer,
    QgsProject,
    QgsStyle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import jobs, label_layer, presets, results
from .panel_common import TITLE, group_box, narrow_combo, unique_path
from .panel_review_suspects import COLUMNS as COLUMNS  # re-exported: the list's names
from .panel_review_suspects import ZOOM_MARGIN as ZOOM_MARGIN
from .panel_review_suspects import ReviewSuspectsMixin
from .panel_review_suspects import suspect_text as suspect_text

REVIEW_BUTTON_TEXT = "Review labels"
REVIEW_FOLDER = "review"
"""Folder next to the models folder holding one ``<time>`` folder per review."""
REVIEW_LAYER_NAME = "Label review (score)"
REVIEW_LAYER = "review"
"""The layer of ``review.gpkg``."""
RANKINGS = ("loss", "cleanlab")
"""Rankings of ``terraseg review --ranking``: mean out-of-fold loss, confident learning."""
SCORERS = {"network": "Networks (Train's settings; minutes)",
           "forest": "Random forests (seconds)"}
"""``terraseg review --scorer`` values and the 'Scored by' texts; the first is the default
(the engine's)."""
SCORER_WORDS = {"network": "networks", "forest": "random forests"}
"""How the log and the summary name the models of each scorer."""
DEFAULT_FOLDS = 5
DEFAULT_TOP = 50
SCORE_CLASSES = 5
SCORE_RAMP = "Reds"
NEXT_STEP = "Accept, change or delete the suspects, then Train again."
_FOLD_LOG = re.compile(r"fold (\d+)/(\d+)")
"""The engine's log line as a review starts training a fold."""


def review_summary(result: dict[str, Any]) -> str:
    """One line on a review: regions scored by what, ranked how, confident learning flags.

    A result without ``scorer`` (an engine before it) was scored by networks.
    """
    ranking = result.get("ranking", "loss")
    how = "confident learning" if ranking == "cleanlab" else "mean out-of-fold loss"
    scorer = SCORER_WORDS.get(str(result.get("scorer", "network")), str(result.get("scorer")))
    listed = len(result.get("suspects") or [])
    return (f"{result.get('regions', 0)} labelled regions scored by {result.get('k')} "
            f"{scorer} (one per fold), ranked by {how}, {result.get('flagged', 0)} flagged "
            f"by confident learning; the {listed} most suspicious listed")


def style_by_score(layer: QgsVectorLayer, field: str = "score") -> None:
    """Graduated fill on ``field`` (quantiles, white to red), half transparent."""
    renderer = QgsGraduatedSymbolRenderer(field)
    renderer.setSourceSymbol(QgsFillSymbol.createSimple(
        {"color": "#cb181d", "outline_color": "#67000d", "outline_width": "0.6"}))
    renderer.setClassificationMethod(QgsClassificationQuantile())
    renderer.updateClasses(layer, SCORE_CLASSES)
    ramp = QgsStyle.defaultStyle().colorRamp(SCORE_RAMP)
    if ramp is not None:
        renderer.updateColorRamp(ramp)
    layer.setRenderer(renderer)
    layer.setOpacity(0.6)
    layer.triggerRepaint()


class ReviewPanelMixin(ReviewSuspectsMixin):
    """The 'Review labels' section: run a review, list the suspects, act on each.

    The list and the actions per suspect come from
    :class:`~.panel_review_suspects.ReviewSuspectsMixin`.

    Mixed into :class:`~.dock.TerraSegDock` before :class:`~.panel_train.TrainPanelMixin`
    (a review's fold trainings send epoch metrics that are not Train's) and
    :class:`~.panel_jobs.JobsPanelMixin` (their progress becomes the review's);
    relies on the panel's shared state and helpers (``_log``, ``_refuse``, ``_start_job``,
    ``training_options``, ``models_dir``, ``classes``, ``bands_spec``, ...).

    Attributes:
        last_review: The last review: ``folder``, ``label_layer_id`` (the layer reviewed),
            ``labels_crs`` (its CRS, the bounding boxes'), ``layer_id`` (review.gpkg in the
            project), ``result`` (engine payload).
        review_suspects: The suspects still listed, in table order.
        review_decisions: What was done per feature id: ``accepted``, ``relabelled`` (with
            the new class: ``relabelled:NAME``) or ``deleted``.
    """

    def _build_review_box(self) -> QWidget:
        box = group_box("Review labels", "TerraSegReviewBox", collapsed=True)
        self._review_box = box
        layout = QVBoxLayout(box)
        intro = QLabel("Finds training polygons whose class is probably wrong: each one is "
                       "scored by a model trained without it (k networks with the Train "
                       "settings, or k quick random forests).")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.review_folds_spin = QSpinBox()
        self.review_folds_spin.setRange(2, 20)
        self.review_folds_spin.setValue(DEFAULT_FOLDS)
        self.review_folds_spin.setToolTip("Folds: k models are trained, each without one k-th "
                                          "of the polygons (grouped by region), which it "
                                          "scores. Every class needs at least k polygons.")
        form.addRow("Folds", self.review_folds_spin)
        self.review_scorer_combo = narrow_combo(16)
        for value, label in SCORERS.items():
            self.review_scorer_combo.addItem(label, value)
        self.review_scorer_combo.setToolTip(
            "What scores each held-out polygon. Networks (the default, as the engine's): k "
            "trainings with the Train settings - minutes to hours, and the network's own view "
            "of the labels. Random forests: k forests of single pixels' band values on the "
            "same folds - seconds, no training, a quick first pass; with few or noisy "
            "polygons they found more of the flipped polygons than networks did "
            "(docs/label_review.md). They see no texture or shape, so they miss mistakes "
            "only context reveals.")
        form.addRow("Scored by", self.review_scorer_combo)
        self.review_ranking_combo = QComboBox()
        self.review_ranking_combo.addItems(list(RANKINGS))
        self.review_ranking_combo.setToolTip(
            "loss: a polygon's mean loss under the model that did not train on it; "
            "cleanlab: confident learning (per-class thresholds of the predicted "
            "probabilities).")
        form.addRow("Ranking", self.review_ranking_combo)
        self.review_top_spin = QSpinBox()
        self.review_top_spin.setRange(1, 10000)
        self.review_top_spin.setValue(DEFAULT_TOP)
        self.review_top_spin.setToolTip("How many of the most suspicious polygons to list.")
        form.addRow("Polygons listed", self.review_top_spin)
        layout.addLayout(form)
        self.review_button = QPushButton(REVIEW_BUTTON_TEXT)
        self.review_button.setToolTip(
            "Trains k models on folds of the label layer's polygons (networks with the Train "
            "settings, or random forests: 'Scored by') and lists the polygons their held-out "
            "model disagrees with most.")
        self.review_button.clicked.connect(lambda: self.review_labels())
        layout.addWidget(self.review_button)
        self.review_summary = QLabel()
        self.review_summary.setWordWrap(True)
        self.review_summary.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.review_summary)
        self._build_suspect_list(layout)
        self.last_review: dict[str, Any] | None = None
        self.review_suspects: list[dict[str, Any]] = []
        self.review_decisions: dict[str, str] = {}
        self._review_fold: tuple[int, int] | None = None  # (fold index, k) while running
        self._update_review_actions()
        return box

    # ------------------------------------------------------------------------------------
    # Buttons
    # ------------------------------------------------------------------------------------
    def _update_review_controls(self, busy: bool, has_raster: bool, has_labels: bool) -> None:
        """Enable Review labels as the inputs allow (called by ``dock._update_buttons``)."""
        self.review_button.setEnabled(not busy and has_raster and has_labels)
        self._update_review_actions()

    def button_blockers(self) -> dict[str, list[str]]:
        """The other sections' blockers and Review labels' (as Train's: raster, labels)."""
        blockers = super().button_blockers()  # type: ignore[misc]
        blockers["review_button"] = list(blockers.get("train_button", []))
        return blockers

    # ------------------------------------------------------------------------------------
    # A running review: the folds' trainings as one progress, Train's table left alone
    # ------------------------------------------------------------------------------------
    def _on_worker_log(self, level: str, message: str) -> None:
        match = _FOLD_LOG.fullmatch(message) if self.job_kind == "review" else None
        if match:
            self._review_fold = (int(match[1]) - 1, int(match[2]))
        super()._on_worker_log(level, message)  # type: ignore[misc]

    def _on_progress(self, fraction: float, stage: str, eta: Any, message: str) -> None:
        """A fold's training progress as the review's: fold i of k covers (i, i+1) / k."""
        fold = self._review_fold if self.job_kind == "review" else None
        if fold is not None and stage not in ("prepare", "review"):
            index, k = fold
            fraction = (index + max(0.0, min(1.0, fraction))) / k
            message = f"fold {index + 1}/{k}" + (f": {message}" if message else "")
            eta = None  # the fold's time left, not the review's
        super()._on_progress(fraction, stage, eta, message)  # type: ignore[misc]

    def _on_metrics(self, epoch: int, values: dict[str, Any]) -> None:
        """A fold's epoch goes to the log only (Train's table shows the last training)."""
        if self.job_kind != "review":
            super()._on_metrics(epoch, values)  # type: ignore[misc]
            return
        index, k = self._review_fold or (0, 0)
        vals = ", ".join(f"{key} {v:.4f}" for key, v in values.items()
                         if isinstance(v, int | float))
        self._log("info", f"review fold {index + 1}/{k}, epoch {epoch}: {vals}")

    # ------------------------------------------------------------------------------------
    # Run a review
    # ------------------------------------------------------------------------------------
    def review_dir(self) -> Path | None:
        """A new folder ``review/<time>`` beside the models folder; None before saving."""
        models = self.models_dir()
        if models is None:
            return None
        stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H%M%S")
        return unique_path(models.parent / REVIEW_FOLDER / stamp)

    def set_review_options(self, k: int | None = None, ranking: str | None = None,
                           top: int | None = None, scorer: str | None = None) -> None:
        """Set the folds, the ranking, how many are listed and the scorer.

        Args:
            k: Folds.
            ranking: ``loss`` or ``cleanlab``.
            top: Polygons listed.
            scorer: ``network`` or ``forest``.

        Raises:
            KeyError: An unknown ranking or scorer.
        """
        if scorer is not None:
            if scorer not in SCORERS:
                raise KeyError(f"Unknown scorer {scorer!r}; use one of {', '.join(SCORERS)}.")
            self.review_scorer_combo.setCurrentIndex(self.review_scorer_combo.findData(scorer))
        if k is not None:
            self.review_folds_spin.setValue(int(k))
        if ranking is not None:
            if ranking not in RANKINGS:
                raise KeyError(f"Unknown ranking {ranking!r}; use one of {', '.join(RANKINGS)}.")
            self.review_ranking_combo.setCurrentText(ranking)
        if top is not None:
            self.review_top_spin.setValue(int(top))

    def review_scorer(self) -> str:
        """The chosen scorer: ``network`` or ``forest``."""
        return str(self.review_scorer_combo.currentData() or next(iter(SCORERS)))

    def review_job(self, labels: str, out_dir: str) -> dict[str, Any]:
        """The ``review`` job of the panel's raster, labels and Train settings.

        Train's settings go with forests too (the engine leaves them unused; the seed
        still seeds the forests).

        Args:
            labels: The label layer's path for the engine.
            out_dir: The new review folder.

        Raises:
            ValueError: Bands, terrain inputs or the nodata value are not valid.
        """
        raster = self.raster_layer()
        nodata = self.nodata_value()
        return jobs.make_job(
            "review", raster=jobs.raster_layer_path(raster), labels=labels,
            class_field=label_layer.CLASS_FIELD, class_map=presets.class_map(self.classes()),
            bands=self.bands_spec(), nodata=nodata, **self.terrain_options(),
            **self.training_options(), k=self.review_folds_spin.value(),
            ranking=self.review_ranking_combo.currentText(),
            top=self.review_top_spin.value(), scorer=self.review_scorer(), out_dir=out_dir)

    def review_labels(self, wait: bool = False, timeout_s: float = 3600.0) -> bool:
        """Rank the label layer's polygons by how likely their class is wrong (a worker job).

        Saves pending label edits first (the engine reads the saved layer, and the
        suspects' feature ids are its saved ones).

        Args:
            wait: Block (running the Qt event loop) until the job has ended.
            timeout_s: Longest wait.

        Returns:
            True when the job started (with ``wait``: when it also succeeded).
        """
        title = REVIEW_BUTTON_TEXT
        raster, layer = self.raster_layer(), self._label_layer
        if raster is None:
            return self._refuse(title, "Choose a raster layer first.")
        if layer is None or not label_layer.is_label_layer(layer):
            return self._refuse(title, "Choose a label layer (polygons with a "
                                f"'{label_layer.CLASS_FIELD}' field) first.")
        problem = presets.validate_classes(self.classes())
        if problem:
            return self._refuse(title, problem)
        out_dir = self.review_dir()
        if out_dir is None:
            return self._refuse(title, "Save the project (or the label layer) first: reviews "
                                f"are kept in a '{REVIEW_FOLDER}' folder next to it.")
        if not self.save_label_edits():
            return False
        try:
            labels = jobs.vector_layer_path(layer, self._temp_folder(), layer_spec=True)
            job = self.review_job(labels, str(out_dir))
        except (ValueError, OSError) as exc:
            return self._refuse(title, str(exc))
        request = {"folder": str(out_dir), "label_layer_id": layer.id(),
                   "labels_crs": layer.crs().authid(), "labels": labels}
        args = job["args"]
        models = (f"{args.get('model')} from scratch" if args["scorer"] == "network"
                  else "random forests of pixels (Train's network options unused)")
        self._log("info", f"Reviewing the labels of {layer.name()} on {raster.name()}: "
                          f"{args['k']} folds of {models}, ranking {args['ranking']}, "
                          f"into {out_dir}")
        self._review_fold = None
        return self._start_job("review", job,
                               lambda result: self._on_review_result(request, result),
                               wait, timeout_s)

    def _on_review_result(self, request: dict[str, Any], result: dict[str, Any]) -> None:
        self.show_review(result, request)
        self.iface.messageBar().pushMessage(
            TITLE, f"{len(self.review_suspects)} suspicious polygons listed. {NEXT_STEP}",
            Qgis.MessageLevel.Success, 8)

    def show_review(self, result: dict[str, Any], request: dict[str, Any] | None = None) -> None:
        """Show a review's suspects and add its ``review.gpkg`` to the map.

        Args:
            result: The engine's ``review`` result (``suspects``, ``review_gpkg``, ...).
            request: What the panel sent (``label_layer_id``, ``labels_crs``, ``folder``);
                default: the panel's label layer now.

        Raises:
            results.ResultLayerError: review.gpkg cannot be opened.
        """
        layer = self._label_layer
        request = request or {"label_layer_id": layer.id() if layer else None,
                              "labels_crs": layer.crs().authid() if layer else "",
                              "folder": str(Path(str(result.get("review_gpkg", ""))).parent)}
        project = QgsProject.instance()
        old = (self.last_review or {}).get("layer_id")
        if old and project.mapLayer(old) is not None:
            project.removeMapLayer(old)  # one review layer at a time: the newest
        layer_id = None
        gpkg = result.get("review_gpkg")
        if gpkg:
            review = QgsVectorLayer(f"{gpkg}|layername={REVIEW_LAYER}", REVIEW_LAYER_NAME, "ogr")
            if not review.isValid():
                raise results.ResultLayerError(f"Cannot open the layer '{REVIEW_LAYER}' of "
                                               f"{gpkg}.")
            style_by_score(review)
            project.addMapLayer(review, False)
            results.results_group(project, self._label_layer).insertLayer(0, review)
            layer_id = review.id()
        self.last_review = {**request, "layer_id": layer_id, "result": result}
        self.review_decisions = {}
        suspects = sorted(result.get("suspects") or [], key=lambda s: int(s.get("rank", 0)))
        self._fill_review_table(suspects)
        text = review_summary(result)
        self._review_box.setCollapsed(False)  # the list is the next step
        self.review_summary.setText(f"{text}.\n{NEXT_STEP}")
        self._log("info", f"Review: {text}; files in {request.get('folder')}")

    def review_layer(self) -> QgsVectorLayer | None:
        """The last review's ``review.gpkg`` layer, while it is in the project."""
        layer_id = (self.last_review or {}).get("layer_id")
        layer = QgsProject.instance().mapLayer(layer_id) if layer_id else None
        return layer if isinstance(layer, QgsVectorLayer) else None
