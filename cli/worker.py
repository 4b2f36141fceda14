"""Worker mode: one JSON job on stdin, JSON-lines events on stdout (docs/worker-protocol.md).

The job (protocol/jobs.py) is ``{"command": NAME, "args": {...}}`` for any command of the
registry (cli/registry.py), where ``args`` uses the command line's option names
(``class_field`` or ``class-field``; ``true`` for flags). The worker writes
``progress``/``log``/``metrics`` events while it runs and ends with exactly one ``result``
or ``error`` event, whatever happens: TerraSeg errors, a cancel, running out of memory or
disk, a bug, a ``sys.exit`` deep inside a library, or a signal that arrives while an event
is written or after the last one. Anything else that would print to stdout is redirected
to stderr so the protocol stays clean. When the reader of stdout is gone (a closed pipe),
the worker stops quietly.
"""

from __future__ import annotations

import contextlib
import io
import sys
import traceback
from typing import TextIO

from terraseg.cli.parser import build_parser
from terraseg.cli.running import (
    environment_error,
    install_signal_handlers,
    report_failure,
    run_command,
    silence_stdout,
)
from terraseg.core.reporting import JsonLinesReporter
from terraseg.protocol.errors import EXIT_BUG, ProtocolError, TerraSegError
from terraseg.protocol.events import Error, Event, Result
from terraseg.protocol.jobs import Job

#: Exit status when stdout's reader went away (as a process killed by SIGPIPE).
EXIT_BROKEN_PIPE = 141


class WorkerReporter(JsonLinesReporter):
    """The worker's reporter: one terminal event at most, events never cut by a signal.

    While an event is written, and after the terminal (``result`` or ``error``) event, a
    SIGTERM only sets the cancel flag (``interruptible`` is False; cli/running.py); a
    signal deferred during an ordinary event interrupts right after it.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.ended = False
        self.ending = False  # the job failed; its error event is on the way
        self._writing = False
        self._deferred = False

    @property
    def interruptible(self) -> bool:
        """Whether a signal may interrupt the work now (see :func:`install_signal_handlers`)."""
        if self.ended or self.ending or self._writing:
            self._deferred = self._writing and not self.ended
            return False
        return True

    def emit(self, event: Event) -> None:
        """Write one event; the terminal one only once (a second is dropped, on stderr)."""
        terminal = isinstance(event, Result | Error)
        if self.ended:
            print(f"terraseg worker: dropped an event after the job ended: {event}",
                  file=sys.stderr)
            return
        self._writing = True
        try:
            super().emit(event)
        finally:
            self._writing = False
        if terminal:
            self.ended = True
        elif self._deferred:
            self._deferred = False
            raise KeyboardInterrupt("signal during an event")


def run_worker() -> int:
    """Read the job, run it, stream events; exit code 0 on result, else non-zero."""
    out = sys.stdout
    sys.stdout = sys.stderr  # keep stray prints off the protocol stream
    reporter = WorkerReporter(out)
    install_signal_handlers(reporter)
    try:
        return _run(reporter)
    except BrokenPipeError:  # nobody reads the events any more
        silence_stdout()
        return EXIT_BROKEN_PIPE
    finally:
        sys.stdout = out


def _run(reporter: WorkerReporter) -> int:
    command = "?"
    try:
        try:
            text = sys.stdin.read()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"The job on stdin is not UTF-8 text ({exc.reason}).",
                                "Write the job as UTF-8 JSON.") from None
        argv = Job.from_json(text).to_argv()
        command = argv[0]
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):
                args = build_parser().parse_args(argv)
        except SystemExit:
            lines = [ln for ln in said.getvalue().splitlines() if ": error: " in ln]
            why = lines[-1].split(": error: ", 1)[1] if lines else "see the options"
            raise TerraSegError(f"Invalid arguments for {argv[0]}: {why} ({argv[1:]}).",
                                f"See 'terraseg {argv[0]} --help' for the options.") from None
        reporter.log(f"worker started: {command}")
        result = run_command(args, reporter)
        reporter.result({"command": command, **result})
        return 0
    except BrokenPipeError:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure ends as one error event
        if reporter.ended:  # the result is out; a late signal changes nothing
            return 0
        reporter.ending = True
        return _report(exc, reporter, command)


def _report(exc: BaseException, reporter: WorkerReporter, command: str) -> int:
    """The error event for any failure; returns the exit status."""
    try:
        return report_failure(exc, reporter)
    except BrokenPipeError:
        raise
    except BaseException:  # noqa: BLE001, S110 - not a TerraSeg error: below
        pass
    if reporter.ended:
        return EXIT_BUG
    if isinstance(exc, SystemExit):
        reporter.error("EngineExit",
                       f"The engine stopped while running {command} (exit status {exc.code}) "
                       "without a result.",
                       "See the log for the reason; if none is given, this is a TerraSeg "
                       "bug: copy the log into a bug report.")
        return EXIT_BUG
    if environment_error(exc) is None:
        traceback.print_exception(exc, file=sys.stderr)
    reporter.error(type(exc).__name__, str(exc) or repr(exc),
                   "This is a TerraSeg bug: copy the log into a bug report.")
    return EXIT_BUG
