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
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

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


def _listing(paths: Sequence[Path]) -> str:
    """``a, b in 'folder'`` when the paths share a folder, else the full paths."""
    folders = {p.parent for p in paths}
    if len(folders) == 1:
        return f"{', '.join(p.name for p in paths)} in '{paths[0].parent}'"
    return ", ".join(f"'{p}'" for p in paths)
