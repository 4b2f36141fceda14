"""A pair raster: two dates' bands stacked on the first date's grid (``terraseg pair``).

The direct change networks (``fc_ef``, ``fc_siam_diff``; core/models/siam_diff.py) read one
raster holding date A's C bands followed by date B's C bands. :func:`stack_pair` writes it:
B is warped bilinearly onto A's grid through a :class:`~rasterio.vrt.WarpedVRT` and both
are written window by window (never both rasters in memory), as float32 with NaN where a
date has no data (nodata, or outside B). Band descriptions are ``a:<name>`` and
``b:<name>``; the ``TERRASEG_PAIR`` tag records both inputs and the shift.

Before writing, the residual misregistration of B against A is measured by phase
correlation (core/change_align.py) on the central :data:`MAX_SHIFT_WINDOW_PX` of their
common area, on the mean of the standardised bands of each date; above ``max_shift_px``
it is refused, or B's georeference is moved by the shift (``correct_shift``) and the
residual measured again. Rasters that do not overlap and band counts that differ are
refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from terraseg.core.atomic import AtomicOutputs
from terraseg.core.change_align import (
    ShiftEstimate,
    check_overlap,
    estimate_shift,
    fill_invalid,
    grid_of,
    misregistration_error,
    shifted_transform,
)
from terraseg.core.change_pair import MAX_SHIFT_WINDOW_PX
from terraseg.core.grid import Grid
from terraseg.core.output_targets import check_output_targets
from terraseg.core.raster import BandMapping, RasterSource, open_raster, parse_band_mapping
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import RasterError

#: Output block (and write window) size in pixels.
BLOCK_PX = 512
#: Metadata item holding the inputs and the shift (JSON).
PAIR_TAG = "TERRASEG_PAIR"
#: Standardised values of the shift image are clipped to this many deviations.
CLIP_SD = 3.0
#: Largest misregistration (px) accepted by default, as ``terraseg change``.
DEFAULT_MAX_SHIFT_PX = 1.0


@dataclass(frozen=True)
class PairStackOptions:
    """How to stack two dates.

    Attributes:
        bands_a: Band mapping of date A (None: all bands), as ``--bands``.
        bands_b: Band mapping of date B (None: all bands).
        max_shift_px: Largest residual shift accepted (pixels of A); negative: not checked.
        correct_shift: Move B by the measured shift instead of refusing it.
    """

    bands_a: str | None = None
    bands_b: str | None = None
    max_shift_px: float = DEFAULT_MAX_SHIFT_PX
    correct_shift: bool = False


def check_band_counts(map_a: BandMapping, map_b: BandMapping, path_a: str, path_b: str
                      ) -> None:
    """Refuse two dates that give different numbers of bands.

    Raises:
        RasterError: Naming both counts and the options that select the same bands.
    """
    na, nb = len(map_a.indices), len(map_b.indices)
    if na != nb:
        n = min(na, nb)
        raise RasterError(
            f"Date A ({Path(path_a).name}) gives {na} band(s) and date B "
            f"({Path(path_b).name}) gives {nb}; a pair raster needs the same bands of "
            "both dates, in the same order.",
            f"Select the same bands of each date with --bands-a and --bands-b, e.g. "
            f"--bands-a {','.join(map(str, range(1, n + 1)))} --bands-b "
            f"{','.join(map(str, range(1, n + 1)))}.")


def stack_pair(raster_a: str, raster_b: str, out: str | Path,
               opts: PairStackOptions = PairStackOptions(),
               reporter: Reporter | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write the pair raster of ``raster_a`` and ``raster_b`` on A's grid.

    Args:
        raster_a: First date (its grid is the output's).
        raster_b: Second date (any CRS and pixel size overlapping A).
        out: GeoTIFF to write.
        opts: Bands and misregistration check.
        reporter: Progress and cancel (None: silent).
        overwrite: Replace an existing ``out``.

    Returns:
        The result: ``out``, ``bands_per_date``, ``band_names``, ``shift`` (None when not
        checked) and ``covered_fraction`` (share of A's pixels with data in both dates).

    Raises:
        RasterError: Unreadable rasters, no overlap, different band counts, no pixel with
            data in both, or a shift above ``max_shift_px`` without ``correct_shift``.
        OutputError: ``out`` exists without ``overwrite`` or cannot be written.
    """
    reporter = reporter or Reporter()
    out = Path(out)
    check_output_targets([out], overwrite, "--out")
    with open_raster(raster_a) as ds_a, open_raster(raster_b) as ds_b:
        check_overlap(ds_a, ds_b, "rasters of the two dates")
        grid = grid_of(ds_a)
        common = common_window(ds_a, ds_b)
    map_a = parse_band_mapping(opts.bands_a, raster_a)
    map_b = parse_band_mapping(opts.bands_b, raster_b)
    check_band_counts(map_a, map_b, raster_a, raster_b)
    reporter.progress(0.0, "pair", "measuring the misregistration")
    shift = residual = None
    moved: Affine | None = None
    with RasterSource(raster_a, map_a) as src_a, open_raster(raster_b) as ds_b:
        if opts.max_shift_px >= 0:
            with warped(ds_b, grid) as vrt:
                shift = measure_shift(src_a, vrt, map_b, common)
            if shift.length_px > opts.max_shift_px:
                if not opts.correct_shift:
                    raise misregistration_error(
                        shift, opts.max_shift_px, "images",
                        "a change network would learn the shift as change")
                moved = shifted_transform(ds_b.transform, grid, shift.dx_px, shift.dy_px)
                with warped(ds_b, grid, moved) as vrt:
                    residual = measure_shift(src_a, vrt, map_b, common)
        with warped(ds_b, grid, moved) as vrt:
            names = [f"a:{n}" for n in map_a.names] + [f"b:{n}" for n in map_b.names]
            tag = {"raster_a": str(raster_a), "raster_b": str(raster_b),
                   "bands_a": list(map_a.indices), "bands_b": list(map_b.indices),
                   "shift": _shift_dict(shift, residual)}
            covered = _write(src_a, vrt, map_b, grid, out, names, tag, reporter, overwrite)
    return {"out": str(out), "bands_per_date": len(map_a.indices), "band_names": names,
            "shift": _shift_dict(shift, residual), "covered_fraction": covered}


