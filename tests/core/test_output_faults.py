"""Faults while writing outputs: a full disk, a crash in GDAL, kills, cancels, no data.

Full-disk cases write into a small tmpfs (root only; skipped with the reason otherwise).
Each case ends either in complete outputs or in one ``OutputError`` that names the disk,
with no file and no hidden scratch file left in the folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers.patch_models import PARAMS, metadata, randomise, smooth_random
from helpers.synthetic import pixel_box, write_polygons, write_raster
from rasterio.crs import CRS
from rasterio.windows import Window

from terraseg.core import geotiff, inference
from terraseg.core.atomic import AtomicOutputs, atomic_path
from terraseg.core.evaluate import evaluate_model
from terraseg.core.geotiff import GeoTiffWriter
from terraseg.core.grid import Grid
from terraseg.core.inference import estimate_output_bytes, predict_raster
from terraseg.core.modelfile import LoadedModel, load_model, save_model
from terraseg.core.models.registry import build_model
from terraseg.core.postprocess import PostProcess
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import JsonLinesReporter
from terraseg.core.scratch import (
    final_name,
    host_tag,
    remove_stale_scratch,
    scratch_owner,
    temp_sibling,
)
from terraseg.protocol.errors import OutputError, RasterError

SIZE = 600  # px; outputs > 256 px get overviews
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def quiet() -> JsonLinesReporter:
    return JsonLinesReporter(io.StringIO())


def entries(folder: Path) -> list[str]:
    """Everything in ``folder``, hidden files included."""
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
    d = tmp_path_factory.mktemp("faults")
    net = randomise(build_model("patch_cnn", PARAMS), seed=0)
    model = save_model(d / "model.tsm", net, metadata(net))
    data = smooth_random((4, SIZE, SIZE), seed=3)
    data[:, :, 500:] = 0  # the last 100 columns are nodata
    raster = write_raster(d / "img.tif", data, nodata=0,
                          descriptions=("red", "green", "blue", "nir"))
    empty = write_raster(d / "empty.tif", np.zeros((4, 64, 64), np.uint16), nodata=0)
    return {"dir": d, "model": model, "raster": raster, "empty": empty}


@pytest.fixture(scope="module")
def model(files: dict[str, Path]) -> LoadedModel:
    return load_model(files["model"])


PP = PostProcess(opening_px=1, closing_px=0, min_region_px=5, class_id=1)


@pytest.fixture(scope="module")
def reference(files: dict[str, Path], model: LoadedModel) -> dict[str, bytes]:
    """The outputs of a complete run with post-processing and preview."""
    out = files["dir"] / "reference"
    with RasterSource(files["raster"]) as src:
        predict_raster(model, src, out, quiet(), device="cpu", preview=True, postprocess=PP)
    return {p.name: p.read_bytes() for p in out.iterdir()}


# --------------------------------------------------------------------------- full disk


def test_estimate_is_an_upper_bound(reference: dict[str, bytes]) -> None:
    estimate = estimate_output_bytes(SIZE, SIZE, 3, PP)
    scratch = 2 * SIZE * SIZE  # raw and staged classes, uncompressed (more than they take)
    assert sum(map(len, reference.values())) + scratch <= estimate
    assert estimate == SIZE * SIZE * 13 * 4 // 3 + 2 * SIZE * SIZE + 1024 * 1024


def test_predict_refused_when_the_disk_is_too_small(files: dict[str, Path], model: LoadedModel,
                                                    tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", 2 * 1024 * 1024) as disk, \
            RasterSource(files["raster"]) as src:
        with pytest.raises(OutputError) as err:
            predict_raster(model, src, disk, quiet(), device="cpu")
        assert "Not enough free space" in err.value.message
        assert "2.0 MB free" in err.value.message and str(disk) in err.value.message
        assert "--out-dir" in err.value.hint
        assert entries(disk) == []


# Disk sizes: the probability raster's size plus these KB. Below it the run fails while the
# probabilities or their overviews are written; above it, while the raw classes, the
# post-processing stage, the classes or the preview are; with enough room it succeeds.
GDAL_ONLY_KB = [-1900, -600, 20, 60, 110, 190, 400]
CHECKED_KB = [-1900, 400]


@pytest.mark.parametrize(("writer_checks", "extra_kb"),
                         [(False, kb) for kb in GDAL_ONLY_KB]
                         + [(True, kb) for kb in CHECKED_KB],
                         ids=[f"gdal-only{kb:+d}KB" for kb in GDAL_ONLY_KB]
                         + [f"checked{kb:+d}KB" for kb in CHECKED_KB])
def test_disk_full_during_predict(files: dict[str, Path], model: LoadedModel, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch,
                                  reference: dict[str, bytes], extra_kb: int,
                                  writer_checks: bool) -> None:
    """The disk fills up after the free-space check (another program writes, say).

    ``gdal-only`` leaves the writer's own space check out, so the failures GDAL only logs
    from its compression threads must be caught when the file is read back; ``checked``
    stops at the first window that does not fit.
    """
    monkeypatch.setattr(inference, "check_free_space", lambda *a, **k: None)
    if not writer_checks:
        monkeypatch.setattr(GeoTiffWriter, "_check_space", lambda *a, **k: None)
    size = len(reference["probability.tif"]) + 1024 * extra_kb
    with tmpfs(tmp_path / "disk", size) as disk, RasterSource(files["raster"]) as src:
        try:
            predict_raster(model, src, disk, quiet(), device="cpu", preview=True,
                           postprocess=PP)
        except OutputError as err:
            assert f"The disk of '{disk}' is full" in err.message, err
            assert "another disk" in err.hint
            assert entries(disk) == []  # no output, no hidden scratch file
            return
        assert extra_kb > 0, "the probabilities alone do not fit"
        # the outputs fitted after all: they must be whole, never silently cut off
        assert entries(disk) == ["classes.tif", "preview.png", "probability.tif"]
        for name in ("classes.tif", "probability.tif", "preview.png"):
            assert (disk / name).read_bytes() == reference[name], name


def test_disk_full_while_saving_a_model(tmp_path: Path) -> None:
    net = randomise(build_model("patch_cnn", PARAMS), seed=0)
    with tmpfs(tmp_path / "disk", 16 * 1024) as disk:
        with pytest.raises(OutputError, match="is full"):
            save_model(disk / "m.tsm", net, metadata(net))
        assert entries(disk) == []


def test_a_gdal_crash_while_building_overviews_is_an_error(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           model: LoadedModel,
                                                           files: dict[str, Path]) -> None:
    """GDAL crashed in overview building on a full disk; the engine must not go with it."""
    monkeypatch.setattr(geotiff, "_OVERVIEW_CHILD", "import os, signal\n"
                                                    "os.kill(os.getpid(), signal.SIGSEGV)\n")
    out = tmp_path / "out"
    with RasterSource(files["raster"]) as src, pytest.raises(OutputError) as err:
        predict_raster(model, src, out, quiet(), device="cpu")
    assert "Building overviews of 'probability.tif'" in err.value.message
    assert f"crashed (signal {int(signal.SIGSEGV)})" in err.value.message
    assert entries(out) == []


def test_overviews_equal_gdal_in_process(tmp_path: Path) -> None:
    """The child process builds the same overviews GDAL builds in the writing process."""
    g = Grid(700, 650, Affine(10, 0, 500000, 0, -10, 5200000), CRS.from_epsg(32632).to_wkt())
    data = smooth_random((4, 700, 650), seed=5).astype(np.float32)[:3] / 1000
    paths = []
    for name, child in (("child.tif", True), ("here.tif", False)):
        w = GeoTiffWriter(tmp_path / name, g, 3, "float32", -1.0, ["a", "b", "c"], block_px=128)
        w.write(data, Window(0, 0, 650, 700))
        if child:
            w.close()
        else:
            w.close(overviews=False)
            geotiff._build_overviews_here(w.path, [2, 4], w._resampling, 128)
        paths.append(tmp_path / name)
    with rasterio.open(paths[0]) as a, rasterio.open(paths[1]) as b:
        assert a.overviews(1) == b.overviews(1) == [2, 4]
        assert a.tags(ns="rio_overview") == {"resampling": "average"}
        for f in (2, 4):
            shape = (3, -(-700 // f), -(-650 // f))
            np.testing.assert_array_equal(a.read(out_shape=shape), b.read(out_shape=shape))


# --------------------------------------------------------------------------- no valid pixel


def test_predict_refuses_a_raster_without_data(files: dict[str, Path], model: LoadedModel,
                                               tmp_path: Path) -> None:
    with RasterSource(files["empty"]) as src, pytest.raises(RasterError) as err:
        predict_raster(model, src, tmp_path / "out", quiet(), device="cpu")
    assert "No pixel of the processed area (64x64 px at column 0, row 0)" in err.value.message
    assert "nodata value 0" in err.value.message and "empty.tif" in err.value.message
    assert entries(tmp_path / "out") == []


def test_predict_refuses_a_window_without_data(files: dict[str, Path], model: LoadedModel,
                                               tmp_path: Path) -> None:
    with RasterSource(files["raster"]) as src, pytest.raises(RasterError) as err:
        predict_raster(model, src, tmp_path / "out", quiet(), device="cpu",
                       window=Window(510, 20, 60, 40))
    assert "(60x40 px at column 510, row 20)" in err.value.message
    assert entries(tmp_path / "out") == []


def test_evaluate_refuses_reference_on_nodata(files: dict[str, Path], model: LoadedModel,
                                              tmp_path: Path) -> None:
    ref = write_polygons(tmp_path / "ref.gpkg", [
        (pixel_box(10, 520, 30, 560), "sealed", "a"),
        (pixel_box(40, 520, 60, 560), "unsealed", "b")])
    with RasterSource(files["raster"]) as src, pytest.raises(RasterError) as err:
        evaluate_model(model, src, str(ref), "klass", tmp_path / "out", quiet(),
                       device="cpu")
    assert "reference pixels' area" in err.value.message
    assert "nodata value 0" in err.value.message
    assert entries(tmp_path / "out") == []


# --------------------------------------------------------------------------- scratch owners


def test_scratch_names_carry_their_owner(tmp_path: Path) -> None:
    tmp = temp_sibling(tmp_path / "classes.tif")
    assert tmp.parent == tmp_path and tmp.name.startswith(".classes.tif.")
    assert tmp.name.endswith(".partial")
    assert scratch_owner(tmp) == (host_tag(), os.getpid())
    assert final_name(tmp) == "classes.tif"
    assert final_name(Path(f"{tmp}.aux.xml")) == "classes.tif"
    gpkg = temp_sibling(tmp_path / "zones.gpkg", ".gpkg")
    assert gpkg.suffix == ".gpkg" and scratch_owner(gpkg) == (host_tag(), os.getpid())
    assert scratch_owner(tmp_path / ".classes.tif.5be0c2a19f7d.partial") is None  # old name


def ended_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_scratch_is_removed_live_scratch_kept(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host, dead = host_tag(), ended_pid()
        names = {
            "stale": f".classes.tif.{host}-{dead}-0123456789ab.partial",
            "stale_sidecar": f".classes.tif.{host}-{dead}-0123456789ab.partial.aux.xml",
            "live": f".probability.tif.{host}-{live.pid}-0123456789ab.partial",
            "mine": f".preview.png.{host}-{os.getpid()}-0123456789ab.partial",
            "other_host": f".classes.tif.{'f' * 6 if host != 'f' * 6 else 'e' * 6}-{dead}-"
                          "0123456789ab.partial",
            "old_style": ".classes.tif.0123456789ab.partial",
            "user_file": "classes.tif",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"x" * 100)
        with caplog.at_level(logging.WARNING, logger="terraseg.core.scratch"):
            with AtomicOutputs(tmp_path) as outputs:
                outputs.temp_path("metrics.json").write_text("{}")
        kept = set(entries(tmp_path))
        assert names["stale"] not in kept and names["stale_sidecar"] not in kept
        for key in ("live", "mine", "other_host", "old_style", "user_file"):
            assert names[key] in kept, key
        assert "metrics.json" in kept
        assert "removed 2 stale scratch file(s) (200 bytes)" in caplog.text
        assert f"(process {dead})" in caplog.text and names["stale"] in caplog.text
        # a later sweep in this process leaves the folder alone; a forced one finds nothing
        assert remove_stale_scratch(tmp_path) == []
        assert remove_stale_scratch(tmp_path, once=False) == []
    finally:
        live.kill()
        live.wait()


def test_atomic_path_sweeps_its_folder(tmp_path: Path) -> None:
    stale = tmp_path / f".m.tsm.{host_tag()}-{ended_pid()}-0123456789ab.partial"
    stale.write_bytes(b"half a model")
    with atomic_path(tmp_path / "m.tsm") as tmp:
        assert scratch_owner(tmp) == (host_tag(), os.getpid())
        tmp.write_bytes(b"model")
    assert entries(tmp_path) == ["m.tsm"]


# --------------------------------------------------------------------------- cancel


OVERVIEW_JOB = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.windows import Window
    from terraseg.cli.running import install_signal_handlers, report_failure
    from terraseg.core.atomic import AtomicOutputs
    from terraseg.core.grid import Grid
    from terraseg.core.reporting import JsonLinesReporter

    n, k = 4000, 8  # GDAL builds these overviews in one call of 6-8 s on 2 cores
    reporter = JsonLinesReporter(sys.stdout)
    install_signal_handlers(reporter)
    grid = Grid(n, n, Affine(10, 0, 500000, 0, -10, 5200000), CRS.from_epsg(32632).to_wkt())
    row = np.linspace(0, 1, n, dtype=np.float32)
    try:
        with AtomicOutputs(Path(sys.argv[1])) as outputs:
            w = outputs.geotiff("probability.tif", grid, k, "float32", -1.0,
                                [str(i) for i in range(k)], block_px=480)
            for r in range(0, n, 480):
                h = min(480, n - r)
                block = np.broadcast_to(row * (r + 1) / n, (k, h, n))
                w.write(np.ascontiguousarray(block), Window(0, r, n, h))
            reporter.progress(1.0, "predict", "building overviews")
            w.close(check_cancelled=reporter.check_cancelled)
        reporter.result({"command": "overviews"})
    except BaseException as exc:
        sys.exit(report_failure(exc, reporter))
""")


def test_sigterm_during_overview_building_ends_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", OVERVIEW_JOB, str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "building overviews" in line:
            break
    else:
        proc.wait()
        pytest.fail(f"no overview stage: {proc.stderr.read()}")
    time.sleep(1.0)  # well inside GDAL's overview call
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - t0
    events = [json.loads(x) for x in [*lines, *rest.splitlines()] if x.strip()]
    assert events[-1]["event"] == "error" and events[-1]["type"] == "CancelledError", err
    assert proc.returncode == 130
    assert elapsed < 3.0, f"{elapsed:.1f} s from SIGTERM to exit"
    time.sleep(0.6)  # the overview child notices its parent is gone (it was killed anyway)
    assert entries(out) == []
