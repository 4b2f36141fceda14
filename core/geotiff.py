"""Streaming GeoTIFF writer: tiled, ZSTD-compressed, with internal overviews.

Predictions, probabilities and rasterised labels are written window by window through
:class:`GeoTiffWriter`, so memory does not grow with the raster. Inside a run the writer is
normally created by :meth:`terraseg.core.atomic.AtomicOutputs.geotiff`, which writes it to a
temp file that is moved onto its final name only when the whole run succeeds.

Failures are never silent. GDAL compresses blocks in background threads and only logs the
write errors of a full disk, so each window first checks the disk's free space, and a
closed file is read back (every block must lie inside the file) before it counts as
written; any failure is an ``OutputError`` naming the disk and the fix. Overviews are built
by a child process (:func:`build_overviews`): a cancel (SIGTERM) ends it at once instead
of waiting for GDAL's single long call, and a crash of GDAL there (seen on a full disk)
becomes an error instead of taking the engine down.
"""

from __future__ import annotations

import errno
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from terraseg.core.grid import Grid
from terraseg.core.output_targets import format_bytes, free_bytes, write_error
from terraseg.protocol.errors import OutputError

try:  # GDAL's own errors (CPLE_*) are not RasterioError subclasses
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover - a rasterio without it
    CPLE_BaseError = rasterio.errors.RasterioError  # type: ignore[misc,assignment]

#: What a failing GDAL write raises.
GDAL_WRITE_ERRORS: tuple[type[BaseException], ...] = (
    rasterio.errors.RasterioError, OSError, CPLE_BaseError)

MIN_OVERVIEW_PX = 256
# GDAL's block cache while building overviews (MB). GDAL works block-wise, but its default
# cache (5% of RAM) would otherwise fill with the whole raster on large files.
OVERVIEW_CACHE_MB = 256
# How often (s) a cancel is checked while the child process builds overviews.
OVERVIEW_POLL_S = 0.05
# Less free space than this when a GDAL write fails means the disk is full (GDAL's error
# does not always say so): a few output blocks of a many-class probability raster.
FULL_DISK_BYTES = 32 * 1024 * 1024


