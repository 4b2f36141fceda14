"""Tests for terraseg.training.cache: lazily filled Zarr copy of a raster, fingerprints, labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers.synthetic import make_scene, write_raster
from rasterio.windows import Window

from terraseg.core.raster import RasterSource, parse_band_mapping
from terraseg.core.vector_labels import load_vector_labels
from terraseg.training.cache import CHUNK_PX, ImageCache, default_cache_dir, raster_fingerprint

H, W = 300, 600  # 2 x 3 chunks of 256 px


def big_raster(path: Path, seed: int = 0, nodata: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 60000, size=(3, H, W), dtype=np.uint16)
    if nodata:
        data[:, 10:20, 30:45] = 0
        data[1, 270:280, 500:510] = 0  # one band only: still invalid
    return write_raster(path, data, nodata=0 if nodata else None)


@pytest.fixture
def raster(tmp_path: Path) -> Path:
    return big_raster(tmp_path / "img.tif")


def test_ensure_reads_only_missing_chunks(raster: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    with RasterSource(raster) as src:
        cache = ImageCache(src, cache_dir)
        assert cache.path.parent == cache_dir and cache.path.name.endswith(".zarr")
        assert cache.chunks_read == 0
        cache.ensure(Window(0, 0, 10, 10))
        assert cache.chunks_read == 1
        cache.ensure(Window(5, 5, 100, 100))  # same chunk
        assert cache.chunks_read == 1
        cache.ensure(Window(250, 250, 20, 20))  # chunks (0,0) (0,1) (1,0) (1,1)
        assert cache.chunks_read == 4
        cache.ensure(Window(250, 250, 20, 20))
        assert cache.chunks_read == 4
        cache.ensure(Window(-50, -50, 20, 20))  # entirely outside: nothing
        cache.ensure(Window(W + 5, 0, 20, 20))
        assert cache.chunks_read == 4
        cache.ensure(Window(590, 290, 50, 50))  # past the bottom-right corner: chunk (1,2)
        assert cache.chunks_read == 5
        np.testing.assert_array_equal(cache._filled, [[1, 1, 0], [1, 1, 1]])  # noqa: SLF001

        # a new cache object on the same folder finds the chunks already there
        again = ImageCache(src, cache_dir)
        assert again.path == cache.path
        again.ensure(Window(0, 0, 300, 300))
        again.ensure(Window(590, 290, 10, 10))
        assert again.chunks_read == 0
        again.ensure(Window(0, 0, W, H))  # only chunk (0,2) is missing
        assert again.chunks_read == 1
        third = ImageCache(src, cache_dir)
        third.ensure(Window(0, 0, W, H))
        assert third.chunks_read == 0


def test_unfilled_chunks_are_not_read(raster: Path, tmp_path: Path) -> None:
    with RasterSource(raster) as src:
        cache = ImageCache(src, tmp_path / "c")
        cache.ensure(Window(0, 0, 5, 5))
        data, valid = cache.read(Window(CHUNK_PX, 0, 8, 8))  # chunk (0,1): never read
        assert not data.any() and not valid.any()
        src_data, _ = src.read(Window(CHUNK_PX, 0, 8, 8))
        assert src_data.all()  # the raster itself has data there
        data, valid = cache.read(Window(CHUNK_PX - 4, 0, 8, 8))  # straddles filled/unfilled
        np.testing.assert_array_equal(data[:, :, :4], src.read(Window(CHUNK_PX - 4, 0, 4, 8))[0])
        assert not data[:, :, 4:].any()


@pytest.mark.parametrize(
    "win",
    [
        Window(0, 0, W, H),
        Window(-7, -3, 40, 30),  # past top-left
        Window(580, 280, 40, 40),  # past bottom-right
        Window(20, 5, 40, 20),  # over the nodata block
        Window(495, 265, 20, 20),  # one-band nodata
        Window(250, 250, 13, 11),  # across four chunks
        Window(-10, -10, W + 20, H + 20),  # larger than the raster
        Window(W + 1, 0, 5, 5),  # entirely outside
    ],
)
def test_cached_values_equal_source(raster: Path, tmp_path: Path, win: Window) -> None:
    with RasterSource(raster) as src:
        cache = ImageCache(src, tmp_path / "c")
        cache.ensure(win)
        got, gvalid = cache.read(win)
        want, wvalid = src.read(win)
    assert got.dtype == np.float32 and gvalid.dtype == bool
    assert got.shape == want.shape and gvalid.shape == wvalid.shape
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(gvalid, wvalid)


def test_cache_store_layout(raster: Path, tmp_path: Path) -> None:
    with RasterSource(raster, parse_band_mapping("a=3,b=1", raster)) as src:
        cache = ImageCache(src, tmp_path / "c")
        cache.ensure(Window(0, 0, W, H))
        g = zarr.open_group(store=str(cache.path), mode="r")
        assert g["image"].shape == (2, H, W) and g["image"].dtype == np.float32
        assert g["image"].chunks == (2, CHUNK_PX, CHUNK_PX)
        assert g["valid"].shape == (H, W) and g["valid"].dtype == bool
        assert g["filled"][...].tolist() == [[1, 1, 1], [1, 1, 1]]
        assert g.attrs["bands"] == [3, 1] and g.attrs["band_names"] == ["a", "b"]
        full, valid = src.read(Window(0, 0, W, H))
        np.testing.assert_array_equal(g["image"][...], full)
        np.testing.assert_array_equal(g["valid"][...], valid)
        assert valid.sum() == H * W - 150  # band 2 (with its own nodata) is not mapped


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_stable_for_same_file_and_mapping(raster: Path) -> None:
    with RasterSource(raster) as a, RasterSource(raster) as b:
        assert raster_fingerprint(a) == raster_fingerprint(b)
        assert len(raster_fingerprint(a)) == 24


def test_fingerprint_changes_with_band_mapping(raster: Path, tmp_path: Path) -> None:
    fps = set()
    for spec in (None, "1,2", "2,1", "1", "x=1"):
        with RasterSource(raster, parse_band_mapping(spec, raster)) as src:
            fps.add(raster_fingerprint(src))
    assert len(fps) == 4  # names do not matter ("1" and "x=1"), indices and order do


def test_fingerprint_changes_when_raster_rewritten(raster: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "c"
    with RasterSource(raster) as src:
        fp0 = raster_fingerprint(src)
        old = ImageCache(src, cache_dir)
        old.ensure(Window(0, 0, 10, 10))
        old_vals, _ = old.read(Window(0, 0, 10, 10))

    # same size, different content, later mtime
    st = raster.stat()
    big_raster(raster, seed=1)
    os.utime(raster, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert raster.stat().st_size == st.st_size
    with RasterSource(raster) as src:
        fp1 = raster_fingerprint(src)
        assert fp1 != fp0
        new = ImageCache(src, cache_dir)
        assert new.path != old.path
        new.ensure(Window(0, 0, 10, 10))
        assert new.chunks_read == 1
        new_vals, _ = new.read(Window(0, 0, 10, 10))
        np.testing.assert_array_equal(new_vals, src.read(Window(0, 0, 10, 10))[0])
        assert not np.array_equal(new_vals, old_vals)

    # only the modification time changes
    os.utime(raster, ns=(st.st_atime_ns, st.st_mtime_ns + 9_000_000_000))
    with RasterSource(raster) as src:
        assert raster_fingerprint(src) not in (fp0, fp1)

    # only the size changes (mtime forced back)
    with RasterSource(raster) as src:
        fp2 = raster_fingerprint(src)
    st2 = raster.stat()
    with open(raster, "ab") as f:
        f.write(b"\0" * 16)
    os.utime(raster, ns=(st2.st_atime_ns, st2.st_mtime_ns))
    assert raster.stat().st_mtime_ns == st2.st_mtime_ns
    with RasterSource(raster) as src:
        assert raster_fingerprint(src) != fp2


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TERRASEG_CACHE", str(tmp_path / "tc"))
    assert default_cache_dir() == tmp_path / "tc"
    monkeypatch.delenv("TERRASEG_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "terraseg"


# --------------------------------------------------------------------------- labels


def test_store_labels_idempotent(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, size=64)
    with RasterSource(scene.raster) as src:
        labels = load_vector_labels(scene.labels, src.grid, "klass")
        cache = ImageCache(src, tmp_path / "c")
        cache.store_labels(labels)
        cache.store_labels(labels)  # second time: no error, nothing rewritten
        ImageCache(src, tmp_path / "c").store_labels(labels)  # new object, same store
        g = zarr.open_group(store=str(cache.path), mode="r")
        sub = g[f"labels/{labels.fingerprint[:24]}"]
        np.testing.assert_array_equal(sub["labels"][...], labels.labels)
        np.testing.assert_array_equal(sub["regions"][...], labels.regions)
        assert sub["labels"].dtype == labels.labels.dtype
        assert sub.attrs["classes"] == [c.to_dict() for c in labels.classes]
        assert sub.attrs["pixel_counts"] == labels.pixel_counts
        assert list(g["labels"].group_keys()) == [labels.fingerprint[:24]]
        assert (labels.labels == 1).sum() == labels.pixel_counts["sealed"] > 0
