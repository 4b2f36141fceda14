"""Panel section 'Training': options, start and cancel, epoch metrics and summary."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsProject
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..protocol.options import DEFAULTS, SPEC_BY_JOB_KEY, interactive_default
from . import jobs, label_layer, modelinfo, presets, settings, train_summary
from .panel_common import METRIC_COLUMNS, TITLE, group_box, odd_spin, unique_path
from .panel_encoder import EncoderPanelMixin
from .panel_pseudo import PseudoPanelMixin, has_polygons, pseudo_summary
from .panel_recipe import RecipePanelMixin
from .presets import ClassDef

# The panel's defaults are the engine's (protocol.options.DEFAULTS) except QGIS's
# interactive ones (protocol.options.INTERACTIVE, shared with Processing's Train model):
# interactive runs stop sooner, tile networks start from the presets' tile size and train on
# small batches of whole tiles.
PANEL_EPOCHS: int = interactive_default("epochs")
PANEL_TILE_PX: int = interactive_default("tile_size")
TILE_BATCH_SIZE: int = interactive_default("batch_size", tile_network=True)
TILE_SAMPLES_PER_EPOCH: int = interactive_default("samples_per_epoch", tile_network=True)


def _minimum(job_key: str) -> int:
    """The smallest valid value of an integer training option (0 when it has none)."""
    return int(SPEC_BY_JOB_KEY[job_key].minimum or 0)


def _joined(values: tuple[int, ...]) -> str:
    """A tuple option as the panel's text, ``2,2,2``."""
    return ",".join(str(v) for v in values)


