"""Extra rasters on other grids (DEM, slope, ...) stacked onto an image's grid.

A Sentinel-2 scene at 10 m and a DEM at 30 m in another CRS are combined by warping the DEM
onto the image grid with bilinear resampling (continuous data) as windows are read. Slope
(degrees) can be derived from the DEM on the image grid. Extra channels follow the image
bands in model order and are recorded in the model file by name and kind; prediction must
be given the same extras.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from terraseg.core.raster import BandMapping, RasterSource, open_raster
from terraseg.protocol.errors import RasterError
from terraseg.protocol.model_meta import ModelMeta

KINDS = ("continuous", "slope_from_dem")
SLOPE_PAD = 1  # DEM pixels read around a window for the slope's central differences

SLOPE_FROM_DEM = "slope_from_dem"
#: The channel ``train --pseudo-probability channel`` adds (core/pseudo_label.py).
RF_CONFIDENCE = "rf_confidence"


@dataclass(frozen=True)
class ExtraRaster:
    """One extra input channel.

    Attributes:
        path: Raster file (band 1 is used).
        name: Channel name in the model (e.g. "dem", "slope").
        derivation: How the channel comes from the file: "continuous" (bilinear values)
            or "slope_from_dem" (slope in degrees); recorded as ``kind`` in model files.
    """

    path: str
    name: str
    derivation: str = "continuous"

    @property
    def derives_slope(self) -> bool:
        """Whether the channel is slope derived from a DEM (read with a one-pixel halo)."""
        return self.derivation == SLOPE_FROM_DEM

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form (the path is informative; prediction passes its own)."""
        return {"name": self.name, "kind": self.derivation, "path": self.path}


def parse_extras(extra: list[str] | None, dem: str | None, slope_from_dem: bool,
                 ) -> tuple[ExtraRaster, ...]:
    """Extras from the command line: --extra-raster [name=]PATH, --dem, --slope-from-dem."""
    out: list[ExtraRaster] = []
    for item in extra or []:
        name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        out.append(ExtraRaster(path, name or Path(path).stem, "continuous"))
    if dem:
        out.append(ExtraRaster(dem, "dem", "continuous"))
    if slope_from_dem:
        if not dem:
            raise RasterError("--slope-from-dem needs a DEM.", "Pass --dem DEM.tif as well.")
        out.append(ExtraRaster(dem, "slope", "slope_from_dem"))
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise RasterError(f"Extra raster names repeat: {names}.",
                          "Name them, e.g. --extra-raster twi=twi.tif.")
    return tuple(out)


def check_extras_match(meta: ModelMeta, extras: tuple[ExtraRaster, ...]) -> None:
    """Refuse extras that differ from those a model was trained with (names and kinds)."""
    want = [(e.name, e.kind) for e in meta.extra_rasters]
    got = [(e.name, e.derivation) for e in extras]
    if want != got:
        hint = " ".join(
            "--slope-from-dem" if k == "slope_from_dem" else
            ("--dem DEM.tif" if n == "dem" else f"--extra-raster {n}=PATH") for n, k in want)
        if RF_CONFIDENCE in {n for n, _ in want} - {n for n, _ in got}:
            hint += (f". '{RF_CONFIDENCE}' is a random forest's confidence: the model's "
                     f"NAME.pseudo/confidence.tif for the raster it was trained on, or "
                     "confidence.tif of 'terraseg pseudo-label' run on this raster with "
                     "the training labels")
        raise RasterError(
            f"The model was trained with extra rasters {[n for n, _ in want]} but "
            f"{[n for n, _ in got]} were given.",
            f"Pass the same extras: {hint}." if want else "Leave out the extra rasters.")


