"""Training and reference labels: vector layers or label rasters -> a label array on a grid.

Two sources are supported:

- **Vector layers** (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, ... anything fiona reads)
  with a class attribute holding integers or names. Geometries are repaired when invalid,
  reprojected to the grid's CRS and rasterised (pixel centre inside, or every touched pixel
  with ``all_touched``). Points and lines work too (e.g. evaluation reference points).
- **Label rasters** on any grid (0 = unlabelled, nodata = unlabelled), resampled to the target
  grid by nearest neighbour.

Conventions (see :mod:`terraseg.core.classes`): model class ids are 1..K, 0 = unlabelled.

Class resolution:

- ``classes`` given (applying or evaluating a model): every source class, after
  ``class_map``, must match one of the class names (case-insensitive). Without a
  ``class_map``, an integer source value equal to a class id is accepted as that id.
- ``classes`` is None (training) with a ``class_map``: the model classes are the mapping's
  targets in rule order (ids 1..K).
- ``classes`` is None without a ``class_map``: if every source value is an integer, the model
  classes are the distinct values in ascending order, named ``str(value)``, with ids 1..K
  (so values {3, 7} become classes "3" (id 1) and "7" (id 2)); otherwise the model classes are
  the distinct text values in sorted order.

Overlap rule (vector labels):

- Where features of **different** model classes overlap, the pixel is set to 0 (unlabelled):
  ambiguous labels are never trained on or evaluated against.
- Where features of the **same** class overlap, the class is kept and the pixel's region
  (and category) is that of the later feature in layer order.

Features with a null/empty geometry or a null class value are skipped and listed in
``LabelSet.skipped_features``. Invalid geometries are repaired with
:func:`shapely.make_valid` (keeping only parts of the original dimension, e.g. polygons) and
listed in ``LabelSet.repaired_features``; a feature that is empty after repair is also
skipped. Human-readable notes about all of this are in ``LabelSet.notes``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import fiona
import numpy as np
import rasterio
import shapely
from fiona.errors import FionaError
from rasterio.crs import CRS
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.features import rasterize
from rasterio.warp import Resampling, reproject, transform_bounds, transform_geom
from scipy import ndimage
from shapely.geometry import mapping, shape

from terraseg.core.classes import ClassInfo, ClassMapping, make_classes
from terraseg.core.grid import Grid
from terraseg.protocol.errors import LabelError, RasterError

log = logging.getLogger(__name__)

VECTOR_EXTENSIONS = frozenset(
    {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".kml", ".gml", ".sqlite", ".gpx", ".tab"}
)
RASTER_EXTENSIONS = frozenset(
    {".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".asc", ".nc", ".hdr", ".bil", ".sdat"}
)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


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

    @property
    def labelled_px(self) -> int:
        """Total number of labelled pixels."""
        return int(sum(self.pixel_counts.values()))


@dataclass(frozen=True)
class _Feature:
    """One usable vector feature, geometry already in the grid's CRS (GeoJSON-like dict)."""

    fid: str
    geometry: dict
    value: object
    category: object


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def load_labels(
    path: str | Path,
    grid: Grid,
    class_field: str | None = None,
    class_map: ClassMapping | None = None,
    classes: tuple[ClassInfo, ...] | None = None,
    category_field: str | None = None,
    all_touched: bool = False,
    require_two_classes: bool = True,
) -> LabelSet:
    """Load labels from a vector layer or a label raster, whichever ``path`` is.

    Known vector extensions (.gpkg, .geojson, .json, .shp, .fgb, ...) and QGIS-style
    ``"path|layername=NAME"`` go to :func:`load_vector_labels`, known raster extensions
    (.tif, .vrt, ...) to :func:`load_raster_labels`; anything else is tried with fiona first.

    Args:
        path: Vector or raster file.
        grid: Target grid (the raster the model sees).
        class_field: Class attribute; required for vector labels.
        class_map: Optional mapping of source classes onto model classes.
        classes: Fixed model classes (applying/evaluating a model), or None when training.
        category_field: Optional category attribute (vector labels only).
        all_touched: Burn every pixel a geometry touches (vector labels only).
        require_two_classes: When training, fail unless at least two classes have pixels.

    Returns:
        The labels on ``grid``.

    Raises:
        LabelError: The labels are missing, unreadable or unusable (see the loaders).
        RasterError: ``grid`` has no CRS.
    """
    file_path, _ = split_layer_spec(str(path))
    if "|" in str(path):
        is_vector = True
    else:
        ext = Path(file_path).suffix.lower()
        if ext in VECTOR_EXTENSIONS:
            is_vector = True
        elif ext in RASTER_EXTENSIONS:
            is_vector = False
        else:
            _check_exists(file_path, "Label file")
            try:
                is_vector = bool(fiona.listlayers(file_path))
            except (FionaError, OSError, ValueError):
                is_vector = False
    if is_vector:
        if not class_field:
            raise LabelError(
                f"{Path(file_path).name} is a vector layer but no class field was given.",
                "Name the attribute that holds the class (integer or name), e.g. --class-field "
                "class.",
            )
        return load_vector_labels(
            path,
            grid,
            class_field,
            class_map=class_map,
            classes=classes,
            category_field=category_field,
            all_touched=all_touched,
            require_two_classes=require_two_classes,
        )
    return load_raster_labels(
        path, grid, class_map=class_map, classes=classes, require_two_classes=require_two_classes
    )


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
    ``"file|layerid=N"``) as QGIS writes it. See the module docstring for class resolution
    and the overlap rule.

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
    dst_crs = _grid_crs(grid)
    file_path, layer = split_layer_spec(str(path))
    name = Path(file_path).name
    _check_exists(file_path, "Label file")
    layer = _resolve_layer(file_path, layer)

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

    features, skipped, repaired, notes = _prepare_features(raw, src_crs, dst_crs)
    if not features:
        raise LabelError(
            f"No usable features in {name}: all {len(raw)} feature(s) have an empty geometry "
            f"or no value in '{cls_key}' (skipped ids: {_fmt_ids(skipped)}).",
            f"Fill in the '{cls_key}' attribute and the geometries of the labelled features.",
        )
    _check_vector_overlap(features, grid, dst_crs, src_crs, name)

    values = [f.value for f in features]
    model_classes, lookup = _resolve_classes(values, class_map, classes, name)
    ids = [lookup[_value_key(v)] for v in values]

    labels, regions, ambiguous = _rasterise(features, ids, grid, len(model_classes), all_touched)
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
        categories, category_names = _rasterise_categories(
            features, grid, labels, all_touched
        )

    return _finish(
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
    )


