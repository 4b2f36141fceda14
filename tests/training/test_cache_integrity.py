"""The training cache never lies: damaged chunks are rebuilt and said so; its folder fails cleanly.

A chunk file deleted, swapped with another, or with changed bytes is caught by the chunk's
checksum, read again from the raster and counted in a warning; what training then reads
equals the raster. A cache folder that cannot be written fails with a message naming it
(a folder the user chose) or falls back to the temporary folder with a warning (the
default ``~/.cache/terraseg``), never with a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers.paths import TERRASEG
from helpers.synthetic import make_scene, write_raster
from rasterio.windows import Window

from terraseg.core.normalise import compute_band_stats, normalise
from terraseg.core.raster import RasterSource
from terraseg.protocol.errors import OutputError
from terraseg.training.cache import CHUNK_PX, ImageCache, resolve_cache_dir
from terraseg.training.data import ImageWindowStore, PatchGeometry

H, W = 300, 600  # 2 x 3 chunks of 256 px; the last row and column are partial
FULL = Window(0, 0, W, H)


class Log:
    """Records ``Reporter.log`` calls."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, message: str, level: str = "info") -> None:
        self.lines.append((message, level))

    @property
    def warnings(self) -> list[str]:
        return [m for m, level in self.lines if level == "warning"]


@pytest.fixture
def raster(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    data = rng.integers(1, 60000, size=(3, H, W), dtype=np.uint16)
    data[:, 10:20, 30:45] = 0  # nodata: the valid mask matters too
    return write_raster(tmp_path / "img.tif", data, nodata=0)


@pytest.fixture
def filled(raster: Path, tmp_path: Path) -> Path:
    """A cache folder whose store holds every chunk of the raster."""
    folder = tmp_path / "cache"
    with RasterSource(raster) as src:
        cache = ImageCache(src, folder)
        cache.ensure(FULL)
        assert cache.chunks_read == 6
    return folder


def chunk_file(cache: ImageCache, by: int, bx: int, array: str = "image") -> Path:
    """The file of chunk (by, bx) (zarr v3's default chunk keys: c/<i>/<j>[/<k>])."""
    key = f"c/0/{by}/{bx}" if array == "image" else f"c/{by}/{bx}"
    path = cache.path / array / key
    assert path.is_file(), path
    return path


def assert_equals_raster(cache: ImageCache, src: RasterSource, window: Window = FULL) -> None:
    got, got_valid = cache.read(window)
    want, want_valid = src.read(window)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_valid, want_valid)


def reopen(raster: Path, folder: Path) -> tuple[RasterSource, ImageCache, Log]:
    log = Log()
    src = RasterSource(raster)
    return src, ImageCache(src, folder, log=log), log


# --------------------------------------------------------------------------- damaged chunks


def test_intact_cache_is_checked_quietly(raster: Path, filled: Path) -> None:
    src, cache, log = reopen(raster, filled)
    with src:
        cache.ensure(FULL)
        assert (cache.chunks_read, cache.chunks_rebuilt, log.warnings) == (0, 0, [])
        assert_equals_raster(cache, src)


@pytest.mark.parametrize("array", ["image", "valid"])
def test_deleted_chunk_is_rebuilt_and_logged(raster: Path, filled: Path, array: str) -> None:
    src, cache, log = reopen(raster, filled)
    with src:
        chunk_file(cache, 0, 1, array).unlink()
        cache.ensure(FULL)
        assert (cache.chunks_read, cache.chunks_rebuilt) == (1, 1)
        assert len(log.warnings) == 1
        assert "rebuilt 1 chunk(s)" in log.warnings[0] and str(cache.path) in log.warnings[0]
        assert "changed or missing" in log.warnings[0]
        assert_equals_raster(cache, src)
        chunk_file(cache, 0, 1, array)  # written again

    src, again, log = reopen(raster, filled)  # the next run finds it intact
    with src:
        again.ensure(FULL)
        assert (again.chunks_read, again.chunks_rebuilt, log.warnings) == (0, 0, [])


def test_read_alone_rebuilds_a_deleted_chunk(raster: Path, filled: Path) -> None:
    """Not only ensure(): a cached chunk read for the first time is checked too."""
    src, cache, log = reopen(raster, filled)
    with src:
        chunk_file(cache, 1, 1).unlink()
        win = Window(CHUNK_PX + 10, CHUNK_PX + 5, 30, 30)
        assert_equals_raster(cache, src, win)
        assert cache.chunks_rebuilt == 1 and len(log.warnings) == 1


@pytest.mark.parametrize("pair", [((0, 0), (0, 1)), ((0, 1), (1, 2))],
                         ids=["neighbours", "interior-and-edge"])
