"""Zarr v3 cache of image bands and labels, keyed by fingerprints of the inputs.

Layout of ``<cache_dir>/<raster_fingerprint>.zarr``:

- ``image``  float32 (C, H, W), chunks (C, 256, 256), Blosc-zstd compressed: raw band values.
- ``valid``  bool (H, W): pixel valid (not nodata) in every mapped band.
- ``filled`` uint8 (H/256, W/256): 1 where the chunk has been read from the raster.
- ``labels/<label_fingerprint>/labels|regions``: rasterised labels on the same grid.

Chunks are read from the raster only when a training patch needs them, so retraining after
new labels reads just the chunks the new labels touch. The raster fingerprint covers the
file's path, size and modification time plus the band mapping, so an edited raster gets a
new cache entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import zarr
from rasterio.windows import Window
from zarr.codecs import BloscCodec

from terraseg.core.label_set import LabelSet
from terraseg.core.raster import RasterSource

CHUNK_PX = 256
_COMPRESSORS = (BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),)


def default_cache_dir() -> Path:
    """``$TERRASEG_CACHE`` or ``~/.cache/terraseg``."""
    env = os.environ.get("TERRASEG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "terraseg"


def raster_fingerprint(source: RasterSource) -> str:
    """Stable key of a raster file's content version and band mapping."""
    p = Path(source.path)
    parts: dict[str, object] = {"path": str(p.resolve()) if p.exists() else source.path,
                                "bands": list(source.bands.indices)}
    if p.exists():
        st = p.stat()
        parts.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
    parts["grid"] = [source.grid.height_px, source.grid.width_px, list(source.grid.transform)]
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


class ImageCache:
    """Lazily filled chunked copy of a raster's mapped bands.

    Args:
        source: The raster to cache.
        cache_dir: Folder holding the cache stores.
    """

    def __init__(self, source: RasterSource, cache_dir: Path) -> None:
        self.source = source
        self.fingerprint = raster_fingerprint(source)
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / f"{self.fingerprint}.zarr"
        self.group = zarr.open_group(store=str(self.path), mode="a")
        g = source.grid
        c = source.count
        if "image" not in self.group:
            self.group.create_array("image", shape=(c, g.height_px, g.width_px),
                                    chunks=(c, CHUNK_PX, CHUNK_PX), dtype="float32",
                                    fill_value=0.0, compressors=_COMPRESSORS)
            self.group.create_array("valid", shape=(g.height_px, g.width_px),
                                    chunks=(CHUNK_PX, CHUNK_PX), dtype="bool",
                                    fill_value=False, compressors=_COMPRESSORS)
            nby, nbx = -(-g.height_px // CHUNK_PX), -(-g.width_px // CHUNK_PX)
            self.group.create_array("filled", shape=(nby, nbx), chunks=(nby, nbx),
                                    dtype="uint8", fill_value=0)
            self.group.attrs.update(source=source.path, bands=list(source.bands.indices),
                                    band_names=list(source.bands.names))
        self.image = self.group["image"]
        self.valid = self.group["valid"]
        self._filled = np.asarray(self.group["filled"][...])
        self.chunks_read = 0

    def ensure(self, window: Window) -> None:
        """Read from the raster every chunk that ``window`` touches and is not cached yet."""
        g = self.source.grid
        r0, c0 = max(int(window.row_off), 0), max(int(window.col_off), 0)
        r1 = min(int(window.row_off + window.height), g.height_px)
        c1 = min(int(window.col_off + window.width), g.width_px)
        if r1 <= r0 or c1 <= c0:
            return
        changed = False
        for by in range(r0 // CHUNK_PX, (r1 - 1) // CHUNK_PX + 1):
            for bx in range(c0 // CHUNK_PX, (c1 - 1) // CHUNK_PX + 1):
                if self._filled[by, bx]:
                    continue
                y0, x0 = by * CHUNK_PX, bx * CHUNK_PX
                h = min(CHUNK_PX, g.height_px - y0)
                w = min(CHUNK_PX, g.width_px - x0)
                data, valid = self.source.read(Window(x0, y0, w, h))
                self.image[:, y0 : y0 + h, x0 : x0 + w] = data
                self.valid[y0 : y0 + h, x0 : x0 + w] = valid
                self._filled[by, bx] = 1
                self.chunks_read += 1
                changed = True
        if changed:
            self.group["filled"][...] = self._filled

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a (possibly out-of-bounds) window from the cache; ensure() it first.

        Returns:
            data float32 (C, H, W) and valid bool (H, W); outside the raster: 0 / False.
        """
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
        sub = self.group.require_group(name)
        for key in ("labels", "regions"):
            arr = getattr(labels, key)
            sub.create_array(key, shape=arr.shape, chunks=(CHUNK_PX, CHUNK_PX),
                             dtype=arr.dtype, fill_value=0, compressors=_COMPRESSORS)
            sub[key][...] = arr
        sub.attrs.update(classes=[c.to_dict() for c in labels.classes],
                         pixel_counts=labels.pixel_counts)
