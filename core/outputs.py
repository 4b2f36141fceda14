"""Atomic GeoTIFF / PNG outputs for predictions.

Every output is first written to a hidden temporary file in the output directory (same
filesystem) and moved onto its final name with :func:`os.replace` only when the whole run
succeeded. A failed, interrupted or cancelled run therefore leaves nothing half-written at
the target paths, and an existing target is never touched unless the run completes with
``overwrite`` set.

Typical use::

    check_output_dir(out_dir, ["probability.tif", "classes.tif"], overwrite)  # before any work
    with AtomicOutputs(out_dir, overwrite) as outputs:
        writer = GeoTiffWriter(outputs.temp_path("classes.tif"), grid, 1, "uint8", 0, ["class"])
        for window, block in blocks:
            writer.write(block, window)
        writer.close()
    # committed here; an exception inside the block removes every temp file instead.

Callers that install a SIGTERM handler can call :func:`abort_all` (or ``outputs.abort()``)
from it, or simply raise ``SystemExit`` so the context manager aborts.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import math
import os
import secrets
import tempfile
import threading
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from terraseg.core.grid import Grid
from terraseg.protocol.errors import OutputError

PARTIAL_SUFFIX = ".partial"
MIN_OVERVIEW_PX = 256
# GDAL's block cache while building overviews (MB). GDAL works block-wise, but its default
# cache (5% of RAM) would otherwise fill with the whole raster on large files.
OVERVIEW_CACHE_MB = 256

_ACTIVE: weakref.WeakSet[AtomicOutputs] = weakref.WeakSet()


# --------------------------------------------------------------------------- single files


def default_file_mode() -> int:
    """Mode a new file gets under the current umask (e.g. 0o644)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = PARTIAL_SUFFIX) -> Iterator[Path]:
    """A fresh hidden path beside ``path`` to write one file to; renamed onto it on success.

    On success the file gets the umask's mode (like any new file) and replaces ``path``;
    on any exception it is deleted and ``path`` is left untouched. ``suffix`` lets writers
    that choose the format by extension (GeoPackage) see it.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.unlink(name)  # writers create the file themselves
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_csv_atomic(path: str | Path, rows: list[dict], fieldnames: Sequence[str]) -> None:
    """Write ``rows`` as CSV with a header, atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------- checks


def check_output_dir(out_dir: Path, names: Sequence[str], overwrite: bool) -> None:
    """Make sure ``out_dir`` can receive ``names``; call this before doing any work.

    Creates ``out_dir`` (and its parents) when missing.

    Args:
        out_dir: Output directory.
        names: File names (no directories) that the run will write into ``out_dir``.
        overwrite: Whether existing files of those names may be replaced.

    Raises:
        OutputError: The directory cannot be created or written to, a target is a
            directory, or targets exist and ``overwrite`` is False.
    """
    out_dir = Path(out_dir)
    for name in names:
        _check_name(name)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(
            f"Output directory '{out_dir}' exists but is not a directory.",
            "Choose an --out-dir that is a directory or does not exist yet.",
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Output directory '{out_dir}' cannot be created: {exc.strerror or exc}.",
            "Choose an --out-dir in a location you can write to.",
        ) from exc
    if not _dir_writable(out_dir):
        raise OutputError(
            f"Output directory '{out_dir}' is not writable.",
            "Choose an --out-dir you can write to, or change its permissions.",
        )
    dirs = [n for n in names if (out_dir / n).is_dir()]
    if dirs:
        raise OutputError(
            f"Output path(s) {', '.join(dirs)} in '{out_dir}' are directories.",
            "Remove or rename them, or choose another --out-dir.",
        )
    existing = [n for n in names if (out_dir / n).exists()]
    if existing and not overwrite:
        raise OutputError(
            f"Output file(s) already exist in '{out_dir}': {', '.join(existing)}.",
            "Pass --overwrite to replace them, or choose another --out-dir.",
        )