def overview_factors(height_px: int, width_px: int, min_px: int = MIN_OVERVIEW_PX) -> list[int]:
    """Overview factors 2, 4, 8, ... down to the first level smaller than ``min_px``.

    A raster no larger than ``min_px`` in both directions gets none.
    """
    size = max(height_px, width_px)
    factors: list[int] = []
    factor = 2
    while math.ceil(size / (factor // 2)) > min_px:
        factors.append(factor)
        factor *= 2
    return factors


class GeoTiffWriter:
    """Streaming, windowed writer of a tiled, ZSTD-compressed GeoTIFF.

    Windows are written as they come, so memory does not grow with the raster (GDAL keeps at
    most ``GDAL_CACHEMAX`` of dirty blocks). Write windows aligned to ``block_px`` so no tile
    is compressed twice.

    Args:
        path: File to create (normally ``AtomicOutputs.temp_path(...)``).
        grid: Pixel grid (shape, transform, CRS) of the output.
        count: Number of bands.
        dtype: Numpy / rasterio data type name, e.g. "float32" or "uint8".
        nodata: Nodata value, or None.
        descriptions: One band description per band.
        colormap: Optional ``{value: (r, g, b, a)}`` colour table for band 1 (integer types).
        block_px: Tile size in pixels (multiple of 16).

    Raises:
        ValueError: Inconsistent arguments.
        OutputError: The file cannot be created.
    """

    def __init__(
        self,
        path: Path,
        grid: Grid,
        count: int,
        dtype: str,
        nodata: float | int | None,
        descriptions: Sequence[str],
        colormap: dict[int, tuple[int, int, int, int]] | None = None,
        block_px: int = 512,
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}.")
        if len(descriptions) != count:
            raise ValueError(f"{len(descriptions)} band descriptions given for {count} band(s).")
        if block_px < 16 or block_px % 16:
            raise ValueError(f"block_px must be a positive multiple of 16, got {block_px}.")
        self.path = Path(path)
        self.grid = grid
        self.count = count
        self.dtype = np.dtype(dtype).name
        is_float = np.issubdtype(np.dtype(dtype), np.floating)
        if colormap is not None and is_float:
            raise ValueError("A colormap needs an integer data type.")
        self._resampling = Resampling.average if is_float else Resampling.nearest
        profile = {
            "driver": "GTiff",
            "height": grid.height_px,
            "width": grid.width_px,
            "count": count,
            "dtype": self.dtype,
            "crs": grid.crs,
            "transform": grid.transform,
            "nodata": nodata,
            "tiled": True,
            "blockxsize": block_px,
            "blockysize": block_px,
            # ZSTD level 1: 4-6x faster to write than DEFLATE at nearly the same size;
            # read by GDAL >= 2.3 (QGIS 3.x). Two threads compress blocks in parallel.
            "compress": "ZSTD",
            "zstd_level": 1,
            "num_threads": "2",
            "predictor": 3 if is_float else 2,
            "BIGTIFF": "IF_SAFER",
            "interleave": "band" if count > 1 else "pixel",
        }
        self._block_px = block_px
        self._error: OutputError | None = None
        try:
            self._ds = rasterio.open(self.path, "w", **profile)
        except GDAL_WRITE_ERRORS as exc:
            raise write_error(self.path, exc, "creating") from exc
        for i, desc in enumerate(descriptions, start=1):
            self._ds.set_band_description(i, str(desc))
        if colormap:
            self._ds.write_colormap(1, colormap)

    def set_tags(self, **tags: str) -> None:
        """Dataset metadata items (GDAL's default domain), e.g. class names."""
        self._ds.update_tags(**tags)

    @property
    def closed(self) -> bool:
        """Whether the file was closed."""
        return self._ds.closed

    def write(self, data: np.ndarray, window: Window) -> None:
        """Write one window.

        Args:
            data: Array of shape (count, h, w) (or (h, w) when count is 1), cast to the dtype.
            window: Where to write, inside the grid; h and w must match ``data``.

        Raises:
            ValueError: The shape does not fit or the window lies outside the grid.
        """
        arr = np.asarray(data)
        if arr.ndim == 2 and self.count == 1:
            arr = arr[np.newaxis]
        col, row = int(round(window.col_off)), int(round(window.row_off))
        h, w = int(round(window.height)), int(round(window.width))
        if arr.shape != (self.count, h, w):
            raise ValueError(
                f"Data of shape {arr.shape} does not fit a {self.count}-band window of {h}x{w}."
            )
        if row < 0 or col < 0 or row + h > self.grid.height_px or col + w > self.grid.width_px:
            raise ValueError(
                f"Window {window} lies outside the {self.grid.height_px}x{self.grid.width_px} grid."
            )
        block = arr.astype(self.dtype, copy=False)
        self._check_space(block.nbytes)
        try:
            self._ds.write(block, window=Window(col, row, w, h))
        except GDAL_WRITE_ERRORS as exc:
            raise failure(self.path, exc) from exc

    def close(self, overviews: bool = True,
              check_cancelled: Callable[[], None] | None = None) -> None:
        """Close the file, check it was written whole, then build overviews. Idempotent.

        Overviews (unless ``overviews`` is False) are built block-wise by GDAL (average for
        float, nearest for integers), internal to the file, with the same tile size and
        compression, in a child process (:func:`build_overviews`).

        Args:
            overviews: Whether to build overviews.
            check_cancelled: Called while the overviews are built; it raises to cancel.

        Raises:
            OutputError: The file could not be written whole (a full disk, say), or the
                overviews could not be built.
        """
        if self._ds.closed:
            if self._error is not None:  # closed before, but not written whole
                raise self._error
            return
        try:
            try:
                self._ds.close()
            except GDAL_WRITE_ERRORS as exc:
                raise failure(self.path, exc, "closing") from exc
            if not self.path.exists():  # deleted while open: an abort discarded it
                return
            self.verify()
            factors = overview_factors(self.grid.height_px, self.grid.width_px)
            if overviews and factors:
                # the overviews add about a third of the file's (compressed) size
                self._check_space(self.path.stat().st_size // 3 + 1024 * 1024,
                                  "its overviews")
                build_overviews(self.path, factors, self._resampling, self._block_px,
                                check_cancelled)
                self.verify()
        except BaseException as exc:
            self._error = exc if isinstance(exc, OutputError) else OutputError(
                f"'{self.path.name}' was not finished ({type(exc).__name__}).",
                "Run the command again.")
            raise

    def discard(self) -> None:
        """Close the file without overviews or checks (before deleting it); never raises."""
        if not self._ds.closed:
            try:
                self._ds.close()
            except Exception:  # noqa: BLE001, S110 - the file is deleted next
                pass

    def verify(self) -> None:
        """Read the closed file back: it opens and every block lies inside it.

        GDAL's background compression threads only log a write that failed; a file with
        a missing or cut-off block (or directory) is caught here.

        Raises:
            OutputError: The file is incomplete.
        """
        try:
            size = self.path.stat().st_size
            with rasterio.open(self.path) as ds:
                bands = range(1, ds.count + 1) if ds.interleaving != "pixel" else [1]
                rows = math.ceil(ds.height / self._block_px)
                cols = math.ceil(ds.width / self._block_px)
                for b in bands:
                    for j in range(rows):
                        for i in range(cols):
                            offset = ds.get_tag_item(f"BLOCK_OFFSET_{i}_{j}", "TIFF", bidx=b)
                            length = ds.get_tag_item(f"BLOCK_SIZE_{i}_{j}", "TIFF", bidx=b)
                            if not offset or int(offset) + int(length or 0) > size:
                                raise OSError(f"block ({i}, {j}) of band {b} is missing")
        except GDAL_WRITE_ERRORS as exc:
            raise failure(self.path, exc) from exc

    def _check_space(self, nbytes: int, what: str = "") -> None:
        """Refuse a write of up to ``nbytes`` that the disk has no room for."""
        free = free_bytes(self.path.parent)
        if free is not None and free < nbytes:
            err = OSError(errno.ENOSPC,
                          f"No space left on device ({format_bytes(nbytes)} to write"
                          f"{' for ' + what if what else ''}, {format_bytes(free)} free)")
            raise write_error(self.path, err)

    def __enter__(self) -> GeoTiffWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


# The child process that builds the overviews: the standard library and rasterio only.
# It ends itself when its parent dies (a SIGKILL of the engine leaves no orphan).
_OVERVIEW_CHILD = """
import os, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(3)
threading.Thread(target=watch, daemon=True).start()
import rasterio
from rasterio.enums import Resampling
path, factors, resampling, block_px, cache_mb = sys.argv[1:6]
with rasterio.Env(GDAL_TIFF_OVR_BLOCKSIZE=block_px, GDAL_CACHEMAX=int(cache_mb),
                  GDAL_NUM_THREADS="2", ZSTD_LEVEL_OVERVIEW="1"):
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([int(f) for f in factors.split(",")], Resampling[resampling])
        ds.update_tags(ns="rio_overview", resampling=resampling)
"""


def build_overviews(path: Path, factors: Sequence[int], resampling: Resampling,
                    block_px: int, check_cancelled: Callable[[], None] | None = None) -> None:
    """Build internal overviews of the closed GeoTIFF ``path`` in a child process.

    GDAL builds all levels in one native call that neither a signal nor a cancel can
    interrupt (8 s and more on large rasters); in a child it is ended at once: a
    ``KeyboardInterrupt`` (the SIGTERM handler) or ``check_cancelled`` raising - it is
    called every ``OVERVIEW_POLL_S`` seconds - kills the child and propagates.

    Raises:
        OutputError: The child failed or crashed (a full disk, say).
    """
    args = [sys.executable, "-I", "-c", _OVERVIEW_CHILD, str(path),
            ",".join(str(f) for f in factors), resampling.name, str(block_px),
            str(OVERVIEW_CACHE_MB)]
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=_child_env())
    except OSError:  # no Python to start (embedded): build here, uninterruptible
        _build_overviews_here(path, factors, resampling, block_px)
        return
    try:
        while True:
            try:
                _, stderr = proc.communicate(timeout=OVERVIEW_POLL_S)
                break
            except subprocess.TimeoutExpired:
                if check_cancelled is not None:
                    check_cancelled()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        text = stderr.decode("utf-8", "replace").strip()
        how = (f"crashed (signal {-proc.returncode})" if proc.returncode < 0
               else f"failed (exit status {proc.returncode})")
        last = text.splitlines()[-1] if text else ""
        exc = OSError(f"{how}: {last}".rstrip(": "))
        exc.__context__ = OSError(text)  # GDAL's earlier lines may name the cause
        raise failure(path, exc, "building overviews of")


def failure(path: Path, exc: BaseException, doing: str = "writing") -> OutputError:
    """The ``OutputError`` of a failed GDAL write; a (nearly) full disk is named as such.

    GDAL's errors from its compression threads and overview building often do not say why
    a write failed; when the disk has less than ``FULL_DISK_BYTES`` free at that moment,
    it was the disk.
    """
    if disk_nearly_full(path.parent):
        full = OSError(errno.ENOSPC, f"No space left on device ({exc})")
        full.__cause__ = exc
        return write_error(path, full, doing)
    return write_error(path, exc, doing)


def disk_nearly_full(folder: Path) -> bool:
    """Whether ``folder``'s disk has less than ``FULL_DISK_BYTES`` free."""
    free = free_bytes(folder)
    return free is not None and free < FULL_DISK_BYTES


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    return env


def _build_overviews_here(path: Path, factors: Sequence[int], resampling: Resampling,
                          block_px: int) -> None:
    try:
        with rasterio.Env(GDAL_TIFF_OVR_BLOCKSIZE=str(block_px),
                          GDAL_CACHEMAX=OVERVIEW_CACHE_MB, GDAL_NUM_THREADS="2",
                          ZSTD_LEVEL_OVERVIEW="1"), rasterio.open(path, "r+") as ds:
            ds.build_overviews(list(factors), resampling)
            ds.update_tags(ns="rio_overview", resampling=resampling.name)
    except GDAL_WRITE_ERRORS as exc:
        raise failure(path, exc, "building overviews of") from exc