class TrainPanelMixin(EncoderPanelMixin, PseudoPanelMixin, RecipePanelMixin):
    """Training options, start/cancel, metrics table and summary of the panel.

    Its pseudo-label controls (densify, a coarse map as labels) are
    :class:`~.panel_pseudo.PseudoPanelMixin`'s, its Recipe
    :class:`~.panel_recipe.RecipePanelMixin`'s, its Pretrained encoder
    :class:`~.panel_encoder.EncoderPanelMixin`'s.

    Mixed into :class:`~.dock.TerraSegDock`; relies on the panel's shared state and helpers
    (``_log``, ``_refuse``, ``_start_job``, ``_update_buttons``, ...).
    """

    def _build_train_box(self) -> QWidget:
        box = group_box("Train", "TerraSegTrainBox")
        layout = QVBoxLayout(box)
        form = QFormLayout()
        form.addRow("Recipe", self._build_recipe_combo())
        form.addRow(self.recipe_note)  # why the raster's pixel size picked it
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(_minimum("epochs"), 100000)
        self.epochs_spin.setValue(PANEL_EPOCHS)
        form.addRow("Epochs (max)", self.epochs_spin)
        self.arch_combo = QComboBox()
        self.arch_combo.addItems([*presets.PATCH_MODELS, *presets.TILE_MODELS])
        self.arch_combo.setToolTip("patch_cnn: patch classifier (study 000); unet*: U-Nets "
                                   "trained on whole tiles (study 001), e.g. for landslides.")
        self.arch_combo.currentTextChanged.connect(self._on_arch_changed)
        form.addRow("Architecture", self.arch_combo)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(presets.TILE_STRIDE_PX, 1024)
        self.tile_spin.setSingleStep(presets.TILE_STRIDE_PX)
        self.tile_spin.setValue(PANEL_TILE_PX)
        self.tile_spin.setToolTip("U-Nets: training tile in pixels (a multiple of "
                                  f"{presets.TILE_STRIDE_PX}).")
        form.addRow("Tile size (px)", self.tile_spin)
        self.patch_spin = odd_spin(_minimum("patch_size"), 1001, DEFAULTS.network.patch_px)
        self.patch_spin.setToolTip("Input cutout in pixels (odd): the context the model sees.")
        form.addRow("Patch size (px)", self.patch_spin)
        self.block_spin = odd_spin(_minimum("block_size"), 501, DEFAULTS.network.block_px)
        self.block_spin.setToolTip("Predicted centre block in pixels (odd).")
        form.addRow("Block size (px)", self.block_spin)
        self.stride_spin = QSpinBox()
        self.stride_spin.setRange(_minimum("stride"), int(SPEC_BY_JOB_KEY["stride"].maximum))
        self.stride_spin.setValue(DEFAULTS.network.stride_px)
        self.stride_spin.setToolTip("Patch CNN: the network's stride in pixels; 0 = the block "
                                    "size (1: a prediction per pixel, e.g. few polygons).")
        self.scratch_check = QCheckBox("From scratch")
        self.scratch_check.setToolTip("Do not start from the last model: train a new network "
                                      "from random weights.")
        form.addRow("", self.scratch_check)
        form.addRow(self._build_densify_check())  # spans the form: a long text
        layout.addLayout(form)
        layout.addWidget(self._build_pseudo_box())
        layout.addWidget(self._build_encoder_box())

        adv = group_box("Advanced", "TerraSegTrainAdvanced", collapsed=True)
        adv_form = QFormLayout(adv)
        self.patience_spin = QSpinBox()
        self.patience_spin.setRange(_minimum("patience"), 100000)
        self.patience_spin.setValue(DEFAULTS.optim.patience)
        adv_form.addRow("Early-stopping patience", self.patience_spin)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(DEFAULTS.optim.lr)
        adv_form.addRow("Learning rate", self.lr_spin)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(_minimum("batch_size"), 65536)
        self.batch_spin.setValue(DEFAULTS.optim.batch_size)
        adv_form.addRow("Batch size", self.batch_spin)
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(_minimum("samples_per_epoch"), 10_000_000)
        self.samples_spin.setValue(DEFAULTS.optim.samples_per_epoch)
        adv_form.addRow("Samples per epoch (min)", self.samples_spin)
        self.blocks_edit = QLineEdit(_joined(DEFAULTS.network.blocks))
        self.blocks_edit.setToolTip("Residual blocks per stage, e.g. 2,2,2")
        adv_form.addRow("Blocks per stage", self.blocks_edit)
        self.planes_edit = QLineEdit(_joined(DEFAULTS.network.planes))
        self.planes_edit.setToolTip("Channels per stage, e.g. 4,8,16")
        adv_form.addRow("Channels per stage", self.planes_edit)
        adv_form.addRow("Stride (px, 0 = block size)", self.stride_spin)
        self.val_spin = QDoubleSpinBox()
        self.val_spin.setRange(0.0, 0.9)
        self.val_spin.setSingleStep(0.05)
        self.val_spin.setValue(DEFAULTS.split.val_fraction)
        adv_form.addRow("Validation fraction", self.val_spin)
        self.augment_edit = QLineEdit(DEFAULTS.augment.augment)
        adv_form.addRow("Augmentation", self.augment_edit)
        self.accelerator_combo = QComboBox()
        self.accelerator_combo.addItems(["auto", "cpu", "gpu"])
        self.accelerator_combo.setCurrentText(DEFAULTS.runtime.accelerator)
        adv_form.addRow("Device", self.accelerator_combo)
        self.cache_edit = QLineEdit()
        self.cache_edit.setPlaceholderText("engine default (~/.cache/terraseg)")
        adv_form.addRow("Cache folder", self.cache_edit)
        layout.addWidget(adv)

        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(lambda: self.start_training())
        self.cancel_train_button = QPushButton("Cancel")
        self.cancel_train_button.clicked.connect(self.cancel_training)
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_train_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.device_label = QLabel("Device: –")
        layout.addWidget(self.device_label)

        self.metrics_table = QTableWidget(0, 1 + len(METRIC_COLUMNS))
        self.metrics_table.setHorizontalHeaderLabels(
            ["Epoch", "Train loss", "Train acc", "Val loss", "Val acc"])
        self.metrics_table.verticalHeader().setVisible(False)
        self.metrics_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.metrics_table.setMaximumHeight(160)
        layout.addWidget(self.metrics_table)
        self.train_summary = QLabel()
        self.train_summary.setWordWrap(True)
        self.train_summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.train_summary)
        self.compare_label = QLabel()
        self.compare_label.setWordWrap(True)
        self.compare_label.setVisible(False)
        layout.addWidget(self.compare_label)
        self.compare_table = QTableWidget(0, 2)
        self.compare_table.setObjectName("TerraSegCompareTable")
        self.compare_table.setToolTip("The new model and the one it was retrained from, on "
                                      "the same validation pixels.")
        self.compare_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.compare_table.setMaximumHeight(160)
        self.compare_table.setVisible(False)
        layout.addWidget(self.compare_table)
        return box

    # ------------------------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------------------------
    def set_training_options(self, **options: Any) -> None:
        """Set training options by engine name (counts as the user's choice of recipe).

        Keys: ``recipe`` (a Recipe title, applied first), ``model``, ``tile_size``,
        ``epochs``, ``patch_size``, ``block_size``, ``stride``, ``from_scratch``,
        ``patience``, ``lr``, ``batch_size``, ``samples_per_epoch``, ``blocks``, ``planes``,
        ``val_fraction``, ``augment``, ``accelerator``, ``cache_dir``. A recipe the raster's
        pixel size picked and nobody changed goes back to the panel's defaults first, so
        the options mean the same on any raster.
        """
        recipe = options.pop("recipe", None)
        if recipe is not None:
            self.set_recipe(str(recipe))
        else:
            self._withdraw_auto_recipe()
        self._set_options(**options)

    def _option_widgets(self) -> tuple[dict[str, Any], dict[str, QLineEdit]]:
        """(spin boxes, line edits) by job key."""
        spins = {"epochs": self.epochs_spin, "patch_size": self.patch_spin,
                 "tile_size": self.tile_spin, "block_size": self.block_spin,
                 "stride": self.stride_spin, "patience": self.patience_spin,
                 "lr": self.lr_spin, "batch_size": self.batch_spin,
                 "samples_per_epoch": self.samples_spin, "val_fraction": self.val_spin}
        edits = {"blocks": self.blocks_edit, "planes": self.planes_edit,
                 "augment": self.augment_edit, "cache_dir": self.cache_edit}
        return spins, edits

    def _set_options(self, **options: Any) -> None:
        """Fill the widgets of ``options`` (job keys); :meth:`set_training_options`'s work."""
        spins, edits = self._option_widgets()
        for key, value in options.items():
            if key in spins:
                spins[key].setValue(value)
            elif key in edits:
                text = value if isinstance(value, str) else ",".join(str(v) for v in value)
                edits[key].setText(text or "")
            elif key == "from_scratch":
                self.scratch_check.setChecked(bool(value))
            elif key == "accelerator":
                self.accelerator_combo.setCurrentText(str(value))
            elif key == "model":
                if self.arch_combo.findText(str(value)) < 0:
                    raise KeyError(f"Unknown architecture {value!r}.")
                self.arch_combo.setCurrentText(str(value))
            else:
                raise KeyError(f"Unknown training option {key!r}.")

    def _widget_values(self) -> dict[str, Any]:
        """Every option with a widget, as the widgets hold it (text for blocks, planes)."""
        spins, edits = self._option_widgets()
        return {"model": self.arch_combo.currentText(),
                **{k: w.value() for k, w in spins.items()},
                **{k: w.text().strip() for k, w in edits.items()}}

    def training_options(self) -> dict[str, Any]:
        """The engine ``train`` options set in the panel (besides data and labels).

        Patch CNNs send ``stride``, tile networks ``tile_size``; the chosen recipe adds its
        options without widgets (:meth:`recipe_job_options`).
        """
        opts: dict[str, Any] = {
            "epochs": self.epochs_spin.value(), "patch_size": self.patch_spin.value(),
            "block_size": self.block_spin.value(), "patience": self.patience_spin.value(),
            "lr": self.lr_spin.value(), "batch_size": self.batch_spin.value(),
            "samples_per_epoch": self.samples_spin.value(),
            "val_fraction": self.val_spin.value(),
            "blocks": self.blocks_edit.text().strip() or None,
            "planes": self.planes_edit.text().strip() or None,
            "augment": self.augment_edit.text().strip() or None,
            "accelerator": self.accelerator_combo.currentText(),
            "cache_dir": self.cache_edit.text().strip() or None,
            "model": self.arch_combo.currentText(),
        }
        if self.is_tile_model():
            opts["tile_size"] = self.tile_spin.value()
        else:
            opts["stride"] = self.stride_spin.value()
        return {**opts, **self.recipe_job_options()}

    def is_tile_model(self) -> bool:
        """Whether the chosen architecture is a tile network (U-Net family)."""
        return self.arch_combo.currentText() in presets.TILE_MODELS

    def _on_arch_changed(self, _name: str = "") -> None:
        tile = self.is_tile_model()
        self.tile_spin.setEnabled(tile)
        for widget in (self.patch_spin, self.block_spin, self.stride_spin, self.blocks_edit,
                       self.planes_edit):
            widget.setEnabled(not tile)

    def _apply_preset_defaults(self, preset: presets.Preset) -> None:
        """A task's architecture and sizes (U-Nets: small batches of whole tiles)."""
        self.arch_combo.setCurrentText(preset.model)
        if preset.model in presets.TILE_MODELS:
            self.tile_spin.setValue(preset.tile_px)
            self.batch_spin.setValue(TILE_BATCH_SIZE)
            self.samples_spin.setValue(TILE_SAMPLES_PER_EPOCH)
        else:
            self.batch_spin.setValue(DEFAULTS.optim.batch_size)
            self.samples_spin.setValue(DEFAULTS.optim.samples_per_epoch)
        self._on_arch_changed()
        if preset.terrain:
            self.terrain_box.setCollapsed(False)

    def models_dir(self) -> Path | None:
        """``models`` next to the project file, else next to the label layer's file."""
        home = QgsProject.instance().absolutePath()
        if home:
            return Path(home) / "models"
        layer = self._label_layer
        if layer is not None:
            file_path, _ = jobs.split_source(layer.source())
            if Path(file_path).is_file():
                return Path(file_path).resolve().parent / "models"
        return None

    def new_model_path(self) -> Path | None:
        """A new model file name ``models/YYYY-MM-DD_HHMM_<task>.tsm``."""
        folder = self.models_dir()
        if folder is None:
            return None
        stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H%M")
        slug = presets.slug_for(self.preset_name(), self.classes())
        return unique_path(folder / f"{stamp}_{slug}.tsm")

    def _init_model_for(self, classes: list[ClassDef],
                        bands: str) -> tuple[str | None, dict[str, Any], str]:
        """(model to fine-tune from or None, its architecture options, how training starts).

        Fine-tuning keeps the last model's architecture, so its patch/block sizes and stage
        settings replace the panel's.
        """
        if self.scratch_check.isChecked():
            return None, {}, "from scratch (option)"
        if not self.last_model or not Path(self.last_model).is_file():
            return None, {}, "from scratch (no previous model)"
        try:
            meta = modelinfo.read_model_metadata(self.last_model)
        except modelinfo.ModelInfoError as exc:
            return None, {}, f"from scratch ({exc})"
        names = [c["name"] for c in modelinfo.model_classes(meta)]
        if [n.lower() for n in names] != [c.name.lower() for c in classes]:
            return None, {}, (f"from scratch: the last model's classes ({', '.join(names)}) "
                              "differ from the task's")
        indices = [i for i, _ in modelinfo.model_bands(meta)]
        wanted = [int(tok.split("=")[-1]) for tok in bands.split(",")]
        if indices != wanted:
            return None, {}, "from scratch: the last model uses other bands"
        params = (meta.get("architecture") or {}).get("params") or {}
        arch: dict[str, Any] = {}
        for key, option in (("patch_px", "patch_size"), ("block_px", "block_size"),
                            ("blocks", "blocks"), ("planes", "planes")):
            if params.get(key):
                value = params[key]
                arch[option] = ",".join(str(v) for v in value) if isinstance(value, list) else (
                    int(value))
        if params.get("patch_px"):  # a patch CNN keeps its stride (older files: 0 = block)
            arch["stride"] = int(params.get("stride_px") or 0)
        if (meta.get("architecture") or {}).get("name"):
            arch["model"] = meta["architecture"]["name"]
        geometry = meta.get("geometry") or {}
        if geometry.get("kind") == "tile" and geometry.get("tile_px"):
            arch["tile_size"] = int(geometry["tile_px"])
        return self.last_model, arch, f"fine-tuning {Path(self.last_model).name}"

    def start_training(self, wait: bool = False, timeout_s: float = 3600.0) -> bool:
        """Train a model on the raster and the label layer in a worker process.

        Saves pending label edits first. Starts from :attr:`last_model` unless 'From
        scratch' is checked (or the last model has other classes or bands).

        Args:
            wait: Block (running the Qt event loop) until the job has ended.
            timeout_s: Longest wait.

        Returns:
            True when the job started (with ``wait``: when it also succeeded).
        """
        raster = self.raster_layer()
        layer = self._label_layer
        classes = self.classes()
        if raster is None:
            return self._refuse("Train", "Choose a raster layer first.")
        if layer is None or not label_layer.is_label_layer(layer):
            return self._refuse("Train", "Choose or create a label layer (polygons with a "
                                f"'{label_layer.CLASS_FIELD}' field) first.")
        problem = presets.validate_classes(classes)
        if problem:
            return self._refuse("Train", problem)
        try:
            bands = self.bands_spec()
            raster_path = jobs.raster_layer_path(raster)
            terrain = self.terrain_options()
        except ValueError as exc:
            return self._refuse("Train", str(exc))
        init_model, arch, how = self._init_model_for(classes, bands)
        try:  # a missing encoder file is refused before any job
            encoder, encoder_note = self.encoder_train_args(
                arch.get("model") or self.arch_combo.currentText(), init_model)
        except ValueError as exc:
            return self._refuse("Train", str(exc))
        if not self.save_label_edits():
            return False
        stats = label_layer.class_stats(layer, classes)
        labelled = [c.name for c in classes if stats.get(c.name, (0.0, 0))[1] > 0]
        # with a coarse map the polygons are corrections: one class, or none, is enough
        if len(labelled) < 2 and self.coarse_layer() is None:
            return self._refuse("Train", "Draw polygons of at least two classes first "
                                f"(labelled so far: {', '.join(labelled) or 'none'}), or "
                                "choose a Coarse map as labels.")
        if not self.confirm_labels_inside():  # classes labelled only outside the raster
            return False
        if not self.confirm_band_coverage():  # chosen bands blank much of the raster
            return False
        out = self.new_model_path()
        if out is None:
            return self._refuse("Train", "Save the project (or the label layer) first: "
                                "models are kept in a 'models' folder next to it.")
        out.parent.mkdir(parents=True, exist_ok=True)
        options = {**self.training_options(), **arch}
        try:
            labels_path = jobs.vector_layer_path(layer, self._temp_folder(), layer_spec=True)
            pseudo = self.pseudo_train_args(labels_path, has_polygons(layer))
        except (OSError, ValueError) as exc:
            return self._refuse("Train", str(exc))
        note = self.pseudo_log_note(pseudo)
        labels_path = pseudo.pop("labels", labels_path)
        job = jobs.train_job(
            raster=raster_path, labels=labels_path, out=str(out),
            class_field=label_layer.CLASS_FIELD, class_map=presets.class_map(classes),
            bands=bands, init_model=init_model, **terrain, **options, **pseudo, **encoder)
        self.pending_model = str(out)
        self.epoch_metrics = []
        self.metrics_table.setRowCount(0)
        self.train_summary.setText("")
        self._show_comparison({})
        extras = ", ".join(k for k in ("dem", "slope_from_dem", "extra_raster") if k in terrain)
        self._log("info", f"Training {out.name} ({how}, {options.get('model')}) on "
                          f"{raster.name()} with labels {layer.name()}; bands {bands}"
                          + (f"; terrain {extras}" if extras else "")
                          + note + encoder_note)
        return self._start_job("train", job, self._on_train_result, wait, timeout_s)

    def cancel_training(self) -> None:
        """Stop a running training (the worker process is terminated; no model is kept)."""
        if self.job_kind == "train":
            self.cancel_job()

    def _on_train_result(self, result: dict[str, Any]) -> None:
        self.last_train_result = result
        model = str(result.get("model") or self.pending_model)
        self.pending_model = None
        device = result.get("device")
        if isinstance(device, dict):
            self.device = str(device.get("description") or device.get("type") or "")
            self.device_label.setText(f"Device: {self.device}")
        self._set_model(model)
        settings.set(settings.LAST_MODEL, model)
        settings.set(settings.MODELS_DIR, str(Path(model).parent))
        lines = train_summary.summary_lines(result, model)
        if result.get("pseudo_labels"):
            lines.append(pseudo_summary(result["pseudo_labels"], "Trained on pseudo-labels"))
        self.train_summary.setText("\n".join(lines))
        self._show_comparison(result)
        self.iface.messageBar().pushMessage(TITLE, f"Model trained: {Path(model).name}",
                                            Qgis.MessageLevel.Success, 5)

    def _show_comparison(self, result: dict[str, Any]) -> None:
        """The new model next to the one it was retrained from, on the same held-out pixels.

        Hidden when there is none (:func:`.train_summary.comparison`).
        """
        compared = train_summary.comparison(result)
        self.compare_table.setVisible(compared is not None)
        self.compare_label.setVisible(compared is not None)
        if compared is None:
            self.compare_table.setRowCount(0)
            self.compare_label.setText("")
            return
        self.compare_table.setHorizontalHeaderLabels(
            ["New model", f"Previous ({compared.previous_name})"])
        self.compare_table.setRowCount(len(compared.rows))
        self.compare_table.setVerticalHeaderLabels([label for label, _, _ in compared.rows])
        for r, (_, a, b) in enumerate(compared.rows):
            for c, value in enumerate((a, b)):
                text = f"{value:.3f}" if isinstance(value, int | float) else "–"
                self.compare_table.setItem(r, c, QTableWidgetItem(text))
        self.compare_label.setText(compared.text)
        self._log("info", compared.text)

    def _on_metrics(self, epoch: int, values: dict[str, Any]) -> None:
        if self.job_kind == "pretrain":  # SimCLR's loss: the log, not the training table
            self._on_pretrain_metrics(epoch, values)
            return
        self.epoch_metrics.append((epoch, dict(values)))
        r = self.metrics_table.rowCount()
        self.metrics_table.insertRow(r)
        self.metrics_table.setItem(r, 0, QTableWidgetItem(str(epoch)))
        for c, key in enumerate(METRIC_COLUMNS, start=1):
            value = values.get(key)
            text = f"{value:.4f}" if isinstance(value, int | float) else ""
            self.metrics_table.setItem(r, c, QTableWidgetItem(text))
        self.metrics_table.scrollToBottom()
        vals = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, int | float))
        self._log("info", f"epoch {epoch}: {vals}")
