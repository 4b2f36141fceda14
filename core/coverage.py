"""Band coverage: which share of a raster (and of the labelled pixels) every band covers.

A band that covers a smaller area than the others blanks the map wherever it is nodata,
since a pixel is predicted only where every mapped band holds data. :func:`inspect_raster`
measures each band's valid share, the chosen set's joint share, suggests the set that
covers most without dropping bands needlessly, and looks for undeclared nodata
(core/nodata_guess.py).

**Decimated reads.** Each band is read once on a grid of at most :data:`MAX_READ_PX`
pixels a side (GDAL picks overviews where the raster has them; nearest neighbour), so a
large raster is never read at full resolution. Shares are shares of that grid's pixels;
labelled pixels are burnt on the same grid (every touched pixel when the grid is
decimated, so small polygons still count).

**Suggested bands.** Start from every band of the raster and repeatedly drop the band whose
removal raises the joint coverage most, as long as that gain exceeds
:data:`DROP_GAIN` (1 percentage point) of the raster's pixels or, with labels, of the
labelled pixels; at least one band stays. A band that costs less than that is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.enums import Resampling

from terraseg.core.grid import Grid
from terraseg.core.nodata_guess import BorderValueTracker, NodataSuspect
from terraseg.core.raster import RasterSource, open_raster, parse_band_mapping

#: Longest side of the grid bands are read on, in pixels.
MAX_READ_PX = 1024
#: A band is left out of the suggestion when leaving it out gains more than this share.
DROP_GAIN = 0.01


@dataclass(frozen=True)
class BandCoverage:
    """Coverage of one band.

    Attributes:
        index: 1-based band number.
        description: The band's description ("" when none).
        nodata: The value masking it (the override, else the declared one; None: none).
        valid_fraction: Share of the raster's pixels valid in this band.
        labelled_fraction: Share of the labelled pixels valid in this band (None without
            labels).
    """

    index: int
    description: str
    nodata: float | None
    valid_fraction: float
    labelled_fraction: float | None


@dataclass(frozen=True)
class CoverageReport:
    """What ``terraseg inspect`` reports about a raster.

    Attributes:
        raster: The raster's path.
        width_px, height_px: The raster's size.
        read_width_px, read_height_px: The decimated grid the shares are measured on.
        bands: Coverage per band of the raster.
        chosen: The bands asked about (``--bands``; all when not given).
        chosen_valid_fraction: Share of pixels valid in every chosen band.
        chosen_labelled_fraction: Share of the labelled pixels valid in every chosen band.
        suggested: The suggested bands (module rule).
        suggested_valid_fraction, suggested_labelled_fraction: Their joint coverage.
        labelled_pixels: Labelled pixels on the read grid (None without labels).
        nodata_override: The ``--nodata`` value used, if any.
        nodata_suspect: A likely undeclared nodata value, or None.
    """

    raster: str
    width_px: int
    height_px: int
    read_width_px: int
    read_height_px: int
    bands: tuple[BandCoverage, ...]
    chosen: tuple[int, ...]
    chosen_valid_fraction: float
    chosen_labelled_fraction: float | None
    suggested: tuple[int, ...]
    suggested_valid_fraction: float
    suggested_labelled_fraction: float | None
    labelled_pixels: int | None
    nodata_override: float | None
    nodata_suspect: NodataSuspect | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON result of ``inspect`` (fractions rounded to 4 digits)."""
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "raster": self.raster, "width_px": self.width_px, "height_px": self.height_px,
            "read_width_px": self.read_width_px, "read_height_px": self.read_height_px,
            "bands": [{"index": b.index, "description": b.description, "nodata": b.nodata,
                       "valid_fraction": r(b.valid_fraction),
                       "labelled_fraction": r(b.labelled_fraction)} for b in self.bands],
            "chosen_bands": list(self.chosen),
            "valid_fraction": r(self.chosen_valid_fraction),
            "labelled_fraction": r(self.chosen_labelled_fraction),
            "suggested_bands": list(self.suggested),
            "suggested_valid_fraction": r(self.suggested_valid_fraction),
            "suggested_labelled_fraction": r(self.suggested_labelled_fraction),
            "labelled_pixels": self.labelled_pixels,
            "nodata_override": self.nodata_override,
            "nodata_suspect": self.nodata_suspect.to_dict() if self.nodata_suspect else None,
            "rule": (f"bands read on a grid of at most {MAX_READ_PX} px a side; a band is left "
                     f"out of suggested_bands when leaving it out raises the joint coverage "
                     f"of the raster or of the labelled pixels by more than "
                     f"{100 * DROP_GAIN:g} point(s)"),
        }


def read_shape(height_px: int, width_px: int, max_px: int = MAX_READ_PX) -> tuple[int, int]:
    """The decimated (rows, cols) a raster is read at: at most ``max_px`` a side."""
    scale = max(height_px / max_px, width_px / max_px, 1.0)
    return max(1, math.ceil(height_px / scale)), max(1, math.ceil(width_px / scale))


