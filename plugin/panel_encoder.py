"""Panel, Train section: a pretrained encoder for encoder-decoder networks (issue 12, seed 004).

The engine pretrains a ResNet encoder on the analyst's own pixels (``terraseg pretrain``,
self-supervised SimCLR, no labels) and starts a new network from it (``train --encoder
FILE --freeze-epochs N --encoder-lr F``). The 'Pretrained encoder' group of Train offers
both:

- **Pretrain on this raster** runs the engine's ``pretrain`` job (task ``ssl``) on Data &
  task's raster and bands, for the ResNet of the chosen Architecture (``unet_resnet18`` ->
  ``resnet18``) at the base width the training options give, and writes
  ``encoders/<raster>_ssl_<time>.tse`` beside the models folder; the Encoder file field
  then names it.
- **Train** sends the encoder file, the frozen epochs and the encoder's learning-rate factor
  when the network starts anew (from scratch, or the first model). Fine-tuning the last
  model sends none of them: its weights, encoder included, are the start (the engine refuses
  ``--encoder`` with ``--init-model``).

Networks without a ResNet encoder (the patch CNN, ``unet_small``, ...) disable the group.
"""

from __future__ import annotations

import datetime as _dt
import re
import typing
from pathlib import Path
from typing import Any

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..protocol.options import DEFAULTS, SPEC_BY_JOB_KEY
from ..protocol.pretrain_options import EncoderName
from . import jobs
from .panel_common import TITLE, group_box, unique_path

PRETRAIN_BUTTON_TEXT = "Pretrain on this raster"
ENCODER_FOLDER = "encoders"  # beside 'models' and 'pseudo_labels'
ENCODER_FILTER = "TerraSeg encoders (*.tse);;TerraSeg models (*.tsm);;All files (*)"
PRETRAIN_EPOCHS = 30
FREEZE_EPOCHS = 5  # seed 004 freezes the encoder for 5-10 epochs
ENCODERS: tuple[str, ...] = typing.get_args(EncoderName)  # resnet18, resnet34, resnet50
ENCODER_HELP = (
    "A ResNet encoder pretrained on your pixels ('Pretrain on this raster', an encoder file "
    ".tse) or taken from a TerraSeg model (.tsm) of a network with the same ResNet. Train "
    "starts a new network from it (from scratch or the first model); fine-tuning the last "
    "model does not use it. Empty: the network starts from random weights.")


def encoder_of(model: str) -> str | None:
    """The ResNet encoder of an architecture (``unet_resnet18`` -> ``resnet18``), or None.

    None for networks without one (``patch_cnn``, ``unet_small``, ``unet``, ...).
    """
    name = model.rsplit("_", 1)[-1]
    return name if "_" in model and name in ENCODERS else None


