"""Faults around the outputs, through the command line and the worker as a user meets them.

Secondary outputs checked before work (``NAME.last.tsm``, per-run models of cv/grid), a full
disk (a small tmpfs; root only), ``kill -9`` and the scratch files it leaves, a closed pipe
on stdout, and the worker's promise of exactly one ``result`` or ``error`` event.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers.patch_models import PARAMS, metadata, randomise, smooth_random
from helpers.paths import TERRASEG, terraseg
from helpers.synthetic import make_scene, write_raster

from terraseg.cli import worker as worker_module
from terraseg.core.modelfile import save_model
from terraseg.core.models.registry import build_model
from terraseg.core.scratch import host_tag, scratch_owner
from terraseg.protocol.events import Result

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
TINY = ["--patch-size", "23", "--blocks", "1,1,1", "--epochs", "1",
        "--samples-per-epoch", "256"]




def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def one_terminal(events: list[dict]) -> dict:
    """Exactly one result/error event, and it is the last; returns it."""
    final = [e for e in events if e["event"] in ("result", "error")]
    assert len(final) == 1, final
    assert events[-1] is final[0]
    return final[0]


def entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@contextlib.contextmanager
def tmpfs(folder: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted on ``folder`` (root only)."""
    if not ROOT:
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root "
                    "(mount -t tmpfs)")
    folder.mkdir(parents=True, exist_ok=True)
    size = max(4096, -(-size_bytes // 4096) * 4096)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli_faults")
    net = randomise(build_model("patch_cnn", PARAMS), seed=0)
    model = save_model(d / "model.tsm", net, metadata(net))
    raster = write_raster(d / "img.tif", smooth_random((4, 1500, 1500), seed=2), nodata=0,
                          descriptions=("red", "green", "blue", "nir"))
    return {"dir": d, "model": model, "raster": raster, "scene": make_scene(d)}


def predict_args(files: dict[str, Path], out: Path) -> list[object]:
    return ["predict", "--model", files["model"], "--raster", files["raster"],
            "--out-dir", out, "--device", "cpu"]


def predict_job(files: dict[str, Path], out: Path, **args: object) -> str:
    return json.dumps({"command": "predict", "args": {
        "model": str(files["model"]), "raster": str(files["raster"]), "out_dir": str(out),
        "device": "cpu", **args}})


# --------------------------------------------------------------------------- every target


def test_train_refuses_an_existing_last_model(files: dict[str, Path], tmp_path: Path) -> None:
    """NAME.last.tsm was deleted or replaced without --overwrite."""
    scene = files["scene"]
    last = tmp_path / "m.last.tsm"
    last.write_bytes(b"an earlier run's last weights")
    proc = terraseg("train", "--raster", scene.raster, "--labels", scene.labels,
                    "--class-field", "klass", "--out", tmp_path / "m.tsm", *TINY,
                    "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"Output file '{last}' already exists." in proc.stderr
    assert "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert last.read_bytes() == b"an earlier run's last weights"
    assert entries(tmp_path) == ["m.last.tsm"]  # refused before any work (no cache either)


@pytest.mark.parametrize(("command", "existing"), [
    ("cv", "fold_1.tsm"), ("cv", "fold_0.last.tsm"),
    ("grid", "model_lr0.001_wd0_none.last.tsm"),
    ("compare", "unet_small__ce.tsm")])
def test_runs_refuse_existing_run_models(files: dict[str, Path], tmp_path: Path,
                                         command: str, existing: str) -> None:
    """cv, grid and compare wrote their per-run models with overwrite=True."""
    scene = files["scene"]
    out = tmp_path / "runs"
    out.mkdir()
    (out / existing).write_bytes(b"keep")
    extra = {"cv": ["--k", "2"], "grid": ["--lrs", "1e-3", "--weight-decays", "0",
                                          "--augment-options", "none"],
             "compare": ["--runs", "unet_small:ce", "--test-fraction", "0.2"]}[command]
    proc = terraseg(command, "--raster", scene.raster, "--labels", scene.labels,
                    "--class-field", "klass", "--out-dir", out, *extra,
                    "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"Output file '{out / existing}' already exists." in proc.stderr, proc.stderr
    assert entries(out) == [existing] and (out / existing).read_bytes() == b"keep"


# --------------------------------------------------------------------------- full disk


def test_predict_on_a_full_disk_is_one_clean_error(files: dict[str, Path],
                                                   tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", 2 * 1024 * 1024) as disk:
        proc = terraseg(*predict_args(files, disk), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("error:") == 1, proc.stderr
        assert "Not enough free space for probability.tif and classes.tif" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert entries(disk) == []


def test_worker_predict_on_a_full_disk_ends_with_one_error(files: dict[str, Path],
                                                           tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", 2 * 1024 * 1024) as disk:
        proc = terraseg("worker", cwd=tmp_path, stdin=predict_job(files, disk))
        final = one_terminal(events_of(proc.stdout))
        assert final["event"] == "error" and final["type"] == "OutputError", final
        assert "2.0 MB free" in final["message"] and final["hint"]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert entries(disk) == []


def test_disk_filling_up_during_a_worker_predict(files: dict[str, Path],
                                                 tmp_path: Path) -> None:
    """Another program fills the disk after the free-space check, while predict writes."""
    from terraseg.core.inference import estimate_output_bytes

    need = estimate_output_bytes(1500, 1500, 3)
    with tmpfs(tmp_path / "disk", need + 4 * 1024 * 1024) as disk:
        proc = subprocess.Popen([*TERRASEG, "worker"], cwd=tmp_path, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdin.write(predict_job(files, disk, tile_size=480))
        proc.stdin.close()
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if '"stage": "predict"' in line:
                break
        filler = disk / "someone_elses.bin"
        with open(filler, "wb") as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * (1024 * 1024))
                fh.flush()
        rest = proc.stdout.read()
        stderr = proc.stderr.read()
        proc.wait(timeout=300)
        final = one_terminal(events_of("".join(lines) + rest))
        assert final["event"] == "error" and final["type"] == "OutputError", final
        assert f"The disk of '{disk}' is full" in final["message"], final
        assert proc.returncode == 2 and "Traceback" not in stderr
        assert entries(disk) == ["someone_elses.bin"]


# --------------------------------------------------------------------------- kill -9


def test_scratch_of_a_killed_run_is_removed_by_the_next(files: dict[str, Path],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([*TERRASEG, *map(str, predict_args(files, out))], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(n.endswith(".partial") for n in os.listdir(out)):  # writers are open
        assert proc.poll() is None and time.monotonic() < deadline, "no scratch file appeared"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    debris = entries(out)
    assert debris and all(scratch_owner(n) == (host_tag(), proc.pid) for n in debris), debris
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        alive = f".classes.tif.{host_tag()}-{live.pid}-0123456789ab.partial"
        (out / alive).write_bytes(b"a live run's scratch")
        rerun = terraseg("worker", cwd=tmp_path,
                         stdin=predict_job(files, out, window="0,0,300,200"))
        events = events_of(rerun.stdout)
        assert one_terminal(events)["event"] == "result", rerun.stderr
        logs = [e["message"] for e in events if e["event"] == "log"]
        removed = [m for m in logs if "stale scratch file(s)" in m]
        assert len(removed) == 1 and f"process {proc.pid}" in removed[0], logs
        assert all(name in removed[0] for name in debris)
        assert entries(out) == sorted([alive, "classes.tif", "probability.tif"])
    finally:
        live.kill()
        live.wait()


# --------------------------------------------------------------------------- closed pipe


def test_info_into_a_closed_pipe_is_not_an_error(files: dict[str, Path],
                                                 tmp_path: Path) -> None:
    proc = subprocess.Popen([*TERRASEG, "info", str(files["model"])], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is printed
    stderr = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 0, stderr
    assert stderr == "", stderr


def test_info_piped_into_head(files: dict[str, Path], tmp_path: Path) -> None:
    cmd = " ".join([*TERRASEG, "info", str(files["model"])])
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd} | head -1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "{\n" and proc.stderr == "", proc


def test_worker_with_a_closed_stdout_stops_quietly(files: dict[str, Path],
                                                   tmp_path: Path) -> None:
    proc = subprocess.Popen([*TERRASEG, "worker"], cwd=tmp_path, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    job = json.dumps({"command": "info", "args": {"model": str(files["model"])}})
    stderr = proc.communicate(job.encode(), timeout=120)[1].decode()
    assert proc.returncode == worker_module.EXIT_BROKEN_PIPE, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


# --------------------------------------------------------------------------- one terminal event


@pytest.fixture
def in_process_worker(monkeypatch: pytest.MonkeyPatch):
    """Run ``run_worker`` here with a fake command; returns (exit code, events, stderr)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def run(command, job: dict | None = None) -> tuple[int, list[dict], str]:
        job = job or {"command": "info", "args": {"model": "m.tsm"}}
        monkeypatch.setattr(worker_module, "run_command", command)
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(job)))
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        try:
            rc = worker_module.run_worker()
        finally:
            for s, h in saved.items():
                signal.signal(s, h)
        return rc, events_of(out.getvalue()), err.getvalue()

    return run


def raising(exc: BaseException):
    def command(args, reporter):
        raise exc
    return command


@pytest.mark.parametrize(("exc", "kind", "code", "text"), [
    (MemoryError(), "MemoryError", 2, "Out of memory."),
    (OSError(errno.ENOSPC, "No space left on device", "/data/out/probability.tif"),
     "OutputError", 2, "The disk of '/data/out' is full"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/in.tif"), "PermissionError", 2,
     "Permission denied ('/data/in.tif')."),
    (SystemExit(1), "EngineExit", 3, "exit status 1"),
    (ValueError("a bug"), "ValueError", 3, "a bug"),
])
def test_worker_ends_every_failure_with_one_error(in_process_worker, exc: BaseException,
                                                  kind: str, code: int, text: str) -> None:
    rc, events, stderr = in_process_worker(raising(exc))
    final = one_terminal(events)
    assert final["event"] == "error" and final["type"] == kind, final
    assert text in final["message"], final
    assert rc == code
    assert ("Traceback" in stderr) == (kind == "ValueError"), stderr


def test_worker_result_that_cannot_be_sent_is_an_error(in_process_worker) -> None:
    rc, events, _ = in_process_worker(lambda args, reporter: {"x": object()})
    final = one_terminal(events)
    assert final["event"] == "error" and final["type"] == "TypeError" and rc == 3


def test_sigterm_after_the_result_changes_nothing(in_process_worker,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel that arrives as the result is written must not add an error after it."""
    original = worker_module.JsonLinesReporter.emit

    def emit(self, event) -> None:
        original(self, event)
        if isinstance(event, Result):
            os.kill(os.getpid(), signal.SIGTERM)  # handled at the next line of Python

    monkeypatch.setattr(worker_module.JsonLinesReporter, "emit", emit)
    rc, events, _ = in_process_worker(lambda args, reporter: {"ok": True})
    final = one_terminal(events)
    assert final["event"] == "result" and final["ok"] is True and rc == 0


def test_worker_no_valid_pixel_is_an_error_not_a_map(tmp_path: Path) -> None:
    net = randomise(build_model("patch_cnn", PARAMS), seed=0)
    model = save_model(tmp_path / "m.tsm", net, metadata(net))
    raster = write_raster(tmp_path / "empty.tif", np.zeros((4, 80, 90), np.uint16), nodata=0)
    job = json.dumps({"command": "predict", "args": {
        "model": str(model), "raster": str(raster), "out_dir": str(tmp_path / "out")}})
    proc = terraseg("worker", cwd=tmp_path, stdin=job)
    final = one_terminal(events_of(proc.stdout))
    assert final["event"] == "error" and final["type"] == "RasterError", final
    assert "nodata value 0" in final["message"] and proc.returncode == 2
    assert entries(tmp_path / "out") == []
