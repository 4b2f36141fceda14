"""One engine job in a ``terraseg worker`` QProcess, for the GUI (docs/worker-protocol.md).

Events arrive as Qt signals while the event loop runs; :meth:`WorkerJob.cancel` stops the
process (SIGTERM, SIGKILL after 10 s). A worker that dies without its final
``result``/``error`` event (crash, ``kill -9``, out of memory) is reported as error
``WorkerCrashed`` with its exit status and the last lines of its stderr. QGIS itself never
runs engine code, so such a crash cannot take QGIS down.
"""

from __future__ import annotations

import collections
import json
import tempfile
from typing import Any

from qgis.PyQt.QtCore import QEventLoop, QObject, QProcess, QTimer, pyqtSignal

from ..protocol.errors import ProtocolVersionError
from ..protocol.events import Error, Event, Log, Metrics, Progress, Result
from .engine import EngineLocation, engine_program, qprocess_environment
from .worker_errors import (
    WorkerError,
    crash_error,
    describe_exit,
    engine_missing,
    start_error,
    version_error,
)
from .worker_stream import STDERR_LINES, TERMINATE_GRACE_S, read_stdout_line


class WorkerJob(QObject):
    """One engine job in a ``terraseg worker`` QProcess, reported through signals.

    Connect the signals, then call :meth:`start`. Exactly one of ``result`` or ``error``
    is emitted per job, then ``finished``.

    Signals:
        progress(float fraction, str stage, object eta_s, str message): progress of a
            stage (``prepare``, ``train``, ``predict``, ``evaluate``, ``grid``, ``cv``,
            ``compare``); ``eta_s`` is seconds or None.
        log(str level, str message): ``info``/``warning`` log lines of the engine, and
            its stderr as ``debug`` lines.
        metrics(int epoch, dict values): per-epoch training metrics.
        result(dict): the command's result (event fields without ``v``/``time``/``event``).
        error(str type, str message, str hint): failure, cancellation (``CancelledError``),
            a crash (``WorkerCrashed``) or an engine of another protocol version
            (``ProtocolVersionError``; the worker is stopped).
        finished(int exit_code): the process ended (negative: killed by that signal;
            -1 also when it could not start).

    Attributes:
        final_event: The job's ``Result`` or ``Error`` once it ended (an ``Error`` also
            for failures seen by the plugin: crash, cancel, no engine).
        exit_code: The value ``finished`` was emitted with.
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
            engine: The engine (or its ``terraseg`` path); default
                :func:`~terraseg.plugin.engine.find_engine` at :meth:`start`.
            parent: Qt parent.
        """
        super().__init__(parent)
        self.engine = engine
        self.job: dict[str, Any] | None = None
        self.final_event: Event | None = None
        self.exit_code: int | None = None
        self._process: QProcess | None = None
        self._stdout = b""
        self._stderr = b""
        self._stderr_lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._cancelled = False
        self._refused = False
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
        self._cancelled, self._refused, self._done = False, False, False
        program = engine_program(self.engine)
        if program is None:
            QTimer.singleShot(0, lambda: self._fail_early(engine_missing()))
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
        self._stop()

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

    # --- events ---------------------------------------------------------------------
    def _handle_line(self, line: str) -> None:
        if self._refused:
            return
        try:
            item = read_stdout_line(line)
        except ProtocolVersionError as exc:
            self._refuse(exc)
            return
        if isinstance(item, str):
            self.log.emit("debug", item)
        elif item is not None:
            self._dispatch(item)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Progress):
            self.progress.emit(event.fraction, event.stage, event.eta_s, event.message)
        elif isinstance(event, Log):
            self.log.emit(event.level, event.message)
        elif isinstance(event, Metrics):
            self.metrics.emit(event.epoch, dict(event.values))
        elif self.final_event is None:  # the first result or error ends the job
            self.final_event = event
            if isinstance(event, Result):
                self.result.emit(dict(event.payload))
            else:
                self.error.emit(event.type, event.message, event.hint)

    def _end_with(self, err: WorkerError) -> None:
        self.final_event = Error(err.type, err.message, err.hint)
        self.error.emit(err.type, err.message, err.hint)

    def _refuse(self, exc: ProtocolVersionError) -> None:
        """An event of an unknown protocol version: end the job, stop the worker."""
        self._refused = True
        if self.final_event is None:
            self._end_with(version_error(exc))
        self._stop()

    # --- process --------------------------------------------------------------------
    def _stop(self) -> None:
        if not self.is_running():
            return
        if self._process.state() == QProcess.Starting:
            self._process.kill()
            return
        self._process.terminate()
        self._kill_timer.start(int(TERMINATE_GRACE_S * 1000))

    def _kill(self) -> None:
        if self.is_running():
            self._process.kill()

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

    def _on_process_error(self, err: QProcess.ProcessError) -> None:
        if err == QProcess.FailedToStart and not self._done:
            program = self._process.program() if self._process else ""
            why = self._process.errorString() if self._process else ""
            self._fail_early(start_error(program, why))

    def _fail_early(self, err: WorkerError) -> None:
        if self._done:
            return
        self._done = True
        self.exit_code = -1
        self._end_with(err)
        self.finished.emit(-1)

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
                self._end_with(WorkerError(
                    "CancelledError", "Cancelled; the engine worker was stopped "
                                      f"({describe_exit(exit_code, crashed)})."))
            else:
                self._end_with(crash_error(exit_code, crashed, self.stderr_tail))
        self._done = True
        self.finished.emit(code)
