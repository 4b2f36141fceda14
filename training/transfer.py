"""Training with a pretrained encoder: load it, freeze it first, then a lower rate for it.

``terraseg train --encoder FILE`` starts an encoder-decoder network (``unet_resnet50``,
...) from an encoder file written by ``terraseg pretrain`` or from any TerraSeg model of
such a network, even one with other classes (its decoder and head are not taken: the head
is built for the new classes). ``--freeze-epochs N`` trains decoder and head only for the
first N epochs (the encoder's weights and batch-norm statistics stay as pretrained), then
every layer trains, the encoder at ``--encoder-lr`` times the learning rate
(discriminative rates). Seed 004 freezes for 5-10 epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import nn

from terraseg.core.encoder_file import EncoderMeta, load_encoder, read_encoder_meta
from terraseg.core.models.resnet_encoder import ResNetEncoder
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ModelFileError


def check_encoder_option(model: str, path: str, base_width: int) -> EncoderMeta:
    """Before any work: ``--encoder`` is readable and fits the chosen network.

    Args:
        model: The registry name of the network to train.
        path: The ``--encoder`` file.
        base_width: ``--base-width`` (0 = the network's default).

    Raises:
        ModelFileError: Unreadable file, a network without a ResNet encoder, or an encoder
            of another kind or width.
    """
    from terraseg.core.models.encoder_decoder import CONFIGS, DEFAULT_WIDTH

    meta = read_encoder_meta(path)
    name = Path(path).name
    if model not in CONFIGS:
        raise ModelFileError(
            f"--encoder: the '{model}' network has no ResNet encoder to initialise.",
            f"Choose an encoder-decoder network (e.g. --model unet_{meta.encoder}), or leave "
            "out --encoder.")
    width = base_width or DEFAULT_WIDTH
    if meta.encoder != CONFIGS[model].encoder or meta.base_width != width:
        raise ModelFileError(
            f"--encoder {name} is a {meta.encoder} (base width {meta.base_width}); "
            f"'{model}' has a {CONFIGS[model].encoder} (base width {width}).",
            f"Use a network with a {meta.encoder} encoder (e.g. --model unet_{meta.encoder}"
            f"{'' if meta.base_width == DEFAULT_WIDTH else f' --base-width {meta.base_width}'}"
            "), or pretrain an encoder for this one.")
    return meta


def network_encoder(network: nn.Module, model: str) -> ResNetEncoder:
    """The ResNet encoder of a network.

    Raises:
        ModelFileError: The network has no ResNet encoder (patch CNN, unet_small, ...).
    """
    enc = getattr(network, "encoder", None)
    if not isinstance(enc, ResNetEncoder):
        raise ModelFileError(
            f"--encoder: the '{model}' network has no ResNet encoder to initialise.",
            "Choose an encoder-decoder network (e.g. --model unet_resnet34), or leave out "
            "--encoder.")
    return enc


def apply_encoder(network: nn.Module, model: str, path: str, band_names: tuple[str, ...],
                  rep: Reporter) -> dict[str, Any]:
    """Load a pretrained encoder into ``network``; returns the record for the model file.

    The encoder must be of the same kind (resnet18/34/50), base width and band count.
    Other band names are allowed (logged as a warning: the first-layer filters then meet
    other bands than they were pretrained on).

    Raises:
        ModelFileError: Unreadable file, or an encoder of another shape.
    """
    enc = network_encoder(network, model)
    loaded = load_encoder(path)
    meta = loaded.meta
    name = Path(path).name
    cfg = network.config  # type: ignore[attr-defined]
    if meta.encoder != cfg.encoder or meta.base_width != cfg.base_width:
        raise ModelFileError(
            f"--encoder {name} is a {meta.encoder} (base width {meta.base_width}); "
            f"'{model}' has a {cfg.encoder} (base width {cfg.base_width}).",
            f"Use a network with a {meta.encoder} encoder (e.g. --model unet_{meta.encoder}"
            f"{'' if meta.base_width == 64 else f' --base-width {meta.base_width}'}), or "
            "pretrain an encoder for this one.")
    if meta.in_channels != cfg.in_channels:
        raise ModelFileError(
            f"--encoder {name} was pretrained on {meta.in_channels} band(s) "
            f"({', '.join(meta.band_names)}); this training input has {cfg.in_channels} "
            f"({', '.join(band_names)}).",
            "Map the same bands (--bands) and extra rasters as in pretraining, or pretrain "
            "on this input.")
    if tuple(meta.band_names) != tuple(band_names):
        rep.log(f"--encoder {name} was pretrained on bands {list(meta.band_names)}; this input "
                f"has {list(band_names)}: the first layer meets other bands than it learnt",
                "warning")
    enc.load_state_dict(loaded.state)
    pre = meta.pretraining
    rep.log(f"encoder initialised from {name} ({meta.encoder}, pretrained by {pre.method}, "
            f"{pre.epochs} epoch(s) on {len(pre.rasters)} raster(s))")
    return {"path": loaded.path, "encoder": meta.encoder, "band_names": list(meta.band_names),
            "pretraining": pre.to_dict()}


class FreezeEncoder(Callback):
    """Encoder frozen (no gradients, batch-norm statistics kept) for the first N epochs.

    At the first unfrozen epoch every layer trains and early stopping's patience starts
    afresh, so a plateau of the frozen stage does not end training before it.

    Args:
        epochs: Frozen epochs (N >= 1).
        early_stopping: The run's early-stopping callback (its wait count is reset).
        rep: Where the switch is logged.
    """

    def __init__(self, epochs: int, early_stopping: EarlyStopping | None,
                 rep: Reporter) -> None:
        self.epochs, self.early_stopping, self.rep = epochs, early_stopping, rep

    @staticmethod
    def _encoder(pl_module: L.LightningModule) -> nn.Module:
        return pl_module.network.encoder  # type: ignore[attr-defined,union-attr]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Freeze before epoch N, unfreeze at it."""
        enc = self._encoder(pl_module)
        epoch = trainer.current_epoch
        if epoch < self.epochs:
            enc.requires_grad_(False)
            enc.eval()  # Lightning puts the module in train mode at each epoch's start
            if epoch == 0:
                self.rep.log(f"encoder frozen for {self.epochs} epoch(s): decoder and head "
                             "train")
        elif epoch == self.epochs:
            enc.requires_grad_(True)
            if self.early_stopping is not None:
                self.early_stopping.wait_count = 0
            self.rep.log(f"epoch {epoch + 1}: encoder unfrozen, every layer trains")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Leave the weights trainable (a run that stopped while frozen)."""
        self._encoder(pl_module).requires_grad_(True)
