"""Contract: every event the engine can emit arrives through the plugin's worker clients.

The events are written by the engine's real reporter (terraseg.core.reporting's
JsonLinesReporter, run with the engine's Python) inside a stand-in ``terraseg worker``, and
read by the plugin's WorkerJob (signals) and run_job (Processing feedback, on_event, return
value or WorkerError). Values the engine must clean on the way (numpy scalars, NaN, inf,
tuples) are part of each scenario. An event of an unknown protocol version ends the job as
``ProtocolVersionError`` and stops the worker. A new event kind in terraseg.protocol.events
fails this test until a scenario emits it and the clients are checked to handle it.
"""

from __future__ import annotations

import json
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
from helpers.qgis_support import RecordingFeedback, wait_until

from terraseg.plugin.worker_errors import WorkerError
from terraseg.plugin.worker_job import WorkerJob
from terraseg.plugin.worker_run import run_job
from terraseg.protocol.errors import ProtocolVersionError
from terraseg.protocol.events import EVENT_KINDS, LOG_LEVELS, PROTOCOL_VERSION, decode

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="shell-script worker")

# Runs with the engine's Python: argv = scenario, file receiving a copy of the wire lines.
EMITTER = r'''
import json
import sys
import time

import numpy as np

from terraseg.core.reporting import JsonLinesReporter
from terraseg.protocol.errors import RasterError
from terraseg.protocol.events import LOG_LEVELS


class Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)

    def flush(self):
        for s in self.streams:
            s.flush()


scenario, wire_path = sys.argv[1], sys.argv[2]
stream = Tee(sys.stdout, open(wire_path, "w", encoding="utf-8"))
r = JsonLinesReporter(stream)
if scenario == "result":
    r.progress(0.0, "train", "starting")
    time.sleep(0.6)
    r.progress(0.25, "train", "epoch 1 of 4")
    r.progress(1.0, "train")
    for level in LOG_LEVELS:
        r.log(f"a {level} line", level)
    r.metrics(np.int64(2), {"val_acc": np.float32(0.75), "val_loss": np.float32("nan"),
                            "train_loss": float("inf"), "lr": 1e-3})
    r.result({"command": "predict",
              "paths": {"probability": "/out/probability.tif",
                        "tiles": ("/out/t1.tif", "/out/t2.tif")},
              "summary": {"pixels": np.int64(9216),
                          "area_m2": {"sealed": np.float64(1234.5), "unsealed": float("nan")},
                          "window": (0, 0, 96, 96)},
              "accuracy": np.float32(0.875), "preview": None, "ok": True})
elif scenario == "nan":
    r.progress(float("nan"), "predict", "no estimate")
    r.result({"command": "predict"})
elif scenario == "error":
    r.log("reading the raster")
    exc = RasterError("Cannot read /data/missing.tif: no such file.", "Check the raster path.")
    r.error(exc.kind, exc.message, exc.hint)
    sys.exit(exc.exit_code)
elif scenario == "version":
    stream.write(json.dumps({"v": 99, "time": time.time(), "event": "log", "level": "info",
                             "message": "from a newer engine"}) + "\n")
    stream.flush()
    time.sleep(60)
    r.result({"command": "env"})
'''

RESULT_PAYLOAD = {
    "command": "predict",
    "paths": {"probability": "/out/probability.tif", "tiles": ["/out/t1.tif", "/out/t2.tif"]},
    "summary": {"pixels": 9216, "area_m2": {"sealed": 1234.5, "unsealed": None},
                "window": [0, 0, 96, 96]},
    "accuracy": 0.875, "preview": None, "ok": True,
}
METRICS = {"val_acc": 0.75, "val_loss": None, "train_loss": None, "lr": 0.001}
RASTER_ERROR = ("RasterError", "Cannot read /data/missing.tif: no such file.",
                "Check the raster path.")
STOP_WITHIN_S = 20.0  # the version scenario's worker would run 60 s


def expected_signals(scenario: str, eta_s: float | None = None) -> list[tuple]:
    """What WorkerJob emits for a scenario, in order (``eta_s`` as the engine wrote it)."""
    if scenario == "result":
        return [("progress", 0.0, "train", None, "starting"),
                ("progress", 0.25, "train", eta_s, "epoch 1 of 4"),
                ("progress", 1.0, "train", None, ""),
                *[("log", level, f"a {level} line") for level in LOG_LEVELS],
                ("metrics", 2, METRICS),
                ("result", RESULT_PAYLOAD),
                ("finished", 0)]
    if scenario == "nan":
        return [("progress", 0.0, "predict", None, "no estimate"),
                ("result", {"command": "predict"}),
                ("finished", 0)]
    if scenario == "error":
        return [("log", "info", "reading the raster"), ("error", *RASTER_ERROR), ("finished", 2)]
    raise ValueError(scenario)


COVERED_KINDS = {e[0] for s in ("result", "error") for e in expected_signals(s)} - {"finished"}


class Worker:
    """A stand-in ``terraseg`` whose ``worker`` runs the engine's reporter."""

    def __init__(self, folder: Path, python: str, scenario: str) -> None:
        self.wire = folder / f"{scenario}.jsonl"
        emitter = folder / "emit.py"
        emitter.write_text(EMITTER)
        self.program = folder / f"terraseg-{scenario}"
        self.program.write_text(f'#!/bin/sh\ncat > /dev/null\nexec "{python}" "{emitter}" '
                                f'{scenario} "{self.wire}"\n')
        self.program.chmod(self.program.stat().st_mode | stat.S_IXUSR)

    def lines(self) -> list[dict]:
        """The wire objects the engine wrote, in order."""
        return [json.loads(s) for s in self.wire.read_text().splitlines()]


