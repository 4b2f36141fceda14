"""Burning vector label features into label, region and category arrays on a grid.

A pixel is burnt when its centre lies inside a geometry, or, with ``all_touched``, when the
geometry touches it at all (points and lines burn the pixels they touch).

Overlap rule:

- Where features of **different** model classes overlap, the pixel is set to 0 (unlabelled):
  ambiguous labels are never trained on or evaluated against.
- Where features of the **same** class overlap, the class is kept and the pixel's region
  (and category) is that of the later feature in layer order.

(Not to be confused with :mod:`terraseg.core.rasterise`, the ``terraseg rasterise`` command,
which writes burnt labels to a GeoTIFF.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.features import rasterize

from terraseg.core.class_resolution import as_int, is_missing, value_key
from terraseg.core.grid import Grid


@dataclass(frozen=True)
class LabelFeature:
    """One usable vector feature, geometry already in the grid's CRS (GeoJSON-like dict).

    Attributes:
        fid: Source feature id.
        geometry: GeoJSON-like geometry in the grid's CRS.
        value: Source class value.
        category: Category value, or None.
    """

    fid: str
    geometry: dict
    value: object
    category: object


def burn_labels(
    features: Sequence[LabelFeature], ids: Sequence[int], grid: Grid, n_classes: int,
    all_touched: bool,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Labels (with the overlap rule), regions, and whether any pixel was ambiguous.

    Args:
        features: Features in layer order.
        ids: Model class id (1..``n_classes``) of each feature.
        grid: Target grid.
        n_classes: Number of model classes.
        all_touched: Burn every touched pixel instead of pixel centres only.

    Returns:
        uint8 labels, shape (H, W), 0 = unlabelled; int32 regions, shape (H, W), the 1-based
        position of the (last) feature that labelled the pixel, 0 where unlabelled; and
        whether features of different classes overlapped anywhere.
    """
    shape_hw = (grid.height_px, grid.width_px)
    labels = np.zeros(shape_hw, dtype=np.uint8)
    n_cover = np.zeros(shape_hw, dtype=np.uint8)
    for cid in range(1, n_classes + 1):
        geoms = [f.geometry for f, i in zip(features, ids, strict=True) if i == cid]
        if not geoms:
            continue
        mask = rasterize(
            ((g, 1) for g in geoms), out_shape=shape_hw, transform=grid.transform, fill=0,
            all_touched=all_touched, dtype="uint8",
        ).astype(bool)
        labels[mask] = cid
        np.add(n_cover, mask, out=n_cover, where=n_cover < 255)
    ambiguous = n_cover > 1
    labels[ambiguous] = 0
    regions = rasterize(
        ((f.geometry, i + 1) for i, f in enumerate(features)), out_shape=shape_hw,
        transform=grid.transform, fill=0, all_touched=all_touched, dtype="int32",
    )
    regions[labels == 0] = 0
    return labels, regions.astype(np.int32, copy=False), bool(ambiguous.any())


def burn_categories(
    features: Sequence[LabelFeature], grid: Grid, labels: np.ndarray, all_touched: bool
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Category index + 1 per labelled pixel (later feature wins), and the sorted names.

    Integer categories are sorted numerically, others as text; features without a category
    burn nothing.

    Args:
        features: Features in layer order.
        grid: Target grid.
        labels: The burnt labels, shape (H, W); unlabelled pixels get no category.
        all_touched: Burn every touched pixel instead of pixel centres only.

    Returns:
        int32 categories, shape (H, W), 0 = none, else index + 1 into the names; the names.
    """
    present = {
        value_key(f.category): as_int(f.category)
        for f in features
        if not is_missing(f.category)
    }
    if present and all(v is not None for v in present.values()):
        names = tuple(sorted(present, key=lambda k: present[k]))
    else:
        names = tuple(sorted(present))
    index = {n: i + 1 for i, n in enumerate(names)}
    shape_hw = (grid.height_px, grid.width_px)
    pairs = [
        (f.geometry, index[value_key(f.category)])
        for f in features
        if not is_missing(f.category)
    ]
    if not pairs:
        return np.zeros(shape_hw, dtype=np.int32), names
    cats = rasterize(
        pairs, out_shape=shape_hw, transform=grid.transform, fill=0, all_touched=all_touched,
        dtype="int32",
    )
    cats[labels == 0] = 0
    return cats.astype(np.int32, copy=False), names
