"""End-to-end tests of ``terraseg worker``: one JSON job on stdin, JSON lines on stdout.

Covers the event stream of train/predict/evaluate/info jobs, error events for bad jobs,
and cancellation with SIGTERM (no model, no outputs, no temporary files left behind).
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.paths import TERRASEG
from helpers.synthetic import make_scene, write_raster

EVENTS = {"progress", "log", "metrics", "result", "error"}
COMMANDS = ("train", "predict", "evaluate", "grid", "info")


def parse_stream(stdout: str) -> list[dict]:
    """Every stdout line must be one JSON event; returns them in order."""
    events = []
    for line in stdout.splitlines():
        ev = json.loads(line)  # raises on any non-JSON line
        assert isinstance(ev, dict), line
        assert ev.get("v") == 1 and ev.get("event") in EVENTS, line
        assert isinstance(ev.get("time"), float | int), line
        events.append(ev)
    return events


def check_protocol(events: list[dict]) -> dict:
    """Exactly one final result/error event, and it is the last; returns it."""
    final = [e for e in events if e["event"] in ("result", "error")]
    assert len(final) == 1, final
    assert events[-1] is final[0]
    for e in events:
        if e["event"] == "progress":
            assert 0.0 <= e["fraction"] <= 1.0, e
            assert isinstance(e["stage"], str) and e["stage"], e
            assert "eta_s" in e and (e["eta_s"] is None or e["eta_s"] >= 0), e
        elif e["event"] == "log":
            assert e["level"] in ("debug", "info", "warning", "error"), e
            assert isinstance(e["message"], str), e
        elif e["event"] == "error":
            assert {"type", "message", "hint"} <= set(e), e
            assert isinstance(e["type"], str) and e["type"], e
            assert isinstance(e["message"], str) and e["message"], e
    return final[0]


def run_job(job: dict | str, cwd: Path, timeout: float = 300) -> tuple[int, list[dict], str]:
    """Run one worker job to completion; returns (exit code, events, stderr)."""
    text = job if isinstance(job, str) else json.dumps(job)
    proc = subprocess.run([*TERRASEG, "worker"], input=text, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, parse_stream(proc.stdout), proc.stderr


class LiveWorker:
    """A worker process whose events are read as they come (for cancellation tests)."""

    def __init__(self, job: dict, cwd: Path) -> None:
        self.proc = subprocess.Popen([*TERRASEG, "worker"], cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.proc.stdin.write(json.dumps(job))
        self.proc.stdin.close()
        self.events: list[dict] = []
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)

    def wait_for(self, kind: str, timeout: float) -> dict:
        """Block until an event of ``kind`` arrives."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            ev = json.loads(line)
            self.events.append(ev)
            if ev["event"] == kind:
                return ev
        self.proc.kill()
        raise AssertionError(f"no {kind} event within {timeout} s; stderr:\n"
                             + "".join(self.stderr[-30:]))

    def terminate_and_wait(self, timeout: float = 20) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker still running {timeout} s after SIGTERM") from None
        elapsed = time.monotonic() - t0
        time.sleep(0.2)  # let the reader threads drain the pipes
        self.events = parse_stream("".join(self.lines))
        return rc, elapsed


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files (ours or GDAL's) left in ``folder``."""
    return sorted(p.name for p in folder.rglob("*")
                  if p.name.endswith((".partial", ".aux.xml", ".ovr", ".tmp"))
                  or p.name.startswith(".terraseg-write-test"))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("worker")
    return d, make_scene(d)


def train_args(d: Path, scene, out: Path, **extra) -> dict:
    args = {"raster": str(scene.raster), "labels": str(scene.labels), "class_field": "klass",
            "out": str(out), "patch-size": 23, "blocks": [1, 1, 1], "epochs": 2,
            "samples_per_epoch": 256, "cache_dir": str(d / "cache"), "overwrite": False}
    args.update(extra)
    return args


@pytest.fixture(scope="module")
def trained(scene):
    d, sc = scene
    model = d / "w.tsm"
    rc, events, err = run_job({"command": "train", "args": train_args(d, sc, model)}, d)
    return {"rc": rc, "events": events, "stderr": err, "model": model}


# ------------------------------------------------------------------------------ jobs


def test_train_job_streams_events_and_one_result(trained):
    assert trained["rc"] == 0, trained["stderr"]
    events = trained["events"]
    final = check_protocol(events)
    assert final["event"] == "result" and final["command"] == "train"
    assert final["model"] == str(trained["model"]) and trained["model"].is_file()
    assert final["metrics"]["val"]["accuracy"] is not None
    kinds = {e["event"] for e in events}
    assert {"progress", "log", "metrics"} <= kinds
    train_progress = [e for e in events if e["event"] == "progress" and e["stage"] == "train"]
    assert train_progress and train_progress[-1]["fraction"] == 1.0
    fractions = [e["fraction"] for e in train_progress]
    assert fractions == sorted(fractions)
    metrics = [e for e in events if e["event"] == "metrics"]
    assert [m["epoch"] for m in metrics] == [1, 2]
    for m in metrics:
        assert {"train_loss", "val_loss"} <= set(m["values"])
        assert all(isinstance(v, float) for v in m["values"].values())
    logs = " | ".join(e["message"] for e in events if e["event"] == "log")
    assert "worker started: train" in logs and "training on" in logs


def test_predict_job(scene, trained):
    d, sc = scene
    out = d / "wpred"
    rc, events, err = run_job({"command": "predict", "args": {
        "model": str(trained["model"]), "raster": str(sc.raster), "out_dir": str(out),
        "preview": True}}, d)
    assert rc == 0, err
    final = check_protocol(events)
    assert final["event"] == "result" and final["command"] == "predict"
    for key in ("probability", "classes", "preview"):
        assert Path(final[key]).is_file()
    assert final["window"] == [0, 0, sc.width, sc.height]
    assert final["valid_pixels"] == sc.width * sc.height
    assert sum(final["class_shares"].values()) == pytest.approx(1.0)
    assert any(e["event"] == "progress" and e["stage"] == "predict" for e in events)
    assert leftovers(out) == []


def test_evaluate_job(scene, trained):
    d, sc = scene
    out = d / "weval"
    rc, events, err = run_job({"command": "evaluate", "args": {
        "model": str(trained["model"]), "raster": str(sc.raster), "reference": str(sc.labels),
        "class_field": "klass", "category-field": "cat", "out_dir": str(out)}}, d)
    assert rc == 0, err
    final = check_protocol(events)
    assert final["event"] == "result" and final["command"] == "evaluate"
    assert Path(final["metrics"]).is_file()
    assert final["n_samples"] == 1152
    assert {Path(f).name for f in final["files"]} >= {"metrics.json", "per_category.csv"}


def test_info_job(scene, trained):
    d, _ = scene
    rc, events, err = run_job({"command": "info", "args": {"model": str(trained["model"])}}, d)
    assert rc == 0, err
    final = check_protocol(events)
    assert final["event"] == "result" and final["command"] == "info"
    assert [c["name"] for c in final["classes"]] == ["sealed", "unsealed"]
    assert final["bands"]["names"] == ["red", "green", "blue", "nir"]
    assert final["training_raster"]["crs_epsg"] == 32632


# ------------------------------------------------------------------------------ bad jobs


def test_failing_job_ends_with_one_error_event(scene):
    d, sc = scene
    out = d / "never"
    rc, events, _ = run_job({"command": "predict", "args": {
        "model": str(d / "missing.tsm"), "raster": str(sc.raster), "out_dir": str(out)}}, d)
    assert rc != 0
    final = check_protocol(events)
    assert final["event"] == "error"
    assert final["type"] == "ModelFileError"
    assert "missing.tsm" in final["message"]
    assert final["hint"]
    assert not out.exists()


@pytest.mark.parametrize("stdin", ["{not json", '{"command": "info",', "   \n", ""])
def test_bad_json_gives_error_event(scene, stdin):
    d, _ = scene
    rc, events, _ = run_job(stdin, d, timeout=60)
    assert rc != 0
    final = check_protocol(events)
    assert final["event"] == "error"
    assert final["hint"]
    if stdin:  # an empty stdin reads as {} and is refused as a job without a command
        assert "JSON" in final["message"]


def test_unknown_command_lists_commands(scene):
    d, _ = scene
    rc, events, _ = run_job({"command": "fly", "args": {}}, d, timeout=60)
    assert rc != 0
    final = check_protocol(events)
    assert final["event"] == "error"
    assert "fly" in final["message"]
    text = final["message"] + " " + final["hint"]
    assert all(c in text for c in COMMANDS), text


def test_unknown_option_gives_error_event(scene, trained):
    d, sc = scene
    rc, events, _ = run_job({"command": "predict", "args": {
        "model": str(trained["model"]), "raster": str(sc.raster), "outdir": "x"}}, d,
        timeout=60)
    assert rc != 0
    final = check_protocol(events)
    assert final["event"] == "error"
    assert "--outdir" in final["message"] and final["hint"]
    assert not (d / "x").exists()


@pytest.mark.parametrize("stdin", ["[1, 2]", '"train"', "42", "null"])
def test_job_that_is_not_an_object_is_an_input_error(scene, stdin):
    d, _ = scene
    rc, events, _ = run_job(stdin, d, timeout=60)
    final = check_protocol(events)
    assert final["event"] == "error"
    assert final["type"] == "ProtocolError", final
    assert "object" in final["message"] and final["hint"]
    assert rc == 2


# ------------------------------------------------------------------------------ cancellation


@pytest.fixture(scope="module")
def cancelled_training(scene):
    """Start a long training, SIGTERM it after the first epoch's metrics."""
    d, sc = scene
    out_dir = d / "cancel_train"
    model = out_dir / "c.tsm"
    w = LiveWorker({"command": "train", "args": train_args(
        d, sc, model, epochs=200, patience=200)}, d)
    first = w.wait_for("metrics", timeout=120)
    rc, elapsed = w.terminate_and_wait(timeout=20)
    return {"rc": rc, "elapsed": elapsed, "events": w.events, "first": first,
            "model": model, "out_dir": out_dir, "stderr": "".join(w.stderr)}


def test_sigterm_stops_training_without_output(cancelled_training):
    c = cancelled_training
    assert c["first"]["epoch"] == 1
    assert c["rc"] != 0
    assert c["elapsed"] < 20
    assert not c["model"].exists()
    assert not c["model"].with_name("c.last.tsm").exists()
    assert leftovers(c["out_dir"]) == []
    assert not [e for e in c["events"] if e["event"] == "result"]
    assert "Traceback" not in c["stderr"], c["stderr"]


def test_sigterm_during_training_ends_with_cancelled_error_event(cancelled_training):
    """Lightning turns the interrupt into sys.exit(1); it must still end as a cancel."""
    c = cancelled_training
    assert c["events"] and c["events"][-1]["event"] == "error"
    assert c["events"][-1]["type"] == "CancelledError"
    assert c["rc"] == 130


def test_sigterm_stops_prediction_without_output(scene, trained):
    d, _ = scene
    rng = np.random.default_rng(1)
    big = write_raster(d / "big.tif", rng.integers(0, 256, (4, 1500, 1500), dtype=np.uint8),
                       descriptions=("red", "green", "blue", "nir"))
    out = d / "cancel_pred"
    w = LiveWorker({"command": "predict", "args": {
        "model": str(trained["model"]), "raster": str(big), "out_dir": str(out),
        "tile_size": 100, "preview": True}}, d)
    first = w.wait_for("progress", timeout=120)
    assert first["stage"] == "predict" and first["fraction"] < 0.5
    rc, elapsed = w.terminate_and_wait(timeout=20)
    assert rc != 0
    assert elapsed < 20
    final = check_protocol(w.events)
    assert final["event"] == "error" and final["type"] == "CancelledError"
    assert rc == 130
    assert out.is_dir()
    assert sorted(p.name for p in out.iterdir()) == []  # no outputs, no temp files