def _check_name(name: str) -> None:
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"Output name {name!r} must be a plain file name.")


def _dir_writable(path: Path) -> bool:
    """``os.access`` plus an actual attempt to create (and remove) a file in ``path``."""
    if not os.access(path, os.W_OK | os.X_OK):
        return False
    try:
        fd, tmp = tempfile.mkstemp(prefix=".terraseg-write-test.", dir=path)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.remove(tmp)
    return True


# --------------------------------------------------------------------------- atomic commit


def _temp_sibling(final: Path) -> Path:
    """A hidden temp path next to ``final``: ``.<name>.<random>.partial``."""
    return final.parent / f".{final.name}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}"


def _remove_with_sidecars(path: Path) -> None:
    """Delete ``path`` and any GDAL sidecars (``path.aux.xml``, ``path.ovr``, ...)."""
    candidates = [path, *path.parent.glob(f"{glob.escape(path.name)}.*")]
    for p in candidates:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            p.unlink()


def _fsync_file(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicOutputs:
    """Context manager that commits a set of outputs all together, or none at all.

    Inside the ``with`` block, write each output to ``temp_path(name)``. On a normal exit
    every temp file is fsynced and moved onto ``out_dir/name`` with :func:`os.replace`. On any
    exception (including ``KeyboardInterrupt`` and ``SystemExit``) every temp file is deleted
    and existing targets are left untouched. ``commit()`` and ``abort()`` can also be called
    directly; ``abort()`` is idempotent and safe to call from a signal handler.

    Args:
        out_dir: Output directory (must exist; see :func:`check_output_dir`).
        overwrite: Whether existing targets may be replaced at commit time.
    """

    def __init__(self, out_dir: Path, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.overwrite = overwrite
        self._temps: dict[str, Path] = {}
        self._scratch: list[Path] = []
        self._writers: list[GeoTiffWriter] = []
        self._state = "open"
        self._lock = threading.RLock()
        _ACTIVE.add(self)

    # -- registration ------------------------------------------------------------------

    def temp_path(self, name: str) -> Path:
        """The hidden temp path for output ``name`` (registered for commit / abort).

        Asking twice for the same name returns the same path.

        Raises:
            ValueError: ``name`` is not a plain file name.
            OutputError: The outputs were already committed or aborted.
        """
        _check_name(name)
        with self._lock:
            self._require_open()
            if name not in self._temps:
                self._temps[name] = _temp_sibling(self.out_dir / name)
            return self._temps[name]

    def scratch_path(self, name: str) -> Path:
        """A hidden intermediate file next to the outputs, deleted at commit and at abort.

        For stages that need a file of their own (e.g. the raw class raster before
        post-processing); it is never moved onto a target.
        """
        _check_name(name)
        with self._lock:
            self._require_open()
            path = _temp_sibling(self.out_dir / name)
            self._scratch.append(path)
            return path

    def geotiff(
        self,
        name: str,
        grid: Grid,
        count: int,
        dtype: str,
        nodata: float | int | None,
        descriptions: Sequence[str],
        colormap: dict[int, tuple[int, int, int, int]] | None = None,
        block_px: int = 512,
        scratch: bool = False,
    ) -> GeoTiffWriter:
        """A :class:`GeoTiffWriter` on ``temp_path(name)``, tracked by these outputs.

        With ``scratch`` the file is a :meth:`scratch_path` instead: an intermediate that is
        deleted at commit rather than moved onto a target.

        A tracked writer still open at commit is closed (with overviews) first; on abort it
        is closed without overviews before its file is deleted (needed on Windows, where an
        open file cannot be deleted).
        """
        path = self.scratch_path(name) if scratch else self.temp_path(name)
        writer = GeoTiffWriter(path, grid, count, dtype, nodata, descriptions, colormap,
                               block_px)
        with self._lock:
            self._writers.append(writer)
        return writer

    @property
    def targets(self) -> tuple[Path, ...]:
        """Final paths of the registered outputs."""
        return tuple(self.out_dir / n for n in self._temps)

    @property
    def temp_paths(self) -> tuple[Path, ...]:
        """Temp paths of the registered outputs."""
        return tuple(self._temps.values())

    @property
    def state(self) -> str:
        """"open", "committed" or "aborted"."""
        return self._state

    # -- commit / abort ------------------------------------------------------------------

    def commit(self) -> list[Path]:
        """Move every temp file onto its final name.

        All temp files must exist; nothing is moved otherwise.

        Returns:
            The final paths, in registration order.

        Raises:
            OutputError: A temp file is missing (the output was never written), or a target
                appeared meanwhile and ``overwrite`` is False. The outputs are aborted.
        """
        with self._lock:
            self._require_open()
            try:
                for writer in self._writers:
                    writer.close()
            except BaseException:
                self.abort()
                raise
            missing = [n for n, p in self._temps.items() if not p.is_file()]
            if missing:
                self.abort()
                raise OutputError(
                    f"Output(s) {', '.join(missing)} were not written; nothing was saved.",
                    "See the preceding error; rerun the command.",
                )
            existing = [n for n in self._temps if (self.out_dir / n).exists()]
            if existing and not self.overwrite:
                self.abort()
                raise OutputError(
                    f"Output file(s) appeared in '{self.out_dir}' while running: "
                    f"{', '.join(existing)}; nothing was saved.",
                    "Pass --overwrite to replace them, or choose another --out-dir.",
                )
            finals: list[Path] = []
            try:
                for tmp in self._temps.values():
                    _fsync_file(tmp)
                for name, tmp in self._temps.items():
                    final = self.out_dir / name
                    os.replace(tmp, final)
                    finals.append(final)
            except OSError as exc:
                self.abort()
                raise OutputError(
                    f"Could not move outputs into '{self.out_dir}': {exc.strerror or exc}.",
                    "Check free space and permissions of the output directory.",
                ) from exc
            self._remove_scratch()
            _fsync_dir(self.out_dir)
            self._state = "committed"
            _ACTIVE.discard(self)
            return finals

    def abort(self) -> None:
        """Delete every temp file (and GDAL sidecars); leave targets untouched. Idempotent."""
        with self._lock:
            if self._state == "committed":
                return
            self._state = "aborted"
            for writer in list(self._writers):
                with contextlib.suppress(Exception):
                    writer.close(overviews=False)
            for tmp in list(self._temps.values()):
                _remove_with_sidecars(tmp)
            self._remove_scratch()
            _ACTIVE.discard(self)

    def _remove_scratch(self) -> None:
        for path in self._scratch:
            _remove_with_sidecars(path)

    def _require_open(self) -> None:
        if self._state != "open":
            raise OutputError(
                f"Outputs in '{self.out_dir}' were already {self._state}.",
                "Start a new AtomicOutputs for a new run.",
            )

    # -- context manager -----------------------------------------------------------------

    def __enter__(self) -> AtomicOutputs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._state == "open":
            self.commit()
        else:
            self.abort()


def abort_all() -> None:
    """Abort every uncommitted :class:`AtomicOutputs` of this process (for signal handlers)."""
    for outputs in list(_ACTIVE):
        outputs.abort()


# --------------------------------------------------------------------------- GeoTIFF


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
        try:
            self._ds = rasterio.open(self.path, "w", **profile)
        except (rasterio.errors.RasterioIOError, OSError) as exc:
            raise OutputError(
                f"Cannot create '{self.path}': {exc}.",
                "Check that the output directory exists and is writable.",
            ) from exc
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
        self._ds.write(arr.astype(self.dtype, copy=False), window=Window(col, row, w, h))

    def close(self, overviews: bool = True) -> None:
        """Build overviews (unless ``overviews`` is False) and close the file. Idempotent.

        Overviews are built block-wise by GDAL (average for float, nearest for integers),
        internal to the file, with the same tile size and compression.
        """
        if self._ds.closed:
            return
        try:
            factors = overview_factors(self.grid.height_px, self.grid.width_px)
            if overviews and factors:
                with rasterio.Env(
                    GDAL_TIFF_OVR_BLOCKSIZE=str(self._block_px),
                    GDAL_CACHEMAX=OVERVIEW_CACHE_MB,
                    GDAL_NUM_THREADS="2",
                    ZSTD_LEVEL_OVERVIEW="1",
                ):
                    self._ds.build_overviews(factors, self._resampling)
                    self._ds.update_tags(ns="rio_overview", resampling=self._resampling.name)
        finally:
            self._ds.close()

    def __enter__(self) -> GeoTiffWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(overviews=exc_type is None)


# --------------------------------------------------------------------------- PNG preview


def _hex_to_rgb(colour: str) -> tuple[int, int, int]:
    text = colour.strip().lstrip("#")
    if len(text) != 6:
        raise ValueError(f"Colour {colour!r} is not of the form '#rrggbb'.")
    return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))