def common_window(ds_a: rasterio.DatasetReader, ds_b: rasterio.DatasetReader) -> Window:
    """The pixel window of A's grid that B's extent covers (rounded outwards, clipped)."""
    bounds = (tuple(ds_b.bounds) if ds_b.crs == ds_a.crs
              else transform_bounds(ds_b.crs, ds_a.crs, *ds_b.bounds, densify_pts=21))
    win = from_bounds(*bounds, transform=ds_a.transform)
    c0, r0 = math.floor(win.col_off), math.floor(win.row_off)
    c1 = math.ceil(win.col_off + win.width)
    r1 = math.ceil(win.row_off + win.height)
    c0, r0 = max(c0, 0), max(r0, 0)
    c1, r1 = min(c1, ds_a.width), min(r1, ds_a.height)
    return Window(c0, r0, max(c1 - c0, 0), max(r1 - r0, 0))


def warped(ds_b: rasterio.DatasetReader, grid: Grid, src_transform: Affine | None = None
           ) -> WarpedVRT:
    """B bilinearly on A's grid as float32, NaN where B has no data (optionally moved)."""
    extra = {"src_transform": src_transform} if src_transform is not None else {}
    return WarpedVRT(ds_b, crs=grid.crs, transform=grid.transform, width=grid.width_px,
                     height=grid.height_px, resampling=Resampling.bilinear,
                     dtype="float32", nodata=np.nan, **extra)


def read_b(vrt: WarpedVRT, map_b: BandMapping, window: Window) -> np.ndarray:
    """B's mapped bands in ``window`` of A's grid, NaN without data.

    Shape: (C, h, w) float32.
    """
    return vrt.read(list(map_b.indices), window=window).astype(np.float32, copy=False)


