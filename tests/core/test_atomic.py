"""Tests for terraseg.core.atomic: all-or-nothing commit of outputs, abort on any exit."""

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
from rasterio.windows import Window

from terraseg.core.atomic import AtomicOutputs, abort_all
from terraseg.core.geotiff import GeoTiffWriter
from terraseg.core.grid import Grid
from terraseg.protocol.errors import OutputError

CRS_WKT = CRS.from_epsg(32119).to_wkt()


def make_grid(height: int, width: int) -> Grid:
    transform = Affine(28.5, 0.0, 610_000.0, 0.0, -28.5, 240_000.0)
    return Grid(height, width, transform, CRS_WKT)


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path))


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
from terraseg.core.atomic import AtomicOutputs, abort_all
from terraseg.core.geotiff import GeoTiffWriter

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
