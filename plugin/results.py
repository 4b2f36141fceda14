"""Result layers: probability and class GeoTIFFs (and exported vectors) in the project.

Everything goes into the layer-tree group 'TerraSeg results', placed below the panel's label
layer (so correction polygons are drawn on top of the results; at the top of the layer tree
when there is no label layer).
The layers read files written by the engine (never temporary layers), so a saved project
opens them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsLayerTree,
    QgsLayerTreeGroup,
    QgsLayerTreeLayer,
    QgsLayerTreeNode,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererCategory,
    QgsSingleBandPseudoColorRenderer,
    QgsStyle,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from . import label_layer

GROUP_NAME = "TerraSeg results"
PROBABILITY_RAMP = "Magma"


class ResultLayerError(RuntimeError):
    """A result file could not be opened as a layer."""


def _class_items(classes: Sequence[Any]) -> list[tuple[int, str, str]]:
    """(id, name, colour) from ClassDef objects (ids 1..K in order) or engine class dicts."""
    items = []
    for i, c in enumerate(classes, start=1):
        if isinstance(c, dict):
            items.append((int(c.get("id", i)), str(c["name"]), str(c.get("colour", "#808080"))))
        else:
            items.append((i, str(c.name), str(c.colour)))
    return items


def results_group(project: QgsProject | None = None,
                  below: QgsMapLayer | None = None) -> QgsLayerTreeGroup:
    """The 'TerraSeg results' group, placed below the label layer.

    The group is created when missing; when it lies above the label layer in the layer tree
    (drawn over it) it is moved to just below it, so correction polygons stay visible on top
    of the results. A group already below the label layer stays where the analyst put it.

    Args:
        project: Target project (default: the current one).
        below: The layer the results go under (default: the panel's label layer, see
            :func:`.label_layer.current_label_layer`); without one a new group goes to the
            top of the layer tree.
    """
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    anchor = below if below is not None else label_layer.current_label_layer(project)
    anchor_node = root.findLayer(anchor.id()) if anchor is not None else None
    group = root.findGroup(GROUP_NAME)
    if anchor_node is None or _inside_results(anchor_node):
        return group if group is not None else root.insertGroup(0, GROUP_NAME)
    parent = anchor_node.parent()
    index = _child_index(parent, anchor_node) + 1
    if group is None:
        return parent.insertGroup(index, GROUP_NAME)
    if _drawn_below(root, group, anchor.id()):
        return group
    moved = group.clone()
    parent.insertChildNode(index, moved)  # first: layers that leave the tree leave the project
    group.parent().removeChildNode(group)
    return moved


def _inside_results(node: QgsLayerTreeNode) -> bool:
    """Whether ``node`` lies in a 'TerraSeg results' group."""
    parent = node.parent()
    while parent is not None:
        if QgsLayerTree.isGroup(parent) and parent.name() == GROUP_NAME:
            return True
        parent = parent.parent()
    return False


def _child_index(parent: QgsLayerTreeNode, node: QgsLayerTreeLayer) -> int:
    """Position of the layer node ``node`` among ``parent``'s children."""
    for i, child in enumerate(parent.children()):
        if QgsLayerTree.isLayer(child) and child.layerId() == node.layerId():
            return i
    raise ValueError(f"{node.layerId()} is not a child of {parent.name()}")


def _drawn_below(root: QgsLayerTreeGroup, group: QgsLayerTreeGroup, layer_id: str) -> bool:
    """Whether ``group`` comes after the layer ``layer_id`` in the tree (drawn under it)."""
    seen_layer = False
    stack = list(reversed(root.children()))
    while stack:
        node = stack.pop()
        if QgsLayerTree.isLayer(node):
            seen_layer = seen_layer or node.layerId() == layer_id
        elif node.name() == group.name():  # the first such group, as findGroup finds it
            return seen_layer
        else:
            stack.extend(reversed(node.children()))
    return False


def remove_layers_with_source(path: str | Path, project: QgsProject | None = None) -> int:
    """Remove project layers that read ``path`` (before the file is replaced)."""
    project = project or QgsProject.instance()
    target = str(Path(path).resolve())
    ids = [lid for lid, layer in project.mapLayers().items()
           if str(Path(layer.source().split("|")[0]).resolve()) == target]
    if ids:
        project.removeMapLayers(ids)
    return len(ids)


