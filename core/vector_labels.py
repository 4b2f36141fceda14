"""Vector labels: a layer's class attribute rasterised onto a grid.

Any layer fiona reads works (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, ...), with a class
attribute holding integers or names; points and lines work too (e.g. evaluation reference
points). Geometries are repaired when invalid, reprojected to the grid's CRS and burnt
(pixel centre inside, or every touched pixel with ``all_touched``); see
:mod:`terraseg.core.burn` for the overlap rule and :mod:`terraseg.core.class_resolution` for
how values become model classes.

Features with a null/empty geometry or a null class value are skipped and listed in
``LabelSet.skipped_features``. Invalid geometries are repaired
(:func:`terraseg.core.geometry_repair.repair_geometry`, keeping only parts of the original
dimension, e.g. polygons) and listed in ``LabelSet.repaired_features``; a feature that is
empty after repair is also skipped. Features that lie entirely outside the raster's extent
label nothing: they are listed by class in ``LabelSet.outside_features`` and noted, and
when they leave training with a single class the error names them. Human-readable notes
about all of this are in ``LabelSet.notes``.

Each region (feature) carries a stable key, ``LabelSet.region_keys``: a hash of its class
value and its geometry in the layer's own CRS, with coordinates rounded to
:data:`KEY_DECIMALS` decimals of the CRS unit and the geometry normalised (ring start and
orientation do not matter). The key names the same polygon whatever its feature id or
position in the layer, so retraining can keep the split of the previous model.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import fiona
import numpy as np
import shapely
from fiona.errors import FionaError
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.warp import transform_geom
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from terraseg.core.burn import LabelFeature, burn_categories, burn_labels
from terraseg.core.class_resolution import is_missing, resolve_classes, value_key
from terraseg.core.classes import ClassInfo, ClassMapping
from terraseg.core.geometry_repair import repair_geometry
from terraseg.core.grid import Grid
from terraseg.core.label_extent import check_vector_overlap, crs_name, grid_crs
from terraseg.core.label_set import LabelSet, describe_outside, make_label_set
from terraseg.core.layer_spec import check_exists, resolve_layer, split_layer_spec
from terraseg.protocol.errors import LabelError

log = logging.getLogger(__name__)

#: Decimals of the layer's CRS unit kept in a region key (1e-6 degree is about 0.1 m).
KEY_DECIMALS = 6


def load_vector_labels(
    path: str | Path,
    grid: Grid,
    class_field: str,
    class_map: ClassMapping | None = None,
    classes: tuple[ClassInfo, ...] | None = None,
    category_field: str | None = None,
    all_touched: bool = False,
    require_two_classes: bool = True,
) -> LabelSet:
    """Rasterise a vector layer's class attribute onto ``grid``.

    The first layer is used unless ``path`` is ``"file|layername=NAME"`` (or
    ``"file|layerid=N"``) as QGIS writes it. Class resolution is
    :mod:`terraseg.core.class_resolution`'s, the overlap rule :mod:`terraseg.core.burn`'s.

    Args:
        path: Vector file, optionally with a ``|layername=`` suffix.
        grid: Target grid.
        class_field: Attribute with the class (integer or name); matched case-insensitively
            when there is no exact match.
        class_map: Optional mapping of source classes onto model classes.
        classes: Fixed model classes, or None when training.
        category_field: Optional attribute whose values stratify evaluation results.
        all_touched: Burn every pixel a geometry touches instead of pixel centres only.
        require_two_classes: When training (``classes`` is None), fail unless at least two
            classes have labelled pixels.

    Returns:
        The rasterised labels.

    Raises:
        LabelError: File missing or unreadable, field missing, empty layer, no CRS, no
            overlap with the grid, unknown class values, a single class, or no pixels.
        RasterError: ``grid`` has no CRS.
    """
    dst_crs = grid_crs(grid)
    file_path, layer = split_layer_spec(str(path))
    name = Path(file_path).name
    check_exists(file_path, "Label file")
    layer = resolve_layer(file_path, layer)

    raw: list[tuple[str, object, object, object]] = []  # fid, geometry, value, category
    try:
        with fiona.open(file_path, layer=layer) as src:
            fields = list(src.schema.get("properties", {}).keys())
            cls_key = _resolve_field(class_field, fields, name, "class")
            cat_key = (
                _resolve_field(category_field, fields, name, "category")
                if category_field
                else None
            )
            src_crs_wkt = src.crs_wkt
            for feat in src:
                props = feat.properties
                raw.append(
                    (
                        str(feat.id),
                        feat.geometry,
                        props.get(cls_key),
                        props.get(cat_key) if cat_key else None,
                    )
                )
    except (FionaError, OSError, ValueError) as exc:
        if isinstance(exc, LabelError):
            raise
        raise LabelError(
            f"Cannot read vector labels {file_path}: {exc}.",
            "Give a readable vector layer (GeoPackage, GeoJSON, Shapefile, ...).",
        ) from exc

    if not raw:
        raise LabelError(
            f"The label layer {name} ({layer}) has no features.",
            "Draw or add labelled polygons/points to the layer and save it.",
        )
    if not src_crs_wkt:
        raise LabelError(
            f"The label layer {name} has no coordinate reference system.",
            "Assign the layer's CRS (in QGIS: Layer Properties > Source > Assign CRS, or add a "
            ".prj to the Shapefile) and save it again.",
        )
    src_crs = CRS.from_wkt(src_crs_wkt)

    features, keys, skipped, repaired, notes = _prepare_features(raw, src_crs, dst_crs)
    if not features:
        raise LabelError(
            f"No usable features in {name}: all {len(raw)} feature(s) have an empty geometry "
            f"or no value in '{cls_key}' (skipped ids: {_fmt_ids(skipped)}).",
            f"Fill in the '{cls_key}' attribute and the geometries of the labelled features.",
        )
    check_vector_overlap([f.geometry for f in features], grid, dst_crs, src_crs, name)

    values = [f.value for f in features]
    model_classes, lookup = resolve_classes(values, class_map, classes, name)
    ids = [lookup[value_key(v)] for v in values]
    outside = features_outside(features, ids, model_classes, grid)
    if outside:
        note = describe_outside(outside)
        notes.append(note)
        log.warning("%s: %s", name, note)

    labels, regions, ambiguous = burn_labels(features, ids, grid, len(model_classes), all_touched)
    if not labels.any():
        if ambiguous:
            raise LabelError(
                f"All labelled pixels of {name} are covered by features of different classes, "
                "which are treated as unlabelled.",
                "Remove overlaps between polygons of different classes.",
            )
        raise LabelError(
            f"The features of {name} overlap the raster's extent but cover no pixel centre "
            f"(pixel size {_fmt_pixel(grid)}); they are probably smaller than a pixel.",
            "Draw larger polygons, use all_touched (burn every touched pixel), or use a raster "
            "with finer pixels.",
        )

    categories = None
    category_names: tuple[str, ...] = ()
    if cat_key:
        categories, category_names = burn_categories(features, grid, labels, all_touched)

    return make_label_set(
        labels,
        regions,
        model_classes,
        categories,
        category_names,
        repaired=tuple(repaired),
        skipped=tuple(skipped),
        feature_ids=tuple(f.fid for f in features),
        notes=tuple(notes),
        check_two=classes is None and require_two_classes,
        name=name,
        region_keys=keys,
        outside=outside,
    )


def region_key(value: object, geometry: BaseGeometry) -> str:
    """The stable key of a labelled polygon: ``v:`` + a hash of its class and geometry.

    Args:
        value: Source class value (as :func:`~terraseg.core.class_resolution.value_key`).
        geometry: The (repaired) geometry in the label layer's own CRS.
    """
    rounded = shapely.transform(geometry, lambda xy: np.round(xy, KEY_DECIMALS) + 0.0)
    h = hashlib.sha256(value_key(value).encode("utf-8") + b"\0")
    h.update(shapely.to_wkb(shapely.normalize(rounded), output_dimension=2, byte_order=1))
    return "v:" + h.hexdigest()[:32]


def unique_keys(keys: Sequence[str]) -> tuple[str, ...]:
    """Keys made unique in order: a repeated key gets ``#2``, ``#3``, ..."""
    seen: dict[str, int] = {}
    out = []
    for k in keys:
        seen[k] = seen.get(k, 0) + 1
        out.append(k if seen[k] == 1 else f"{k}#{seen[k]}")
    return tuple(out)


