"""Running engine jobs in ``terraseg worker`` processes (docs/worker-protocol.md).

Two ways, one protocol:

* :class:`WorkerJob` (QObject, QProcess): for the GUI. Events arrive as Qt signals while
  the event loop runs; :meth:`WorkerJob.cancel` stops the process (SIGTERM, SIGKILL after
  10 s).
* :func:`run_job`: blocking, with ``subprocess`` and a reader thread, for Processing
  algorithms (which run in a background thread without an event loop). It reports to a
  ``QgsProcessingFeedback`` and honours its cancel button.

A worker that dies without its final ``result``/``error`` event (crash, ``kill -9``, out of
memory) is reported as error ``WorkerCrashed`` with its exit status and the last lines of
its stderr. QGIS itself never runs engine code, so such a crash cannot take QGIS down.
"""

from __future__ import annotations

import collections
import json
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from qgis.PyQt.QtCore import QEventLoop, QObject, QProcess, QTimer, pyqtSignal

from .engine import EngineLocation, find_engine, process_environment, qprocess_environment

TERMINATE_GRACE_S = 10.0
STDERR_LINES = 200
_META_KEYS = ("v", "time", "event")

CRASH_HINT = ("The engine process ended without a result. If it was killed, the machine "
              "may have run out of memory: try a smaller tile or batch size. Otherwise copy "
              "the log (TerraSeg settings > Copy diagnostics) into a bug report.")
ENGINE_MISSING_HINT = "Open TerraSeg settings and click 'Set up engine'."


class WorkerError(Exception):
    """A worker job failed (an ``error`` event, a crash, or cancellation).

    Processing algorithms turn it into ``QgsProcessingException(str(error))``.

    Args:
        type: Error type (``RasterError``, ``LabelError``, ``CancelledError``,
            ``WorkerCrashed``, ``EngineMissing``, ...).
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


def _payload(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in _META_KEYS}


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


def _engine_program(engine: EngineLocation | str | None) -> str | None:
    if isinstance(engine, EngineLocation):
        return engine.terraseg
    if isinstance(engine, str) and engine:
        return engine
    loc = find_engine()
    return loc.terraseg if loc else None


def parse_event(line: str) -> dict[str, Any] | None:
    """One stdout line of the worker as a protocol event, or None when it is not one."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