def _add_to_group(layer: QgsMapLayer, project: QgsProject | None = None) -> None:
    project = project or QgsProject.instance()
    project.addMapLayer(layer, False)
    results_group(project).insertLayer(0, layer)


def style_probability(layer: QgsRasterLayer, band: int = 1) -> None:
    """Pseudocolour ramp over 0..1 on ``band`` (the positive class's probability)."""
    ramp = QgsStyle.defaultStyle().colorRamp(PROBABILITY_RAMP)
    stops = (0.0, 0.25, 0.5, 0.75, 1.0)
    if ramp is not None:
        colours = [ramp.color(v) for v in stops]
    else:
        colours = [QColor(0, 0, 4), QColor(81, 18, 124), QColor(183, 55, 121),
                   QColor(252, 137, 97), QColor(252, 253, 191)]
    color_shader = QgsColorRampShader(0.0, 1.0)
    color_shader.setColorRampType(QgsColorRampShader.Interpolated)
    color_shader.setColorRampItemList(
        [QgsColorRampShader.ColorRampItem(v, c, f"{v:g}") for v, c in zip(stops, colours,
                                                                          strict=True)])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(color_shader)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(1.0)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def style_classes(layer: QgsRasterLayer, classes: Sequence[Any]) -> None:
    """Paletted renderer: one colour and label per class id (0 = nodata, not drawn)."""
    palette = [QgsPalettedRasterRenderer.Class(cid, QColor(colour), name)
               for cid, name, colour in _class_items(classes)]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, palette))
    layer.triggerRepaint()


def add_results(probability_tif: str | Path, classes_tif: str | Path, classes: Sequence[Any],
                name: str | None = None,
                project: QgsProject | None = None) -> tuple[QgsRasterLayer, QgsRasterLayer]:
    """Add a prediction's probability and class rasters to the 'TerraSeg results' group.

    Args:
        probability_tif: Probability GeoTIFF (one band per class; band 1 is styled).
        classes_tif: Class id GeoTIFF (0 = nodata).
        classes: Classes in model order (ClassDef objects or engine dicts with ``id``,
            ``name``, ``colour``).
        name: Prefix of the layer names (default: the results folder name).
        project: Target project (default: the current one).

    Returns:
        (probability layer, classes layer).

    Raises:
        ResultLayerError: A file cannot be opened by GDAL.
    """
    prefix = name or Path(classes_tif).parent.name
    items = _class_items(classes)
    first = items[0][1] if items else "class 1"
    prob = QgsRasterLayer(str(probability_tif), f"{prefix} probability ({first})", "gdal")
    cls = QgsRasterLayer(str(classes_tif), f"{prefix} classes", "gdal")
    for layer, path in ((prob, probability_tif), (cls, classes_tif)):
        if not layer.isValid():
            raise ResultLayerError(f"Cannot open result {path}.")
    style_probability(prob, 1)
    style_classes(cls, classes)
    _add_to_group(prob, project)
    _add_to_group(cls, project)
    return prob, cls


def add_vector_result(path: str | Path, name: str, classes: Sequence[Any] | None = None,
                      class_field: str = "class_name",
                      project: QgsProject | None = None) -> QgsVectorLayer:
    """Add an exported GeoPackage layer to the results group.

    Args:
        path: GeoPackage (its first layer is used).
        name: Layer name in the project.
        classes: When given, a categorised style on ``class_field`` in the class colours.
        class_field: Attribute holding the class name.
        project: Target project (default: the current one).

    Raises:
        ResultLayerError: The file cannot be opened by OGR.
    """
    layer = QgsVectorLayer(str(path), name, "ogr")
    if not layer.isValid():
        raise ResultLayerError(f"Cannot open {path}.")
    if classes and layer.fields().indexOf(class_field) >= 0:
        cats = []
        for _, cname, colour in _class_items(classes):
            symbol = QgsFillSymbol.createSimple({"color": colour, "outline_style": "no"})
            cats.append(QgsRendererCategory(cname, symbol, cname, True))
        layer.setRenderer(QgsCategorizedSymbolRenderer(class_field, cats))
    _add_to_group(layer, project)
    return layer
