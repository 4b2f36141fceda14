"""The pixel grid of a raster: shape, transform and CRS as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window


@dataclass(frozen=True)
class Grid:
    """A georeferenced pixel grid.

    Attributes:
        height_px: Number of rows.
        width_px: Number of columns.
        transform: Affine pixel -> map transform (GDAL convention, top-left corner).
        crs_wkt: Coordinate reference system as WKT ("" if the raster has none).
    """

    height_px: int
    width_px: int
    transform: Affine
    crs_wkt: str

    @property
    def crs(self) -> CRS | None:
        """The CRS as a rasterio object, or None when missing."""
        return CRS.from_wkt(self.crs_wkt) if self.crs_wkt else None

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        t = self.transform
        xs = [t.c, t.c + t.a * self.width_px]
        ys = [t.f, t.f + t.e * self.height_px]
        return (min(xs), min(ys), max(xs), max(ys))

    def window_grid(self, window: Window) -> Grid:
        """The sub-grid covered by ``window`` (which must lie inside this grid)."""
        from rasterio.windows import transform as window_transform

        return Grid(
            height_px=int(window.height),
            width_px=int(window.width),
            transform=window_transform(window, self.transform),
            crs_wkt=self.crs_wkt,
        )


def projected_pixel_area_m2(crs: CRS, transform: Affine) -> float:
    """Area of one pixel in m2 for a projected CRS (its linear unit converted to metres)."""
    factor = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
    return abs(transform.a * transform.e) * factor * factor