class WorkerJob(QObject):
    """One engine job in a ``terraseg worker`` QProcess, reported through signals.

    Connect the signals, then call :meth:`start`. Exactly one of ``result`` or ``error``
    is emitted per job, then ``finished``.

    Signals:
        progress(float fraction, str stage, object eta_s, str message): progress of a
            stage (``prepare``, ``train``, ``predict``, ``evaluate``, ``grid``); ``eta_s``
            is seconds or None.
        log(str level, str message): ``info``/``warning`` log lines of the engine, and
            its stderr as ``debug`` lines.
        metrics(int epoch, dict values): per-epoch training metrics.
        result(dict): the command's result (event fields without ``v``/``time``/``event``).
        error(str type, str message, str hint): failure, cancellation (``CancelledError``)
            or a crash (``WorkerCrashed``).
        finished(int exit_code): the process ended (negative: killed by that signal;
            -1 also when it could not start).
    """

    progress = pyqtSignal(float, str, object, str)
    log = pyqtSignal(str, str)
    metrics = pyqtSignal(int, dict)
    result = pyqtSignal(dict)
    error = pyqtSignal(str, str, str)
    finished = pyqtSignal(int)

    def __init__(self, engine: EngineLocation | str | None = None,
                 parent: QObject | None = None) -> None:
        """Create an idle job runner.

        Args:
            engine: The engine (or its ``terraseg`` path); default :func:`find_engine` at
                :meth:`start`.
            parent: Qt parent.
        """
        super().__init__(parent)
        self.engine = engine
        self.job: dict[str, Any] | None = None
        self.final_event: dict[str, Any] | None = None
        self.exit_code: int | None = None
        self._process: QProcess | None = None
        self._stdout = b""
        self._stderr = b""
        self._stderr_lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._cancelled = False
        self._done = False
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)

    # --- public API -----------------------------------------------------------------
    @property
    def stderr_tail(self) -> str:
        """The last (up to 200) lines the worker wrote to stderr."""
        return "\n".join(self._stderr_lines)

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called for the current job."""
        return self._cancelled

    def is_running(self) -> bool:
        """Whether the worker process runs (or is starting)."""
        return self._process is not None and self._process.state() != QProcess.NotRunning

    def process_id(self) -> int:
        """The worker's process id (0 when none runs)."""
        return int(self._process.processId()) if self.is_running() else 0

    def start(self, job: dict[str, Any]) -> None:
        """Start a worker for ``job`` (returns at once).

        Args:
            job: ``{"command": ..., "args": {...}}`` (see :mod:`terraseg.plugin.jobs`).

        Raises:
            RuntimeError: A job of this object is still running.
        """
        if self.is_running():
            raise RuntimeError("This WorkerJob is still running; use another one.")
        self.job = job
        self.final_event, self.exit_code = None, None
        self._stdout, self._stderr = b"", b""
        self._stderr_lines.clear()
        self._cancelled, self._done = False, False
        program = _engine_program(self.engine)
        if program is None:
            QTimer.singleShot(0, lambda: self._fail_early(
                "EngineMissing", "No TerraSeg engine was found.", ENGINE_MISSING_HINT))
            return
        if self._process is not None:
            self._process.deleteLater()
            self._process = None
        proc = QProcess(self)
        proc.setProgram(program)
        proc.setArguments(["worker"])
        proc.setProcessEnvironment(qprocess_environment())
        proc.setWorkingDirectory(tempfile.gettempdir())
        proc.started.connect(self._on_started)
        proc.readyReadStandardOutput.connect(self._on_stdout)
        proc.readyReadStandardError.connect(self._on_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_process_error)
        self._process = proc
        proc.start()

    def cancel(self) -> None:
        """Stop the worker: SIGTERM (it rolls back its outputs), SIGKILL after 10 s."""
        if not self.is_running():
            return
        self._cancelled = True
        if self._process.state() == QProcess.Starting:
            self._process.kill()
            return
        self._process.terminate()
        self._kill_timer.start(int(TERMINATE_GRACE_S * 1000))

    def wait(self, ms: int = -1) -> bool:
        """Run a local event loop until the job has finished.

        Args:
            ms: Milliseconds to wait at most; -1 waits forever.

        Returns:
            True when the job has finished (``finished`` was emitted).
        """
        if self._done or (self._process is None and self.job is None):
            return True
        loop = QEventLoop()
        self.finished.connect(loop.quit)
        timer = None
        if ms >= 0:
            timer = QTimer()
            timer.setSingleShot(True)
            timer.timeout.connect(loop.quit)
            timer.start(ms)
        try:
            if not self._done:
                loop.exec_()
        finally:
            self.finished.disconnect(loop.quit)
            if timer is not None:
                timer.stop()
        return self._done

    # --- process callbacks ----------------------------------------------------------
    def _on_started(self) -> None:
        self._process.write(json.dumps(self.job).encode("utf-8"))
        self._process.closeWriteChannel()

    def _on_stdout(self) -> None:
        if self._process is None:
            return
        self._stdout += bytes(self._process.readAllStandardOutput())
        *lines, self._stdout = self._stdout.split(b"\n")
        for raw in lines:
            self._handle_line(raw.decode("utf-8", "replace"))

    def _on_stderr(self) -> None:
        if self._process is None:
            return
        self._stderr += bytes(self._process.readAllStandardError())
        *lines, self._stderr = self._stderr.replace(b"\r", b"\n").split(b"\n")
        for raw in lines:
            self._stderr_line(raw.decode("utf-8", "replace"))

    def _stderr_line(self, line: str) -> None:
        line = line.rstrip()
        if line:
            self._stderr_lines.append(line)
            self.log.emit("debug", line)

    def _handle_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        event = parse_event(line)
        if event is None:
            self.log.emit("debug", f"(not a protocol line) {line}")
            return
        self._dispatch(event)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        try:  # a malformed event must not break the stream (nor QGIS)
            if kind == "progress":
                eta = event.get("eta_s")
                args: tuple = (float(event.get("fraction") or 0.0), str(event.get("stage", "")),
                               float(eta) if isinstance(eta, int | float) else None,
                               str(event.get("message") or ""))
            elif kind == "log":
                args = (str(event.get("level", "info")), str(event.get("message", "")))
            elif kind == "metrics":
                args = (int(event.get("epoch") or 0), dict(event.get("values") or {}))
            elif kind == "error":
                args = (str(event.get("type") or "Error"), str(event.get("message") or ""),
                        str(event.get("hint") or ""))
            else:
                args = ()
        except (TypeError, ValueError):
            self.log.emit("debug", f"(malformed event) {json.dumps(event)}")
            return
        if kind == "progress":
            self.progress.emit(*args)
        elif kind == "log":
            self.log.emit(*args)
        elif kind == "metrics":
            self.metrics.emit(*args)
        elif kind in ("result", "error") and self.final_event is None:
            self.final_event = event
            if kind == "result":
                self.result.emit(_payload(event))
            else:
                self.error.emit(*args)

    def _on_process_error(self, err: QProcess.ProcessError) -> None:
        if err == QProcess.FailedToStart and not self._done:
            program = self._process.program() if self._process else ""
            self._fail_early("EngineStartError",
                             f"Cannot start the engine {program}: "
                             f"{self._process.errorString() if self._process else ''}",
                             "Set up the engine again (TerraSeg settings).")

    def _fail_early(self, kind: str, message: str, hint: str) -> None:
        if self._done:
            return
        self._done = True
        self.exit_code = -1
        self.final_event = {"event": "error", "type": kind, "message": message, "hint": hint}
        self.error.emit(kind, message, hint)
        self.finished.emit(-1)

    def _kill(self) -> None:
        if self.is_running():
            self._process.kill()

    def _on_finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        if self._done:
            return
        # Whatever is left in the pipes, and a last line without a newline.
        self._stdout += bytes(self._process.readAllStandardOutput())
        self._stderr += bytes(self._process.readAllStandardError())
        *lines, rest = self._stdout.split(b"\n")
        for raw in [*lines, rest]:
            self._handle_line(raw.decode("utf-8", "replace"))
        for raw in self._stderr.replace(b"\r", b"\n").split(b"\n"):
            self._stderr_line(raw.decode("utf-8", "replace"))
        self._stdout, self._stderr = b"", b""
        crashed = status == QProcess.CrashExit
        code = -abs(exit_code) if crashed and exit_code else (exit_code if not crashed else -1)
        self.exit_code = code
        if self.final_event is None:
            if self._cancelled:
                self.final_event = {"event": "error", "type": "CancelledError",
                                    "message": "Cancelled; the engine worker was stopped "
                                               f"({describe_exit(exit_code, crashed)}).",
                                    "hint": ""}
                self.error.emit("CancelledError", self.final_event["message"], "")
            else:
                err = crash_error(exit_code, crashed, self.stderr_tail)
                self.final_event = {"event": "error", "type": err.type,
                                    "message": err.message, "hint": err.hint}
                self.error.emit(err.type, err.message, err.hint)
        self._done = True
        self.finished.emit(code)