class Recorder:
    """Every WorkerJob signal, in order."""

    def __init__(self, job: WorkerJob) -> None:
        self.events: list[tuple] = []
        job.progress.connect(lambda *a: self.events.append(("progress", *a)))
        job.log.connect(lambda *a: self.events.append(("log", *a)))
        job.metrics.connect(lambda *a: self.events.append(("metrics", *a)))
        job.result.connect(lambda d: self.events.append(("result", d)))
        job.error.connect(lambda *a: self.events.append(("error", *a)))
        job.finished.connect(lambda code: self.events.append(("finished", code)))

    @property
    def done(self) -> bool:
        return any(e[0] == "finished" for e in self.events)


def run_worker_job(worker: Worker, timeout_s: float = 30) -> tuple[WorkerJob, Recorder]:
    job = WorkerJob(str(worker.program))
    rec = Recorder(job)
    job.start({"command": "env", "args": {}})
    assert wait_until(lambda: rec.done, timeout_s), rec.events
    return job, rec


@pytest.fixture
def make_worker(engine, tmp_path):
    return lambda scenario: Worker(tmp_path, engine.python, scenario)


def test_every_event_kind_is_covered():
    assert set(EVENT_KINDS) == COVERED_KINDS, (
        "terraseg.protocol.events has event kinds this contract test does not emit: add a "
        "scenario and check WorkerJob and run_job handle the new kind")


# --- WorkerJob (the panel) -------------------------------------------------------------------


def test_result_stream_through_worker_job(make_worker):
    worker = make_worker("result")
    job, rec = run_worker_job(worker)
    wire = worker.lines()
    assert [w["event"] for w in wire] == [e[0] for e in rec.events[:-1]]
    eta = wire[1]["eta_s"]
    assert isinstance(eta, float) and 1.0 <= eta <= 30.0  # 0.6 s for a quarter, or more
    assert rec.events == expected_signals("result", eta)
    assert job.final_event is not None and job.final_event.kind == "result"
    assert job.exit_code == 0


def test_error_stream_through_worker_job(make_worker):
    job, rec = run_worker_job(make_worker("error"))
    assert rec.events == expected_signals("error")
    assert job.final_event is not None and job.final_event.kind == "error"


def test_nan_progress_fraction_arrives(make_worker):
    _job, rec = run_worker_job(make_worker("nan"))
    assert rec.events == expected_signals("nan")


def test_unknown_protocol_version_ends_worker_job(make_worker):
    with pytest.raises(ProtocolVersionError) as refusal:
        decode({"v": 99, "event": "log"})
    start = time.monotonic()
    job, rec = run_worker_job(make_worker("version"))
    assert time.monotonic() - start < STOP_WITHIN_S, "the worker was not stopped"
    (_, kind, message, hint), = [e for e in rec.events if e[0] == "error"]
    assert kind == "ProtocolVersionError"
    assert (message, hint) == (refusal.value.message, refusal.value.hint) and hint
    assert "99" in message and str(PROTOCOL_VERSION) in message
    assert rec.events[-1] == ("finished", -signal.SIGTERM)
    assert not any(e[0] == "result" for e in rec.events)
    assert not job.is_running()


# --- run_job (Processing) --------------------------------------------------------------------


def test_result_stream_through_run_job(make_worker):
    worker = make_worker("result")
    feedback, events = RecordingFeedback(), []
    result = run_job({"command": "env", "args": {}}, feedback, on_event=events.append,
                     engine=str(worker.program), timeout_s=30)
    assert result == RESULT_PAYLOAD
    assert events == worker.lines()
    assert feedback.progress == [0.0, 25.0, 100.0]
    assert feedback.texts == ["train: starting", "train: epoch 1 of 4", "train"]
    assert feedback.debug == ["a debug line"]
    assert feedback.info == ["a info line", "epoch 2: val_acc 0.7500, lr 0.0010"]
    assert feedback.warnings == ["a warning line", "a error line"]


def test_error_stream_through_run_job(make_worker):
    feedback = RecordingFeedback()
    with pytest.raises(WorkerError) as err:
        run_job({"command": "env", "args": {}}, feedback,
                engine=str(make_worker("error").program), timeout_s=30)
    assert (err.value.type, err.value.message, err.value.hint) == RASTER_ERROR
    assert err.value.exit_code == 2
    assert str(err.value).endswith("Fix: Check the raster path.")
    assert feedback.info == ["reading the raster"]


def test_nan_progress_fraction_through_run_job(make_worker):
    feedback = RecordingFeedback()
    run_job({"command": "env", "args": {}}, feedback,
            engine=str(make_worker("nan").program), timeout_s=30)
    assert feedback.progress == [0.0]


def test_unknown_protocol_version_ends_run_job(make_worker):
    feedback = RecordingFeedback()
    start = time.monotonic()
    with pytest.raises(WorkerError) as err:
        run_job({"command": "env", "args": {}}, feedback,
                engine=str(make_worker("version").program), timeout_s=60)
    assert time.monotonic() - start < STOP_WITHIN_S, "the worker was not stopped"
    assert err.value.type == "ProtocolVersionError" and err.value.hint
    assert "version 99" in err.value.message and str(PROTOCOL_VERSION) in err.value.message
    assert err.value.exit_code == -signal.SIGTERM
    assert not any("newer engine" in t for t in feedback.info + feedback.debug)
