"""Per-band normalisation statistics and their application."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from rasterio.enums import Resampling
from rasterio.errors import NodataShadowWarning

from terraseg.core.raster import RasterSource
from terraseg.protocol.errors import RasterError


@dataclass(frozen=True)
class BandStats:
    """Mean and standard deviation per model band (raw raster units)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @staticmethod
    def from_dict(d: dict) -> BandStats:
        """Inverse of :meth:`to_dict`."""
        return BandStats(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))


def compute_band_stats(source: RasterSource, max_px: int = 1024) -> BandStats:
    """Band statistics over the whole raster from a decimated read (at most max_px a side).

    Raises:
        RasterError: The raster has no valid pixel in the mapped bands.
    """
    if getattr(source, "extras", None) or not isinstance(source, RasterSource):
        return _sampled_stats(source)
    ds = source._ds  # noqa: SLF001 - same package
    g = source.grid
    scale = max(1.0, max(g.height_px, g.width_px) / max_px)
    shape = (max(1, round(g.height_px / scale)), max(1, round(g.width_px / scale)))
    idx = list(source.bands.indices)
    data = ds.read(idx, out_shape=(len(idx), *shape), out_dtype="float64",
                   resampling=Resampling.nearest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NodataShadowWarning)
        masks = ds.read_masks(idx, out_shape=(len(idx), *shape),
                              resampling=Resampling.nearest)
    ok = np.all(masks > 0, axis=0) & np.all(np.isfinite(data), axis=0)
    if not ok.any():
        raise RasterError(f"Raster {source.path} has no valid (non-nodata) pixel.",
                          "Check the raster's nodata value and band mapping.")
    vals = data[:, ok]
    mean = vals.mean(axis=1)
    std = np.maximum(vals.std(axis=1), 1e-6)
    return BandStats(tuple(float(v) for v in mean), tuple(float(v) for v in std))


def _sampled_stats(source: RasterSource, n: int = 8, size_px: int = 128) -> BandStats:
    """Statistics from an n x n grid of windows read through ``source.read`` (any source)."""
    from rasterio.windows import Window

    g = source.grid
    values = []
    for r in np.linspace(0, max(0, g.height_px - size_px), n).astype(int):
        for c in np.linspace(0, max(0, g.width_px - size_px), n).astype(int):
            data, valid = source.read(Window(int(c), int(r), size_px, size_px))
            values.append(data[:, valid].astype(np.float64))
    vals = np.concatenate(values, axis=1)
    if vals.shape[1] == 0:
        raise RasterError(f"Raster {source.path} has no pixel where all inputs hold data.",
                          "Check the nodata values and that the extra rasters cover the image.")
    std = np.maximum(vals.std(axis=1), 1e-6)
    return BandStats(tuple(float(v) for v in vals.mean(axis=1)), tuple(float(v) for v in std))


def normalise(data: np.ndarray, valid: np.ndarray, stats: BandStats) -> np.ndarray:
    """Standardise bands; invalid pixels become 0 (the band mean).

    Shape:
        data: (C, H, W) or (N, C, H, W); valid: matching without the C axis.
    """
    mean = np.asarray(stats.mean, dtype=np.float32)
    std = np.asarray(stats.std, dtype=np.float32)
    shape = (-1, 1, 1)
    out = (data - mean.reshape(shape)) / std.reshape(shape)
    v = valid[:, None] if data.ndim == 4 else valid[None]
    return np.where(v, out, 0.0).astype(np.float32, copy=False)
