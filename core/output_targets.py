"""Output targets: can a run write its files where it was asked to? Checked before any work.

Every command that writes files (train, predict, evaluate, rasterise, vectorise, areas,
mosaic, cv, grid, compare) calls :func:`check_output_targets` (or its folder form
:func:`check_output_dir`) before it starts, so a wrong path fails at once instead of after
hours of training. One rule serves them all:

- the folder of each target is created when missing; it must be a directory and writable
  (tested by actually creating, then removing, a file in it);
- a target must not be a directory;
- a target must not exist unless ``overwrite`` is set.

Each failure is an :class:`~terraseg.protocol.errors.OutputError` whose hint names the
command's option (``--out``, ``--out-dir``, ...). Writing itself is atomic; see
:mod:`terraseg.core.atomic`.

Large outputs also check the disk's free space before they start (:func:`check_free_space`),
and a write that fails because the disk is full becomes an ``OutputError`` naming the
folder, the free space and the fix (:func:`is_disk_full`, :func:`write_error`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from terraseg.core.scratch import final_name
from terraseg.protocol.errors import OutputError


def check_output_targets(
    paths: Iterable[str | Path], overwrite: bool, option: str = "--out"
) -> None:
    """Make sure every file in ``paths`` can be written; call this before doing any work.

    Creates each target's folder (and its parents) when missing.

    Args:
        paths: Files the run will write.
        overwrite: Whether existing files may be replaced.
        option: The command-line option that names the targets, for the hints
            (e.g. "--out", "--out-dir").

    Raises:
        OutputError: A folder cannot be created, is not a directory or is not writable, a
            target is a directory, or targets exist and ``overwrite`` is False.
    """
    targets = [Path(p) for p in paths]
    for folder in dict.fromkeys(t.parent for t in targets):
        ensure_output_folder(folder, option)
    dirs = [t for t in targets if t.is_dir()]
    if dirs:
        raise OutputError(
            f"Output path(s) {_listing(dirs)} are directories.",
            f"Remove or rename them, or choose another {option}.",
        )
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        if len(existing) == 1:
            message = f"Output file '{existing[0]}' already exists."
        else:
            message = f"Each of the output files {_listing(existing)} already exists."
        pronoun = "it" if len(existing) == 1 else "them"
        raise OutputError(message, f"Pass --overwrite to replace {pronoun}, or choose another "
                                   f"{option}.")


def check_output_dir(
    out_dir: str | Path, names: Sequence[str], overwrite: bool, option: str = "--out-dir"
) -> None:
    """The folder form of :func:`check_output_targets`: files ``names`` in ``out_dir``.

    Creates ``out_dir`` (and its parents) when missing.

    Args:
        out_dir: Output directory.
        names: File names (no directories) that the run will write into ``out_dir``.
        overwrite: Whether existing files of those names may be replaced.
        option: The command-line option that names ``out_dir``, for the hints.

    Raises:
        ValueError: A name is not a plain file name.
        OutputError: As :func:`check_output_targets`.
    """
    out_dir = Path(out_dir)
    for name in names:
        check_output_name(name)
    if not names:
        ensure_output_folder(out_dir, option)
    check_output_targets([out_dir / n for n in names], overwrite, option)


def ensure_output_folder(folder: Path, option: str) -> None:
    """Create ``folder`` when missing; it must be a writable directory.

    Raises:
        OutputError: It is not a directory, cannot be created or is not writable.
    """
    if folder.exists() and not folder.is_dir():
        raise OutputError(
            f"Output folder '{folder}' exists but is not a directory.",
            f"Choose another {option} (its folder must be a directory, or not exist yet).",
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Output folder '{folder}' cannot be created: {exc.strerror or exc}.",
            f"Choose an {option} in a location you can write to.",
        ) from exc
    if not dir_writable(folder):
        raise OutputError(
            f"Output folder '{folder}' is not writable.",
            f"Choose an {option} you can write to, or change the folder's permissions.",
        )


def check_output_name(name: str) -> None:
    """Refuse an output name that is not a plain file name.

    Raises:
        ValueError: ``name`` is empty, ``.``/``..`` or contains a directory.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"Output name {name!r} must be a plain file name.")


def dir_writable(path: Path) -> bool:
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


#: errno values of a full disk (or quota, or a file larger than the file system allows).
DISK_FULL_ERRNOS = frozenset(
    e for e in (getattr(errno, n, None) for n in ("ENOSPC", "EDQUOT", "EFBIG")) if e is not None)
#: The words GDAL and libtiff use for the same failures (their errors carry no errno).
DISK_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "file too large",
                   "not enough space", "there is not enough space on the disk")


def free_bytes(folder: str | Path) -> int | None:
    """Bytes this user may still write in ``folder``'s file system (None: unknown)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def format_bytes(n: int | float) -> str:
    """``1536`` -> ``1.5 KB``; powers of 1024 with one decimal."""
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover - the loop always returns


def check_free_space(folder: str | Path, need_bytes: int, what: str,
                     option: str = "--out-dir") -> None:
    """Refuse to start when ``folder``'s disk has less free space than ``need_bytes``.

    Args:
        folder: Where the files go.
        need_bytes: Estimated size of everything the run writes there (an upper bound).
        what: The files, for the message (e.g. "probability.tif and classes.tif").
        option: The option that names ``folder``, for the hint.

    Raises:
        OutputError: The free space is smaller than ``need_bytes``.
    """
    free = free_bytes(folder)
    if free is None or free >= need_bytes:
        return
    raise OutputError(
        f"Not enough free space for {what} in '{folder}': they need up to "
        f"{format_bytes(need_bytes)} (uncompressed, with overviews), the disk has "
        f"{format_bytes(free)} free.",
        f"Free at least {format_bytes(need_bytes - free)} on that disk, choose an {option} "
        f"on a disk with more space, or process a smaller area (--window, --extent-layer).")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the disk is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        if any(t in str(current).lower() for t in DISK_FULL_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


def write_error(path: str | Path, exc: BaseException, doing: str = "writing",
                what: str | None = None) -> OutputError:
    """The :class:`OutputError` for a failed write of ``path``: a full disk, or another cause.

    A full disk names the folder, its free space now and the fix; anything else names the
    file and the underlying error. ``what`` names the output(s) instead of ``path``.
    """
    path = Path(path)
    final = what or display_name(path)
    if is_disk_full(exc):
        free = free_bytes(path.parent)
        now = f" ({format_bytes(free)} free when it failed)" if free is not None else ""
        return OutputError(
            f"The disk of '{path.parent}' is full{now}: {doing} {final} failed; "
            f"nothing was saved.",
            "Free space on that disk, or write the outputs to a folder on another disk, "
            "then run again.")
    detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return OutputError(
        f"{doing.capitalize()} {final} in '{path.parent}' failed: {detail}; nothing was saved.",
        "Check that the output folder's disk has free space and is writable, then run "
        "again.")


def display_name(path: Path) -> str:
    """The output's own name for a message: ``'classes.tif'`` for its hidden temp file."""
    return f"'{final_name(path)}'"


def _listing(paths: Sequence[Path]) -> str:
    """``a, b in 'folder'`` when the paths share a folder, else the full paths."""
    folders = {p.parent for p in paths}
    if len(folders) == 1:
        return f"{', '.join(p.name for p in paths)} in '{paths[0].parent}'"
    return ", ".join(f"'{p}'" for p in paths)
