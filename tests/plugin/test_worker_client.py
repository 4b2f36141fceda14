"""The QGIS-side worker client: WorkerJob (QProcess, signals) and run_job (blocking).

Runs the real engine worker: env, info and a 2-epoch train job; Cancel that stops the
process and leaves no model or partial files; errors with hints; a worker killed with
SIGKILL reported as WorkerCrashed. Plus engine location/setup, job dicts and the settings
page.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from pathlib import Path

import pytest
from helpers.qgis_support import TINY_TRAIN, RecordingFeedback, wait_until
from qgis.PyQt.QtWidgets import QApplication

from terraseg.plugin import engine as engine_mod
from terraseg.plugin import engine_setup, jobs, settings
from terraseg.plugin.worker_errors import WorkerError
from terraseg.plugin.worker_job import WorkerJob
from terraseg.plugin.worker_run import run_job

POSIX = sys.platform != "win32"


class Recorder:
    """Connects to every WorkerJob signal and keeps what arrived, in order."""

    def __init__(self, job: WorkerJob) -> None:
        self.job = job
        self.events: list[tuple] = []
        self.exit_code: int | None = None
        job.progress.connect(lambda *a: self.events.append(("progress", *a)))
        job.log.connect(lambda *a: self.events.append(("log", *a)))
        job.metrics.connect(lambda *a: self.events.append(("metrics", *a)))
        job.result.connect(lambda d: self.events.append(("result", d)))
        job.error.connect(lambda *a: self.events.append(("error", *a)))
        job.finished.connect(self._finished)

    def _finished(self, code: int) -> None:
        self.exit_code = code
        self.events.append(("finished", code))

    def of(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind]

    @property
    def done(self) -> bool:
        return bool(self.of("finished"))

    def wait(self, timeout_s: float) -> None:
        assert wait_until(lambda: self.done, timeout_s), f"no finished signal: {self.events}"


def run(job_dict: dict, engine, timeout_s: float = 120) -> Recorder:
    job = WorkerJob(engine)
    rec = Recorder(job)
    job.start(job_dict)
    rec.wait(timeout_s)
    return rec


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.suffix == ".tsm" or "partial" in p.name or p.name.startswith("."))


# --- WorkerJob with the real engine -----------------------------------------------------------


def test_env_job_signals(engine):
    rec = run(jobs.env_job(), engine)
    assert not rec.of("error"), rec.events
    (_, env), = rec.of("result")
    assert env["command"] == "env"
    assert env["packages"]["torch"]
    assert env["device"]["type"] in ("cpu", "cuda")
    assert rec.exit_code == 0
    assert rec.events[-1] == ("finished", 0)
    assert any(e[1] == "info" and "worker started" in e[2] for e in rec.of("log"))


def test_info_job(engine, tiny_model):
    rec = run(jobs.info_job(str(tiny_model.path)), engine)
    assert not rec.of("error"), rec.events
    (_, meta), = rec.of("result")
    assert [c["name"] for c in meta["classes"]] == ["sealed", "unsealed"]
    assert meta["geometry"]["patch_px"] == 23


def test_train_job_emits_progress_metrics_result(engine, scene, cache_dir, tmp_path):
    out = tmp_path / "m.tsm"
    job = jobs.train_job(str(scene.raster), str(scene.labels), str(out), class_field="klass",
                         cache_dir=str(cache_dir), **TINY_TRAIN)
    rec = run(job, engine, timeout_s=240)
    assert not rec.of("error"), rec.events
    progress = rec.of("progress")
    assert progress and all(0.0 <= p[1] <= 1.0 for p in progress)
    assert {p[2] for p in progress} >= {"prepare", "train"}
    epochs = [m[1] for m in rec.of("metrics")]
    assert epochs == [1, 2]
    assert "val_acc" in rec.of("metrics")[-1][2]
    (_, result), = rec.of("result")
    assert Path(result["model"]) == out and out.is_file()
    assert rec.exit_code == 0


def start_long_training(engine, scene, cache_dir, out: Path):
    """Start a training of 200 epochs (long enough to be stopped); (worker, recorder)."""
    job = jobs.train_job(str(scene.raster), str(scene.labels), str(out), class_field="klass",
                         cache_dir=str(cache_dir), **{**TINY_TRAIN, "epochs": 200,
                                                      "patience": 200})
    worker = WorkerJob(engine)
    rec = Recorder(worker)
    worker.start(job)
    return worker, rec


@pytest.mark.skipif(not POSIX, reason="SIGTERM semantics")
def test_cancel_stops_the_worker(engine, scene, cache_dir, tmp_path):
    worker, rec = start_long_training(engine, scene, cache_dir, tmp_path / "long.tsm")
    assert wait_until(lambda: rec.of("metrics") or rec.done, 180), rec.events
    assert worker.is_running(), rec.events
    pid = worker.process_id()
    assert pid > 0
    worker.cancel()
    assert worker.cancelled
    assert wait_until(lambda: not worker.is_running(), 15), "worker still running after 15 s"
    rec.wait(5)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the process is gone (reaped by QProcess)
    errors = rec.of("error")
    assert len(errors) == 1 and not rec.of("result")
    assert errors[0][1] == "CancelledError" or rec.exit_code != 0
    assert rec.exit_code != 0
    assert leftovers(tmp_path) == []


def test_engine_error_has_type_and_hint(engine, scene, tmp_path):
    job = jobs.train_job(str(tmp_path / "missing.tif"), str(scene.labels),
                         str(tmp_path / "m.tsm"), class_field="klass")
    rec = run(job, engine)
    (_, kind, message, hint), = rec.of("error")
    assert kind == "RasterError"
    assert "missing.tif" in message and hint
    assert rec.exit_code == 2
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(not POSIX, reason="SIGKILL")
def test_killed_worker_is_reported_as_crash(engine, scene, cache_dir, tmp_path):
    out = tmp_path / "killed.tsm"
    worker, rec = start_long_training(engine, scene, cache_dir, out)
    assert wait_until(lambda: rec.of("progress") or rec.done, 120), rec.events
    pid = worker.process_id()
    assert pid > 0, rec.events  # never os.kill(0, ...): that is the whole process group
    os.kill(pid, signal.SIGKILL)
    rec.wait(15)
    (_, kind, message, hint), = rec.of("error")
    assert kind == "WorkerCrashed"
    assert "SIGKILL" in message and hint
    assert rec.exit_code == -signal.SIGKILL
    assert not out.exists()


# --- fake workers: protocol edge cases without the engine --------------------------------


def fake_engine(folder: Path, body: str) -> str:
    """An executable standing in for `terraseg` (a shell script)."""
    path = folder / "terraseg"
    path.write_text("#!/bin/sh\ncat > /dev/null\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.skipif(not POSIX, reason="shell script")
def test_partial_lines_and_stderr_tail(tmp_path):
    body = r"""