def read_a(src_a: RasterSource, window: Window) -> np.ndarray:
    """A's mapped bands in ``window``, NaN without data.

    Shape: (C, h, w) float32.
    """
    data, valid = src_a.read(window)
    data[:, ~valid] = np.nan
    return data


def standardised_mean(bands: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The shift image: mean over bands of each band robustly standardised, clipped.

    Each band is centred on its median over ``valid`` pixels, divided by its scaled
    median absolute deviation and clipped to +-:data:`CLIP_SD`, so a few bright changes
    (new roofs) cannot outweigh the structure both dates share.

    Shape: (C, h, w) and (h, w) -> (h, w) float64.
    """
    img = np.zeros(valid.shape, dtype=np.float64)
    for band in bands:
        v = band[valid].astype(np.float64)
        med = float(np.median(v))
        scale = 1.4826 * float(np.median(np.abs(v - med))) or float(v.std()) or 1.0
        z = (np.where(valid, band, med) - med) / scale
        img += np.clip(z, -CLIP_SD, CLIP_SD)
    return img / len(bands)


def measure_shift(src_a: RasterSource, vrt: WarpedVRT, map_b: BandMapping, common: Window
                  ) -> ShiftEstimate:
    """Shift of B against A on the central part of their common window.

    Raises:
        RasterError: No pixel has data in both dates.
    """
    win = _central(common, MAX_SHIFT_WINDOW_PX)
    a, b = read_a(src_a, win), read_b(vrt, map_b, win)
    both = np.all(np.isfinite(a), axis=0) & np.all(np.isfinite(b), axis=0)
    if not both.any():
        raise RasterError(
            f"{src_a.path} and {vrt.src_dataset.name} overlap, but no pixel has data in both.",
            "Check the nodata values of both rasters, or give rasters of the same area.")
    return estimate_shift(fill_invalid(standardised_mean(a, both), both),
                          fill_invalid(standardised_mean(b, both), both))


def _central(win: Window, size: int) -> Window:
    """The central ``size`` x ``size`` (at most) of ``win``."""
    h, w = min(int(win.height), size), min(int(win.width), size)
    return Window(int(win.col_off) + (int(win.width) - w) // 2,
                  int(win.row_off) + (int(win.height) - h) // 2, w, h)


def _write(src_a: RasterSource, vrt: WarpedVRT, map_b: BandMapping, grid: Grid, out: Path,
           names: list[str], tag: dict[str, Any], reporter: Reporter, overwrite: bool
           ) -> float:
    """Write A's then B's bands window by window; the share of pixels with both dates."""
    windows = [Window(c, r, min(BLOCK_PX, grid.width_px - c), min(BLOCK_PX, grid.height_px - r))
               for r in range(0, grid.height_px, BLOCK_PX)
               for c in range(0, grid.width_px, BLOCK_PX)]
    both = 0
    with AtomicOutputs(out.parent, overwrite=overwrite) as outputs:
        w = outputs.geotiff(out.name, grid, len(names), "float32", float("nan"), names,
                            block_px=BLOCK_PX)
        w.set_tags(**{PAIR_TAG: json.dumps(tag)})
        for i, win in enumerate(windows, start=1):
            reporter.check_cancelled()
            stack = np.concatenate([read_a(src_a, win), read_b(vrt, map_b, win)])
            both += int(np.all(np.isfinite(stack), axis=0).sum())
            w.write(stack, win)
            reporter.progress(i / len(windows), "pair")
        if not both:
            raise RasterError(f"No pixel of {src_a.path} has data in both dates.",
                              "Check the nodata values of both rasters, or give rasters of "
                              "the same area.")
        w.close(overviews=True, check_cancelled=reporter.check_cancelled)
    return both / (grid.height_px * grid.width_px)


def _shift_dict(shift: ShiftEstimate | None, residual: ShiftEstimate | None
                ) -> dict[str, Any] | None:
    if shift is None:
        return None
    return {"dx_px": shift.dx_px, "dy_px": shift.dy_px, "length_px": shift.length_px,
            "peak": shift.peak, "corrected": residual is not None,
            "residual_px": residual.length_px if residual is not None else None}
