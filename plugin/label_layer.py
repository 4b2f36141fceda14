"""Label layers: GeoPackage polygon layers with a ``class`` field, styled per class.

The dock draws labels with QGIS's own add-polygon tool; this module prepares the layer for
it (default class value, no attribute form) and measures the labelled area per class,
inside and outside the raster the labels are for (:func:`label_stats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsDefaultValue,
    QgsDistanceArea,
    QgsEditFormConfig,
    QgsFeatureRequest,
    QgsField,
    QgsFields,
    QgsFillSymbol,
    QgsGeometry,
    QgsMapLayer,
    QgsProject,
    QgsRendererCategory,
    QgsUnitTypes,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)

from .presets import ClassDef

CLASS_FIELD = "class"
LAYER_NAME = "labels"
STYLE_NAME = "TerraSeg classes"
CURRENT_PROPERTY = "terraseg/current_label_layer"  # layer custom property: the panel's layer


def _string_type() -> Any:
    """The string field type: ``QMetaType.Type.QString`` from QGIS 3.38 (Qt6-ready)."""
    if Qgis.QGIS_VERSION_INT >= 33800:
        from qgis.PyQt.QtCore import QMetaType

        return QMetaType.Type.QString
    from qgis.PyQt.QtCore import QVariant

    return QVariant.String


class LabelLayerError(RuntimeError):
    """The label GeoPackage could not be created or opened."""


def create_label_layer(path: str | Path, crs: QgsCoordinateReferenceSystem,
                       classes: Sequence[ClassDef], name: str | None = None,
                       overwrite: bool = False, add_to_project: bool = True) -> QgsVectorLayer:
    """Create a GeoPackage polygon label layer and add it to the project.

    Args:
        path: GeoPackage to write (``.gpkg`` is appended when missing).
        crs: CRS of the layer (normally the raster's).
        classes: Classes for the categorised style.
        name: Layer name in the project (default: the file name).
        overwrite: Replace an existing file; without it an existing file raises.
        add_to_project: Add the layer to the current project.

    Returns:
        The (valid) layer, styled, with the attribute form suppressed.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        LabelLayerError: GDAL could not write or read the GeoPackage.
    """
    p = Path(path)
    if p.suffix.lower() != ".gpkg":
        p = p.with_suffix(".gpkg")
    if p.exists() and not overwrite:
        raise FileExistsError(str(p))
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists():
        p.unlink()
    fields = QgsFields()
    fields.append(QgsField(CLASS_FIELD, _string_type(), "string", 64))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = LAYER_NAME
    options.fileEncoding = "UTF-8"
    writer = QgsVectorFileWriter.create(
        str(p), fields, QgsWkbTypes.MultiPolygon, crs,
        QgsProject.instance().transformContext(), options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        message = writer.errorMessage()
        del writer
        raise LabelLayerError(f"Cannot create {p}: {message}")
    del writer  # closes the file
    layer = QgsVectorLayer(f"{p}|layername={LAYER_NAME}", name or p.stem, "ogr")
    if not layer.isValid():
        raise LabelLayerError(f"Cannot open the new label layer {p}.")
    suppress_attribute_form(layer)
    apply_class_style(layer, classes, save_default=True)
    if add_to_project:
        QgsProject.instance().addMapLayer(layer)
    return layer


def is_label_layer(layer: object) -> bool:
    """Whether ``layer`` is a polygon vector layer with a ``class`` field."""
    return (isinstance(layer, QgsVectorLayer) and layer.isValid()
            and layer.geometryType() == QgsWkbTypes.PolygonGeometry
            and layer.fields().indexOf(CLASS_FIELD) >= 0)


def mark_current(layer: QgsVectorLayer | None, project: QgsProject | None = None) -> None:
    """Mark ``layer`` as the panel's label layer (the mark is cleared on every other layer).

    The mark is a layer custom property, saved with the project; :mod:`.results` puts the
    result layers below the marked layer. None clears every mark.
    """
    project = project or QgsProject.instance()
    for other in project.mapLayers().values():
        if other is not layer and other.customProperty(CURRENT_PROPERTY):
            other.removeCustomProperty(CURRENT_PROPERTY)
    if layer is not None:
        layer.setCustomProperty(CURRENT_PROPERTY, True)


def current_label_layer(project: QgsProject | None = None) -> QgsMapLayer | None:
    """The layer marked by :func:`mark_current` in ``project``, if any."""
    project = project or QgsProject.instance()
    for layer in project.mapLayers().values():
        if layer.customProperty(CURRENT_PROPERTY):
            return layer
    return None


def apply_class_style(layer: QgsVectorLayer, classes: Sequence[ClassDef],
                      save_default: bool = False) -> None:
    """Categorised renderer on ``class`` in the class colours (semi-transparent fills).

    Args:
        layer: Label layer.
        classes: Classes in model order.
        save_default: Also store the style in the GeoPackage as its default style.
    """
    categories = []
    for cls in classes:
        symbol = QgsFillSymbol.createSimple({
            "color": _rgba(cls.colour, 110), "outline_color": cls.colour,
            "outline_width": "0.6", "outline_width_unit": "MM"})
        categories.append(QgsRendererCategory(cls.name, symbol, cls.name, True))
    layer.setRenderer(QgsCategorizedSymbolRenderer(CLASS_FIELD, categories))
    layer.triggerRepaint()
    if save_default and layer.dataProvider().isSaveAndLoadStyleToDatabaseSupported():
        try:
            layer.saveStyleToDatabase(STYLE_NAME, "TerraSeg label classes", True, "")
        except Exception:  # noqa: BLE001 - the style in the project is enough
            pass


def suppress_attribute_form(layer: QgsVectorLayer) -> None:
    """Never open the attribute form after a polygon is drawn."""
    config = layer.editFormConfig()
    suppression = getattr(Qgis, "AttributeFormSuppression", None)  # QGIS >= 3.32
    config.setSuppress(suppression.On if suppression is not None
                       else QgsEditFormConfig.SuppressOn)
    layer.setEditFormConfig(config)


def set_default_class(layer: QgsVectorLayer, class_name: str | None) -> None:
    """Make ``class_name`` the ``class`` value of newly drawn features (None clears it)."""
    idx = layer.fields().indexOf(CLASS_FIELD)
    if idx < 0:
        raise LabelLayerError(f"Layer {layer.name()} has no '{CLASS_FIELD}' field.")
    if class_name is None:
        layer.setDefaultValueDefinition(idx, QgsDefaultValue())
    else:
        quoted = "'" + class_name.replace("'", "''") + "'"
        layer.setDefaultValueDefinition(idx, QgsDefaultValue(quoted, False))


def default_class(layer: QgsVectorLayer) -> str | None:
    """The class preset for new features, if any."""
    idx = layer.fields().indexOf(CLASS_FIELD)
    if idx < 0:
        return None
    expr = layer.defaultValueDefinition(idx).expression()
    if len(expr) >= 2 and expr[0] == expr[-1] == "'":
        return expr[1:-1].replace("''", "'")
    return None


def _area_calculator(crs: QgsCoordinateReferenceSystem) -> QgsDistanceArea | None:
    """Ellipsoidal area for geographic (or unknown) CRSs; None means planar area in ``crs``."""
    if crs.isValid() and not crs.isGeographic():
        return None
    da = QgsDistanceArea()
    da.setSourceCrs(crs, QgsProject.instance().transformContext())
    ellipsoid = QgsProject.instance().ellipsoid()
    da.setEllipsoid(ellipsoid if ellipsoid and ellipsoid != "NONE" else "EPSG:7030")
    return da


def _area_m2(geom: QgsGeometry, crs: QgsCoordinateReferenceSystem,
             da: QgsDistanceArea | None) -> float:
    """Area of ``geom`` in m2: planar in a projected ``crs`` (its map units), else ellipsoidal."""
    if da is None:
        factor = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(),
                                                   QgsUnitTypes.DistanceMeters)
        return geom.area() * factor * factor
    return da.convertAreaMeasurement(da.measureArea(geom), QgsUnitTypes.AreaSquareMeters)


@dataclass(frozen=True)
class ClassLabelStats:
    """The labelled polygons of one class, split by the extent of the raster they label.

    Without a raster every polygon counts as inside.

    Attributes:
        count: Polygons with some area inside the raster (partly outside ones included).
        area_m2: Labelled area inside the raster (only the inside part of partly outside
            polygons): what training can use.
        outside_count: Polygons wholly outside the raster.
        partly_outside_count: Polygons partly inside, partly outside the raster.
        outside_area_m2: Area outside the raster (wholly and partly outside polygons).
    """

    count: int = 0
    area_m2: float = 0.0
    outside_count: int = 0
    partly_outside_count: int = 0
    outside_area_m2: float = 0.0

    @property
    def total_count(self) -> int:
        """All polygons of the class, inside or outside the raster."""
        return self.count + self.outside_count

    @property
    def has_outside(self) -> bool:
        """Whether any polygon of the class lies wholly or partly outside the raster."""
        return self.outside_count > 0 or self.partly_outside_count > 0


# A polygon is partly outside only when more than this share of its area is: reprojecting
# a polygon drawn on the raster's edge moves its border by far less.
OUTSIDE_TOLERANCE = 1e-6


class _RasterFrame:
    """A raster's extent in its CRS and the transform of label geometries into it."""

    def __init__(self, layer: QgsVectorLayer, raster: QgsMapLayer) -> None:
        self.crs = raster.crs()
        self.extent = QgsGeometry.fromRect(raster.extent())
        self.extent_box = raster.extent()
        source = layer.crs()
        self.transform: QgsCoordinateTransform | None = None
        if source.isValid() and self.crs.isValid() and source != self.crs:
            self.transform = QgsCoordinateTransform(
                source, self.crs, QgsProject.instance().transformContext())
        self.calculator = _area_calculator(self.crs)

    def split(self, geom: QgsGeometry) -> tuple[float, float] | None:
        """(area inside, area outside) in m2; None when ``geom`` cannot be transformed."""
        g = QgsGeometry(geom)
        if self.transform is not None:
            try:
                if g.transform(self.transform) != Qgis.GeometryOperationResult.Success:
                    return None
            except QgsCsException:
                return None
        total = _area_m2(g, self.crs, self.calculator)
        if self.extent_box.contains(g.boundingBox()):
            return total, 0.0
        if not self.extent_box.intersects(g.boundingBox()):
            return 0.0, total
        inside = _area_m2(g.intersection(self.extent), self.crs, self.calculator)
        outside = max(total - inside, 0.0)
        if outside <= OUTSIDE_TOLERANCE * total:
            return total, 0.0
        return inside, outside


def label_stats(layer: QgsVectorLayer, classes: Sequence[ClassDef],
                raster: QgsMapLayer | None = None) -> dict[str, ClassLabelStats]:
    """Polygons and labelled area per class, inside and outside ``raster``'s extent.

    Unsaved edits are included. Geometries are transformed from the label layer's CRS into
    the raster's (QgsCoordinateTransform with the project's transform context) and clipped
    to the raster's extent there; areas are planar in a projected raster CRS (the CRS the
    pixels are counted in), ellipsoidal in a geographic one. Without a raster, areas are
    measured in the label layer's CRS and everything is inside.

    Args:
        layer: Label layer (polygons with a ``class`` field).
        classes: The task's classes: each has an entry, 0 when it has no polygons.
        raster: The raster the labels are for (its extent and CRS), or None.

    Returns:
        Per class name, in the order of ``classes``; ``class`` values outside ``classes``
        follow under their own value (empty values under ``""``).
    """
    stats: dict[str, list[float]] = {c.name: [0, 0.0, 0, 0, 0.0] for c in classes}
    idx = layer.fields().indexOf(CLASS_FIELD)
    if idx < 0:
        return {k: ClassLabelStats() for k in stats}
    frame = _RasterFrame(layer, raster) if raster is not None else None
    own = _area_calculator(layer.crs())
    request = QgsFeatureRequest().setSubsetOfAttributes([idx])
    for feature in layer.getFeatures(request):
        geom = feature.geometry()
        if geom is None or geom.isEmpty():
            continue
        value = feature.attribute(idx)
        key = "" if value is None or (hasattr(value, "isNull") and value.isNull()) else str(value)
        entry = stats.setdefault(key, [0, 0.0, 0, 0, 0.0])
        split = frame.split(geom) if frame is not None else None
        if split is None:
            area = _area_m2(geom, layer.crs(), own)
            split = (area, 0.0) if frame is None else (0.0, area)
        inside, outside = split
        if inside > 0.0:
            entry[0] += 1
            entry[1] += inside
            if outside > 0.0:
                entry[3] += 1
        else:
            entry[2] += 1
        entry[4] += outside
    return {k: ClassLabelStats(int(v[0]), float(v[1]), int(v[2]), int(v[3]), float(v[4]))
            for k, v in stats.items()}


def class_stats(layer: QgsVectorLayer,
                classes: Sequence[ClassDef]) -> dict[str, tuple[float, int]]:
    """(area m2, polygon count) per class, all polygons, including unsaved edits.

    Classes without polygons are 0; ``class`` values outside ``classes`` appear under
    their own value (empty values under ``""``).
    """
    return {k: (v.area_m2, v.count) for k, v in label_stats(layer, classes).items()}


def class_areas(layer: QgsVectorLayer, classes: Sequence[ClassDef]) -> dict[str, float]:
    """Labelled area (m2) per class name (planar in projected CRSs, else ellipsoidal)."""
    return {name: area for name, (area, _) in class_stats(layer, classes).items()}


def _rgba(colour: str, alpha: int) -> str:
    """QGIS symbol colour string ``r,g,b,a`` from ``#rrggbb``."""
    c = colour.lstrip("#")
    try:
        r, g, b = int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)
    except ValueError:
        r, g, b = 128, 128, 128
    return f"{r},{g},{b},{alpha}"