def load_raster_labels(
    path: str | Path,
    grid: Grid,
    class_map: ClassMapping | None = None,
    classes: tuple[ClassInfo, ...] | None = None,
    require_two_classes: bool = True,
) -> LabelSet:
    """Resample a label raster (band 1) onto ``grid`` by nearest neighbour.

    0 and the raster's nodata (or masked pixels) are unlabelled; other values must be
    integers and are resolved to model classes as described in the module docstring.
    Regions are the connected components (8-connectivity) of each class.

    Args:
        path: Label raster on any grid and CRS.
        grid: Target grid.
        class_map: Optional mapping of source values onto model classes.
        classes: Fixed model classes, or None when training.
        require_two_classes: When training (``classes`` is None), fail unless at least two
            classes have labelled pixels.

    Returns:
        The resampled labels.

    Raises:
        LabelError: File missing or unreadable, no CRS, no overlap, non-integer or unknown
            class values, a single class, or no labelled pixels on the grid.
        RasterError: ``grid`` has no CRS.
    """
    dst_crs = _grid_crs(grid)
    name = Path(str(path)).name
    _check_exists(str(path), "Label raster")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise LabelError(
                    f"The label raster {name} has no coordinate reference system.",
                    "Assign its CRS (e.g. gdal_edit.py -a_srs EPSG:xxxx) and try again.",
                )
            _check_raster_overlap(src.bounds, src.crs, grid, dst_crs, name)
            data = src.read(1)
            valid = src.read_masks(1) > 0
            src_transform, src_crs = src.transform, src.crs
    except RasterioIOError as exc:
        raise LabelError(
            f"Cannot read label raster {path}: {exc}.",
            "Give a GDAL-readable single-band raster with integer class values.",
        ) from exc

    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data)
        frac = valid & (data != np.round(data))
        if frac.any():
            raise LabelError(
                f"The label raster {name} has non-integer values (e.g. {data[frac][0]}).",
                "Use a raster of integer class values with 0 (or nodata) for unlabelled pixels.",
            )
    src_values = np.where(valid, data, 0).astype(np.int64)
    lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
    if src_values.size and (src_values.min() < lo or src_values.max() > hi):
        raise LabelError(
            f"The label raster {name} has values outside the 32-bit integer range.",
            "Use small integer class values (e.g. 1..254) with 0 for unlabelled pixels.",
        )
    warped = np.zeros((grid.height_px, grid.width_px), dtype=np.int32)
    try:
        reproject(
            source=src_values.astype(np.int32),
            destination=warped,
            src_transform=src_transform,
            src_crs=src_crs,
            src_nodata=0,
            dst_transform=grid.transform,
            dst_crs=dst_crs,
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
    except RasterioError as exc:
        raise LabelError(
            f"Cannot resample the label raster {name} to the target grid: {exc}.",
            "Check that the label raster's CRS is correct.",
        ) from exc

    uniq, inverse = np.unique(warped, return_inverse=True)
    present = [int(v) for v in uniq if v != 0]
    if not present:
        raise LabelError(
            f"The label raster {name} has no labelled pixels (values other than 0/nodata) "
            "where it overlaps the raster.",
            "Check that the label raster covers the labelled area of the raster.",
        )
    model_classes, lookup = _resolve_classes(present, class_map, classes, name)
    lut = np.array([0 if v == 0 else lookup[_value_key(int(v))] for v in uniq], dtype=np.uint8)
    labels = lut[inverse.reshape(warped.shape)]

    regions = np.zeros(labels.shape, dtype=np.int32)
    offset = 0
    for info in model_classes:
        comp, n = ndimage.label(labels == info.id, structure=_EIGHT_CONNECTED)
        if n:
            regions = np.where(comp > 0, comp.astype(np.int32) + offset, regions)
            offset += n
    return _finish(
        labels,
        regions,
        model_classes,
        None,
        (),
        repaired=(),
        skipped=(),
        feature_ids=(),
        notes=(),
        check_two=classes is None and require_two_classes,
        name=name,
    )


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def split_layer_spec(path: str) -> tuple[str, str | int | None]:
    """Split QGIS's ``"file|layername=NAME"`` / ``"file|layerid=N"`` into (file, layer)."""
    if "|" not in path:
        return path, None
    file_path, *options = path.split("|")
    layer: str | int | None = None
    for opt in options:
        key, _, value = opt.partition("=")
        key = key.strip().lower()
        if key == "layername" and value:
            layer = value
        elif key == "layerid" and value.strip().isdigit():
            layer = int(value)
    return file_path, layer


def _check_exists(path: str, what: str) -> None:
    if "://" in path or path.startswith("/vsi"):
        return
    if not Path(path).exists():
        raise LabelError(f"{what} not found: {path}.", "Check the path to the labels.")


def _resolve_layer(path: str, layer: str | int | None) -> str:
    """Name of the layer to read: the given one (checked) or the first."""
    try:
        layers = fiona.listlayers(path)
    except (FionaError, OSError, ValueError) as exc:
        raise LabelError(
            f"Cannot read vector labels {path}: {exc}.",
            "Give a readable vector layer (GeoPackage, GeoJSON, Shapefile, ...).",
        ) from exc
    if not layers:
        raise LabelError(f"{Path(path).name} contains no vector layer.",
                         "Give a file with a polygon or point layer.")
    if layer is None:
        return layers[0]
    if isinstance(layer, int):
        if 0 <= layer < len(layers):
            return layers[layer]
    elif layer in layers:
        return layer
    raise LabelError(
        f"Layer '{layer}' not found in {Path(path).name}; it has: {', '.join(layers)}.",
        "Pick one of the listed layers.",
    )


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


def _grid_crs(grid: Grid) -> CRS:
    crs = grid.crs
    if crs is None:
        raise RasterError(
            "The raster has no coordinate reference system, so labels cannot be placed on it.",
            "Assign the raster's CRS (e.g. gdal_edit.py -a_srs EPSG:xxxx) and try again.",
        )
    return crs


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip()
    )


