"""Training progress counts the epochs early stopping is expected to allow, not the maximum.

The rule (training/callbacks.py): with patience P, best epoch so far b and maximum M, the
run is expected to end at epoch min(M, b + P), never before the epoch in progress; the ETA
is the mean epoch time so far times the epochs left to it.
"""

from __future__ import annotations

import warnings

import lightning as L  # noqa: N812
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from terraseg.core.reporting import Reporter
from terraseg.protocol.events import Progress
from terraseg.training.callbacks import (
    ReporterCallback,
    expectation_text,
    expected_last_epoch,
    training_eta,
)


@pytest.mark.parametrize("done, best, patience, max_epochs, expected", [
    (0, 0, 10, 300, 11),  # before the first epoch ends: epoch 1 will be the best
    (1, 1, 10, 300, 11),
    (5, 3, 10, 300, 13),  # best at 3, two epochs without improvement: 3 + 10
    (20, 20, 10, 300, 30),  # improving every epoch: always P epochs ahead
    (12, 2, 10, 300, 13),  # past the bound already (not stopped yet): the epoch in progress
    (5, 3, 10, 8, 8),  # the bound is beyond the maximum
    (299, 295, 10, 300, 300),
    (7, 4, None, 50, 50),  # no early stopping: the maximum
    (50, 50, 10, 50, 50),
])
def test_expected_last_epoch(done: int, best: int, patience: int | None, max_epochs: int,
                             expected: int) -> None:
    assert expected_last_epoch(done, best, patience, max_epochs) == expected


def test_eta_is_time_per_epoch_times_epochs_left() -> None:
    assert training_eta(60.0, 3.0, 23) == pytest.approx(400.0)  # 20 s/epoch, 20 left
    assert training_eta(30.0, 2.5, 300) == pytest.approx(3570.0)
    assert training_eta(10.0, 5.0, 5) == 0.0
    assert training_eta(0.2, 0.1, 10) is None and training_eta(10.0, 0.0, 10) is None


def test_progress_text_names_both_ends() -> None:
    assert expectation_text(3, 23, 300) == ("epoch 3 (early stopping expected near epoch 23; "
                                            "at most 300)")
    assert expectation_text(3, 300, 300) == "epoch 3/300"


class Recorder(Reporter):
    def __init__(self) -> None:
        super().__init__()
        self.progress_events: list[Progress] = []

    def emit(self, event) -> None:
        if isinstance(event, Progress):
            self.progress_events.append(event)


class ScriptedLoss(L.LightningModule):
    """A module whose validation loss follows a script, one value per epoch."""

    def __init__(self, val_losses: list[float]) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.val_losses = val_losses

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).square().mean()

    def validation_step(self, batch, batch_idx: int) -> None:
        self.log("val_loss", self.val_losses[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def test_a_real_run_ends_where_progress_said_it_would() -> None:
    """Loss improves for 3 epochs, then not: patience 2 stops after epoch 5, as announced."""
    losses = [5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0, 4.1]
    reporter = Recorder()
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = L.Trainer(max_epochs=len(losses), accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[EarlyStopping("val_loss", patience=2, mode="min"),
                                   ReporterCallback(reporter, len(losses))])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        trainer.fit(ScriptedLoss(losses), data, data)
    assert trainer.current_epoch == 5  # epochs run
    # the message of each epoch's batches: best so far + patience, refreshed per epoch
    by_epoch = {}
    for event in reporter.progress_events:
        by_epoch.setdefault(int(event.message.split()[1]), set()).add(event.message)
    assert by_epoch == {
        1: {"epoch 1 (early stopping expected near epoch 3; at most 10)"},
        2: {"epoch 2 (early stopping expected near epoch 3; at most 10)"},
        3: {"epoch 3 (early stopping expected near epoch 4; at most 10)"},
        4: {"epoch 4 (early stopping expected near epoch 5; at most 10)"},
        5: {"epoch 5 (early stopping expected near epoch 5; at most 10)"},
    }
    last = reporter.progress_events[-1]
    assert last.fraction == 0.999 and last.stage == "train"
    fractions = [e.fraction for e in reporter.progress_events]
    assert fractions[1] == pytest.approx(1 / 3, abs=1e-4)  # epoch 1 of 3 expected, done
    assert all(0 < f < 1 for f in fractions)
    etas = [e.eta_s for e in reporter.progress_events if e.eta_s is not None]
    assert all(eta >= 0 for eta in etas)