def features_outside(features: Sequence[LabelFeature], ids: Sequence[int],
                     classes: Sequence[ClassInfo], grid: Grid) -> dict[str, tuple[str, ...]]:
    """Model class name -> ids of its features that lie entirely outside the grid's extent.

    A feature that only touches the extent's edge is outside too (it covers no pixel).
    """
    extent = shapely.box(*grid.bounds)
    out: dict[str, list[str]] = {}
    for f, cid in zip(features, ids, strict=True):
        g = shape(f.geometry)
        if not g.intersects(extent) or g.touches(extent):
            out.setdefault(classes[cid - 1].name, []).append(f.fid)
    return {k: tuple(v) for k, v in out.items()}


def _resolve_field(field: str, fields: Sequence[str], name: str, what: str) -> str:
    """The attribute name for ``field``: exact match, else a unique case-insensitive one."""
    if field in fields:
        return field
    matches = [f for f in fields if f.lower() == field.lower()]
    if len(matches) == 1:
        return matches[0]
    available = ", ".join(fields) if fields else "(none)"
    raise LabelError(
        f"The {what} field '{field}' does not exist in {name}; available fields: {available}.",
        f"Choose one of the available fields as the {what} field.",
    )


def _prepare_features(
    raw: Sequence[tuple[str, object, object, object]], src_crs: CRS, dst_crs: CRS
) -> tuple[list[LabelFeature], tuple[str, ...], list[str], list[str], list[str]]:
    """Skip unusable features, repair invalid geometries, key and reproject the rest."""
    skipped: list[str] = []
    repaired: list[str] = []
    notes: list[str] = []
    kept: list[tuple[str, dict, object, object]] = []
    keys: list[str] = []
    for fid, geom, value, category in raw:
        if geom is None:
            skipped.append(fid)
            notes.append(f"feature {fid}: no geometry; skipped")
            continue
        if is_missing(value):
            skipped.append(fid)
            notes.append(f"feature {fid}: no class value; skipped")
            continue
        g = shapely.force_2d(shape(geom))
        if g.is_empty:
            skipped.append(fid)
            notes.append(f"feature {fid}: empty geometry; skipped")
            continue
        if not g.is_valid:
            repaired.append(fid)
            fixed = repair_geometry(g)
            if fixed.is_empty:
                skipped.append(fid)
                notes.append(f"feature {fid}: invalid geometry is empty after repair; skipped")
                continue
            notes.append(f"feature {fid}: invalid geometry repaired")
            g = fixed
        kept.append((fid, mapping(g), value, category))
        keys.append(region_key(value, g))
    for note in notes:
        log.warning("labels: %s", note)
    if not kept:
        return [], (), skipped, repaired, notes
    geoms = [k[1] for k in kept]
    if src_crs != dst_crs:
        try:
            geoms = transform_geom(src_crs, dst_crs, geoms)
        except (RasterioError, ValueError) as exc:
            raise LabelError(
                f"Cannot reproject the labels from {crs_name(src_crs)} to "
                f"{crs_name(dst_crs)}: {exc}.",
                "Check that the label layer's CRS is set correctly.",
            ) from exc
    features = [
        LabelFeature(fid, dict(g), value, category)
        for (fid, _, value, category), g in zip(kept, geoms, strict=True)
    ]
    return features, unique_keys(keys), skipped, repaired, notes


def _fmt_pixel(grid: Grid) -> str:
    px, py = grid.pixel_size
    return f"{px:g} x {py:g}"


def _fmt_ids(ids: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")
