"""Clean-up of a class raster: morphological opening/closing and minimum-region removal.

Applied by ``predict`` after the network (the probability raster stays as predicted):

1. **Opening** of one class (default: class 1, the positive class of a two-class model)
   with a disk of radius ``opening_px``: specks and thin slivers narrower than the disk
   leave the class; each such pixel takes the most probable *other* class.
2. **Closing** of the same class with a disk of radius ``closing_px``: gaps and notches
   narrower than the disk are filled with the class (only on valid pixels).
3. **Minimum region**: connected regions (8-connected, any class) smaller than
   ``min_region_px`` pixels take, pixel by pixel, the most probable other class - for two
   classes simply the other class.

Everything streams over strips of rows, so memory is bounded as for prediction: opening and
closing read each strip with a halo of ``2 * (opening_px + closing_px)`` rows, and region
sizes are found in two passes (strip-wise labelling, regions joined across strip borders
with a sparse connected-components pass). Results do not depend on the strip size.
Pixels at the edge of the processed extent see only what lies inside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from terraseg.core.grid import Grid, projected_pixel_area_m2
from terraseg.protocol.errors import ConfigError

EIGHT = np.ones((3, 3), dtype=bool)
MAX_RADIUS_PX = 64

#: reads rows [r0, r1) of a raster: (bands, rows, width); rows outside give nodata
RowReader = Callable[[int, int], np.ndarray]
#: receives (first row, uint8 rows (h, width)) of an output class raster
RowWriter = Callable[[int, np.ndarray], None]


@dataclass(frozen=True)
class PostProcess:
    """Settings of the class-raster clean-up (all 0: none).

    Attributes:
        opening_px: Radius (pixels) of the disk for opening ``class_id``.
        closing_px: Radius (pixels) of the disk for closing ``class_id``.
        min_region_px: Regions with fewer pixels are removed (0 or 1: keep all).
        class_id: Class that opening and closing act on.
    """

    opening_px: int = 0
    closing_px: int = 0
    min_region_px: int = 0
    class_id: int = 1

    def __post_init__(self) -> None:
        for name in ("opening_px", "closing_px"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_RADIUS_PX:
                flag = "--" + name.replace("_px", "")
                raise ConfigError(f"{flag} {value} is outside 0..{MAX_RADIUS_PX} pixels.",
                                  f"Give a radius in pixels, e.g. {flag} 1 (a 3x3 disk).")
        if self.min_region_px < 0:
            raise ConfigError(f"Minimum region {self.min_region_px} px is negative.",
                              "Use 0 to keep every region, or a size such as 10.")

    @property
    def active(self) -> bool:
        """Whether any step is switched on."""
        return bool(self.opening_px or self.closing_px or self.min_region_px > 1)

    @property
    def halo_px(self) -> int:
        """Rows of context a strip needs for opening and closing."""
        return 2 * (self.opening_px + self.closing_px)

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form (for results and logs)."""
        return {"opening_px": self.opening_px, "closing_px": self.closing_px,
                "min_region_px": self.min_region_px, "class_id": self.class_id}


def min_region_pixels(grid: Grid, min_area_m2: float) -> int:
    """Pixels in ``min_area_m2`` on ``grid`` (a geographic CRS uses the centre latitude).

    Raises:
        ConfigError: Negative area, or a grid without CRS.
    """
    if min_area_m2 < 0:
        raise ConfigError(f"Minimum area {min_area_m2} m2 is negative.",
                          "Use 0 to keep every region, or e.g. --min-area 500.")
    if min_area_m2 == 0:
        return 0
    if grid.crs is None:
        raise ConfigError("The raster has no CRS, so an area in m2 cannot be turned into "
                          "pixels.", "Assign the raster's CRS, or give --min-region-px.")
    if grid.crs.is_geographic:
        dx, dy = (abs(v) for v in grid.pixel_size)
        lat = grid.transform.f + grid.transform.e * grid.height_px / 2
        px_m2 = (dx * 111_320.0 * math.cos(math.radians(lat))) * (dy * 110_574.0)
    else:
        px_m2 = projected_pixel_area_m2(grid.crs, grid.transform)
    return max(int(math.ceil(min_area_m2 / px_m2)), 1)


def disk(radius: int) -> np.ndarray:
    """Boolean disk structuring element of the given radius (radius 1 is the 3x3 square)."""
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (yy * yy + xx * xx) <= radius * radius + radius  # rounder than the pure circle


