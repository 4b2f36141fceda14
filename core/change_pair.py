"""The two dates of ``terraseg change`` read onto one grid, with the misregistration check.

:func:`load_pair` opens both class rasters (and probability rasters and images when given),
puts date B on date A's grid (core/change_align.py), measures the residual shift, and
refuses it above ``max_shift`` unless asked to correct it. Class rasters mark nodata with
their nodata value, or 0 when they declare none (TerraSeg's classes.tif convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.enums import Resampling

from terraseg.core.change_align import (
    ShiftEstimate,
    check_overlap,
    class_image,
    estimate_shift,
    fill_invalid,
    grid_of,
    misregistration_error,
    shifted_transform,
    warp_onto,
)
from terraseg.core.change_legend import tagged_classes
from terraseg.core.export import open_class_raster
from terraseg.core.grid import Grid
from terraseg.core.raster import open_raster
from terraseg.protocol.errors import RasterError

#: Value of B's pixels without data after warping (before codes are compared).
NO_CODE = 0
#: Nodata of probabilities after warping.
NO_PROB = -1.0
#: The shift is measured on at most this many pixels per side (the centre of the common
#: data): enough for a global shift, and the FFT's memory stays bounded.
MAX_SHIFT_WINDOW_PX = 2048


@dataclass(frozen=True)
class PairInputs:
    """What ``terraseg change`` compares (paths; optional ones None).

    Attributes:
        classes_a: Class raster of the first date (its grid is the output grid).
        classes_b: Class raster of the second date.
        probability_a: Probability raster of the first date (one band per class).
        probability_b: Probability raster of the second date.
        image_a: Image of the first date; band 1 measures the shift instead of the classes.
        image_b: Image of the second date.
    """

    classes_a: str
    classes_b: str
    probability_a: str | None = None
    probability_b: str | None = None
    image_a: str | None = None
    image_b: str | None = None


@dataclass(frozen=True)
class AlignedPair:
    """Both dates on A's grid.

    Attributes:
        grid: A's grid.
        a, b: Class codes (H, W); meaningful where ``valid_a`` / ``valid_b``.
        valid_a, valid_b: Pixels with data (H, W).
        prob_a, prob_b: Probabilities (C, H, W) with their class codes, or None.
        tagged: TERRASEG_CLASSES of both class rasters (may be empty).
        shift: The shift measured before any correction (None: not checked).
        residual: The shift measured after the correction (None: not corrected).
        shift_source: ``"classes"`` or ``"images"``.
    """

    grid: Grid
    a: np.ndarray
    b: np.ndarray
    valid_a: np.ndarray
    valid_b: np.ndarray
    prob_a: tuple[np.ndarray, tuple[int, ...]] | None
    prob_b: tuple[np.ndarray, tuple[int, ...]] | None
    tagged: list[dict]
    shift: ShiftEstimate | None
    residual: ShiftEstimate | None
    shift_source: str

    @property
    def corrected(self) -> bool:
        """Whether B was moved by the measured shift."""
        return self.residual is not None


def class_validity(ds: rasterio.DatasetReader, codes: np.ndarray) -> np.ndarray:
    """Pixels of a class raster that hold a class (not nodata, or not 0 without nodata)."""
    nodata = ds.nodata if ds.nodata is not None else NO_CODE
    return (codes != nodata) & (codes != NO_CODE)


#: Shifts shorter than this (pixels) are not corrected: within the estimate's precision.
MIN_CORRECTION_PX = 0.1


def load_pair(inputs: PairInputs, max_shift_px: float, correct_shift: bool) -> AlignedPair:
    """Read both dates onto A's grid and check (or correct) their misregistration.

    Args:
        inputs: The rasters.
        max_shift_px: Largest shift accepted without correction; negative: no check.
        correct_shift: Move B by the measured shift whenever it exceeds
            :data:`MIN_CORRECTION_PX` (``max_shift_px`` then refuses nothing).

    Raises:
        RasterError: Rasters that cannot be read, do not overlap, share no pixel with data,
            or a shift above ``max_shift_px`` without ``correct_shift``.
    """
    with open_class_raster(inputs.classes_a) as ds_a, \
            open_class_raster(inputs.classes_b) as ds_b:
        check_overlap(ds_a, ds_b, "class rasters of the two dates")
        grid = grid_of(ds_a)
        a = ds_a.read(1)
        valid_a = class_validity(ds_a, a)
        tagged = tagged_classes(ds_a) + tagged_classes(ds_b)
        b, valid_b = _warp_classes(ds_b, grid, None)
        if not (valid_a & valid_b).any():
            raise RasterError(
                f"{inputs.classes_a} and {inputs.classes_b} overlap, but no pixel has a class "
                "in both.", "Check the nodata values of both maps, or give maps of the same "
                            "area.")
        images = _images(inputs, grid, None) if inputs.image_a and inputs.image_b else None
        source = "images" if images else "classes"
        shift = residual = None
        if max_shift_px >= 0 or correct_shift:
            shift = _measure(a, valid_a, b, valid_b, images)
            if correct_shift and shift.length_px > MIN_CORRECTION_PX:
                moved = shifted_transform(ds_b.transform, grid, shift.dx_px, shift.dy_px)
                b, valid_b = _warp_classes(ds_b, grid, moved)
                if images:
                    images = _images(inputs, grid, shift)
                residual = _measure(a, valid_a, b, valid_b, images)
            elif not correct_shift and 0 <= max_shift_px < shift.length_px:
                raise misregistration_error(
                    shift, max_shift_px, source,
                    "differencing would report sliver changes along every class boundary")
        prob_a = _probabilities(inputs.probability_a, grid, None)
        prob_b = _probabilities(inputs.probability_b, grid,
                                shift if residual is not None else None)
    return AlignedPair(grid, a, b, valid_a, valid_b, prob_a, prob_b, tagged, shift, residual,
                       source)


def _warp_classes(ds: rasterio.DatasetReader, grid: Grid, transform
                  ) -> tuple[np.ndarray, np.ndarray]:
    b = warp_onto(ds, grid, 1, Resampling.nearest, ds.nodata if ds.nodata is not None
                  else NO_CODE, src_transform=transform)
    return b, class_validity(ds, b)


def _measure(a: np.ndarray, valid_a: np.ndarray, b: np.ndarray, valid_b: np.ndarray,
             images: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None
             ) -> ShiftEstimate:
    """Shift of B against A on the box of their common data (its centre when large)."""
    if images:
        img_a, img_b, va, vb = images
    else:
        img_a, img_b, va, vb = a, b, valid_a, valid_b
    both = va & vb
    if not both.any():
        raise RasterError("After the shift, the two dates share no pixel with data.",
                          "Check the inputs, or pass --max-shift -1 to skip the check.")
    rows, cols = np.nonzero(both)
    r0, r1 = _central(int(rows.min()), int(rows.max()) + 1)
    c0, c1 = _central(int(cols.min()), int(cols.max()) + 1)
    box = np.s_[r0:r1, c0:c1]
    if images:
        ia, ib = fill_invalid(img_a[box], both[box]), fill_invalid(img_b[box], both[box])
    else:
        ia, ib = class_image(img_a[box], both[box]), class_image(img_b[box], both[box])
    return estimate_shift(ia, ib)


def _central(start: int, stop: int) -> tuple[int, int]:
    """The central :data:`MAX_SHIFT_WINDOW_PX` of [start, stop) (all of it when shorter)."""
    extra = max(0, stop - start - MAX_SHIFT_WINDOW_PX)
    return start + extra // 2, stop - (extra - extra // 2)


def _images(inputs: PairInputs, grid: Grid, shift: ShiftEstimate | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Band 1 of both images on A's grid (B moved by ``shift``) and their validity."""
    out = []
    for path, move in ((inputs.image_a, None), (inputs.image_b, shift)):
        with open_raster(path) as ds:
            tr = (shifted_transform(ds.transform, grid, move.dx_px, move.dy_px)
                  if move else None)
            img = warp_onto(ds, grid, 1, Resampling.bilinear, np.nan, src_transform=tr)
            out.append((img, np.isfinite(img)))
    (ia, va), (ib, vb) = out
    return ia, ib, va, vb


