"""Running one parsed command: dispatch, signals, and failures as error events.

Shared by the command line (cli/main.py) and the worker (cli/worker.py). Every failure
becomes one ``error`` event and an exit status: TerraSeg's own errors (2), a cancel (130),
and the environment's - out of memory, a full disk, a file that cannot be read or written
(2, without a traceback); anything else is a bug (3, traceback on stderr; the caller's
part).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from terraseg.cli.registry import get_command
from terraseg.core.output_targets import is_disk_full, write_error
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import CancelledError, OutputError, TerraSegError

#: Engine loggers whose records reach the user as ``log`` events while a command runs.
FORWARDED_LOGGERS = ("terraseg.core.scratch",)


class _ReporterHandler(logging.Handler):
    """Hands log records to a Reporter as log lines."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__(logging.INFO)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        level = {logging.DEBUG: "debug", logging.INFO: "info",
                 logging.WARNING: "warning"}.get(record.levelno, "error")
        with contextlib.suppress(Exception):
            self.reporter.log(record.getMessage(), level)


def run_command(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    """Run one parsed command through the registry; returns its result payload.

    Records of :data:`FORWARDED_LOGGERS` (e.g. stale scratch files removed) are logged
    through ``reporter`` meanwhile.
    """
    handler = _ReporterHandler(reporter)
    loggers = [logging.getLogger(name) for name in FORWARDED_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        return get_command(a.command).run(a, reporter)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
            logger.propagate = True


def environment_error(exc: BaseException) -> TerraSegError | None:
    """A failure of the machine rather than of TerraSeg, as a TerraSeg error; else None.

    Out of memory, a full disk (anywhere, also outside the writers that check for it) and
    files that cannot be read or written are the user's to fix, not bugs.
    """
    if isinstance(exc, MemoryError):
        detail = f" ({exc})" if str(exc) else ""
        return TerraSegError(
            f"Out of memory{detail}.",
            "Process a smaller area, use a smaller --tile-size or --batch-size, or close "
            "other programs.")
    if isinstance(exc, Exception) and is_disk_full(exc):
        filename = getattr(exc, "filename", None)
        if filename:
            return write_error(Path(str(filename)), exc)
        return OutputError(f"The disk is full: {exc}.",
                           "Free space on the output folder's disk, then run again.")
    if isinstance(exc, OSError):
        filename = getattr(exc, "filename", None)
        where = f" ('{filename}')" if filename else ""
        return TerraSegError(
            f"{exc.strerror or exc}{where}.",
            "Check that the file or folder exists and that you may read and write it.")
    return None


def report_failure(exc: BaseException, reporter: Reporter) -> int:
    """Report a failure as an error event; returns the exit code.

    TerraSeg errors, cancellation (a KeyboardInterrupt, or the ``sys.exit`` Lightning
    turns it into) and environment errors (:func:`environment_error`) are reported;
    a SystemExit that is not a cancellation is re-raised, anything else too (a bug).
    """
    if isinstance(exc, TerraSegError):
        reporter.error(exc.kind, exc.message, exc.hint)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt) or (isinstance(exc, SystemExit) and reporter.cancelled):
        err = CancelledError("Cancelled; no output was written.")
        reporter.error(err.kind, err.message)
        return err.exit_code
    known = environment_error(exc)
    if known is None:
        raise exc
    kind = known.kind if type(known) is not TerraSegError else type(exc).__name__
    reporter.error(kind, known.message, known.hint)
    return known.exit_code


def install_signal_handlers(reporter: Reporter) -> None:
    """SIGTERM/SIGINT: request cancel and interrupt the work at once (outputs roll back).

    The interrupt is a ``KeyboardInterrupt`` raised where Python code runs next; native
    calls see it only when they return, so long ones run in short steps or in a child
    process (overviews, core/geotiff.py; the backward pass, training/callbacks.py). A
    reporter whose ``interruptible`` is False (the worker while it writes an event, or
    after its last one) only gets the cancel flag.
    """

    def handler(signum: int, _frame: Any) -> None:
        reporter.cancel()
        if not getattr(reporter, "interruptible", True):
            return
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def silence_stdout() -> None:
    """Point stdout at the null device (its reader went away: a closed pipe).

    Later writes, and the flush at exit, then neither fail nor print a traceback.
    """
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno())
        os.close(devnull)
