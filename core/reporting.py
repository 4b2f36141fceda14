"""Progress reporting: the worker's JSON-lines events or a human-readable console form.

Long-running engine code reports through a :class:`Reporter` and never prints. The events
are :mod:`terraseg.protocol.events` (one definition shared with the plugin): ``progress``
(fraction, stage, eta_s), ``log`` (level, message), ``metrics`` (epoch, values),
``result`` (paths and summary), ``error`` (type, message, hint). Cancellation is
cooperative: :meth:`Reporter.check_cancelled` raises :class:`CancelledError` once a cancel
was requested (SIGTERM/SIGINT or a call to :meth:`Reporter.cancel`).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from terraseg.protocol.errors import CancelledError
from terraseg.protocol.events import (
    PROTOCOL_VERSION,
    Error,
    Event,
    Log,
    Metrics,
    Progress,
    Result,
    encode,
)

__all__ = ["PROTOCOL_VERSION", "ConsoleReporter", "JsonLinesReporter", "Reporter"]


class Reporter:
    """Base reporter: keeps the cancel flag and ETA bookkeeping; subclasses emit events."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._stage_start: dict[str, float] = {}

    # --- cancellation -------------------------------------------------------------
    def cancel(self) -> None:
        """Request cancellation; the work stops at its next check."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        """True once cancellation was requested."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise CancelledError if cancellation was requested."""
        if self._cancel.is_set():
            raise CancelledError("Cancelled by the user; no output was written.", "")

    # --- events -------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Send one event (override)."""

    def progress(self, fraction: float, stage: str, message: str = "") -> None:
        """Report progress of ``stage`` in [0, 1] with an ETA estimated from its start."""
        now = time.monotonic()
        start = self._stage_start.setdefault(stage, now)
        eta = None
        if 0.0 < fraction < 1.0 and now - start > 0.5:
            eta = (now - start) * (1.0 - fraction) / fraction
        self.emit(Progress(stage, round(float(fraction), 4),
                           None if eta is None else round(eta, 1), message))
        self.check_cancelled()

    def log(self, message: str, level: str = "info") -> None:
        """A log line."""
        self.emit(Log(message, level))

    def metrics(self, epoch: int, values: dict[str, float]) -> None:
        """Per-epoch training metrics."""
        self.emit(Metrics(epoch, values))

    def result(self, payload: dict[str, Any]) -> None:
        """Final result of the job."""
        self.emit(Result(payload))

    def error(self, kind: str, message: str, hint: str = "") -> None:
        """A failure that ends the job."""
        self.emit(Error(kind, message, hint))


class JsonLinesReporter(Reporter):
    """Writes one JSON object per line to a stream (the worker's stdout)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        """Write the event as a JSON line and flush."""
        line = encode(event, time.time())
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class ConsoleReporter(Reporter):
    """Human-readable lines on stderr for the command line; progress is throttled."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._last: dict[str, float] = {}

    def emit(self, event: Event) -> None:
        """Print a short line for the event."""
        if isinstance(event, Progress):
            now = time.monotonic()
            frac = event.fraction
            if self.quiet or (now - self._last.get(event.stage, 0) < 2.0 and frac < 1.0):
                return
            self._last[event.stage] = now
            eta = f", ETA {event.eta_s:.0f} s" if event.eta_s else ""
            msg = f" {event.message}" if event.message else ""
            text = f"[{event.stage}] {100 * frac:5.1f}%{eta}{msg}"
        elif isinstance(event, Log):
            if self.quiet and event.level == "debug":
                return
            text = event.message
        elif isinstance(event, Metrics):
            vals = ", ".join(f"{k}={v:.4f}" for k, v in event.values.items()
                             if isinstance(v, int | float))
            text = f"epoch {event.epoch}: {vals}"
        elif isinstance(event, Error):
            text = f"error: {event.message}"
            if event.hint:
                text += f"\n  fix: {event.hint}"
        else:
            return
        print(text, file=self.stream, flush=True)
