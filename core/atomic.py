"""Atomic outputs: files appear complete under their final names, or not at all.

Every output is first written to a hidden temporary file in the output directory (same
filesystem) and moved onto its final name with :func:`os.replace` only when the whole run
succeeded. A failed, interrupted or cancelled run therefore leaves nothing half-written at
the target paths, and an existing target is never touched unless the run completes with
``overwrite`` set.

Typical use::

    check_output_dir(out_dir, ["probability.tif", "classes.tif"], overwrite)  # before any work
    with AtomicOutputs(out_dir, overwrite) as outputs:
        writer = outputs.geotiff("classes.tif", grid, 1, "uint8", 0, ["class"])
        for window, block in blocks:
            writer.write(block, window)
        writer.close()
    # committed here; an exception inside the block removes every temp file instead.

Single files (a model, a CSV, a VRT) use :func:`atomic_path` or :func:`write_csv_atomic`.
Callers that install a SIGTERM handler can call :func:`abort_all` (or ``outputs.abort()``)
from it, or simply raise ``SystemExit`` so the context manager aborts. Checking the targets
before the work is :mod:`terraseg.core.output_targets`.

Temp files carry the owning process in their names (:mod:`terraseg.core.scratch`); the
first outputs written into a folder remove the scratch files of runs that were killed.
A write that fails because the disk is full ends as an ``OutputError`` naming the folder.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from terraseg.core.geotiff import GDAL_WRITE_ERRORS, GeoTiffWriter, disk_nearly_full
from terraseg.core.grid import Grid
from terraseg.core.output_targets import check_output_name, is_disk_full, write_error
from terraseg.core.scratch import PARTIAL_SUFFIX, remove_stale_scratch, temp_sibling
from terraseg.protocol.errors import OutputError, TerraSegError

__all__ = ["PARTIAL_SUFFIX", "AtomicOutputs", "abort_all", "atomic_path", "remove_with_sidecars",
           "temp_sibling", "write_csv_atomic"]

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
    on any exception it is deleted (with GDAL/SQLite sidecars) and ``path`` is left
    untouched. ``suffix`` lets writers that choose the format by extension (GeoPackage)
    see it. Stale scratch files of killed runs in the folder are removed first.

    Raises:
        OutputError: The disk is full.
    """
    path = Path(path)
    remove_stale_scratch(path.parent)
    tmp = temp_sibling(path, "" if suffix == PARTIAL_SUFFIX else suffix)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        remove_with_sidecars(tmp)
        if isinstance(exc, Exception) and not isinstance(exc, OutputError) \
                and is_disk_full(exc):
            raise write_error(tmp, exc) from exc
        raise


def write_csv_atomic(path: str | Path, rows: list[dict], fieldnames: Sequence[str]) -> None:
    """Write ``rows`` as CSV with a header, atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------- atomic commit


def remove_with_sidecars(path: Path) -> None:
    """Delete ``path`` and any GDAL sidecars (``path.aux.xml``, ``path.ovr``, ...)."""
    candidates = [path, *path.parent.glob(f"{glob.escape(path.name)}.*"),
                  *path.parent.glob(f"{glob.escape(path.name)}-*")]  # SQLite -journal, -wal
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
    if os.name == "posix":  # directories cannot be opened for fsync elsewhere
        _fsync_file(path)


class AtomicOutputs:
    """Context manager that commits a set of outputs all together, or none at all.

    Inside the ``with`` block, write each output to ``temp_path(name)``. On a normal exit
    every temp file is fsynced and moved onto ``out_dir/name`` with :func:`os.replace`. On any
    exception (including ``KeyboardInterrupt`` and ``SystemExit``) every temp file is deleted
    and existing targets are left untouched. ``commit()`` and ``abort()`` can also be called
    directly; ``abort()`` is idempotent and safe to call from a signal handler.

    Args:
        out_dir: Output directory (must exist; see
            :func:`~terraseg.core.output_targets.check_output_dir`).
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
        remove_stale_scratch(self.out_dir)

    # -- registration ------------------------------------------------------------------

    def temp_path(self, name: str) -> Path:
        """The hidden temp path for output ``name`` (registered for commit / abort).

        Asking twice for the same name returns the same path.

        Raises:
            ValueError: ``name`` is not a plain file name.
            OutputError: The outputs were already committed or aborted.
        """
        check_output_name(name)
        with self._lock:
            self._require_open()
            if name not in self._temps:
                self._temps[name] = temp_sibling(self.out_dir / name)
            return self._temps[name]

    def scratch_path(self, name: str) -> Path:
        """A hidden intermediate file next to the outputs, deleted at commit and at abort.

        For stages that need a file of their own (e.g. the raw class raster before
        post-processing); it is never moved onto a target.
        """
        check_output_name(name)
        with self._lock:
            self._require_open()
            path = temp_sibling(self.out_dir / name)
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
                    writer.discard()
            for tmp in list(self._temps.values()):
                remove_with_sidecars(tmp)
            self._remove_scratch()
            _ACTIVE.discard(self)

    def _remove_scratch(self) -> None:
        for path in self._scratch:
            remove_with_sidecars(path)

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
            return
        error = None
        # a failed write on a full disk (named before the abort frees the space)
        if isinstance(exc, Exception) and not isinstance(exc, TerraSegError):
            if is_disk_full(exc) or (isinstance(exc, GDAL_WRITE_ERRORS)
                                     and disk_nearly_full(self.out_dir)):
                names = ", ".join(f"'{n}'" for n in self._temps) or "the outputs"
                full = (exc if is_disk_full(exc)
                        else OSError(errno.ENOSPC, f"No space left on device ({exc})"))
                error = write_error(self.out_dir / "outputs", full, what=names)
        self.abort()
        if error is not None:
            raise error from exc


def abort_all() -> None:
    """Abort every uncommitted :class:`AtomicOutputs` of this process (for signal handlers)."""
    for outputs in list(_ACTIVE):
        outputs.abort()
