"""Label layers: GeoPackage polygon layers with a ``class`` field, styled per class.

The dock draws labels with QGIS's own add-polygon tool; this module prepares the layer for
it (default class value, no attribute form) and measures the labelled area per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsDefaultValue,
    QgsDistanceArea,
    QgsEditFormConfig,
    QgsFeatureRequest,
    QgsField,
    QgsFields,
    QgsFillSymbol,
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


def _area_calculator(layer: QgsVectorLayer) -> QgsDistanceArea | None:
    """Ellipsoidal area for geographic CRSs; None means planar area in the layer CRS."""
    crs = layer.crs()
    if crs.isValid() and not crs.isGeographic():
        return None
    da = QgsDistanceArea()
    da.setSourceCrs(crs, QgsProject.instance().transformContext())
    ellipsoid = QgsProject.instance().ellipsoid()
    da.setEllipsoid(ellipsoid if ellipsoid and ellipsoid != "NONE" else "EPSG:7030")
    return da


def class_stats(layer: QgsVectorLayer,
                classes: Sequence[ClassDef]) -> dict[str, tuple[float, int]]:
    """(area m2, polygon count) per class, including unsaved edits.

    Classes without polygons are 0; ``class`` values outside ``classes`` appear under
    their own value (empty values under ``""``).
    """
    stats: dict[str, list[float]] = {c.name: [0.0, 0] for c in classes}
    idx = layer.fields().indexOf(CLASS_FIELD)
    if idx < 0:
        return {k: (v[0], int(v[1])) for k, v in stats.items()}
    da = _area_calculator(layer)
    request = QgsFeatureRequest().setSubsetOfAttributes([idx])
    for feature in layer.getFeatures(request):
        geom = feature.geometry()
        if geom is None or geom.isEmpty():
            continue
        value = feature.attribute(idx)
        key = "" if value is None or (hasattr(value, "isNull") and value.isNull()) else str(value)
        area = geom.area() if da is None else da.measureArea(geom)
        if da is not None:
            area = da.convertAreaMeasurement(area, QgsUnitTypes.AreaSquareMeters)
        entry = stats.setdefault(key, [0.0, 0])
        entry[0] += area
        entry[1] += 1
    return {k: (v[0], int(v[1])) for k, v in stats.items()}


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
