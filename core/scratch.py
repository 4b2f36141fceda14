"""Scratch files: hidden, named after their output and the process that owns them.

Outputs are written to a hidden scratch file beside their target and renamed onto it at the
end (core/atomic.py). A process killed with SIGKILL (or a crash) cannot delete its scratch
files, so each name carries its owner - a tag of the host and the process id::

    .classes.tif.3f9a1c-48213-5be0c2a19f7d.partial        (GDAL may add .aux.xml, .ovr)
    .zones.gpkg.3f9a1c-48213-0c11aa9e3b42.partial.gpkg    (a writer that needs .gpkg)

The first run that writes into a folder removes the scratch files there whose process has
ended (:func:`remove_stale_scratch`), never those of a live process or of another host
(a shared network folder), and logs what it removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import socket
import threading
from pathlib import Path

PARTIAL_SUFFIX = ".partial"

log = logging.getLogger(__name__)

_NAME = re.compile(
    r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{12}"
    + re.escape(PARTIAL_SUFFIX))
_CLEANED: set[str] = set()
_CLEAN_LOCK = threading.Lock()


def host_tag() -> str:
    """Six hex digits naming this machine (so a shared folder's other hosts are left alone)."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def owner_tag() -> str:
    """``<host>-<pid>``: who owns the scratch files this process creates."""
    return f"{host_tag()}-{os.getpid()}"


def scratch_name(final_name: str, suffix: str = "") -> str:
    """A fresh hidden name for a scratch file of ``final_name`` (``suffix`` appended)."""
    return f".{final_name}.{owner_tag()}-{secrets.token_hex(6)}{PARTIAL_SUFFIX}{suffix}"


def temp_sibling(final: Path, suffix: str = "") -> Path:
    """A hidden scratch path next to ``final``, owned by this process."""
    return final.parent / scratch_name(final.name, suffix)


def final_name(path: str | Path) -> str:
    """The output a scratch file stands for (``classes.tif``); other names as they are."""
    name = Path(path).name
    match = _NAME.match(name)
    return match["name"] if match else name


def scratch_owner(path: str | Path) -> tuple[str, int] | None:
    """(host tag, process id) of a scratch file's owner; None for any other file."""
    match = _NAME.match(Path(path).name)
    return (match["host"], int(match["pid"])) if match else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (when unsure: True, so nothing is lost).

    A zombie (ended, not yet reaped by its parent) counts as ended.
    """
    if pid <= 0 or pid == os.getpid():
        return True
    if os.name == "nt":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2] in "ZX":  # zombie or dead
            return False
    return True


def _windows_pid_alive(pid: int) -> bool:  # pragma: no cover - Windows only
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def remove_stale_scratch(folder: str | Path, once: bool = True) -> list[str]:
    """Delete scratch files in ``folder`` whose owning process has ended; log them.

    Only files named by :func:`scratch_name` on this host count; a live owner's files
    (this process included) are kept. With ``once``, each folder is swept once per process.

    Returns:
        The names removed.
    """
    folder = Path(folder)
    key = os.path.abspath(folder)
    with _CLEAN_LOCK:
        if once and key in _CLEANED:
            return []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # not there (yet): swept when it is
        return []
    with _CLEAN_LOCK:
        _CLEANED.add(key)
    host, alive = host_tag(), {}
    removed: list[str] = []
    size = 0
    for entry in entries:
        owner = scratch_owner(entry.name)
        if owner is None or owner[0] != host:
            continue
        pid = owner[1]
        if pid not in alive:
            alive[pid] = pid_alive(pid)
        if alive[pid]:
            continue
        with contextlib.suppress(OSError):
            if not entry.is_file(follow_symlinks=False):
                continue
            size += entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)
            removed.append(entry.name)
    if removed:
        pids = sorted({scratch_owner(n)[1] for n in removed})  # type: ignore[index]
        log.warning("removed %d stale scratch file(s) (%d bytes) of ended TerraSeg run(s) "
                    "(process %s) in '%s': %s", len(removed), size,
                    ", ".join(map(str, pids)), folder, ", ".join(sorted(removed)))
    return removed
