"""Lightning callbacks: progress/metrics to a Reporter, cancellation, best/last weights.

Cancel must win within seconds even when one batch takes much longer: the SIGTERM handler
(cli/running.py) raises only when Python code runs, and ``loss.backward()`` is one native
call. :class:`ReporterCallback` therefore checks the cancel flag before and after every
batch and puts a check into the backward pass itself (a hook on each parameter's gradient,
which runs Python between layers), so a cancelled backward stops after its current layer.

Progress and its ETA count the epochs a run is expected to take, not the maximum: early
stopping ends training ``patience`` epochs after the best epoch so far unless the
monitored loss improves again, so the expected last epoch is that bound (see
:func:`expected_last_epoch`), refreshed after every epoch. The ETA is the mean time per
epoch so far times the epochs left to that bound; the progress fraction is the share of
the expected epochs done, so it may step back when a new best epoch moves the bound out.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import lightning as L  # noqa: N812
import torch
from torch.utils.hooks import RemovableHandle

from terraseg.core.reporting import Reporter
from terraseg.protocol.events import Progress


def expected_last_epoch(epochs_done: int, best_epoch: int, patience: int | None,
                        max_epochs: int) -> int:
    """The epoch a run is expected to end with: early stopping's bound, within the limits.

    Early stopping ends training once ``patience`` epochs in a row did not improve the
    monitored loss, i.e. after epoch ``best + patience`` if the best epoch so far stays the
    best. That is the honest expectation from what is known: it assumes no further
    improvement, and each new best moves it out (by the epochs since the previous best plus
    one). Before the first epoch ends, the first epoch counts as the best (it always
    improves on nothing). The expectation is never before the epoch in progress nor after
    ``max_epochs``.

    Args:
        epochs_done: Epochs completed (0 before the first ends).
        best_epoch: 1-based epoch of the best monitored value so far (0: none yet).
        patience: Early stopping's patience in epochs; None without early stopping.
        max_epochs: The run's maximum.

    Returns:
        A 1-based epoch in ``[min(epochs_done + 1, max_epochs), max_epochs]``.
    """
    if patience is None:
        return max_epochs
    bound = max(best_epoch, 1) + patience
    return max(min(epochs_done + 1, max_epochs), min(bound, max_epochs))


def training_eta(elapsed_s: float, epochs_done: float, expected: int) -> float | None:
    """Seconds left: the mean time per epoch so far times the epochs left to ``expected``.

    Args:
        elapsed_s: Seconds since training started.
        epochs_done: Epochs done, with the current epoch's share of batches.
        expected: The expected last epoch (:func:`expected_last_epoch`).

    Returns:
        None until there is a measurement (half a second, or no epoch share yet).
    """
    if epochs_done <= 0 or elapsed_s < 0.5:
        return None
    return max(0.0, elapsed_s / epochs_done * (expected - epochs_done))


def expectation_text(epoch: int, expected: int, max_epochs: int) -> str:
    """The progress message: the epoch in progress and where the run is expected to end."""
    if expected >= max_epochs:
        return f"epoch {epoch}/{max_epochs}"
    return (f"epoch {epoch} (early stopping expected near epoch {expected}; at most "
            f"{max_epochs})")


class ReporterCallback(L.Callback):
    """Sends per-batch progress and per-epoch metrics to a Reporter; honours cancel."""

    def __init__(self, reporter: Reporter, max_epochs: int) -> None:
        self.reporter = reporter
        self.max_epochs = max_epochs
        self._hooks: list[RemovableHandle] = []
        self._fit_start = time.monotonic()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Put a cancel check into the backward pass (one hook per parameter's gradient)."""
        self.reporter.check_cancelled()
        self._fit_start = time.monotonic()

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
        """Progress and ETA towards the expected last epoch (:func:`expected_last_epoch`)."""
        self.reporter.check_cancelled()
        if not trainer.is_global_zero:
            return
        n = max(1, trainer.num_training_batches)
        epoch = trainer.current_epoch
        done = epoch + (batch_idx + 1) / n
        stopper = trainer.early_stopping_callback
        patience = best = None
        if stopper is not None:
            patience, best = stopper.patience, epoch - stopper.wait_count
        expected = expected_last_epoch(epoch, best or 0, patience, self.max_epochs)
        eta = training_eta(time.monotonic() - self._fit_start, done, expected)
        self.reporter.emit(Progress("train", round(min(done / expected, 0.999), 4),
                                    None if eta is None else round(eta, 1),
                                    expectation_text(epoch + 1, expected, self.max_epochs)))
        self.reporter.check_cancelled()

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
