"""Running one parsed command: dispatch, signals, and failures as error events.

Shared by the command line (cli/main.py) and the worker (cli/worker.py).
"""

from __future__ import annotations

import argparse
import signal
from typing import Any

from terraseg.cli.registry import get_command
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import CancelledError, TerraSegError


def run_command(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    """Run one parsed command through the registry; returns its result payload."""
    return get_command(a.command).run(a, reporter)


def report_failure(exc: BaseException, reporter: Reporter) -> int:
    """Report a TerraSeg error or a cancellation as an error event; returns the exit code.

    Re-raises a SystemExit that is not a cancellation (Lightning turns the interrupt our
    SIGTERM handler raises into ``sys.exit(1)``).
    """
    if isinstance(exc, TerraSegError):
        reporter.error(exc.kind, exc.message, exc.hint)
        return exc.exit_code
    if isinstance(exc, SystemExit) and not reporter.cancelled:
        raise exc
    err = CancelledError("Cancelled; no output was written.")
    reporter.error(err.kind, err.message)
    return err.exit_code


def install_signal_handlers(reporter: Reporter) -> None:
    """SIGTERM/SIGINT: request cancel and interrupt the work at once (outputs roll back)."""

    def handler(signum: int, _frame: Any) -> None:
        reporter.cancel()
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
