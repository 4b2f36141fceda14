"""Zarr v3 cache of image bands and labels, keyed by fingerprints of the inputs.

Layout of ``<cache_dir>/<raster_fingerprint>.zarr``:

- ``image``  float32 (C, H, W), chunks (C, 256, 256), Blosc-zstd compressed: raw band values.
- ``valid``  bool (H, W): pixel valid (not nodata) in every mapped band.
- ``filled`` uint8 (H/256, W/256): 1 where the chunk has been read from the raster.
- ``labels/<label_fingerprint>/labels|regions``: rasterised labels on the same grid.

Next to it, ``<raster_fingerprint>.checksums.json`` holds a BLAKE2b checksum of every
filled chunk (its index, shape, band values and valid mask), replaced atomically. A chunk
is checked against it the first time a cache object uses it; one that is missing,
unreadable, moved or changed is read again from the raster, rewritten and counted in a
warning. A chunk never filled is no error: it is read from the raster when first needed.

Chunks are read from the raster only when a training patch needs them, so retraining after
new labels reads just the chunks the new labels touch. The raster fingerprint covers the
file's path, size and modification time plus the band mapping, so an edited raster gets a
new cache entry.

The cache folder is ``--cache-dir``, else ``$TERRASEG_CACHE``, else ``~/.cache/terraseg``
(:func:`resolve_cache_dir`). A folder the user chose must be writable (else OutputError);
the default falls back to a private folder in the system's temporary folder, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import zarr
from rasterio.windows import Window
from zarr.codecs import BloscCodec

from terraseg.core.label_set import LabelSet
from terraseg.core.raster import RasterSource
from terraseg.protocol.errors import OutputError

CHUNK_PX = 256
_COMPRESSORS = (BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),)
_CHECKSUM_VERSION = 1

LogFn = Callable[[str, str], None]
"""``Reporter.log``: (message, level)."""


# ------------------------------------------------------------------------ cache location


def default_cache_dir() -> Path:
    """``$TERRASEG_CACHE`` or ``~/.cache/terraseg`` (not checked: see resolve_cache_dir)."""
    env = os.environ.get("TERRASEG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "terraseg"


def write_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot hold the cache (created if missing), or None when it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return "it is a file, not a folder"
    except NotADirectoryError:
        return "a part of its path is a file, not a folder"
    except OSError as exc:
        return f"it cannot be created: {exc.strerror or exc}"
    try:
        fd, probe = tempfile.mkstemp(prefix=".terraseg-write-test-", dir=folder)
    except OSError as exc:
        return f"it is not writable: {exc.strerror or exc}"
    os.close(fd)
    os.unlink(probe)
    return None


def _home_cache_dir() -> tuple[Path | None, str | None]:
    """``~/.cache/terraseg`` and why it cannot be used (None when it can)."""
    if os.environ.get("HOME") == "":  # Path.home() would say "/"
        return None, "the home folder is unknown (HOME is empty)"
    try:
        home = Path.home()
    except (RuntimeError, KeyError):  # no HOME and no password-database entry
        return None, "the home folder is unknown (HOME is not set)"
    if not home.is_absolute():  # HOME="" would put the cache in the working folder
        return None, f"the home folder '{home}' is not an absolute path"
    folder = home / ".cache" / "terraseg"
    return folder, write_problem(folder)


def _temp_cache_dir() -> Path | None:
    """A cache folder of this user's own in the system's temporary folder, or None.

    The shared temporary folder may hold a folder of that name made by someone else: it is
    used only when this user owns it and nobody else may write to it; otherwise a fresh
    private folder is made (a cache for this run only).
    """
    uid = os.getuid() if hasattr(os, "getuid") else None
    folder = Path(tempfile.gettempdir()) / f"terraseg-cache-{uid if uid is not None else 'user'}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.lstat()
        private = (stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o022
                   and (uid is None or st.st_uid == uid))
        if private and write_problem(folder) is None:
            return folder
        return Path(tempfile.mkdtemp(prefix="terraseg-cache-"))
    except OSError:
        return None


def resolve_cache_dir(cache_dir: str | Path | None = None, log: LogFn | None = None) -> Path:
    """The folder a run caches in, created and checked writable.

    Args:
        cache_dir: ``--cache-dir``; None for ``$TERRASEG_CACHE`` or ``~/.cache/terraseg``.
        log: Where the fallback warning goes.

    Raises:
        OutputError: ``--cache-dir`` or ``$TERRASEG_CACHE`` is not a writable folder (a
            folder the user chose never falls back), or no folder at all can be written.
    """
    if cache_dir:
        folder = Path(cache_dir)
        problem = write_problem(folder)
        if problem:
            raise OutputError(f"The cache folder --cache-dir {folder} cannot be used: {problem}.",
                              "Pass --cache-dir a folder you can write to.")
        return folder
    env = os.environ.get("TERRASEG_CACHE")
    if env:
        folder = Path(env)
        problem = write_problem(folder)
        if problem:
            raise OutputError(
                f"The cache folder TERRASEG_CACHE={folder} cannot be used: {problem}.",
                "Set TERRASEG_CACHE to a folder you can write to, or pass --cache-dir.")
        return folder
    home, problem = _home_cache_dir()
    if home is not None and problem is None:
        return home
    where = f"{home} ({problem})" if home is not None else f"in the home folder: {problem}"
    fallback = _temp_cache_dir()
    if fallback is None:
        raise OutputError(f"No folder for the training cache: {where}, and the temporary "
                          f"folder {tempfile.gettempdir()} cannot be written either.",
                          "Pass --cache-dir a folder you can write to.")
    if log is not None:
        log(f"the default cache folder cannot be used: {where}; caching in {fallback} "
            "instead (pass --cache-dir or set TERRASEG_CACHE to keep the cache elsewhere)",
            "warning")
    return fallback


# ------------------------------------------------------------------------ fingerprints


def raster_fingerprint(source: RasterSource) -> str:
    """Stable key of a raster file's content version and band mapping."""
    p = Path(source.path)
    parts: dict[str, object] = {"path": str(p.resolve()) if p.exists() else source.path,
                                "bands": list(source.bands.indices)}
    if p.exists():
        st = p.stat()
        parts.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
    parts["grid"] = [source.grid.height_px, source.grid.width_px, list(source.grid.transform)]
    if getattr(source, "nodata_override", None) is not None:
        parts["nodata"] = source.nodata_override  # another validity mask
    spec = getattr(source, "spec", None)
    if spec is not None:
        parts["features"] = spec.to_dict()
    for extra in getattr(source, "extras", ()):
        ep = Path(extra.path)
        st = ep.stat() if ep.exists() else None
        parts.setdefault("extras", []).append(  # type: ignore[union-attr]
            [extra.name, extra.derivation, str(ep.resolve()), st.st_size if st else 0,
             st.st_mtime_ns if st else 0])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def chunk_checksum(by: int, bx: int, data: np.ndarray, valid: np.ndarray) -> str:
    """BLAKE2b of one chunk: its index and shape, band values and valid mask.

    The index is hashed too, so valid data of another chunk moved into this place fails.

    Shape:
        data: (C, h, w) float32; valid: (h, w) bool.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(np.array([by, bx, *data.shape], dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(data, dtype="<f4"))
    h.update(np.ascontiguousarray(valid, dtype=bool))
    return h.hexdigest()


# ------------------------------------------------------------------------ the cache

_REASONS = {"changed": "changed or missing since cached", "unreadable": "unreadable",
            "unrecorded": "without a recorded checksum"}


class ImageCache:
    """Lazily filled chunked copy of a raster's mapped bands, checked chunk by chunk.

    Args:
        source: The raster to cache.
        cache_dir: Folder holding the cache stores (``--cache-dir``); None for the default
            (see :func:`resolve_cache_dir`).
        log: ``Reporter.log`` for warnings (fallback folder, chunks rebuilt).

    Raises:
        OutputError: The cache folder or store cannot be written.
    """

    def __init__(self, source: RasterSource, cache_dir: str | Path | None = None,
                 log: LogFn | None = None) -> None:
        self.source = source
        self._log = log
        self.fingerprint = raster_fingerprint(source)
        folder = resolve_cache_dir(cache_dir, log)
        self.path = folder / f"{self.fingerprint}.zarr"
        self.checksum_path = folder / f"{self.fingerprint}.checksums.json"
        self.group = self._open_store()
        self.image = self.group["image"]
        self.valid = self.group["valid"]
        try:
            self._filled = np.asarray(self.group["filled"][...]).astype(np.uint8)
        except Exception:  # noqa: BLE001 - a damaged record: every chunk counts as unfilled
            self._filled = np.zeros(self.group["filled"].shape, dtype=np.uint8)
        self._verified = np.zeros(self._filled.shape, dtype=bool)
        self._checksums = self._load_checksums()
        self.chunks_read = 0
        self.chunks_rebuilt = 0

    # -------------------------------------------------------------------- the store

    def _open_store(self) -> zarr.Group:
        """Open (or create) the store; one that is damaged or of another layout is rebuilt."""
        try:
            return self._open_group()
        except PermissionError as exc:
            raise self._write_error(exc) from exc
        except Exception as exc:  # noqa: BLE001 - zarr reports damaged metadata in many ways
            self._warn(f"cache store {self.path} cannot be read ({type(exc).__name__}: "
                       f"{exc}); building it again")
        self._discard_store()
        try:
            return self._open_group()
        except OSError as exc:
            raise self._write_error(exc) from exc

    def _open_group(self) -> zarr.Group:
        g, c = self.source.grid, self.source.count
        nby, nbx = -(-g.height_px // CHUNK_PX), -(-g.width_px // CHUNK_PX)
        layout = {"image": ((c, g.height_px, g.width_px), (c, CHUNK_PX, CHUNK_PX), "float32"),
                  "valid": ((g.height_px, g.width_px), (CHUNK_PX, CHUNK_PX), "bool"),
                  "filled": ((nby, nbx), (nby, nbx), "uint8")}
        fill = {"image": {"fill_value": 0.0, "compressors": _COMPRESSORS},
                "valid": {"fill_value": False, "compressors": _COMPRESSORS},
                "filled": {"fill_value": 0}}
        group = zarr.open_group(store=str(self.path), mode="a")
        if not any(name in group for name in layout):
            for name, (shape, chunks, dtype) in layout.items():
                group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, **fill[name])
            group.attrs.update(source=self.source.path, bands=list(self.source.bands.indices),
                               band_names=list(self.source.bands.names))
            return group
        for name, (shape, chunks, dtype) in layout.items():
            arr = group[name]
            if (not isinstance(arr, zarr.Array) or arr.shape != shape or arr.chunks != chunks
                    or arr.dtype != np.dtype(dtype)):
                raise ValueError(f"array '{name}' is not the expected {dtype} {shape}")
        return group

    def _discard_store(self) -> None:
        try:
            if self.path.is_dir() and not self.path.is_symlink():
                shutil.rmtree(self.path)
            else:
                self.path.unlink(missing_ok=True)
            self.checksum_path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._write_error(exc) from exc

    def _write_error(self, exc: OSError) -> OutputError:
        return OutputError(f"Cannot write the training cache {self.path}: "
                           f"{exc.strerror or exc}.",
                           "Free disk space, fix the folder's permissions, or pass --cache-dir "
                           "a writable folder.")

    def _warn(self, message: str) -> None:
        if self._log is not None:
            self._log(message, "warning")

    # -------------------------------------------------------------------- checksums

    def _load_checksums(self) -> dict[tuple[int, int], str]:
        """The recorded chunk checksums; an unreadable or foreign record counts as none."""
        try:
            record = json.loads(self.checksum_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none yet, unreadable or not JSON
            return {}
        if (not isinstance(record, dict) or record.get("version") != _CHECKSUM_VERSION
                or record.get("fingerprint") != self.fingerprint
                or record.get("chunk_px") != CHUNK_PX
                or not isinstance(record.get("chunks"), dict)):
            return {}
        out = {}
        for key, digest in record["chunks"].items():
            try:
                by, bx = (int(v) for v in str(key).split(","))
            except ValueError:
                continue
            if isinstance(digest, str):
                out[by, bx] = digest
        return out

    def _save_index(self, touched: set[tuple[int, int]]) -> None:
        """Write the checksums (atomically) and then the filled map.

        Entries another process recorded meanwhile for chunks this one did not touch are
        kept, so two runs on one raster do not wipe each other's record.
        """
        merged = {k: v for k, v in self._load_checksums().items() if k not in touched}
        merged.update(self._checksums)
        self._checksums = merged
        record = {"version": _CHECKSUM_VERSION, "fingerprint": self.fingerprint,
                  "chunk_px": CHUNK_PX, "algorithm": "blake2b-128",
                  "chunks": {f"{by},{bx}": d for (by, bx), d in sorted(merged.items())}}
        tmp = self.checksum_path.with_name(f".{self.checksum_path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(record, separators=(",", ":")), encoding="utf-8")
            os.replace(tmp, self.checksum_path)
            self.group["filled"][...] = self._filled
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._write_error(exc) from exc

    # -------------------------------------------------------------------- chunks

    def _chunk_range(self, window: Window) -> Iterator[tuple[int, int]]:
        g = self.source.grid
        r0, c0 = max(int(window.row_off), 0), max(int(window.col_off), 0)
        r1 = min(int(window.row_off + window.height), g.height_px)
        c1 = min(int(window.col_off + window.width), g.width_px)
        if r1 <= r0 or c1 <= c0:
            return
        for by in range(r0 // CHUNK_PX, (r1 - 1) // CHUNK_PX + 1):
            for bx in range(c0 // CHUNK_PX, (c1 - 1) // CHUNK_PX + 1):
                yield by, bx

    def _chunk_window(self, by: int, bx: int) -> tuple[int, int, int, int]:
        g = self.source.grid
        y0, x0 = by * CHUNK_PX, bx * CHUNK_PX
        return y0, x0, min(CHUNK_PX, g.height_px - y0), min(CHUNK_PX, g.width_px - x0)

    def _chunk_problem(self, by: int, bx: int) -> str | None:
        """Why the filled chunk (by, bx) cannot be trusted, or None when it matches."""
        want = self._checksums.get((by, bx))
        if want is None:
            return "unrecorded"
        y0, x0, h, w = self._chunk_window(by, bx)
        try:
            data = self.image[:, y0 : y0 + h, x0 : x0 + w]
            valid = self.valid[y0 : y0 + h, x0 : x0 + w]
        except Exception:  # noqa: BLE001 - damaged bytes fail inside any codec
            return "unreadable"
        return None if chunk_checksum(by, bx, data, valid) == want else "changed"

    def _fill_chunk(self, by: int, bx: int) -> None:
        y0, x0, h, w = self._chunk_window(by, bx)
        data, valid = self.source.read(Window(x0, y0, w, h))
        data = np.ascontiguousarray(data, dtype=np.float32)
        valid = np.ascontiguousarray(valid, dtype=bool)
        try:
            self.image[:, y0 : y0 + h, x0 : x0 + w] = data
            self.valid[y0 : y0 + h, x0 : x0 + w] = valid
        except OSError as exc:
            raise self._write_error(exc) from exc
        self._checksums[by, bx] = chunk_checksum(by, bx, data, valid)
        self._filled[by, bx] = 1
        self._verified[by, bx] = True
        self.chunks_read += 1

    def _sync(self, window: Window, fill: bool) -> None:
        """Check the filled chunks ``window`` touches (once each); rebuild what fails.

        With ``fill``, chunks never filled are read from the raster too.
        """
        failed: Counter[str] = Counter()
        touched: set[tuple[int, int]] = set()
        for by, bx in self._chunk_range(window):
            if self._verified[by, bx]:
                continue
            if self._filled[by, bx]:
                problem = self._chunk_problem(by, bx)
                if problem is None:
                    self._verified[by, bx] = True
                    continue
                failed[problem] += 1
            elif not fill:
                continue
            self._fill_chunk(by, bx)
            touched.add((by, bx))
        if touched:
            self._save_index(touched)
        if failed:
            n = sum(failed.values())
            self.chunks_rebuilt += n
            why = ", ".join(f"{k} {_REASONS[r]}" for r, k in sorted(failed.items()))
            self._warn(f"cache {self.path}: rebuilt {n} chunk(s) from the raster ({why})")

    def ensure(self, window: Window) -> None:
        """Make every chunk ``window`` touches cached and checked.

        Chunks not cached yet are read from the raster; cached ones are checked against
        their checksum the first time this object uses them, and rebuilt when they fail.
        """
        self._sync(window, fill=True)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a (possibly out-of-bounds) window from the cache; ensure() it first.

        Cached chunks not checked yet by this object are checked (and rebuilt) first;
        chunks never filled read as 0 / False.

        Returns:
            data float32 (C, H, W) and valid bool (H, W); outside the raster: 0 / False.
        """
        self._sync(window, fill=False)
        g = self.source.grid
        row0, col0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        data = np.zeros((self.source.count, h, w), dtype=np.float32)
        valid = np.zeros((h, w), dtype=bool)
        r0, c0 = max(row0, 0), max(col0, 0)
        r1, c1 = min(row0 + h, g.height_px), min(col0 + w, g.width_px)
        if r1 > r0 and c1 > c0:
            data[:, r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = self.image[:, r0:r1, c0:c1]
            valid[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = self.valid[r0:r1, c0:c1]
        return data, valid

    def store_labels(self, labels: LabelSet) -> None:
        """Keep a rasterised label set next to the image (keyed by its fingerprint)."""
        name = f"labels/{labels.fingerprint[:24]}"
        if name in self.group:
            return
        try:
            sub = self.group.require_group(name)
            for key in ("labels", "regions"):
                arr = getattr(labels, key)
                sub.create_array(key, shape=arr.shape, chunks=(CHUNK_PX, CHUNK_PX),
                                 dtype=arr.dtype, fill_value=0, compressors=_COMPRESSORS)
                sub[key][...] = arr
            sub.attrs.update(classes=[c.to_dict() for c in labels.classes],
                             pixel_counts=labels.pixel_counts)
        except OSError as exc:
            raise self._write_error(exc) from exc
