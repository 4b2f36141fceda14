"""Blocking worker runs, for Processing algorithms (docs/worker-protocol.md).

Processing algorithms run in a background thread without an event loop, so
:func:`run_job` uses ``subprocess`` and reader threads instead of a QProcess. It reports
to a ``QgsProcessingFeedback`` and honours its cancel button. Failures are raised as
:class:`~terraseg.plugin.worker_errors.WorkerError`, the same types the GUI's
:class:`~terraseg.plugin.worker_job.WorkerJob` emits.
"""

from __future__ import annotations

import collections
import json
import queue
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from ..protocol.errors import ProtocolVersionError
from ..protocol.events import Error, Event, Log, Metrics, Progress, Result
from .engine import EngineLocation, creation_flags, engine_program, process_environment
from .worker_errors import WorkerError, crash_error, engine_missing, start_error, version_error
from .worker_stream import STDERR_LINES, TERMINATE_GRACE_S, read_stdout_line


def format_metrics(epoch: int, values: dict[str, Any]) -> str:
    """One feedback line for an epoch's metrics, e.g. ``epoch 2: val_acc 0.9100``."""
    vals = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, int | float))
    return f"epoch {epoch}: {vals}"


def report(feedback: Any, event: Event) -> None:
    """Show one progress, log or metrics event on a QgsProcessingFeedback.

    Args:
        feedback: A ``QgsProcessingFeedback`` (``setProgressText`` and ``pushWarning``
            are used when it has them).
        event: The event (``result``/``error`` are not shown: :func:`run_job` returns or
            raises them).
    """
    if isinstance(event, Progress):
        feedback.setProgress(100.0 * event.fraction)
        text = f"{event.stage}: {event.message}" if event.message else event.stage
        if hasattr(feedback, "setProgressText"):
            feedback.setProgressText(text)
    elif isinstance(event, Log):
        if event.level == "debug":
            feedback.pushDebugInfo(event.message)
        elif event.level in ("warning", "error") and hasattr(feedback, "pushWarning"):
            feedback.pushWarning(event.message)
        else:
            feedback.pushInfo(event.message)
    elif isinstance(event, Metrics):
        feedback.pushInfo(format_metrics(event.epoch, dict(event.values)))


def _reader(stream: Any, tag: str, out: queue.Queue) -> None:
    try:
        for raw in iter(stream.readline, b""):
            out.put((tag, raw.decode("utf-8", "replace")))
    except (OSError, ValueError):
        pass
    finally:
        out.put((tag, None))


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM, then SIGKILL after ``grace_s`` seconds."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass


def run_job(job: dict[str, Any], feedback: Any = None,
            on_event: Callable[[dict[str, Any]], None] | None = None,
            engine: EngineLocation | str | None = None,
            timeout_s: float | None = None) -> dict[str, Any]:
    """Run a job in a worker process and wait for it (no event loop needed).

    Args:
        job: ``{"command": ..., "args": {...}}`` (see :mod:`terraseg.plugin.jobs`).
        feedback: A ``QgsProcessingFeedback`` (or anything with ``setProgress``,
            ``pushInfo``, ``pushDebugInfo`` and ``isCanceled``): progress, log lines and
            metrics go there, stderr as debug info; its cancel stops the worker.
        on_event: Called with every protocol event as its JSON object, in order.
        engine: The engine (or its ``terraseg`` path); default
            :func:`~terraseg.plugin.engine.find_engine`.
        timeout_s: Stop the worker after this many seconds (raises ``TimeoutError`` type).

    Returns:
        The result payload (``result`` event without ``v``/``time``/``event``).

    Raises:
        WorkerError: The job failed (its ``error`` event), was cancelled
            (``CancelledError``), the worker crashed (``WorkerCrashed``), timed out,
            speaks an unknown protocol version (``ProtocolVersionError``; it is stopped),
            or there is no engine (``EngineMissing``).
    """
    program = engine_program(engine)
    if program is None:
        raise engine_missing()
    try:
        proc = subprocess.Popen([program, "worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=process_environment(), cwd=tempfile.gettempdir(),
                                creationflags=creation_flags())
    except OSError as exc:
        raise start_error(program, str(exc)) from exc
    events: queue.Queue = queue.Queue()
    readers = [threading.Thread(target=_reader, args=(proc.stdout, "out", events), daemon=True),
               threading.Thread(target=_reader, args=(proc.stderr, "err", events), daemon=True)]
    for t in readers:
        t.start()
    try:
        proc.stdin.write(json.dumps(job).encode("utf-8"))
        proc.stdin.close()
    except OSError:
        pass  # the worker died at once; its exit status tells why

    stderr_lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
    final: Result | Error | None = None
    cancelled = timed_out = refused = False
    open_streams = 2
    deadline = time.monotonic() + timeout_s if timeout_s else None
    try:
        while open_streams:
            if not cancelled and feedback is not None and feedback.isCanceled():
                cancelled = True
                _stop(proc, TERMINATE_GRACE_S)
            if not cancelled and deadline is not None and time.monotonic() > deadline:
                cancelled = timed_out = True
                _stop(proc, TERMINATE_GRACE_S)
            try:
                tag, line = events.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
                continue
            if tag == "err":
                line = line.rstrip()
                if line:
                    stderr_lines.append(line)
                    if feedback is not None:
                        feedback.pushDebugInfo(line)
                continue
            if refused:
                continue
            try:
                item = read_stdout_line(line)
            except ProtocolVersionError as exc:
                refused = True
                if final is None:
                    err = version_error(exc)
                    final = Error(err.type, err.message, err.hint)
                _stop(proc, TERMINATE_GRACE_S)
                continue
            if item is None:
                continue
            if isinstance(item, str):
                if feedback is not None:
                    feedback.pushDebugInfo(item)
                continue
            if isinstance(item, Result | Error) and final is None:
                final = item
            if feedback is not None:
                report(feedback, item)
            if on_event is not None:
                on_event(json.loads(line))
    finally:
        if proc.poll() is None and (cancelled or final is None):
            _stop(proc, TERMINATE_GRACE_S)
        returncode = proc.wait()
        for t in readers:
            t.join(timeout=1.0)
    tail = "\n".join(stderr_lines)
    if timed_out:
        raise WorkerError("TimeoutError", f"The engine worker ran longer than {timeout_s} s "
                          "and was stopped.", "Allow more time.", returncode, tail)
    if isinstance(final, Result):
        return dict(final.payload)
    if final is not None:
        raise WorkerError(final.type, final.message, final.hint, returncode, tail)
    if cancelled:
        raise WorkerError("CancelledError", "Cancelled; the engine worker was stopped.", "",
                          returncode, tail)
    raise crash_error(returncode, returncode < 0, tail)
