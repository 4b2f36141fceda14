"""Tests for terraseg.core.outputs: GeoTIFF writer, atomic commit, output checks, preview."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Compression
from rasterio.windows import Window

from terraseg.core.grid import Grid
from terraseg.core.outputs import (
    AtomicOutputs,
    GeoTiffWriter,
    abort_all,
    check_output_dir,
    colormap_from_colours,
    overview_factors,
    write_preview_png,
)
from terraseg.protocol.errors import OutputError, TerraSegError

CRS_WKT = CRS.from_epsg(32119).to_wkt()


def make_grid(height: int, width: int) -> Grid:
    transform = Affine(28.5, 0.0, 610_000.0, 0.0, -28.5, 240_000.0)
    return Grid(height, width, transform, CRS_WKT)


def windows(grid: Grid, step: int):
    for row in range(0, grid.height_px, step):
        for col in range(0, grid.width_px, step):
            h = min(step, grid.height_px - row)
            w = min(step, grid.width_px - col)
            yield Window(col, row, w, h)


def probability_data(grid: Grid, count: int) -> np.ndarray:
    rows, cols = np.mgrid[0 : grid.height_px, 0 : grid.width_px].astype(np.float32)
    data = np.stack([(rows * 1000 + cols + b * 0.25) / 1e6 for b in range(count)])
    data[:, :7, :5] = -1.0  # nodata corner
    return data.astype(np.float32)


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path))


# ------------------------------------------------------------------ GeoTiffWriter


def test_geotiff_float_roundtrip(tmp_path: Path) -> None:
    grid = make_grid(600, 600)
    data = probability_data(grid, 3)
    path = tmp_path / "probability.tif"
    writer = GeoTiffWriter(path, grid, 3, "float32", -1.0, ["sealed", "unsealed", "water"],
                           block_px=256)
    for win in windows(grid, 256):
        r, c, h, w = win.row_off, win.col_off, win.height, win.width
        writer.write(data[:, r : r + h, c : c + w], win)
    writer.close()
    assert writer.closed
    writer.close()  # idempotent

    with rasterio.open(path) as src:
        assert src.driver == "GTiff"
        assert (src.count, src.height, src.width) == (3, 600, 600)
        assert src.dtypes == ("float32",) * 3
        np.testing.assert_array_equal(src.read(), data)
        assert src.transform == grid.transform
        assert src.transform.a == 28.5 and src.transform.e == -28.5
        assert src.crs == CRS.from_epsg(32119)
        assert src.descriptions == ("sealed", "unsealed", "water")
        assert src.nodata == -1.0
        assert src.block_shapes == [(256, 256)] * 3
        assert src.compression == Compression.zstd
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"
        assert src.overviews(1) == [2, 4]
        assert src.overviews(3) == [2, 4]
        masked = src.read(1, masked=True)
        assert masked.mask[:7, :5].all() and not masked.mask[7:, 5:].any()
    with rasterio.open(path, overview_level=0) as ovr:
        assert (ovr.height, ovr.width) == (300, 300)
        band = ovr.read(2)
        # average resampling: mean of the 2x2 block rows 20..21, cols 40..41 (no nodata there)
        expected = data[1, 20:22, 40:42].astype(np.float64).mean()
        assert band[10, 20] == pytest.approx(expected, rel=1e-6)


def test_geotiff_uint8_colormap_default_blocks(tmp_path: Path) -> None:
    grid = make_grid(600, 600)
    classes = (np.arange(600 * 600).reshape(600, 600) % 4).astype(np.uint8)
    cmap = colormap_from_colours({1: "#d7191c", 2: "#1a9641", 3: "#2b83ba"})
    path = tmp_path / "classes.tif"
    with GeoTiffWriter(path, grid, 1, "uint8", 0, ["class"], colormap=cmap) as writer:
        for win in windows(grid, 512):
            r, c, h, w = win.row_off, win.col_off, win.height, win.width
            writer.write(classes[r : r + h, c : c + w], win)  # 2-D accepted for one band
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(1), classes)
        assert src.dtypes == ("uint8",)
        assert src.nodata == 0
        assert src.descriptions == ("class",)
        assert src.block_shapes == [(512, 512)]
        assert src.compression == Compression.zstd
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
        assert src.overviews(1) == [2, 4]
        colours = src.colormap(1)
        assert colours[1] == (0xD7, 0x19, 0x1C, 255)
        assert colours[2] == (0x1A, 0x96, 0x41, 255)
        assert colours[3] == (0x2B, 0x83, 0xBA, 255)
        assert colours[0] == (0, 0, 0, 0)
    with rasterio.open(path, overview_level=1) as ovr:
        assert set(np.unique(ovr.read(1)).tolist()) <= {0, 1, 2, 3}  # nearest, no blends


def test_geotiff_no_overviews_when_small_or_disabled(tmp_path: Path) -> None:
    grid = make_grid(40, 30)
    path = tmp_path / "small.tif"
    writer = GeoTiffWriter(path, grid, 1, "float32", None, ["p"])
    writer.write(np.ones((1, 40, 30), np.float32), Window(0, 0, 30, 40))
    writer.close()
    with rasterio.open(path) as src:
        assert src.overviews(1) == []
        assert src.nodata is None
    big = make_grid(600, 600)
    path2 = tmp_path / "no_ovr.tif"
    writer = GeoTiffWriter(path2, big, 1, "uint8", 0, ["c"])
    writer.write(np.ones((600, 600), np.uint8), Window(0, 0, 600, 600))
    writer.close(overviews=False)
    with rasterio.open(path2) as src:
        assert src.overviews(1) == []


def test_geotiff_rejects_bad_input(tmp_path: Path) -> None:
    grid = make_grid(100, 100)
    with pytest.raises(ValueError):
        GeoTiffWriter(tmp_path / "a.tif", grid, 2, "float32", None, ["only one"])
    with pytest.raises(ValueError):
        GeoTiffWriter(tmp_path / "a.tif", grid, 1, "float32", None, ["p"], block_px=100)
    with pytest.raises(ValueError):
        cmap = {1: (1, 2, 3, 4)}
        GeoTiffWriter(tmp_path / "a.tif", grid, 1, "float32", None, ["p"], colormap=cmap)
    with pytest.raises(OutputError):
        GeoTiffWriter(tmp_path / "missing" / "a.tif", grid, 1, "uint8", 0, ["c"])
    with GeoTiffWriter(tmp_path / "b.tif", grid, 2, "float32", None, ["a", "b"]) as writer:
        with pytest.raises(ValueError, match="does not fit"):
            writer.write(np.zeros((1, 10, 10), np.float32), Window(0, 0, 10, 10))
        with pytest.raises(ValueError, match="outside"):
            writer.write(np.zeros((2, 10, 10), np.float32), Window(95, 0, 10, 10))


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((256, 256), []), ((257, 10), [2]), ((512, 512), [2]), ((600, 600), [2, 4]),
     ((300, 1000), [2, 4]), ((5000, 5000), [2, 4, 8, 16, 32])],
)
def test_overview_factors(shape: tuple[int, int], expected: list[int]) -> None:
    assert overview_factors(*shape) == expected


# ------------------------------------------------------------------ AtomicOutputs


def test_atomic_commit(tmp_path: Path) -> None:
    with AtomicOutputs(tmp_path) as outputs:
        tmp_a = outputs.temp_path("a.txt")
        assert outputs.temp_path("a.txt") == tmp_a
        assert tmp_a.parent == tmp_path and tmp_a.name.startswith(".a.txt.")
        assert tmp_a.name.endswith(".partial")
        tmp_a.write_text("A")
        outputs.temp_path("b.txt").write_text("B")
        assert not (tmp_path / "a.txt").exists()
    assert outputs.state == "committed"
    assert listing(tmp_path) == ["a.txt", "b.txt"]
    assert (tmp_path / "a.txt").read_text() == "A"
    outputs.abort()  # no effect after commit
    assert (tmp_path / "a.txt").read_text() == "A"
    with pytest.raises(OutputError):
        outputs.temp_path("c.txt")


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_atomic_abort_on_exception(tmp_path: Path, exc_type: type[BaseException]) -> None:
    (tmp_path / "classes.tif").write_bytes(b"old classes \x00\x01")
    before = (tmp_path / "classes.tif").read_bytes()
    grid = make_grid(600, 600)
    with pytest.raises(exc_type):
        with AtomicOutputs(tmp_path, overwrite=True) as outputs:
            writer = GeoTiffWriter(outputs.temp_path("classes.tif"), grid, 1, "uint8", 0, ["c"])
            writer.write(np.ones((512, 512), np.uint8), Window(0, 0, 512, 512))
            writer.close()
            outputs.temp_path("probability.tif").write_bytes(b"half")
            raise exc_type()
    assert outputs.state == "aborted"
    assert listing(tmp_path) == ["classes.tif"]
    assert (tmp_path / "classes.tif").read_bytes() == before


def test_atomic_abort_with_open_writer_and_sidecars(tmp_path: Path) -> None:
    outputs = AtomicOutputs(tmp_path)
    tmp = outputs.temp_path("probability.tif")
    writer = GeoTiffWriter(tmp, make_grid(100, 100), 1, "float32", None, ["p"])
    writer.write(np.zeros((1, 100, 100), np.float32), Window(0, 0, 100, 100))
    Path(f"{tmp}.aux.xml").write_text("<PAMDataset/>")
    outputs.abort()
    outputs.abort()  # idempotent
    writer.close(overviews=False)
    outputs.abort()
    assert not tmp.exists()
    leftover = [n for n in listing(tmp_path) if n != tmp.name]
    assert leftover == []
    with pytest.raises(OutputError):
        outputs.commit()


def test_atomic_tracked_writers(tmp_path: Path) -> None:
    grid = make_grid(600, 600)
    with AtomicOutputs(tmp_path) as outputs:
        writer = outputs.geotiff("classes.tif", grid, 1, "uint8", 0, ["class"])
        writer.write(np.full((600, 600), 3, np.uint8), Window(0, 0, 600, 600))
        # not closed here: commit closes it, with overviews
    assert writer.closed
    with rasterio.open(tmp_path / "classes.tif") as src:
        assert src.overviews(1) == [2, 4]
        assert (src.read(1) == 3).all()

    other = tmp_path / "other"
    other.mkdir()
    outputs = AtomicOutputs(other)
    writer = outputs.geotiff("probability.tif", grid, 2, "float32", -1.0, ["a", "b"])
    writer.write(np.zeros((2, 512, 512), np.float32), Window(0, 0, 512, 512))
    outputs.abort()  # closes the open writer before deleting its file
    assert writer.closed
    assert listing(other) == []


def test_atomic_commit_refuses_target_that_appeared(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="--overwrite"):
        with AtomicOutputs(tmp_path, overwrite=False) as outputs:
            outputs.temp_path("metrics.json").write_text("new")
            (tmp_path / "metrics.json").write_text("someone else's")
    assert listing(tmp_path) == ["metrics.json"]
    assert (tmp_path / "metrics.json").read_text() == "someone else's"


def test_atomic_overwrite_replaces(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("old")
    with AtomicOutputs(tmp_path, overwrite=True) as outputs:
        outputs.temp_path("metrics.json").write_text("new")
    assert listing(tmp_path) == ["metrics.json"]
    assert (tmp_path / "metrics.json").read_text() == "new"


def test_atomic_commit_all_or_nothing_when_output_missing(tmp_path: Path) -> None:
    outputs = AtomicOutputs(tmp_path)
    outputs.temp_path("a.txt").write_text("A")
    outputs.temp_path("b.txt")  # never written
    with pytest.raises(OutputError, match="b.txt"):
        outputs.commit()
    assert listing(tmp_path) == []


def test_abort_all(tmp_path: Path) -> None:
    one, two = AtomicOutputs(tmp_path), AtomicOutputs(tmp_path)
    one.temp_path("a.txt").write_text("A")
    two.temp_path("b.txt").write_text("B")
    abort_all()
    assert (one.state, two.state) == ("aborted", "aborted")
    assert listing(tmp_path) == []


def test_temp_path_rejects_paths(tmp_path: Path) -> None:
    outputs = AtomicOutputs(tmp_path)
    for bad in ("sub/a.tif", "", "..", "../a.tif"):
        with pytest.raises(ValueError):
            outputs.temp_path(bad)


SIGTERM_SCRIPT = """
import signal, sys, time
from pathlib import Path
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from terraseg.core.grid import Grid
from terraseg.core.outputs import AtomicOutputs, GeoTiffWriter, abort_all

