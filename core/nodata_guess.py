"""Nodata that a raster does not declare: a constant fill value along its borders.

Mosaics of chips and scenes with a rotated footprint are often filled with one value (0,
-9999, 65535) outside their data without declaring it as nodata; every such pixel is then
classified like data. :func:`guess_nodata` looks for that value on a decimated read of the
bands (core/coverage.py reads them) and returns it with its evidence, or None.

The rule (all must hold):

1. Every band's most frequent value among its border pixels (the outermost rows and
   columns of the read grid, skipping pixels masked already) is the same value ``v``.
2. At least :data:`MIN_BORDER_SHARE` of the border pixels equal ``v`` in every band.
3. At least :data:`MIN_PIXEL_SHARE` of all pixels equal ``v`` in every band.
4. ``v`` lies at or beyond the range of each band's other valid values (below its minimum
   or above its maximum): a fill value, not a common data value.

A value already masked (the declared nodata, or the override) never qualifies, since the
pixels holding it are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Share of the border pixels that must hold the value in every band.
MIN_BORDER_SHARE = 0.2
#: Share of all pixels that must hold the value in every band.
MIN_PIXEL_SHARE = 0.005


@dataclass(frozen=True)
class NodataSuspect:
    """A likely undeclared nodata value and why.

    Attributes:
        value: The fill value.
        border_fraction: Share of the border pixels equal to it in every band.
        pixel_fraction: Share of all pixels equal to it in every band.
        bands: Number of bands checked.
    """

    value: float
    border_fraction: float
    pixel_fraction: float
    bands: int

    def to_dict(self) -> dict[str, float | int | str]:
        """JSON form with a one-line explanation."""
        return {"value": self.value, "border_fraction": round(self.border_fraction, 4),
                "pixel_fraction": round(self.pixel_fraction, 4), "bands": self.bands,
                "evidence": (f"{100 * self.border_fraction:.1f} % of the border pixels and "
                             f"{100 * self.pixel_fraction:.1f} % of all pixels are "
                             f"{self.value:g} in all {self.bands} band(s), outside the range "
                             "of the other values")}


class BorderValueTracker:
    """Collects, band by band, what :func:`guess_nodata` needs (no band kept in memory).

    Feed each band's decimated values and validity with :meth:`add`, then call
    :meth:`result`.
    """

    def __init__(self) -> None:
        self._value: float | None = None
        self._same = True
        self._bands = 0
        self._all_equal: np.ndarray | None = None
        self._outside_range = True

    def add(self, values: np.ndarray, valid: np.ndarray) -> None:
        """One band.

        Shape:
            values: (H, W) any numeric dtype; valid: (H, W) bool (pixels not masked yet).
        """
        self._bands += 1
        if not self._same:
            return
        border = border_mask(values.shape)
        candidates = values[border & valid]
        candidates = candidates[np.isfinite(candidates)]
        if candidates.size == 0:
            self._same = False
            return
        uniq, counts = np.unique(candidates, return_counts=True)
        value = float(uniq[int(np.argmax(counts))])
        if self._value is None:
            self._value = value
        elif value != self._value:
            self._same = False
            return
        equal = (values == value) & valid
        self._all_equal = equal if self._all_equal is None else self._all_equal & equal
        others = values[valid & ~equal & np.isfinite(values)]
        if others.size and float(others.min()) < value < float(others.max()):
            self._outside_range = False

    def result(self) -> NodataSuspect | None:
        """The suspect value by the module's rule, or None."""
        if not self._same or self._value is None or self._all_equal is None:
            return None
        if not self._outside_range:
            return None
        border = border_mask(self._all_equal.shape)
        border_share = float(self._all_equal[border].mean())
        pixel_share = float(self._all_equal.mean())
        if border_share < MIN_BORDER_SHARE or pixel_share < MIN_PIXEL_SHARE:
            return None
        return NodataSuspect(self._value, border_share, pixel_share, self._bands)


def border_mask(shape: tuple[int, ...]) -> np.ndarray:
    """The outermost rows and columns of a grid.

    Shape: (H, W) bool.
    """
    mask = np.zeros(shape[-2:], dtype=bool)
    mask[0, :] = mask[-1, :] = True
    mask[:, 0] = mask[:, -1] = True
    return mask


def guess_nodata(bands: list[tuple[np.ndarray, np.ndarray]]) -> NodataSuspect | None:
    """The likely undeclared nodata value of bands read on one grid (see the module's rule).

    Args:
        bands: (values, valid) per band. Shape: (H, W) each.
    """
    tracker = BorderValueTracker()
    for values, valid in bands:
        tracker.add(values, valid)
    return tracker.result()