def _probabilities(path: str | None, grid: Grid, shift: ShiftEstimate | None
                   ) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """A probability raster on A's grid (bilinear; B moved by ``shift``) and its codes.

    Band j belongs to the j-th class of its ``TERRASEG_CLASSES`` tag, else to code j.
    Pixels without data are :data:`NO_PROB` in every band.
    """
    if not path:
        return None
    with open_raster(path) as ds:
        if not np.issubdtype(np.dtype(ds.dtypes[0]), np.floating):
            ds_name = ds.name
            raise RasterError(f"{ds_name} holds {ds.dtypes[0]} values, not probabilities.",
                              "Pass the probability.tif that predict wrote (one float band "
                              "per class) as --probability-a/--probability-b.")
        tags = tagged_classes(ds)
        codes = tuple(int(c["id"]) for c in tags) if len(tags) == ds.count \
            else tuple(range(1, ds.count + 1))
        tr = shifted_transform(ds.transform, grid, shift.dx_px, shift.dy_px) if shift else None
        p = warp_onto(ds, grid, list(range(1, ds.count + 1)), Resampling.bilinear, np.nan,
                      src_transform=tr)
    bad = ~np.all(np.isfinite(p) & (p >= 0), axis=0)
    p[:, bad] = NO_PROB
    return p, codes
