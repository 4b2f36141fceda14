"""Lightning callbacks: progress/metrics to a Reporter, cancellation, best/last weights.

Cancel must win within seconds even when one batch takes much longer: the SIGTERM handler
(cli/running.py) raises only when Python code runs, and ``loss.backward()`` is one native
call. :class:`ReporterCallback` therefore checks the cancel flag before and after every
batch and puts a check into the backward pass itself (a hook on each parameter's gradient,
which runs Python between layers), so a cancelled backward stops after its current layer.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import lightning as L  # noqa: N812
import torch
from torch.utils.hooks import RemovableHandle

from terraseg.core.reporting import Reporter


class ReporterCallback(L.Callback):
    """Sends per-batch progress and per-epoch metrics to a Reporter; honours cancel."""

    def __init__(self, reporter: Reporter, max_epochs: int) -> None:
        self.reporter = reporter
        self.max_epochs = max_epochs
        self._hooks: list[RemovableHandle] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Put a cancel check into the backward pass (one hook per parameter's gradient)."""
        self.reporter.check_cancelled()

        def check(grad: torch.Tensor) -> None:
            self.reporter.check_cancelled()

        self._hooks = [p.register_hook(check) for p in pl_module.parameters()
                       if p.requires_grad]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Remove the backward hooks."""
        self._remove_hooks()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        """Remove the backward hooks when training fails or is cancelled."""
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        """Stop before a batch once cancelled."""
        self.reporter.check_cancelled()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Tell datasets which epoch it is (seeds augmentation)."""
        loader = trainer.train_dataloader
        ds = getattr(loader, "dataset", None)
        if ds is not None and hasattr(ds, "epoch"):
            ds.epoch = trainer.current_epoch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        """Progress within the whole run (epochs are the unit; early stop ends sooner)."""
        self.reporter.check_cancelled()
        if not trainer.is_global_zero:
            return
        n = max(1, trainer.num_training_batches)
        frac = (trainer.current_epoch + (batch_idx + 1) / n) / self.max_epochs
        self.reporter.progress(min(frac, 0.999), "train",
                               f"epoch {trainer.current_epoch + 1}/{self.max_epochs}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Emit the epoch's metrics."""
        if self.reporter.cancelled:
            trainer.should_stop = True
        if not trainer.is_global_zero:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items()
                  if torch.is_tensor(v) and v.numel() == 1 and math.isfinite(float(v))}
        self.reporter.metrics(trainer.current_epoch + 1, values)


class BestWeights(L.Callback):
    """Keeps the best (lowest monitored value) and the last weights in memory."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.best_score = math.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_state: dict[str, torch.Tensor] | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Snapshot weights after validation of this epoch."""
        net = pl_module.network
        self.last_state = copy.deepcopy({k: v.detach().cpu() for k, v in
                                         net.state_dict().items()})
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        score = float(value)
        if score < self.best_score:
            self.best_score = score
            self.best_epoch = trainer.current_epoch + 1
            self.best_state = self.last_state