def _prepare_features(
    raw: Sequence[tuple[str, object, object, object]], src_crs: CRS, dst_crs: CRS
) -> tuple[list[_Feature], list[str], list[str], list[str]]:
    """Skip unusable features, repair invalid geometries, reproject the rest."""
    skipped: list[str] = []
    repaired: list[str] = []
    notes: list[str] = []
    kept: list[tuple[str, dict, object, object]] = []
    for fid, geom, value, category in raw:
        if geom is None:
            skipped.append(fid)
            notes.append(f"feature {fid}: no geometry; skipped")
            continue
        if _is_missing(value):
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
            fixed = _parts_of_dimension(shapely.make_valid(g), shapely.get_dimensions(g))
            if fixed.is_empty:
                skipped.append(fid)
                notes.append(f"feature {fid}: invalid geometry is empty after repair; skipped")
                continue
            notes.append(f"feature {fid}: invalid geometry repaired")
            g = fixed
        kept.append((fid, mapping(g), value, category))
    for note in notes:
        log.warning("labels: %s", note)
    if not kept:
        return [], skipped, repaired, notes
    geoms = [k[1] for k in kept]
    if src_crs != dst_crs:
        try:
            geoms = transform_geom(src_crs, dst_crs, geoms)
        except (RasterioError, ValueError) as exc:
            raise LabelError(
                f"Cannot reproject the labels from {_crs_name(src_crs)} to "
                f"{_crs_name(dst_crs)}: {exc}.",
                "Check that the label layer's CRS is set correctly.",
            ) from exc
    features = [
        _Feature(fid, dict(g), value, category)
        for (fid, _, value, category), g in zip(kept, geoms, strict=True)
    ]
    return features, skipped, repaired, notes