class StackedSource(RasterSource):
    """A RasterSource whose windows also hold extra rasters warped onto its grid.

    Shape:
        read(window) -> data (C_bands + C_extras, H, W), valid (H, W); a pixel is valid
        when the image bands and every extra hold data there.
    """

    def __init__(self, path: str | Path, bands: BandMapping | None,
                 extras: tuple[ExtraRaster, ...]) -> None:
        super().__init__(path, bands)
        self.extras = extras
        self._image_bands = self.bands
        self.bands = BandMapping(self.bands.indices + tuple(0 for _ in extras),
                                 self.bands.names + tuple(e.name for e in extras))
        self._vrts = [self._warp(e) for e in extras]

    def _warp(self, extra: ExtraRaster) -> WarpedVRT:
        ds = open_raster(extra.path)
        if ds.crs is None:
            raise RasterError(f"Extra raster {extra.path} has no CRS.",
                              "Assign its CRS (QGIS: Layer properties > Source).")
        g = self.grid
        left, bottom, right, top = transform_bounds(ds.crs, g.crs, *ds.bounds)
        gl, gb, gr, gt = g.bounds
        if right <= gl or left >= gr or top <= gb or bottom >= gt:
            raise RasterError(
                f"Extra raster {extra.path} does not overlap the image ({extra.name}: "
                f"{left:.1f}, {bottom:.1f}, {right:.1f}, {top:.1f} vs image {gl:.1f}, "
                f"{gb:.1f}, {gr:.1f}, {gt:.1f} in {g.crs}).",
                "Use a DEM/raster that covers the image.")
        # slope needs the DEM one pixel beyond the image, so its grid is grown by SLOPE_PAD
        pad = SLOPE_PAD if extra.derives_slope else 0
        return WarpedVRT(ds, crs=g.crs, transform=g.transform * Affine.translation(-pad, -pad),
                         width=g.width_px + 2 * pad, height=g.height_px + 2 * pad,
                         resampling=Resampling.bilinear, src_nodata=ds.nodata, nodata=np.nan,
                         dtype="float32")

    @property
    def count(self) -> int:
        """Image bands plus extras."""
        return len(self.bands.indices)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Image bands and extras for a (possibly out-of-bounds) window."""
        saved, self.bands = self.bands, self._image_bands
        try:
            data, valid = super().read(window)
        finally:
            self.bands = saved
        layers = [data]
        for extra, vrt in zip(self.extras, self._vrts, strict=True):
            pad = SLOPE_PAD if extra.derives_slope else 0
            shifted = Window(int(window.col_off) + pad, int(window.row_off) + pad,
                             int(window.width), int(window.height))
            values = _read_vrt(vrt, shifted, pad)
            if extra.derives_slope:
                values = _slope_degrees(values, *self.grid.pixel_size)
            ok = np.isfinite(values)
            valid &= ok
            layers.append(np.where(ok, values, 0.0).astype(np.float32)[None])
        data = np.concatenate(layers)
        data[:, ~valid] = 0.0
        return data, valid


def _read_vrt(vrt: WarpedVRT, window: Window, margin: int) -> np.ndarray:
    """Band 1 of the warped raster over ``window`` grown by ``margin``; NaN outside."""
    row0, col0 = int(window.row_off) - margin, int(window.col_off) - margin
    h, w = int(window.height) + 2 * margin, int(window.width) + 2 * margin
    out = np.full((h, w), np.nan, dtype=np.float32)
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + h, vrt.height), min(col0 + w, vrt.width)
    if r1 > r0 and c1 > c0:
        out[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = vrt.read(
            1, window=Window(c0, r0, c1 - c0, r1 - r0))
    return out


def _slope_degrees(z: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Slope in degrees of a DEM window with a 1-px margin (central differences).

    Shape: (h + 2, w + 2) -> (h, w).
    """
    gx = (z[1:-1, 2:] - z[1:-1, :-2]) / (2 * dx)
    gy = (z[2:, 1:-1] - z[:-2, 1:-1]) / (2 * dy)
    return np.degrees(np.arctan(np.hypot(gx, gy))).astype(np.float32)