# --------------------------------------------------------------------------------------------
# Blocking runs (Processing)
# --------------------------------------------------------------------------------------------


def _format_metrics(epoch: int, values: dict[str, Any]) -> str:
    vals = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, int | float))
    return f"epoch {epoch}: {vals}"


def _report(feedback: Any, event: dict[str, Any]) -> None:
    """Show one protocol event on a QgsProcessingFeedback."""
    kind = event.get("event")
    if kind == "progress":
        feedback.setProgress(100.0 * float(event.get("fraction") or 0.0))
        text = str(event.get("stage", ""))
        if event.get("message"):
            text += f": {event['message']}"
        if hasattr(feedback, "setProgressText"):
            feedback.setProgressText(text)
    elif kind == "log":
        level, message = event.get("level", "info"), str(event.get("message", ""))
        if level == "debug":
            feedback.pushDebugInfo(message)
        elif level in ("warning", "error") and hasattr(feedback, "pushWarning"):
            feedback.pushWarning(message)
        else:
            feedback.pushInfo(message)
    elif kind == "metrics":
        feedback.pushInfo(_format_metrics(int(event.get("epoch") or 0),
                                          dict(event.get("values") or {})))


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
        on_event: Called with every protocol event (dict), in order.
        engine: The engine (or its ``terraseg`` path); default :func:`find_engine`.
        timeout_s: Stop the worker after this many seconds (raises ``TimeoutError`` type).

    Returns:
        The result payload (``result`` event without ``v``/``time``/``event``).

    Raises:
        WorkerError: The job failed (its ``error`` event), was cancelled
            (``CancelledError``), the worker crashed (``WorkerCrashed``), timed out, or
            there is no engine (``EngineMissing``).
    """
    program = _engine_program(engine)
    if program is None:
        raise WorkerError("EngineMissing", "No TerraSeg engine was found.", ENGINE_MISSING_HINT)
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
    try:
        proc = subprocess.Popen([program, "worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=process_environment(), cwd=tempfile.gettempdir(),
                                creationflags=flags)
    except OSError as exc:
        raise WorkerError("EngineStartError", f"Cannot start the engine {program}: {exc}",
                          "Set up the engine again (TerraSeg settings).") from exc
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
    final: dict[str, Any] | None = None
    cancelled = timed_out = False
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
            line = line.strip()
            if not line:
                continue
            event = parse_event(line)
            if event is None:
                if feedback is not None:
                    feedback.pushDebugInfo(f"(not a protocol line) {line}")
                continue
            if event["event"] in ("result", "error") and final is None:
                final = event
            if feedback is not None:
                try:
                    _report(feedback, event)
                except (TypeError, ValueError):
                    feedback.pushDebugInfo(f"(malformed event) {line}")
            if on_event is not None:
                on_event(event)
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
    if final is not None and final["event"] == "result":
        return _payload(final)
    if final is not None:
        raise WorkerError(str(final.get("type") or "Error"), str(final.get("message") or ""),
                          str(final.get("hint") or ""), returncode, tail)
    if cancelled:
        raise WorkerError("CancelledError", "Cancelled; the engine worker was stopped.", "",
                          returncode, tail)
    raise crash_error(returncode, returncode < 0, tail)