def file_slug(name: str) -> str:
    """A layer name as part of a file name (``NC scene (2020)`` -> ``NC_scene_2020``)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_.") or "raster"


def pretrain_summary(result: dict[str, Any]) -> str:
    """What the panel says of a finished pretraining (its SimCLR loss, file, device)."""
    curve = result.get("loss_curve") or []
    loss = result.get("loss")
    text = f"{loss:.4f}" if isinstance(loss, int | float) else "n/a"
    if len(curve) > 1:
        text = f"{curve[0]:.4f} (epoch 1) -> {text}"
    method = "SimCLR" if result.get("method") == "simclr" else str(result.get("method"))
    device = (result.get("device") or {}).get("description")
    seconds = result.get("seconds")
    took = f", {seconds:.0f} s" if isinstance(seconds, int | float) else ""
    return (f"Encoder pretrained: {method} loss {text} over {result.get('epochs')} epoch(s)"
            f"{took}{f' on {device}' if device else ''} -> {result.get('encoder_file')}")


class EncoderPanelMixin:
    """The 'Pretrained encoder' group of the Train section and its pretraining job.

    Mixed into :class:`~.dock.TerraSegDock` through
    :class:`~.panel_train.TrainPanelMixin`; relies on the panel's shared state and helpers
    (``_log``, ``_refuse``, ``_start_job``, ``models_dir``, ``bands_spec``,
    ``arch_combo``, ``training_options``, ...). Build it after the Architecture box.
    """

    def _build_encoder_box(self) -> QWidget:
        box = group_box("Pretrained encoder", "TerraSegEncoderBox", collapsed=True)
        form = QFormLayout(box)
        self.encoder_edit = QLineEdit()
        self.encoder_edit.setPlaceholderText("none: the network starts from random weights")
        self.encoder_browse_button = QPushButton("Browse…")
        self.encoder_browse_button.clicked.connect(self._browse_encoder)
        row = QHBoxLayout()
        row.addWidget(self.encoder_edit, 1)
        row.addWidget(self.encoder_browse_button)
        form.addRow("Encoder file", row)
        self.pretrain_epochs_spin = QSpinBox()
        self.pretrain_epochs_spin.setRange(1, 100000)
        self.pretrain_epochs_spin.setValue(PRETRAIN_EPOCHS)
        form.addRow("Pretraining epochs", self.pretrain_epochs_spin)
        self.pretrain_button = QPushButton(PRETRAIN_BUTTON_TEXT)
        self.pretrain_button.setToolTip(
            "Pretrains the Architecture's ResNet encoder on the raster's pixels (self-"
            "supervised, SimCLR: no labels) with Data & task's bands, into an 'encoders' "
            "folder next to the project; the Encoder file then names it.")
        self.pretrain_button.clicked.connect(lambda: self.pretrain_encoder())
        form.addRow("", self.pretrain_button)
        self.freeze_spin = QSpinBox()
        self.freeze_spin.setRange(int(SPEC_BY_JOB_KEY["freeze_epochs"].minimum or 0), 100000)
        self.freeze_spin.setValue(FREEZE_EPOCHS)
        form.addRow("Frozen epochs", self.freeze_spin)
        self.encoder_lr_spin = QDoubleSpinBox()
        self.encoder_lr_spin.setDecimals(3)
        self.encoder_lr_spin.setRange(0.001, 10.0)
        self.encoder_lr_spin.setSingleStep(0.05)
        self.encoder_lr_spin.setValue(DEFAULTS.network.encoder_lr)
        form.addRow("Encoder LR ×", self.encoder_lr_spin)
        helps = {
            self.encoder_edit: ENCODER_HELP, self.encoder_browse_button: ENCODER_HELP,
            self.pretrain_epochs_spin: "Epochs of 'Pretrain on this raster' (SimCLR).",
            self.freeze_spin: "With an encoder file: the first N epochs train only the "
                              "decoder and head (the encoder stays as pretrained), then every "
                              "layer trains.",
            self.encoder_lr_spin: "With an encoder file: the encoder's learning rate once "
                                  "unfrozen, as a factor of the Learning rate (1 = the same).",
        }
        for widget, text in helps.items():
            widget.setProperty("terraseg_help", text)
            widget.setToolTip(text)
        self.last_pretrain: dict[str, Any] | None = None
        self.arch_combo.currentTextChanged.connect(self._on_encoder_arch_changed)
        return box

    # ------------------------------------------------------------------------------------
    # Inputs
    # ------------------------------------------------------------------------------------
    def chosen_encoder(self) -> str | None:
        """The ResNet encoder of the chosen Architecture, or None (:func:`encoder_of`)."""
        return encoder_of(self.arch_combo.currentText())

    def encoder_file(self) -> str:
        """The Encoder file field ("" when empty)."""
        return self.encoder_edit.text().strip()

    def set_encoder_options(self, file: str | None = None, freeze_epochs: int | None = None,
                            encoder_lr: float | None = None,
                            pretrain_epochs: int | None = None) -> None:
        """Fill the group's controls (None leaves a control as it is)."""
        if file is not None:
            self.encoder_edit.setText(file)
        if freeze_epochs is not None:
            self.freeze_spin.setValue(int(freeze_epochs))
        if encoder_lr is not None:
            self.encoder_lr_spin.setValue(float(encoder_lr))
        if pretrain_epochs is not None:
            self.pretrain_epochs_spin.setValue(int(pretrain_epochs))

    def _browse_encoder(self) -> None:
        start = self.encoder_file() or str(self.encoders_dir() or "")
        path, _ = QFileDialog.getOpenFileName(self, "Encoder file", start, ENCODER_FILTER)
        if path:
            self.encoder_edit.setText(path)

    def encoder_train_args(self, model: str, init_model: str | None) -> tuple[dict[str, Any],
                                                                                str]:
        """(the train job's encoder fields, the training log line's note on them).

        Sent when the field names a file, ``model`` has a ResNet encoder and the run starts
        without a model to fine-tune; fine-tuning starts from the last model's weights,
        encoder included, so nothing is sent then.

        Args:
            model: The architecture the job trains.
            init_model: The model the run fine-tunes, or None.

        Raises:
            ValueError: The encoder file would be sent but does not exist.
        """
        path = self.encoder_file()
        if not path:
            return {}, ""
        name = Path(path).name
        if encoder_of(model) is None:
            return {}, f"; encoder {name} not used: {model} has no ResNet encoder"
        if init_model:
            return {}, (f"; encoder {name} not sent: the encoder is already in the last model "
                        f"{Path(init_model).name}, which this run fine-tunes")
        if not Path(path).is_file():
            raise ValueError(f"The encoder file {path} does not exist (moved or deleted?). "
                             "Choose it again under Train > Pretrained encoder, pretrain one "
                             "with 'Pretrain on this raster', or clear the field to start "
                             "from random weights.")
        freeze, factor = self.freeze_spin.value(), self.encoder_lr_spin.value()
        return ({"encoder": path, "freeze_epochs": freeze, "encoder_lr": factor},
                f"; from encoder {name} (frozen for {freeze} epoch(s), then at {factor:g} x "
                "the learning rate)")

    # ------------------------------------------------------------------------------------
    # Enabled states
    # ------------------------------------------------------------------------------------
    def _on_encoder_arch_changed(self, _name: str = "") -> None:
        if hasattr(self, "status_label"):  # (not while the panel is being built)
            self._update_encoder_controls(self.is_busy(), self.raster_layer() is not None)
            self._explain_buttons()

    def _update_encoder_controls(self, busy: bool, has_raster: bool) -> None:
        """Enable the group for networks with a ResNet encoder; tooltips say why not."""
        model = self.arch_combo.currentText()
        resnet = encoder_of(model) is not None
        reason = (f"Disabled: the {model} network has no ResNet encoder. Choose a network "
                  "with one under Architecture (unet_, fpn_ or deeplabv3plus_resnet18/34/50).")
        for widget in (self.encoder_edit, self.encoder_browse_button, self.pretrain_epochs_spin,
                       self.freeze_spin, self.encoder_lr_spin):
            widget.setEnabled(resnet)
            widget.setToolTip(widget.property("terraseg_help") if resnet else reason)
        self.pretrain_button.setEnabled(resnet and not busy and has_raster)

    def button_blockers(self) -> dict[str, list[str]]:
        """The other sections' blockers and 'Pretrain on this raster''s."""
        blockers = super().button_blockers()  # type: ignore[misc]
        busy = self.busy_blockers()  # type: ignore[attr-defined]
        raster = self.raster_blockers()  # type: ignore[attr-defined]
        model = self.arch_combo.currentText()
        resnet = [] if encoder_of(model) else [
            f"The {model} network has no ResNet encoder to pretrain: choose unet_, fpn_ or "
            "deeplabv3plus_resnet18/34/50 under Architecture."]
        blockers["pretrain_button"] = busy + raster + resnet
        return blockers

    # ------------------------------------------------------------------------------------
    # Pretrain on this raster
    # ------------------------------------------------------------------------------------
    def encoders_dir(self) -> Path | None:
        """``encoders`` beside the models folder (:meth:`models_dir`); None before saving."""
        models = self.models_dir()
        return None if models is None else models.parent / ENCODER_FOLDER

    def new_encoder_path(self, raster_name: str) -> Path | None:
        """A new encoder file ``encoders/<raster>_ssl_<time>.tse``; None before saving."""
        folder = self.encoders_dir()
        if folder is None:
            return None
        stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H%M%S")
        return unique_path(folder / f"{file_slug(raster_name)}_ssl_{stamp}.tse")

    def pretrain_encoder(self, wait: bool = False, timeout_s: float = 3600.0,
                         **options: Any) -> bool:
        """Pretrain the chosen network's ResNet encoder on the raster (self-supervised).

        The raster, bands and nodata value are Data & task's, the encoder and base width
        the training options', the device Train > Advanced's; the result fills the Encoder
        file field.

        Args:
            wait: Block (running the Qt event loop) until the job has ended.
            timeout_s: Longest wait.
            **options: Further ``pretrain`` options (``samples_per_epoch``, ``batch_size``,
                ``tile_size``, ``seed``, ...), as Processing or a script would set them.

        Returns:
            True when the job started (with ``wait``: when it also succeeded).
        """
        title = PRETRAIN_BUTTON_TEXT
        raster = self.raster_layer()
        if raster is None:
            return self._refuse(title, "Choose a raster layer first.")
        model = self.arch_combo.currentText()
        encoder = encoder_of(model)
        if encoder is None:
            return self._refuse(title, f"The {model} network has no ResNet encoder to "
                                "pretrain.", "Choose unet_, fpn_ or deeplabv3plus_resnet18/"
                                "34/50 under Train > Architecture.")
        out = self.new_encoder_path(raster.name())
        if out is None:
            return self._refuse(title, "Save the project (or the label layer) first: encoders "
                                f"are kept in an '{ENCODER_FOLDER}' folder next to it.")
        try:
            bands, raster_path = self.bands_spec(), jobs.raster_layer_path(raster)
            nodata = self.nodata_value()
        except (ValueError, OSError) as exc:
            return self._refuse(title, str(exc))
        out.parent.mkdir(parents=True, exist_ok=True)
        base_width = int(self.training_options().get("base_width") or 0)
        job = jobs.make_job(
            "pretrain", raster=[raster_path], out=str(out), task="ssl", encoder=encoder,
            base_width=base_width or None, bands=bands, nodata=nodata,
            epochs=self.pretrain_epochs_spin.value(),
            accelerator=self.accelerator_combo.currentText(), **options)
        width = f"base width {base_width}" if base_width else "standard width"
        self._log("info", f"Pretraining a {encoder} encoder ({width}, for {model}) on "
                          f"{raster.name()} (SimCLR, {self.pretrain_epochs_spin.value()} "
                          f"epochs; bands {bands}) into {out}")
        return self._start_job("pretrain", job, self._on_pretrain_result, wait, timeout_s)

    def _on_pretrain_result(self, result: dict[str, Any]) -> None:
        path = str(result["encoder_file"])
        if not Path(path).is_file():
            raise FileNotFoundError(f"The engine reported {path}, which does not exist.")
        self.encoder_edit.setText(path)
        self.last_pretrain = result
        self._log("info", pretrain_summary(result))
        self.iface.messageBar().pushMessage(
            TITLE, f"Encoder pretrained: {Path(path).name}. Train from scratch to start from "
                   "it.", Qgis.MessageLevel.Success, 8)

    def _on_pretrain_metrics(self, epoch: int, values: dict[str, Any]) -> None:
        """A pretraining epoch in the log (Train's metrics table is for training)."""
        vals = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, int | float))
        self._log("info", f"pretraining epoch {epoch}: {vals}")

    # ------------------------------------------------------------------------------------
    # The project (project_state.py)
    # ------------------------------------------------------------------------------------
    def encoder_state(self) -> dict[str, Any]:
        """The group's values as stored in the project (``file`` as an absolute path)."""
        return {"file": self.encoder_file(), "freeze_epochs": self.freeze_spin.value(),
                "encoder_lr": self.encoder_lr_spin.value(),
                "pretrain_epochs": self.pretrain_epochs_spin.value()}

    def apply_encoder_state(self, saved: dict[str, Any]) -> list[str]:
        """Restore :meth:`encoder_state`; returns the problems to show (a missing file)."""
        def number(key: str, kind: type) -> Any:
            value = saved.get(key)
            return kind(value) if isinstance(value, int | float) else None

        file = saved.get("file")
        file = file if isinstance(file, str) else ""
        self.set_encoder_options(file, number("freeze_epochs", int), number("encoder_lr", float),
                                 number("pretrain_epochs", int))
        if file and not Path(file).is_file():
            return [f"The project's encoder file {file} is missing (moved or deleted): choose "
                    "it again under Train > Pretrained encoder, or clear the field."]
        return []
