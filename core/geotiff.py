"""Streaming GeoTIFF writer: tiled, ZSTD-compressed, with internal overviews.

Predictions, probabilities and rasterised labels are written window by window through
:class:`GeoTiffWriter`, so memory does not grow with the raster. Inside a run the writer is
normally created by :meth:`terraseg.core.atomic.AtomicOutputs.geotiff`, which writes it to a
temp file that is moved onto its final name only when the whole run succeeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from terraseg.core.grid import Grid
from terraseg.protocol.errors import OutputError

MIN_OVERVIEW_PX = 256
# GDAL's block cache while building overviews (MB). GDAL works block-wise, but its default
# cache (5% of RAM) would otherwise fill with the whole raster on large files.
OVERVIEW_CACHE_MB = 256


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