mode, out_dir = sys.argv[1], Path(sys.argv[2])

def on_term(signum, frame):
    if mode == "abort_all":
        abort_all()
        sys.stdout.flush()
        import os
        os._exit(143)
    raise SystemExit(143)

signal.signal(signal.SIGTERM, on_term)
grid = Grid(4096, 4096, Affine(28.5, 0.0, 610000.0, 0.0, -28.5, 240000.0),
            CRS.from_epsg(32119).to_wkt())
with AtomicOutputs(out_dir) as outputs:
    writer = GeoTiffWriter(outputs.temp_path("probability.tif"), grid, 2, "float32", -1.0,
                           ["a", "b"])
    outputs.temp_path("classes.tif").write_bytes(b"partial")
    first = True
    for row in range(0, 4096, 512):
        for col in range(0, 4096, 512):
            writer.write(np.random.rand(2, 512, 512).astype("float32"),
                         Window(col, row, 512, 512))
            if first:
                print("STARTED", flush=True)
                first = False
            time.sleep(0.2)
    writer.close()
print("FINISHED", flush=True)
"""


@pytest.mark.parametrize("mode", ["system_exit", "abort_all"])
def test_sigterm_mid_write_leaves_nothing(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "writer_script.py"
    script.write_text(textwrap.dedent(SIGTERM_SCRIPT))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "classes.tif").write_bytes(b"existing")
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(out_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "STARTED", proc.stderr.read() if proc.stderr else ""
        partials = [n for n in listing(out_dir) if n.endswith(".partial")]
        assert len(partials) == 2  # temp files exist while running
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "FINISHED" not in rest
    assert proc.returncode == 143, err
    assert listing(out_dir) == ["classes.tif"]
    assert (out_dir / "classes.tif").read_bytes() == b"existing"


# ------------------------------------------------------------------ check_output_dir


def test_check_output_dir_creates_missing(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "c"
    check_output_dir(out, ["classes.tif"], overwrite=False)
    assert out.is_dir()
    assert listing(out) == []  # the write test leaves nothing behind


def test_check_output_dir_refuses_existing(tmp_path: Path) -> None:
    (tmp_path / "classes.tif").write_bytes(b"keep me")
    (tmp_path / "probability.tif").write_bytes(b"keep me too")
    with pytest.raises(OutputError) as info:
        check_output_dir(tmp_path, ["probability.tif", "classes.tif", "preview.png"], False)
    err = info.value
    assert isinstance(err, TerraSegError) and isinstance(err, OSError)
    assert "classes.tif" in err.message and "probability.tif" in err.message
    assert "preview.png" not in err.message
    assert "--overwrite" in err.hint
    assert (tmp_path / "classes.tif").read_bytes() == b"keep me"
    check_output_dir(tmp_path, ["probability.tif", "classes.tif", "preview.png"], True)
    assert (tmp_path / "classes.tif").read_bytes() == b"keep me"


def test_check_output_dir_refuses_uncreatable_dir(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("I am a file")
    with pytest.raises(OutputError) as info:
        check_output_dir(tmp_path / "afile" / "sub", ["classes.tif"], False)
    assert "afile" in info.value.message and info.value.hint
    with pytest.raises(OutputError, match="not a directory"):
        check_output_dir(tmp_path / "afile", ["classes.tif"], False)


def test_check_output_dir_refuses_directory_target(tmp_path: Path) -> None:
    (tmp_path / "classes.tif").mkdir()
    with pytest.raises(OutputError, match="directories"):
        check_output_dir(tmp_path, ["classes.tif"], True)


def _chmod_blocks_writes(path: Path) -> bool:
    try:
        (path / "probe").write_text("x")
    except PermissionError:
        return True
    (path / "probe").unlink()
    return False


def test_check_output_dir_refuses_read_only_dir(tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        if not _chmod_blocks_writes(out):
            pytest.skip("permission bits do not block writes here (root)")
        with pytest.raises(OutputError, match="not writable"):
            check_output_dir(out, ["classes.tif"], False)
    finally:
        out.chmod(0o700)


def test_check_output_dir_tries_an_actual_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("terraseg.core.outputs.tempfile.mkstemp", refuse)
    with pytest.raises(OutputError, match="not writable") as info:
        check_output_dir(tmp_path, ["classes.tif"], False)
    assert "--out-dir" in info.value.hint


# ------------------------------------------------------------------ preview PNG


def write_class_raster(path: Path, classes: np.ndarray) -> None:
    grid = make_grid(*classes.shape)
    with GeoTiffWriter(path, grid, 1, "uint8", 0, ["class"]) as writer:
        writer.write(classes, Window(0, 0, classes.shape[1], classes.shape[0]))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_preview_png_exact_colours(tmp_path: Path) -> None:
    classes = np.array(
        [[0, 1, 2, 3], [1, 1, 2, 2], [3, 3, 0, 1], [2, 4, 1, 0]], dtype=np.uint8
    )
    tif = tmp_path / "classes.tif"
    write_class_raster(tif, classes)
    png = tmp_path / "preview.png"
    colours = {1: "#d7191c", 2: "#1A9641", 3: "#2b83ba"}
    write_preview_png(tif, png, colours)
    lut = {
        0: (0, 0, 0, 0),
        1: (0xD7, 0x19, 0x1C, 255),
        2: (0x1A, 0x96, 0x41, 255),
        3: (0x2B, 0x83, 0xBA, 255),
        4: (128, 128, 128, 255),  # no colour given: opaque grey
    }
    expected = np.array([[lut[v] for v in row] for row in classes.tolist()], dtype=np.uint8)
    with rasterio.open(png) as src:
        assert src.driver == "PNG"
        assert (src.count, src.height, src.width) == (4, 4, 4)
        np.testing.assert_array_equal(np.moveaxis(src.read(), 0, -1), expected)
    assert listing(tmp_path) == ["classes.tif", "preview.png"]  # no temp, no .aux.xml


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_preview_png_decimated_and_replaces(tmp_path: Path) -> None:
    classes = np.ones((600, 1200), dtype=np.uint8)
    classes[:, 600:] = 2
    tif = tmp_path / "classes.tif"
    write_class_raster(tif, classes)
    png = tmp_path / "preview.png"
    png.write_bytes(b"old preview")
    write_preview_png(tif, png, {1: "#ff0000", 2: "#0000ff"}, max_px=100)
    with rasterio.open(png) as src:
        assert (src.height, src.width) == (50, 100)
        rgba = src.read()
    assert (rgba[:, :, :50].reshape(4, -1).T == (255, 0, 0, 255)).all()
    assert (rgba[:, :, 50:].reshape(4, -1).T == (0, 0, 255, 255)).all()
    assert listing(tmp_path) == ["classes.tif", "preview.png"]
