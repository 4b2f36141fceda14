"""Cancel wins within a training batch: SIGTERM during a long backward pass.

``loss.backward()`` is one native call; the SIGTERM handler (cli/running.py) can only
raise when Python code runs. training/callbacks.py's ReporterCallback puts a cancel check
into the backward pass (a hook per parameter gradient), so training stops after the layer
being differentiated instead of after the whole batch.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import warnings

import lightning as L  # noqa: N812
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from terraseg.cli.running import install_signal_handlers
from terraseg.core.reporting import JsonLinesReporter
from terraseg.training.callbacks import ReporterCallback

LAYERS = 24


class SlowBackward(L.LightningModule):
    """A deep stack of convolutions on a large batch: the backward pass takes seconds."""

    def __init__(self, on_backward_start) -> None:
        super().__init__()
        self.network = nn.Sequential(*[nn.Conv2d(16, 16, 3, padding=1) for _ in range(LAYERS)])
        self.on_backward_start = on_backward_start
        self.backward_s: list[float] = []
        self._t0 = 0.0

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        out = self.network(batch[0])

        def started(grad: torch.Tensor) -> None:
            self._t0 = time.monotonic()
            self.on_backward_start(batch_idx)

        out.register_hook(started)
        return out.square().mean()

    def on_after_backward(self) -> None:
        self.backward_s.append(time.monotonic() - self._t0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_sigterm_during_backward_stops_within_the_batch(restore_signals) -> None:
    torch.manual_seed(0)
    reporter = JsonLinesReporter(io.StringIO())
    install_signal_handlers(reporter)
    sent: list[float] = []

    def on_backward_start(batch_idx: int) -> None:
        if batch_idx == 1:  # the first batch measures a whole backward pass
            def kill() -> None:
                time.sleep(0.3)
                sent.append(time.monotonic())
                os.kill(os.getpid(), signal.SIGTERM)
            threading.Thread(target=kill, daemon=True).start()

    module = SlowBackward(on_backward_start)
    data = TensorDataset(torch.randn(3 * 24, 16, 96, 96))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[ReporterCallback(reporter, 1)])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        with pytest.raises((KeyboardInterrupt, SystemExit, Exception)) as err:
            trainer.fit(module, DataLoader(data, batch_size=24))
    stopped = time.monotonic()
    assert sent, f"training ended before the signal: {err.value!r}"
    assert reporter.cancelled
    assert isinstance(err.value, SystemExit | KeyboardInterrupt) or \
        type(err.value).__name__ == "CancelledError", repr(err.value)
    whole = module.backward_s[0]
    latency = stopped - sent[0]
    assert latency < max(2.0, whole / 3), f"{latency:.1f} s to stop; a backward takes {whole:.1f} s"
    assert whole > 2 * latency, f"backward {whole:.1f} s is too quick to tell"
    # the hooks are gone after the run
    assert all(not p._backward_hooks for p in module.parameters())
