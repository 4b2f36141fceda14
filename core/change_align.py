"""Putting the second date on the first date's grid, and measuring what is left of a shift.

Change by classification difference compares two maps pixel by pixel, so the second map
(B) is first warped onto the first map's grid (A): nearest neighbour for class codes,
bilinear for probabilities and images. Rasters that do not overlap are refused.

Georeferencing can still be off after that (two surveys digitised on slightly different
grids, an image registered by hand). :func:`estimate_shift` measures the residual shift by
phase correlation (FFT, Hann window, sub-pixel peak to 1/20 px by a local upsampled
DFT). Class maps become comparable images by giving every class code a fixed pseudo-random
grey value (:func:`class_image`); nodata is filled with the mean, so it
carries no structure.

A shift (dx, dy) means B's content lies dx columns right and dy rows down of A's. A
correction moves B's georeference by (-dx, -dy) pixels of A's grid and warps B again
(:func:`shifted_transform`): the sub-pixel estimate is used as measured; class codes are
still resampled by nearest neighbour (each pixel takes the class under its shifted
centre), probabilities and images bilinearly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds

from terraseg.core.grid import Grid
from terraseg.core.label_extent import crs_name, fmt_ext, intersects
from terraseg.protocol.errors import RasterError

#: Seed of the grey value each class code gets in :func:`class_image` (fixed: both maps
#: must give the same code the same value).
CLASS_VALUE_SEED = 20261208
#: Codes :func:`class_image` knows (uint16 class rasters at most).
MAX_CODE = 65536
#: Sub-pixel resolution of the shift estimate (1/UPSAMPLE px).
UPSAMPLE = 20
#: Regularisation of the phase correlation: the cross-power spectrum is divided by its
#: magnitude plus this fraction of the largest magnitude.
WHITENING_FLOOR = 0.01
#: Smallest overlap (pixels per side) on which a shift is estimated.
MIN_SHIFT_PX = 8


@dataclass(frozen=True)
class ShiftEstimate:
    """The residual shift of B against A, in pixels of A's grid.

    Attributes:
        dx_px: Columns B's content lies right of A's (negative: left).
        dy_px: Rows B's content lies below A's (negative: above).
        peak: Height of the phase-correlation peak (1 = identical images; near 0 = no
            common structure, the estimate means little).
    """

    dx_px: float
    dy_px: float
    peak: float

    @property
    def length_px(self) -> float:
        """Length of the shift vector in pixels."""
        return float(np.hypot(self.dx_px, self.dy_px))


def grid_of(ds: rasterio.DatasetReader) -> Grid:
    """The pixel grid of an open raster."""
    return Grid(ds.height, ds.width, ds.transform, ds.crs.to_wkt() if ds.crs else "")


def check_overlap(ds_a: rasterio.DatasetReader, ds_b: rasterio.DatasetReader,
                  what: str = "rasters") -> None:
    """Refuse two rasters whose extents do not overlap (compared in A's CRS).

    Raises:
        RasterError: Either has no CRS, or they do not overlap; the message names both
            extents in A's CRS.
    """
    for ds in (ds_a, ds_b):
        if ds.crs is None:
            raise RasterError(f"{ds.name} has no CRS, so it cannot be put on the other "
                              "date's grid.", "Assign its CRS (QGIS: Layer properties > "
                                              "Source) and save it.")
    ext_a = tuple(ds_a.bounds)
    ext_b = (tuple(ds_b.bounds) if ds_b.crs == ds_a.crs
             else transform_bounds(ds_b.crs, ds_a.crs, *ds_b.bounds, densify_pts=21))
    if not intersects(ext_a, ext_b):
        raise RasterError(
            f"The {what} do not overlap: {ds_a.name} covers {fmt_ext(ext_a)} and "
            f"{ds_b.name} covers {fmt_ext(ext_b)} (both in {crs_name(ds_a.crs)}).",
            "Give two rasters of the same place, or check that both have the right CRS.")


def warp_onto(ds: rasterio.DatasetReader, grid: Grid, bands: list[int] | int,
              resampling: Resampling, dst_nodata: float,
              src_transform: Affine | None = None) -> np.ndarray:
    """Bands of ``ds`` resampled onto ``grid``; pixels it does not cover get ``dst_nodata``.

    Args:
        ds: Source raster (its nodata is honoured).
        grid: Target grid (A's).
        bands: 1-based band index or indices.
        resampling: Nearest for class codes, bilinear for probabilities and images.
        dst_nodata: Value of pixels without data.
        src_transform: Georeference to use instead of ``ds.transform`` (a shift correction).

    Returns:
        Shape: (H, W) for one band index, (C, H, W) for a list; ``ds``'s data type for
        nearest, float32 otherwise.
    """
    idx = [bands] if isinstance(bands, int) else list(bands)
    dtype = ds.dtypes[0] if resampling == Resampling.nearest else "float32"
    out = np.full((len(idx), grid.height_px, grid.width_px), dst_nodata, dtype=dtype)
    src = ds.read(idx)
    reproject(src, out, src_transform=src_transform or ds.transform, src_crs=ds.crs,
              src_nodata=ds.nodata, dst_transform=grid.transform, dst_crs=grid.crs,
              dst_nodata=dst_nodata, resampling=resampling)
    return out[0] if isinstance(bands, int) else out


def shifted_transform(transform: Affine, grid: Grid, dx_px: float, dy_px: float) -> Affine:
    """``transform`` moved by (-dx, -dy) pixels of ``grid``: undoes a measured shift."""
    g = grid.transform
    return Affine.translation(-dx_px * g.a - dy_px * g.b, -dx_px * g.d - dy_px * g.e) \
        @ transform


def class_image(codes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A grey image of a class map: each code a fixed pseudo-random value, nodata the mean.

    Shape: (H, W) integer codes and boolean validity in, float64 (H, W) out.
    """
    table = np.random.default_rng(CLASS_VALUE_SEED).random(MAX_CODE)
    img = table[np.clip(codes.astype(np.int64), 0, MAX_CODE - 1)]
    return fill_invalid(img, valid)


def fill_invalid(img: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``img`` as float64 with invalid pixels set to the mean of the valid ones."""
    out = np.asarray(img, dtype=np.float64).copy()
    mean = float(out[valid].mean()) if valid.any() else 0.0
    out[~valid] = mean
    return out


def estimate_shift(img_a: np.ndarray, img_b: np.ndarray) -> ShiftEstimate:
    """The shift of ``img_b``'s content against ``img_a``'s, by phase correlation.

    Both images are centred, Hann-windowed and correlated through the FFT, phase only
    except at frequencies with almost no energy (below :data:`WHITENING_FLOOR` of the
    largest), whose random phases would otherwise swamp maps with little structure;
    the integer peak is refined to 1/:data:`UPSAMPLE` px (:func:`_refine_peak`).
    Shifts up to half the image size are found.

    Shape: two float arrays (H, W) on the same grid.

    Raises:
        RasterError: The images are smaller than :data:`MIN_SHIFT_PX` on a side.
    """
    h, w = img_a.shape
    if h < MIN_SHIFT_PX or w < MIN_SHIFT_PX:
        raise RasterError(f"The overlap of the two dates is {w}x{h} px, too small to measure "
                          "a shift.", f"Give rasters that share at least {MIN_SHIFT_PX}x"
                                      f"{MIN_SHIFT_PX} px, or pass --max-shift -1 to skip "
                                      "the check.")
    win = np.outer(np.hanning(h), np.hanning(w))
    fa = np.fft.fft2((img_a - img_a.mean()) * win)
    fb = np.fft.fft2((img_b - img_b.mean()) * win)
    cross = fb * np.conj(fa)
    mag = np.abs(cross)
    cross /= mag + WHITENING_FLOOR * max(float(mag.max()), 1e-12)
    corr = np.real(np.fft.ifft2(cross))
    iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
    sy = iy - h if iy > h // 2 else iy
    sx = ix - w if ix > w // 2 else ix
    fine_y, fine_x, peak = _refine_peak(cross, float(sy), float(sx))
    return ShiftEstimate(fine_x, fine_y, peak)


def _refine_peak(cross: np.ndarray, sy: float, sx: float) -> tuple[float, float, float]:
    """The correlation peak near (sy, sx) to 1/UPSAMPLE px, by a local upsampled DFT.

    The correlation surface is evaluated on a 1.5 px square around the integer peak at
    ``UPSAMPLE`` times the resolution by matrix products (Guizar-Sicairos et al. 2008),
    without the FFT of a padded array.

    Shape: ``cross`` is the normalised cross-power spectrum (H, W).
    """
    h, w = cross.shape
    size = int(np.ceil(UPSAMPLE * 1.5))
    centre = size // 2
    rows = np.arange(size) - centre + sy * UPSAMPLE
    cols = np.arange(size) - centre + sx * UPSAMPLE
    ky = np.exp(2j * np.pi * np.outer(rows, np.fft.fftfreq(h, UPSAMPLE)))
    kx = np.exp(2j * np.pi * np.outer(np.fft.fftfreq(w, UPSAMPLE), cols))
    local = np.real(ky @ cross @ kx) / cross.size
    my, mx = np.unravel_index(int(np.argmax(local)), local.shape)
    return (float(sy + (my - centre) / UPSAMPLE), float(sx + (mx - centre) / UPSAMPLE),
            float(local[my, mx]))


def misregistration_error(shift: ShiftEstimate, max_shift_px: float, measured_on: str,
                          consequence: str) -> RasterError:
    """The refusal of a shift above ``--max-shift``, with the figure and the fixes.

    Args:
        shift: The measured shift.
        max_shift_px: ``--max-shift``.
        measured_on: What was correlated (``classes``, ``images``).
        consequence: What the shift would do, e.g. "differencing would report sliver
            changes along every class boundary".
    """
    return RasterError(
        f"The second date is misregistered against the first by {shift.length_px:.3f} px "
        f"(dx {shift.dx_px:+.2f}, dy {shift.dy_px:+.2f} px, measured by phase correlation "
        f"of the {measured_on}, correlation peak {shift.peak:.2f}), more than --max-shift "
        f"{max_shift_px:g} px: {consequence}.",
        "Pass --correct-shift to move the second date by the measured shift, raise "
        "--max-shift, or co-register the rasters first.")