def _parts_of_dimension(geom: shapely.Geometry, dim: int) -> shapely.Geometry:
    """The parts of ``geom`` with topological dimension ``dim`` (e.g. polygons only)."""
    parts = [
        p
        for p in shapely.get_parts(geom)
        if not p.is_empty and shapely.get_dimensions(p) == dim
    ]
    # make_valid may nest collections; flatten once more.
    flat: list[shapely.Geometry] = []
    for p in parts:
        flat.extend(shapely.get_parts(p))
    flat = [p for p in flat if not p.is_empty and shapely.get_dimensions(p) == dim]
    if not flat:
        return shapely.GeometryCollection()
    if dim == 2:
        return shapely.unary_union(flat)
    return shapely.MultiLineString(flat) if dim == 1 else shapely.MultiPoint(flat)


def _check_vector_overlap(
    features: Sequence[_Feature], grid: Grid, dst_crs: CRS, src_crs: CRS, name: str
) -> None:
    bounds = np.array([shapely.bounds(shape(f.geometry)) for f in features], dtype=float)
    finite = np.all(np.isfinite(bounds), axis=1)
    if finite.any():
        b = bounds[finite]
        ext = (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
    else:
        ext = (math.nan,) * 4
    if not _intersects(ext, grid.bounds):
        raise LabelError(
            f"The labels in {name} do not overlap the raster: labels extent {_fmt_ext(ext)} "
            f"(reprojected from {_crs_name(src_crs)} to {_crs_name(dst_crs)}), raster extent "
            f"{_fmt_ext(grid.bounds)} in {_crs_name(dst_crs)}.",
            "Use labels drawn on this raster, or check that both layers have the right CRS.",
        )


def _check_raster_overlap(
    src_bounds: Sequence[float], src_crs: CRS, grid: Grid, dst_crs: CRS, name: str
) -> None:
    try:
        ext = transform_bounds(src_crs, dst_crs, *src_bounds)
    except (RasterioError, ValueError):
        ext = (math.nan,) * 4
    if not _intersects(ext, grid.bounds):
        raise LabelError(
            f"The label raster {name} does not overlap the raster: label extent "
            f"{_fmt_ext(src_bounds)} in {_crs_name(src_crs)} ({_fmt_ext(ext)} in the raster's "
            f"CRS), raster extent {_fmt_ext(grid.bounds)} in {_crs_name(dst_crs)}.",
            "Use a label raster that covers this raster, or check that both CRSs are right.",
        )


def _intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    """Strict overlap of (left, bottom, right, top) boxes; degenerate (point) boxes work."""
    if not all(math.isfinite(v) for v in a):
        return False
    return a[0] < b[2] and a[2] > b[0] and a[1] < b[3] and a[3] > b[1]


def _value_key(value: object) -> str:
    """Text key of a source class value (integral floats without '.0', stripped text)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return str(value).strip()


def _as_int(value: object) -> int | None:
    """The value as an int when it is an integer (or integral float), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return None


def _resolve_classes(
    values: Iterable[object],
    class_map: ClassMapping | None,
    classes: tuple[ClassInfo, ...] | None,
    name: str,
) -> tuple[tuple[ClassInfo, ...], dict[str, int]]:
    """Model classes and a lookup ``_value_key(source value) -> class id``."""
    distinct: dict[str, object] = {}
    for v in values:
        distinct.setdefault(_value_key(v), v)

    targets: dict[str, str] = {}
    if class_map is not None:
        unmapped = sorted(k for k, v in distinct.items() if class_map.target(v) is None)
        if unmapped:
            raise LabelError(
                f"Class value(s) {_fmt_values(unmapped)} in {name} are not covered by the "
                f"class mapping '{class_map.to_str()}'.",
                "Add rules for these values or a fallback rule '*=<class>' to the mapping.",
            )
        targets = {k: str(class_map.target(v)) for k, v in distinct.items()}

    if classes is not None:
        by_name = {c.name.lower(): c.id for c in classes}
        ids = {c.id for c in classes}
        lookup: dict[str, int] = {}
        unknown: list[str] = []
        for key, value in distinct.items():
            target = targets[key] if class_map is not None else key
            as_int = _as_int(value)
            if target.lower() in by_name:
                lookup[key] = by_name[target.lower()]
            elif class_map is None and as_int is not None and as_int in ids:
                lookup[key] = as_int
            else:
                unknown.append(target if class_map is None else f"{key}->{target}")
        if unknown:
            known = ", ".join(f"{c.id}={c.name}" for c in classes)
            raise LabelError(
                f"Unknown class value(s) {_fmt_values(sorted(unknown))} in {name}; the model's "
                f"classes are {known}.",
                "Use the model's class names or ids in the class field, or give a class mapping "
                "onto them.",
            )
        return classes, lookup

    if class_map is not None:
        model_classes = make_classes(class_map.targets)
        by_name = {c.name: c.id for c in model_classes}
        return model_classes, {k: by_name[t] for k, t in targets.items()}

    ints = {k: _as_int(v) for k, v in distinct.items()}
    if all(i is not None for i in ints.values()):
        order = sorted(distinct, key=lambda k: ints[k])
    else:
        order = sorted(distinct)
    model_classes = make_classes(order)
    return model_classes, {k: i + 1 for i, k in enumerate(order)}


def _rasterise(
    features: Sequence[_Feature], ids: Sequence[int], grid: Grid, n_classes: int,
    all_touched: bool,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Labels (with the overlap rule), regions, and whether any pixel was ambiguous."""
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


def _rasterise_categories(
    features: Sequence[_Feature], grid: Grid, labels: np.ndarray, all_touched: bool
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Category index + 1 per labelled pixel (later feature wins), and the sorted names."""
    present = {
        _value_key(f.category): _as_int(f.category)
        for f in features
        if not _is_missing(f.category)
    }
    if present and all(v is not None for v in present.values()):
        names = tuple(sorted(present, key=lambda k: present[k]))
    else:
        names = tuple(sorted(present))
    index = {n: i + 1 for i, n in enumerate(names)}
    shape_hw = (grid.height_px, grid.width_px)
    pairs = [
        (f.geometry, index[_value_key(f.category)])
        for f in features
        if not _is_missing(f.category)
    ]
    if not pairs:
        return np.zeros(shape_hw, dtype=np.int32), names
    cats = rasterize(
        pairs, out_shape=shape_hw, transform=grid.transform, fill=0, all_touched=all_touched,
        dtype="int32",
    )
    cats[labels == 0] = 0
    return cats.astype(np.int32, copy=False), names


def _finish(
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
) -> LabelSet:
    counts = np.bincount(labels.ravel(), minlength=max(c.id for c in classes) + 1)
    pixel_counts = {c.name: int(counts[c.id]) for c in classes}
    if check_two:
        with_px = [n for n, c in pixel_counts.items() if c > 0]
        if len(with_px) < 2:
            raise LabelError(
                f"Only one class ({', '.join(with_px) or 'none'}) has labelled pixels in "
                f"{name}; training needs at least two.",
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
        fingerprint=_fingerprint(labels, regions, classes),
        skipped_features=skipped,
        feature_ids=feature_ids,
        notes=notes,
    )


def _fingerprint(labels: np.ndarray, regions: np.ndarray, classes: Sequence[ClassInfo]) -> str:
    h = hashlib.sha256()
    h.update(f"{labels.shape[0]}x{labels.shape[1]}\n".encode())
    h.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(regions, dtype=np.int32).tobytes())
    h.update("\n".join(c.name for c in classes).encode("utf-8"))
    return h.hexdigest()


def _crs_name(crs: CRS | None) -> str:
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else (crs.to_string() or "a custom CRS")


def _fmt_ext(ext: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" if math.isfinite(v) else "nan" for v in ext) + ")"


def _fmt_pixel(grid: Grid) -> str:
    px, py = grid.pixel_size
    return f"{px:g} x {py:g}"


def _fmt_values(values: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _fmt_ids(ids: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")