def next_best_class(prob: np.ndarray, current: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Per pixel, the most probable class other than ``current``.

    Args:
        prob: float (K, ...) class probabilities, band k for ``class_ids[k]``.
        current: uint8 (...) class ids to avoid (any shape, e.g. (H, W) or (N,)).
        class_ids: int (K,) class id of each band.
    """
    p = prob.copy()
    for k, cid in enumerate(class_ids.tolist()):
        p[k][current == cid] = -np.inf
    return class_ids[np.argmax(p, axis=0)].astype(np.uint8)


def morph_strip(cls: np.ndarray, prob: np.ndarray, spec: PostProcess,
                class_ids: np.ndarray) -> np.ndarray:
    """Opening then closing of ``spec.class_id`` on a class array (0 = nodata)."""
    valid = cls > 0
    mask = cls == spec.class_id
    out = cls.copy()
    if spec.opening_px:
        se = disk(spec.opening_px)
        opened = ndimage.binary_dilation(
            ndimage.binary_erosion(mask, se, border_value=0), se, border_value=0) & mask
        removed = mask & ~opened
        if removed.any():
            out[removed] = next_best_class(prob[:, removed], cls[removed], class_ids)
        mask = opened
    if spec.closing_px:
        se = disk(spec.closing_px)
        closed = ndimage.binary_erosion(
            ndimage.binary_dilation(mask, se, border_value=0), se, border_value=0)
        out[closed & valid & ~mask] = spec.class_id
    return out


def iter_strips(height: int, strip_px: int) -> Iterator[tuple[int, int]]:
    """(r0, r1) row ranges covering ``height`` rows."""
    for r0 in range(0, height, strip_px):
        yield r0, min(r0 + strip_px, height)


def morph_rows(read_cls: RowReader, read_prob: RowReader, r0: int, r1: int,
               spec: PostProcess, class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows [r0, r1) before and after opening/closing, from a strip read with its halo."""
    h = spec.halo_px
    cls = read_cls(r0 - h, r1 + h)[0]
    prob = read_prob(r0 - h, r1 + h)
    rows = slice(h, h + (r1 - r0))
    return cls[rows], morph_strip(cls, prob, spec, class_ids)[rows]


def label_regions(cls: np.ndarray, offset: int) -> tuple[np.ndarray, int]:
    """8-connected regions of equal class (0 = nodata, unlabelled), numbered from offset+1."""
    labels = np.zeros(cls.shape, dtype=np.int64)
    n = 0
    for value in np.unique(cls):
        if value == 0:
            continue
        lab, count = ndimage.label(cls == value, structure=EIGHT)
        sel = lab > 0
        labels[sel] = lab[sel] + offset + n
        n += count
    return labels, n


class RegionSizes:
    """Sizes of connected regions over a raster read strip by strip (first pass).

    Call :meth:`add` with consecutive strips top to bottom, then :meth:`small`; the second
    pass relabels each strip with :meth:`relabel` using the same strips.
    """

    def __init__(self) -> None:
        self._offsets: list[int] = []
        self._sizes: list[np.ndarray] = []
        self._edges: list[np.ndarray] = []
        self._total = 0
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, cls: np.ndarray) -> None:
        """Label one strip and join its regions to those of the strip above."""
        labels, n = label_regions(cls, self._total)
        self._offsets.append(self._total)
        ids = labels[labels > 0] - self._total  # 1..n
        self._sizes.append(np.bincount(ids, minlength=n + 1)[1:n + 1])
        if self._last is not None:
            up_lab, up_cls = self._last
            low_lab, low_cls = labels[0], cls[0]
            w = len(up_cls)
            for d in (-1, 0, 1):  # vertical and diagonal neighbours across the border
                a = slice(max(0, -d), w - max(0, d))
                b = slice(max(0, d), w - max(0, -d))
                same = (up_cls[a] == low_cls[b]) & (up_cls[a] > 0)
                if same.any():
                    self._edges.append(np.stack([up_lab[a][same], low_lab[b][same]], 1))
        self._last = (labels[-1], cls[-1])
        self._total += n

    def small(self, min_px: int) -> np.ndarray:
        """Per region id (index 0 unused): whether the region has fewer than ``min_px`` pixels."""
        n = self._total
        sizes = np.concatenate([np.zeros(1, int), *self._sizes]) if n else np.zeros(1, int)
        if self._edges:
            e = np.concatenate(self._edges)
            graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n + 1, n + 1))
            _, root = connected_components(graph, directed=False)
        else:
            root = np.arange(n + 1)
        total = np.bincount(root, weights=sizes)
        out = total[root] < min_px
        out[0] = False
        return out

    def relabel(self, index: int, cls: np.ndarray) -> np.ndarray:
        """Region ids of strip ``index`` (as numbered in the first pass)."""
        return label_regions(cls, self._offsets[index])[0]


def remove_small_regions(cls: np.ndarray, prob: np.ndarray, labels: np.ndarray,
                         small: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Give the pixels of small regions their most probable other class."""
    sel = small[labels]
    if not sel.any():
        return cls
    out = cls.copy()
    out[sel] = next_best_class(prob[:, sel], cls[sel], class_ids)
    return out


def morph_pass(read_cls: RowReader, read_prob: RowReader, height: int, spec: PostProcess,
               class_ids: np.ndarray, write: RowWriter, strip_px: int = 480) -> int:
    """Opening/closing over a whole class raster, strip by strip; returns changed pixels.

    ``write`` receives (first row, uint8 rows) top to bottom.
    """
    _check_class(spec, class_ids)
    changed = 0
    for r0, r1 in iter_strips(height, strip_px):
        raw, rows = morph_rows(read_cls, read_prob, r0, r1, spec, class_ids)
        changed += int((rows != raw).sum())
        write(r0, rows)
    return changed


def region_pass(read_cls: RowReader, read_prob: RowReader, height: int, spec: PostProcess,
                class_ids: np.ndarray, write: RowWriter, strip_px: int = 480) -> int:
    """Minimum-region removal over a whole class raster (two passes); returns changed pixels."""
    sizes = RegionSizes()
    strips = list(iter_strips(height, strip_px))
    for r0, r1 in strips:
        sizes.add(read_cls(r0, r1)[0])
    small = sizes.small(spec.min_region_px)
    changed = 0
    for i, (r0, r1) in enumerate(strips):
        cls = read_cls(r0, r1)[0]
        rows = remove_small_regions(cls, read_prob(r0, r1), sizes.relabel(i, cls), small,
                                    class_ids)
        changed += int((rows != cls).sum())
        write(r0, rows)
    return changed


def _check_class(spec: PostProcess, class_ids: np.ndarray) -> None:
    if spec.class_id not in class_ids.tolist():
        raise ConfigError(f"Class id {spec.class_id} is not one of the model's classes "
                          f"{class_ids.tolist()}.", "Pick one of the model's classes.")
