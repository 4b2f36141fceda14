"""The LightningModule: one shared step for training, validation and test."""

from __future__ import annotations

import lightning as L  # noqa: N812
import torch
from torch import nn

from terraseg.core.losses import build_loss
from terraseg.training.data import IGNORE_INDEX


class SegmentationTask(L.LightningModule):
    """A loss from the registry (default class-weighted cross-entropy) on labelled pixels.

    Args:
        network: Maps (N, C, P, P) cutouts to (N, K, B, B) logits.
        class_weights: Weight per class for the cross-entropy (inverse frequency).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        loss: Loss spec for core.losses.build_loss, e.g. "ce" or "focal+iou".
    """

    def __init__(self, network: nn.Module, class_weights: torch.Tensor, lr: float = 1e-3,
                 weight_decay: float = 1e-2, loss: str = "ce") -> None:
        super().__init__()
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
        logits = self(x)
        loss = self.loss_fn(logits, y)
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
        """Training step."""
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _i: int) -> None:
        """Validation step."""
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _i: int) -> None:
        """Test step."""
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW as in the study."""
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