def suggest_bands(valid: dict[int, np.ndarray], labelled: np.ndarray | None,
                  gain: float = DROP_GAIN) -> tuple[int, ...]:
    """Bands to use by the module's rule.

    Args:
        valid: Per band number, its validity on the read grid. Shape: (H, W) bool.
        labelled: Labelled pixels on the same grid, or None. Shape: (H, W) bool.
        gain: Minimum gain in share (of the raster or of the labelled pixels) to drop a band.
    """
    chosen = list(valid)
    n_lab = int(labelled.sum()) if labelled is not None else 0

    def shares(bands: list[int]) -> tuple[float, float]:
        joint = np.logical_and.reduce([valid[b] for b in bands])
        lab = float(joint[labelled].sum()) / n_lab if n_lab and labelled is not None else 0.0
        return float(joint.mean()), lab

    while len(chosen) > 1:
        base_all, base_lab = shares(chosen)
        best, best_gain = None, gain
        for b in chosen:
            all_, lab = shares([c for c in chosen if c != b])
            g = max(all_ - base_all, lab - base_lab)
            if g > best_gain:
                best, best_gain = b, g
        if best is None:
            break
        chosen.remove(best)
    return tuple(chosen)


def inspect_raster(raster: str | Path, band_spec: str | None = None,
                   labels: str | None = None, class_field: str | None = None,
                   nodata: float | None = None, max_px: int = MAX_READ_PX) -> CoverageReport:
    """Band coverage, suggested bands and undeclared nodata of a raster.

    Args:
        raster: Raster file.
        band_spec: The bands asked about (``1,2,3`` or ``red=3,...``); all when None.
        labels: Vector labels or a label raster, for the labelled pixels' coverage.
        class_field: Class attribute of vector labels.
        nodata: Nodata value replacing the raster's own (as ``--nodata`` of train/predict).
        max_px: Longest side of the read grid.

    Raises:
        TerraSegError: Unreadable raster, bad band mapping, unusable labels or nodata value.
    """
    chosen = parse_band_mapping(band_spec, raster).indices
    with RasterSource(raster, nodata=nodata) as src:  # validates the override
        grid = src.grid
    h, w = read_shape(grid.height_px, grid.width_px, max_px)
    tracker = BorderValueTracker()
    valid: dict[int, np.ndarray] = {}
    infos: list[tuple[int, str, float | None]] = []
    with open_raster(raster) as ds:
        for b in range(1, ds.count + 1):
            values = ds.read(b, out_shape=(h, w), resampling=Resampling.nearest)
            finite = np.isfinite(values)
            if nodata is not None:
                ok = finite & (values != np.asarray(nodata, dtype=values.dtype))
                band_nodata: float | None = float(nodata)
            else:
                mask = ds.read_masks(b, out_shape=(h, w), resampling=Resampling.nearest)
                ok = finite & (mask > 0)
                nd = ds.nodatavals[b - 1]
                band_nodata = None if nd is None else float(nd)
            tracker.add(values, ok)
            valid[b] = ok
            infos.append((b, ds.descriptions[b - 1] or "", band_nodata))
    labelled = _labelled_pixels(raster, grid, h, w, labels, class_field) if labels else None
    n_lab = int(labelled.sum()) if labelled is not None else None

    def joint(bands: tuple[int, ...]) -> tuple[float, float | None]:
        ok = np.logical_and.reduce([valid[b] for b in bands])
        if labelled is None:
            return float(ok.mean()), None
        return float(ok.mean()), (float(ok[labelled].sum()) / n_lab if n_lab else 0.0)

    per_band = tuple(BandCoverage(b, desc, nd, float(valid[b].mean()),
                                  (float(valid[b][labelled].sum()) / n_lab if n_lab else 0.0)
                                  if labelled is not None else None)
                     for b, desc, nd in infos)
    suggested = suggest_bands(valid, labelled)
    chosen_all, chosen_lab = joint(chosen)
    sugg_all, sugg_lab = joint(suggested)
    return CoverageReport(
        raster=str(raster), width_px=grid.width_px, height_px=grid.height_px,
        read_width_px=w, read_height_px=h, bands=per_band, chosen=tuple(chosen),
        chosen_valid_fraction=chosen_all, chosen_labelled_fraction=chosen_lab,
        suggested=suggested, suggested_valid_fraction=sugg_all,
        suggested_labelled_fraction=sugg_lab, labelled_pixels=n_lab,
        nodata_override=None if nodata is None else float(nodata),
        nodata_suspect=tracker.result())


def _labelled_pixels(raster: str | Path, grid: Grid, h: int, w: int, labels: str,
                     class_field: str | None) -> np.ndarray:
    """Labelled pixels (any class) burnt onto the read grid.

    Shape: (h, w) bool.
    """
    from terraseg.core.labels import load_labels

    decimated = (h, w) != (grid.height_px, grid.width_px)
    transform = grid.transform @ Affine.scale(grid.width_px / w, grid.height_px / h)
    small = Grid(height_px=h, width_px=w, transform=transform, crs_wkt=grid.crs_wkt)
    label_set = load_labels(labels, small, class_field=class_field, all_touched=decimated,
                            require_two_classes=False)
    return np.asarray(label_set.labels) > 0
