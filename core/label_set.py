"""The label set: labels, regions and categories on a grid, with their classes and counts.

Both loaders (:mod:`terraseg.core.vector_labels`, :mod:`terraseg.core.label_raster`) end in
:func:`make_label_set`, which counts pixels per class, refuses a single class when training
and fingerprints the result so caches can tell identical labels apart from changed ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from terraseg.core.classes import ClassInfo
from terraseg.protocol.errors import LabelError


@dataclass(frozen=True, eq=False)
class LabelSet:
    """Labels rasterised or resampled onto a target grid.

    Compared by identity (``eq=False``): it holds arrays; compare ``fingerprint`` instead.

    Attributes:
        labels: uint8 array, shape (H, W); 0 = unlabelled, k = model class id k.
        regions: int32 array, shape (H, W); 0 = none, else the region a labelled pixel belongs
            to: for vector labels the 1-based position of the source feature in the layer
            (its feature id is ``feature_ids[region - 1]``), for label rasters the connected
            component (8-connectivity, per class). Used for spatial train/val splits.
        classes: Model classes (ids 1..K).
        categories: int32 array, shape (H, W), or None without a category field; 0 = none,
            else index + 1 into ``category_names``.
        category_names: Distinct category values as text, sorted.
        pixel_counts: Labelled pixels per model class name (every class is a key, even at 0).
        repaired_features: Ids of features whose invalid geometry was repaired with
            ``shapely.make_valid`` (including ones that were empty after repair and skipped).
        fingerprint: sha256 hex digest of the grid shape, ``labels`` and ``regions`` bytes
            and the class names; identical inputs give identical fingerprints across runs.
        skipped_features: Ids of features that were skipped (null/empty geometry, null class
            value, or empty after repair).
        feature_ids: Source feature id per vector region (index ``region - 1``); empty for
            label rasters.
        notes: Human-readable remarks (skipped and repaired features) for logs and reports.
        region_keys: A stable key per region (index ``region - 1``) that names the same
            polygon across runs whatever its feature id or position, so a retrained model can
            keep the split of its predecessor (training/sampling.py). Vector labels:
            ``v:`` + a hash of the class value and the geometry in the layer's own CRS
            (coordinates rounded to 1e-6 of the CRS unit, normalised; a repeated identical
            polygon gets ``#2``, ``#3``, ... in layer order). Label rasters: ``r:`` + the
            model class and the region's pixel bounding box on the grid
            (``r:CLASS:row0,col0,row1,col1``, end exclusive). Empty when unknown.
        outside_features: Model class name -> ids of that class's features that lie entirely
            outside the raster's extent (so they label nothing); vector labels only.
    """

    labels: np.ndarray
    regions: np.ndarray
    classes: tuple[ClassInfo, ...]
    categories: np.ndarray | None
    category_names: tuple[str, ...]
    pixel_counts: dict[str, int]
    repaired_features: tuple[str, ...]
    fingerprint: str
    skipped_features: tuple[str, ...] = ()
    feature_ids: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    region_keys: tuple[str, ...] = ()
    outside_features: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def labelled_px(self) -> int:
        """Total number of labelled pixels."""
        return int(sum(self.pixel_counts.values()))


def make_label_set(
    labels: np.ndarray,
    regions: np.ndarray,
    classes: tuple[ClassInfo, ...],
    categories: np.ndarray | None,
    category_names: tuple[str, ...],
    *,
    repaired: tuple[str, ...],
    skipped: tuple[str, ...],
    feature_ids: tuple[str, ...],
    notes: tuple[str, ...],
    check_two: bool,
    name: str,
    region_keys: tuple[str, ...] = (),
    outside: Mapping[str, tuple[str, ...]] | None = None,
) -> LabelSet:
    """Count pixels per class, check them, fingerprint, and bundle a :class:`LabelSet`.

    Args:
        labels: uint8 labels, shape (H, W), 0 = unlabelled.
        regions: int32 regions, shape (H, W).
        classes: Model classes (ids 1..K).
        categories: int32 categories, shape (H, W), or None.
        category_names: Names of the categories.
        repaired: Ids of repaired features.
        skipped: Ids of skipped features.
        feature_ids: Source feature id per vector region.
        notes: Remarks for logs and reports.
        check_two: Fail unless at least two classes have labelled pixels (training).
        name: Name of the label source, for messages.
        region_keys: Stable key per region (see :class:`LabelSet`).
        outside: Model class name -> ids of its features entirely outside the raster.

    Returns:
        The label set.

    Raises:
        LabelError: ``check_two`` and fewer than two classes have pixels; the message names
            the features that lie outside the raster when there are any.
    """
    counts = np.bincount(labels.ravel(), minlength=max(c.id for c in classes) + 1)
    pixel_counts = {c.name: int(counts[c.id]) for c in classes}
    outside = {k: tuple(v) for k, v in (outside or {}).items() if v}
    if check_two:
        with_px = [n for n, c in pixel_counts.items() if c > 0]
        if len(with_px) < 2:
            single = (f"Only one class ({', '.join(with_px) or 'none'}) has labelled pixels "
                      f"in {name}; training needs at least two.")
            if outside:
                raise LabelError(
                    f"{single} {describe_outside(outside)}",
                    "Move or redraw those features inside the raster's extent, or choose the "
                    "raster they were drawn on.",
                )
            raise LabelError(
                single,
                "Add labels of at least one other class (e.g. 'unsealed' next to 'sealed') or "
                "check the class mapping.",
            )
    return LabelSet(
        labels=labels,
        regions=regions,
        classes=classes,
        categories=categories,
        category_names=category_names,
        pixel_counts=pixel_counts,
        repaired_features=repaired,
        fingerprint=fingerprint_labels(labels, regions, classes),
        skipped_features=skipped,
        feature_ids=feature_ids,
        notes=notes,
        region_keys=region_keys,
        outside_features=outside,
    )


def describe_outside(outside: Mapping[str, Sequence[str]], limit: int = 10) -> str:
    """Which features lie entirely outside the raster, by class, with counts and ids.

    E.g. ``3 feature(s) lie entirely outside the raster's extent and label nothing:
    unsealed 2 (ids 4, 5), sealed 1 (id 9).``
    """
    parts = []
    for cls, ids in outside.items():
        shown = ", ".join(ids[:limit]) + (f", ... ({len(ids)} in all)" if len(ids) > limit
                                          else "")
        parts.append(f"{cls} {len(ids)} (id{'s' if len(ids) > 1 else ''} {shown})")
    total = sum(len(v) for v in outside.values())
    return (f"{total} feature(s) lie entirely outside the raster's extent and label nothing: "
            + ", ".join(parts) + ".")


def fingerprint_labels(
    labels: np.ndarray, regions: np.ndarray, classes: Sequence[ClassInfo]
) -> str:
    """sha256 hex digest of the grid shape, ``labels`` and ``regions`` bytes and class names."""
    h = hashlib.sha256()
    h.update(f"{labels.shape[0]}x{labels.shape[1]}\n".encode())
    h.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(regions, dtype=np.int32).tobytes())
    h.update("\n".join(c.name for c in classes).encode("utf-8"))
    return h.hexdigest()