printf '{"v": 1, "event": "log", "level": "info", "message": "hello"}\n{"v": 1, "ev'
echo "some library chatter" >&2
sleep 0.3
printf 'ent": "progress", "stage": "train", "fraction": 0.5, "eta_s": null, "message": ""}\n'
echo "not json"
echo '{"v": 1, "event": "progress", "fraction": "half"}'
printf '{"v": 1, "event": "result", "command": "env", "answer": 42}'
"""
    rec = run({"command": "env", "args": {}}, fake_engine(tmp_path, body), timeout_s=30)
    assert ("log", "info", "hello") in rec.events
    assert ("progress", 0.5, "train", None, "") in rec.events
    assert ("log", "debug", "some library chatter") in rec.events
    assert ("result", {"command": "env", "answer": 42}) in rec.events
    debug = [e[2] for e in rec.of("log") if e[1] == "debug"]
    assert any(d.startswith("(not a protocol line) not json") for d in debug), debug
    assert any(d.startswith("(malformed event)") for d in debug), debug
    assert rec.job.stderr_tail == "some library chatter"
    assert rec.exit_code == 0


@pytest.mark.skipif(not POSIX, reason="shell script")
def test_exit_without_result_is_a_crash(tmp_path):
    body = 'echo "Traceback: Segmentation fault" >&2\nexit 139\n'
    rec = run({"command": "env", "args": {}}, fake_engine(tmp_path, body), timeout_s=30)
    (_, kind, message, hint), = rec.of("error")
    assert kind == "WorkerCrashed"
    assert "exit code 139" in message and "Segmentation fault" in message and hint
    with pytest.raises(WorkerError) as err:
        run_job({"command": "env", "args": {}}, engine=fake_engine(tmp_path, body))
    assert err.value.type == "WorkerCrashed" and "Segmentation fault" in str(err.value)


def test_engine_that_cannot_start(tmp_path):
    rec = run(jobs.env_job(), str(tmp_path / "no-such-terraseg"), timeout_s=30)
    (_, kind, _message, hint), = rec.of("error")
    assert kind == "EngineStartError" and hint
    assert rec.exit_code == -1
    with pytest.raises(WorkerError) as err:
        run_job(jobs.env_job(), engine=str(tmp_path / "no-such-terraseg"))
    assert err.value.type == "EngineStartError"


# --- run_job (Processing's blocking path) ------------------------------------------------


def test_run_job_reports_to_feedback(tiny_model):
    fb = tiny_model.feedback
    assert tiny_model.result["model"] == str(tiny_model.path) and tiny_model.path.is_file()
    assert fb.progress and max(fb.progress) == pytest.approx(100.0)
    assert any(t.startswith("epoch 2:") for t in fb.info), fb.info
    assert any("worker started: train" in t for t in fb.info)
    kinds = [e["event"] for e in tiny_model.events]
    assert kinds[-1] == "result" and "metrics" in kinds


def test_run_job_error_raises_worker_error(engine, scene, tmp_path):
    job = jobs.rasterise_job(str(tmp_path / "nope.tif"), str(scene.labels),
                             str(tmp_path / "out.tif"), class_field="klass")
    with pytest.raises(WorkerError) as err:
        run_job(job, engine=engine)
    assert err.value.type == "RasterError" and err.value.hint
    assert "Fix:" in str(err.value)
    assert err.value.exit_code == 2


@pytest.mark.skipif(not POSIX, reason="SIGTERM semantics")
def test_run_job_cancel_from_feedback(engine, scene, cache_dir, tmp_path):
    out = tmp_path / "cancel.tsm"
    job = jobs.train_job(str(scene.raster), str(scene.labels), str(out), class_field="klass",
                         cache_dir=str(cache_dir), **{**TINY_TRAIN, "epochs": 200,
                                                      "patience": 200})
    fb = RecordingFeedback()

    def on_event(event: dict) -> None:
        if event["event"] == "metrics":
            fb.cancel()

    with pytest.raises(WorkerError) as err:
        run_job(job, fb, on_event=on_event, engine=engine, timeout_s=180)
    assert err.value.type == "CancelledError"
    assert err.value.exit_code != 0
    assert leftovers(tmp_path) == []


# --- engine location, setup, settings, job dicts ------------------------------------------


def test_find_engine_and_environment(engine, clean_engine_setting, tmp_path):
    found = engine_mod.find_engine()
    assert found is not None and Path(found.terraseg).is_file()
    assert Path(found.root) == Path(engine.root)  # <plugin_dir>/.venv-engine
    # The setting comes first, but only when it holds an engine.
    settings.set(settings.ENGINE_DIR, str(tmp_path))
    assert engine_mod.find_engine() == found
    env = engine_mod.engine_environment(engine)
    assert env["packages"]["torch"] and "device" in env
    gpu = engine_mod.detect_nvidia_gpu()
    assert gpu is None or isinstance(gpu, str)
    with pytest.raises(engine_mod.EngineError):
        engine_mod.engine_environment(engine_mod.EngineLocation(str(tmp_path), "x",
                                                                str(tmp_path / "missing")))


def test_settings_roundtrip(clean_engine_setting):
    settings.set(settings.LAST_MODEL, "/data/m.tsm")
    assert settings.get(settings.LAST_MODEL) == "/data/m.tsm"
    assert settings.get("terraseg/last_model") == "/data/m.tsm"
    settings.set(settings.LAST_MODEL, None)
    assert settings.get(settings.LAST_MODEL, "default") == "default"


@pytest.mark.skipif(not POSIX, reason="shell script")
def test_engine_setup_runs_the_installer(tmp_path, clean_engine_setting):
    target = tmp_path / "engine"
    script = tmp_path / "install.sh"
    script.write_text(
        'echo "creating isolated engine environment: $ENGINE_VENV"\n'
        'echo "variant=$TORCH_VARIANT wheels=$WHEELS_DIR python=$PYTHON"\n'
        'echo "installing pinned engine requirements into $ENGINE_VENV"\n'
        'mkdir -p "$ENGINE_VENV/bin"\n'
        'echo "TerraSeg engine environment" > "$ENGINE_VENV/.terraseg-engine"\n'
        'printf "#!/bin/sh\\n" > "$ENGINE_VENV/bin/terraseg"\n'
        'chmod +x "$ENGINE_VENV/bin/terraseg"\n'
        'echo "engine environment ready: $ENGINE_VENV"\n')
    setup = engine_setup.EngineSetup(script=str(script))
    logs, progress, finished = [], [], []
    setup.log.connect(logs.append)
    setup.progress.connect(progress.append)
    setup.finished.connect(lambda ok, msg: finished.append((ok, msg)))
    setup.start(str(target), cuda=False, wheels_dir=str(tmp_path))
    assert wait_until(lambda: finished, 30)
    assert finished[0][0] is True, (finished, logs)
    assert f"variant=cpu wheels={tmp_path}" in "\n".join(logs)
    assert progress[-1] == 1.0 and progress == sorted(progress)
    assert settings.get(settings.ENGINE_DIR) == str(target)
    assert engine_mod.find_engine().root == str(target)


def test_engine_setup_failure(tmp_path):
    script = tmp_path / "install.sh"
    script.write_text('echo "install_engine: python3 not found" >&2\nexit 1\n')
    setup = engine_setup.EngineSetup(script=str(script))
    finished = []
    setup.finished.connect(lambda ok, msg: finished.append((ok, msg)))
    setup.start(str(tmp_path / "engine"), cuda=True)
    assert wait_until(lambda: finished, 30)
    ok, message = finished[0]
    assert ok is False and "python3 not found" in message


def test_job_dicts():
    job = jobs.train_job("r.tif", "l.gpkg|layername=l", Path("/tmp/m.tsm"), class_field="k",
                         epochs=3, blocks=(1, 1, 1), overwrite=False, class_map=None)
    assert job == {"command": "train",
                   "args": {"raster": "r.tif", "labels": "l.gpkg|layername=l",
                            "out": "/tmp/m.tsm", "class_field": "k", "epochs": 3,
                            "blocks": [1, 1, 1]}}
    assert jobs.predict_job("m.tsm", "r.tif", "out", window=(0, 0, 10, 10), preview=True,
                            tile_size=480)["args"] == {
        "model": "m.tsm", "raster": "r.tif", "out_dir": "out", "window": [0, 0, 10, 10],
        "preview": True, "tile_size": 480}
    assert jobs.env_job() == {"command": "env", "args": {}}
    assert jobs.areas_job("c.tif", "a.csv", overwrite=True)["args"]["overwrite"] is True
    assert jobs.split_source("/a/b.gpkg|layername=x|subset=k=1") == (
        "/a/b.gpkg", {"layername": "x", "subset": "k=1"})
    json.dumps(job)


def test_vector_layer_path(scene, tmp_path):
    from qgis.core import QgsFeature, QgsVectorLayer

    layer = QgsVectorLayer(f"{scene.labels}|layername=labels", "labels", "ogr")
    assert layer.isValid()
    assert jobs.vector_layer_path(layer) == layer.source()
    exported = jobs.vector_layer_path(layer, str(tmp_path), layer_spec=False)
    assert exported.endswith(".gpkg") and exported != str(scene.labels)
    memory = QgsVectorLayer("Polygon?crs=EPSG:32632&field=klass:string", "mem", "memory")
    feat = QgsFeature(memory.fields())
    feat["klass"] = "sealed"
    memory.dataProvider().addFeatures([feat])
    path = jobs.vector_layer_path(memory, str(tmp_path))
    copy = QgsVectorLayer(path, "copy", "ogr")
    assert copy.isValid() and copy.featureCount() == 1


# --- settings page ---------------------------------------------------------------------------


def test_settings_widget_shows_engine_and_copies_diagnostics(engine, clean_engine_setting):
    from qgis.core import Qgis

    from terraseg.plugin.settings_dialog import EngineSettingsDialog

    dialog = EngineSettingsDialog()
    page = dialog.widget
    assert wait_until(lambda: page.environment is not None or page.error, 60)
    assert page.environment is not None, page.error
    assert page.engine_label.text() == engine.root
    assert page.packages.rowCount() >= 5
    names = {page.packages.item(i, 0).text() for i in range(page.packages.rowCount())}
    assert {"torch", "lightning", "rasterio"} <= names
    assert "CPU" in page.device_label.text() or "GPU" in page.device_label.text()
    wait_until(lambda: page.cuda_check.text() != "Use CUDA build", 10)
    assert page.cuda_check.isChecked() == bool(page.gpu)
    text = page.copy_diagnostics()
    assert QApplication.clipboard().text() == text
    assert Qgis.QGIS_VERSION in text and "Device:" in text and "torch" in text
    dialog.close()
