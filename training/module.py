"""The LightningModule: one shared step for training, validation and test."""

from __future__ import annotations

from typing import Any

import lightning as L  # noqa: N812
import torch
from torch import nn

from terraseg.protocol.errors import ConfigError
from terraseg.training.data import IGNORE_INDEX
from terraseg.training.losses import build_loss
from terraseg.training.pixel_weights import decode_targets

OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("none", "cosine", "plateau")


def cutmix_batch(x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a random box of a shuffled copy of the batch into images and targets alike.

    Only for dense targets (target size = input size, tile networks); the box covers 25-50%
    of each side. Shape: x (N, C, H, W), y (N, H, W).
    """
    if x.shape[-2:] != y.shape[-2:] or x.shape[0] < 2:
        return x, y
    n, _, h, w = x.shape
    shift = int(torch.randint(1, n, (), generator=generator))  # every image gets another's box
    perm = (torch.arange(n, device=x.device) + shift) % n
    bh = int(h * (0.25 + 0.25 * torch.rand((), generator=generator)))
    bw = int(w * (0.25 + 0.25 * torch.rand((), generator=generator)))
    r = int(torch.randint(0, h - bh + 1, (), generator=generator))
    c = int(torch.randint(0, w - bw + 1, (), generator=generator))
    x, y = x.clone(), y.clone()
    x[:, :, r : r + bh, c : c + bw] = x[perm, :, r : r + bh, c : c + bw]
    y[:, r : r + bh, c : c + bw] = y[perm, r : r + bh, c : c + bw]
    return x, y


class SegmentationTask(L.LightningModule):
    """A loss from the registry (default class-weighted cross-entropy) on labelled pixels.

    Args:
        network: Maps (N, C, P, P) cutouts to (N, K, B, B) logits.
        class_weights: Weight per class for the cross-entropy (inverse frequency).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        loss: Loss spec for training.losses.build_loss, e.g. "ce" or "focal+iou".
        optimizer: "adamw" or "adam".
        lr_schedule: "none", "cosine" (over max_epochs) or "plateau" (halve on plateau).
        max_epochs: Length of the cosine schedule.
        cutmix: Probability of applying cutmix to a training batch (tile networks).
        pixel_weights: Training targets carry per-pixel loss weights
            (training/pixel_weights.py); validation and test targets do not.
        encoder_lr_factor: The network's ``encoder`` trains at ``lr`` times this
            (discriminative rates for a pretrained encoder; 1 = one rate for all).
    """

    def __init__(self, network: nn.Module, class_weights: torch.Tensor, lr: float = 1e-3,
                 weight_decay: float = 1e-2, loss: str = "ce", optimizer: str = "adamw",
                 lr_schedule: str = "none", max_epochs: int = 1, cutmix: float = 0.0,
                 pixel_weights: bool = False, encoder_lr_factor: float = 1.0) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"Unknown optimizer '{optimizer}'.",
                              f"Use one of: {', '.join(OPTIMIZERS)}.")
        if lr_schedule not in SCHEDULES:
            raise ConfigError(f"Unknown learning-rate schedule '{lr_schedule}'.",
                              f"Use one of: {', '.join(SCHEDULES)}.")
        if not 0.0 <= cutmix <= 1.0:
            raise ConfigError(f"Cutmix probability {cutmix} is outside 0..1.",
                              "Use e.g. --cutmix 0.5 (0 = off).")
        self.optimizer, self.lr_schedule, self.max_epochs = optimizer, lr_schedule, max_epochs
        self.cutmix, self.pixel_weights = cutmix, pixel_weights
        self.encoder_lr_factor = encoder_lr_factor
        self.network = network
        self.loss_fn = build_loss(loss, int(class_weights.numel()), class_weights.float(),
                                  IGNORE_INDEX)
        self.register_buffer("class_weights", class_weights.float())
        self.lr = lr
        self.weight_decay = weight_decay
        self.save_hyperparameters(ignore=["network", "class_weights"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits. Shape: (N, C, P, P) -> (N, K, B, B)."""
        return self.network(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        weight = None
        if self.pixel_weights and stage == "train":
            y, weight = decode_targets(y)
        logits = self(x)
        loss = self.loss_fn(logits, y, weight)
        labelled = y != IGNORE_INDEX
        n = labelled.sum()
        correct = ((logits.argmax(1) == y) & labelled).sum()
        acc = correct.float() / n.clamp(min=1)
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=on_step,
                 batch_size=int(n), sync_dist=True)
        self.log(f"{stage}_acc", acc, on_step=False, on_epoch=True, batch_size=int(n),
                 sync_dist=True)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _i: int) -> torch.Tensor:
        """Training step (with cutmix when enabled)."""
        if self.cutmix > 0 and torch.rand(()) < self.cutmix:
            batch = cutmix_batch(*batch)
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _i: int) -> None:
        """Validation step."""
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _i: int) -> None:
        """Test step."""
        self._step(batch, "test")

    def param_groups(self) -> list[dict[str, Any]]:
        """One group at ``lr``; with an encoder LR factor, the encoder's own group first."""
        encoder = getattr(self.network, "encoder", None)
        if self.encoder_lr_factor == 1.0 or not isinstance(encoder, nn.Module):
            return [{"params": list(self.parameters())}]
        enc_ids = {id(p) for p in encoder.parameters()}
        return [{"params": list(encoder.parameters()), "lr": self.lr * self.encoder_lr_factor},
                {"params": [p for p in self.parameters() if id(p) not in enc_ids]}]

    def configure_optimizers(self) -> Any:
        """AdamW (the studies' default) or Adam, optionally with a learning-rate schedule."""
        cls = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
        opt = cls(self.param_groups(), lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.max_epochs))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        if self.lr_schedule == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch",
                                                       "monitor": "train_loss"}}
        return opt