def test_swapped_chunks_are_rebuilt(raster: Path, filled: Path, pair) -> None:
    """Valid data in the wrong place: each chunk's checksum covers its index."""
    src, cache, log = reopen(raster, filled)
    with src:
        a, b = chunk_file(cache, *pair[0]), chunk_file(cache, *pair[1])
        tmp = a.with_name("swap")
        a.rename(tmp)
        b.rename(a)
        tmp.rename(b)
        cache.ensure(FULL)
        assert cache.chunks_rebuilt == 2 and "rebuilt 2 chunk(s)" in log.warnings[0]
        assert_equals_raster(cache, src)


@pytest.mark.parametrize("damage", ["flipped", "garbage", "empty"])
def test_corrupt_chunk_is_rebuilt(raster: Path, filled: Path, damage: str) -> None:
    src, cache, log = reopen(raster, filled)
    with src:
        path = chunk_file(cache, 1, 0)
        data = bytearray(path.read_bytes())
        if damage == "flipped":  # still decodes, to other values
            for i in range(len(data) // 2, len(data) // 2 + 64):
                data[i] ^= 0xFF
        elif damage == "garbage":  # no longer decodes
            data = bytearray(b"not a blosc frame" * 4)
        else:
            data = bytearray()
        path.write_bytes(bytes(data))
        cache.ensure(FULL)
        assert cache.chunks_rebuilt == 1 and len(log.warnings) == 1, log.lines
        assert_equals_raster(cache, src)


@pytest.mark.parametrize("damage", ["deleted", "other-raster", "not-json"])
def test_missing_or_foreign_checksum_record_rebuilds_filled_chunks(
        raster: Path, filled: Path, damage: str) -> None:
    record_path = next(filled.glob("*.checksums.json"))
    if damage == "deleted":
        record_path.unlink()
    elif damage == "other-raster":
        record = json.loads(record_path.read_text())
        record["fingerprint"] = "0" * 24
        record_path.write_text(json.dumps(record))
    else:
        record_path.write_text("{not json")
    src, cache, log = reopen(raster, filled)
    with src:
        cache.ensure(Window(0, 0, 10, 10))
        assert cache.chunks_rebuilt == 1 and "without a recorded checksum" in log.warnings[0]
        cache.ensure(FULL)
        assert cache.chunks_rebuilt == 6 and len(log.warnings) == 2
        assert_equals_raster(cache, src)
    assert json.loads(record_path.read_text())["fingerprint"] == cache.fingerprint


def test_never_filled_chunks_are_not_errors(raster: Path, tmp_path: Path) -> None:
    folder = tmp_path / "c"
    src, cache, log = reopen(raster, folder)
    with src:
        cache.ensure(Window(0, 0, 10, 10))
        data, valid = cache.read(Window(CHUNK_PX, 0, 8, 8))  # never filled: zeros, no error
        assert not data.any() and not valid.any()
    src, cache, log = reopen(raster, folder)
    with src:
        cache.ensure(FULL)
        assert (cache.chunks_read, cache.chunks_rebuilt, log.warnings) == (5, 0, [])
        assert_equals_raster(cache, src)


@pytest.mark.parametrize("damage", ["group-metadata", "array-metadata", "array-removed"])
def test_damaged_store_is_rebuilt(raster: Path, filled: Path, damage: str) -> None:
    src, cache, log = reopen(raster, filled)
    with src:
        if damage == "group-metadata":
            (cache.path / "zarr.json").write_text("{garbage")
        elif damage == "array-metadata":
            (cache.path / "valid" / "zarr.json").write_text('{"zarr_format": 3}')
        else:
            shutil.rmtree(cache.path / "filled")
        log = Log()
        rebuilt = ImageCache(src, filled, log=log)
        assert any("building it again" in w for w in log.warnings), log.lines
        rebuilt.ensure(FULL)
        assert rebuilt.chunks_read == 6
        assert_equals_raster(rebuilt, src)


def test_training_window_reads_the_raster_after_damage(raster: Path, filled: Path) -> None:
    """What a training run trains on (ImageWindowStore) equals the raster, not zeros."""
    src, cache, log = reopen(raster, filled)
    with src:
        chunk_file(cache, 0, 0).unlink()  # the labelled area's chunk
        chunk_file(cache, 1, 2).write_bytes(chunk_file(cache, 0, 2).read_bytes())  # a copy
        origins = np.array([[40, 40], [280, 500]])
        geom = PatchGeometry(patch_px=23, block_px=1)
        stats = compute_band_stats(src)
        store = ImageWindowStore(cache, origins, geom, stats)
        assert store.in_memory and cache.chunks_rebuilt == 2
        want, valid = src.read(store.window)
        np.testing.assert_array_equal(store._data, normalise(want, valid, stats))  # noqa: SLF001
        assert len(log.warnings) == 1


# --------------------------------------------------------------------------- cache folder


def test_explicit_folder_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    bad = tmp_path / "afile" / "cache"
    with pytest.raises(OutputError) as err:
        resolve_cache_dir(bad)
    assert str(bad) in err.value.message and "--cache-dir" in err.value.hint
    with pytest.raises(OutputError, match="file, not a folder"):
        resolve_cache_dir(tmp_path / "afile")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores permission bits (the path-under-a-file cases cover it)")
def test_explicit_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            resolve_cache_dir(folder)
    finally:
        folder.chmod(0o700)


def test_unwritable_terraseg_cache_is_refused(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("TERRASEG_CACHE", str(tmp_path / "afile" / "c"))
    with pytest.raises(OutputError) as err:
        resolve_cache_dir(None)
    assert "TERRASEG_CACHE" in err.value.message and "TERRASEG_CACHE" in err.value.hint
    ok = tmp_path / "explicit"
    assert resolve_cache_dir(ok) == ok and ok.is_dir()  # --cache-dir wins over the variable


@pytest.mark.parametrize("home", ["under-a-file", "empty"])
def test_unwritable_home_falls_back_to_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            home: str) -> None:
    (tmp_path / "afile").write_text("x")
    monkeypatch.delenv("TERRASEG_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "afile" / "home") if home != "empty" else "")
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    log = Log()
    folder = resolve_cache_dir(None, log)
    assert folder.parent == temp and folder.is_dir()
    assert len(log.warnings) == 1 and str(folder) in log.warnings[0]
    assert "--cache-dir" in log.warnings[0]
    assert resolve_cache_dir(None, Log()) == folder  # the same folder next time: still a cache


def test_foreign_temp_folder_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A predictable folder in the shared temp dir that others may write is not trusted."""
    monkeypatch.delenv("TERRASEG_CACHE", raising=False)
    monkeypatch.setenv("HOME", "")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    shared = tmp_path / f"terraseg-cache-{uid}"
    shared.mkdir()
    shared.chmod(0o777)
    folder = resolve_cache_dir(None, Log())
    assert folder != shared and folder.parent == tmp_path


# --------------------------------------------------------------------------- command line

QUICK = ["--patch-size", "23", "--blocks", "1,1,1", "--epochs", "1",
         "--samples-per-epoch", "64", "--accelerator", "cpu"]


def train(case: Path, *extra: object, env: dict[str, str] | None = None,
          out: str = "m.tsm") -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TERRASEG, "train", "--raster", str(case / "scene.tif"), "--labels",
         str(case / "labels.gpkg"), "--class-field", "klass", "--out", str(case / out),
         "--overwrite", *QUICK, *map(str, extra)],
        cwd=case, capture_output=True, text=True, timeout=300, env=env)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{err}"
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    fixes = [ln.strip() for ln in err.splitlines() if ln.strip().startswith("fix:")]
    assert len(errors) == 1 and fixes, err
    for needle in needles:
        assert needle in errors[0] + fixes[0], err


def test_cli_unwritable_cache_dir_is_an_error(tmp_path: Path) -> None:
    make_scene(tmp_path)
    (tmp_path / "afile").write_text("x")
    proc = train(tmp_path, "--cache-dir", tmp_path / "afile" / "cache")
    assert_user_error(proc, str(tmp_path / "afile" / "cache"), "--cache-dir")
    assert not (tmp_path / "m.tsm").exists()


@pytest.mark.slow
def test_cli_unwritable_home_and_a_deleted_chunk(tmp_path: Path) -> None:
    """HOME not writable, no TERRASEG_CACHE: trains in the temporary folder, says so; the
    next run after a chunk file was deleted rebuilds it and says so."""
    scene = make_scene(tmp_path)
    (tmp_path / "afile").write_text("x")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TERRASEG_CACHE"}
    env.update(HOME=str(tmp_path / "afile" / "home"), TMPDIR=str(temp))
    proc = train(tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "the default cache folder cannot be used" in proc.stderr, proc.stderr
    stores = list(temp.glob("terraseg-cache-*/*.zarr"))
    assert len(stores) == 1, proc.stderr

    (stores[0] / "image" / "c" / "0" / "0" / "0").unlink()  # the scene's only chunk
    proc = train(tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"cache {stores[0]}: rebuilt 1 chunk(s) from the raster" in proc.stderr, proc.stderr
    with RasterSource(scene.raster) as src:
        cache = ImageCache(src, stores[0].parent)
        assert cache.path == stores[0]
        assert_equals_raster(cache, src, Window(0, 0, scene.width, scene.height))
        assert cache.chunks_rebuilt == 0