def colormap_from_colours(colours: dict[int, str]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table ``{id: (r, g, b, 255)}`` from ``{id: "#rrggbb"}``; 0 transparent."""
    cmap: dict[int, tuple[int, int, int, int]] = {0: (0, 0, 0, 0)}
    for cid, colour in colours.items():
        if cid != 0:
            cmap[int(cid)] = (*_hex_to_rgb(colour), 255)
    return cmap


def write_preview_png(
    classes_tif: Path, png_path: Path, colours: dict[int, str], max_px: int = 1024
) -> None:
    """Write an RGBA PNG preview of a class raster, at most ``max_px`` on its longer side.

    The class raster is read decimated (nearest; overviews are used when present), class ids
    are coloured from ``colours`` ("#rrggbb"), 0 / nodata is transparent black and ids
    without a colour are opaque grey. The PNG is written to a temp file and moved into place.

    Args:
        classes_tif: Single-band class raster (e.g. classes.tif).
        png_path: PNG to write (replaced if it exists).
        colours: Colour per class id.
        max_px: Maximum width / height of the preview.

    Raises:
        OutputError: The PNG cannot be written.
    """
    if max_px < 1:
        raise ValueError(f"max_px must be >= 1, got {max_px}.")
    png_path = Path(png_path)
    with rasterio.open(classes_tif) as src:
        scale = max(src.height / max_px, src.width / max_px, 1.0)
        out_h = max(1, int(round(src.height / scale)))
        out_w = max(1, int(round(src.width / scale)))
        ids = src.read(1, out_shape=(out_h, out_w), resampling=Resampling.nearest)
        nodata = src.nodata
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[1:] = (128, 128, 128, 255)
    for cid, colour in colours.items():
        if 0 < int(cid) < 256:
            lut[int(cid)] = (*_hex_to_rgb(colour), 255)
    idx = np.clip(ids.astype(np.int64), 0, 255)
    rgba = lut[idx]
    transparent = ids == 0
    if nodata is not None:
        transparent |= ids == nodata
    rgba[transparent] = 0
    rgba = np.moveaxis(rgba, -1, 0)  # (4, h, w)

    tmp = _temp_sibling(png_path)
    try:
        with warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED="NO"):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(
                tmp, "w", driver="PNG", width=out_w, height=out_h, count=4, dtype="uint8"
            ) as dst:
                dst.write(rgba)
        os.replace(tmp, png_path)
    except (rasterio.errors.RasterioError, OSError) as exc:
        _remove_with_sidecars(tmp)
        raise OutputError(
            f"Cannot write preview '{png_path}': {exc}.",
            "Check that the output directory is writable and has free space.",
        ) from exc
    except BaseException:
        _remove_with_sidecars(tmp)
        raise
