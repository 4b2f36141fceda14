"""How a worker job fails, as the plugin reports it.

A job fails with its ``error`` event (the engine's error type, message and hint), or on the
plugin's side: no engine (``EngineMissing``), an engine that cannot start
(``EngineStartError``), one that speaks an unknown protocol version
(``ProtocolVersionError``), or a worker that ended without its final event
(``WorkerCrashed``, with its exit status and the last lines of its stderr).
:class:`WorkerError` carries any of these; Processing algorithms raise it, the panel shows
its fields through :class:`~terraseg.plugin.worker_job.WorkerJob`'s ``error`` signal.
"""

from __future__ import annotations

import signal
import sys

from ..protocol.errors import ProtocolVersionError

CRASH_HINT = ("The engine process ended without a result. If it was killed, the machine "
              "may have run out of memory: try a smaller tile or batch size. Otherwise copy "
              "the log (TerraSeg settings > Copy diagnostics) into a bug report.")
ENGINE_MISSING_HINT = "Open TerraSeg settings and click 'Set up engine'."
START_HINT = "Set up the engine again (TerraSeg settings)."


class WorkerError(Exception):
    """A worker job failed (an ``error`` event, a crash, or cancellation).

    Processing algorithms turn it into ``QgsProcessingException(str(error))``.

    Args:
        type: Error type (``RasterError``, ``LabelError``, ``CancelledError``,
            ``WorkerCrashed``, ``EngineMissing``, ``ProtocolVersionError``, ...).
        message: What went wrong.
        hint: How to fix it.
        exit_code: The worker's exit status when known (negative: killed by that signal).
        stderr_tail: The last lines the worker wrote to stderr.
    """

    def __init__(self, type: str, message: str, hint: str = "",  # noqa: A002 - protocol name
                 exit_code: int | None = None, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail

    def __str__(self) -> str:
        text = f"{self.type}: {self.message}" if self.type else self.message
        return f"{text} Fix: {self.hint}" if self.hint else text


def engine_missing() -> WorkerError:
    """The error for a job started without an engine (``EngineMissing``)."""
    return WorkerError("EngineMissing", "No TerraSeg engine was found.", ENGINE_MISSING_HINT)


def start_error(program: str, why: str) -> WorkerError:
    """The error for an engine program that cannot be started (``EngineStartError``).

    Args:
        program: The ``terraseg`` command.
        why: The operating system's reason.
    """
    return WorkerError("EngineStartError", f"Cannot start the engine {program}: {why}",
                       START_HINT)


def version_error(exc: ProtocolVersionError) -> WorkerError:
    """The error for a worker that speaks an unknown protocol version.

    Args:
        exc: The protocol's refusal (its message names both versions).
    """
    return WorkerError(exc.kind, exc.message, exc.hint)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_exit(exit_code: int | None, crashed: bool = False) -> str:
    """Words for how a worker process ended.

    Args:
        exit_code: Exit status; for ``crashed`` processes the signal number (QProcess) or
            a negative signal number (subprocess).
        crashed: Whether it was ended by a signal.

    Returns:
        For example ``"killed by signal 9 (SIGKILL)"`` or ``"exit code 3"``.
    """
    if exit_code is None:
        return "unknown exit status"
    if crashed or exit_code < 0:
        signum = abs(exit_code)
        if sys.platform != "win32" and signum:
            return f"killed by signal {signum} ({_signal_name(signum)})"
        return f"crashed (exit code {exit_code})"
    return f"exit code {exit_code}"


def crash_error(exit_code: int | None, crashed: bool, stderr_tail: str) -> WorkerError:
    """The error for a worker that ended without its final event.

    Args:
        exit_code: Exit status (see :func:`describe_exit`).
        crashed: Whether it was ended by a signal.
        stderr_tail: Its last stderr lines.

    Returns:
        A ``WorkerCrashed`` error.
    """
    last = "\n".join(stderr_tail.strip().splitlines()[-15:])
    message = f"The engine worker stopped unexpectedly ({describe_exit(exit_code, crashed)})."
    if last:
        message += f" Last output:\n{last}"
    code = -abs(exit_code) if crashed and exit_code else exit_code
    return WorkerError("WorkerCrashed", message, CRASH_HINT, code, stderr_tail)
