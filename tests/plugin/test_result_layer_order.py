"""Result layers go below the label layer in the layer tree (issue 10).

Correction polygons must be drawn on top of the results: the 'TerraSeg results' group is
placed below the panel's label layer, and put back there when a new prediction arrives
after the analyst moved it above. Real QGIS (pytest-qgis); the first tests write small
GeoTIFFs with QGIS's raster writer, the last one predicts twice through the panel with the
real engine worker (the session's tiny model).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.qgis_support import ORIGIN, PIXEL_M, needs_engine
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsLayerTree,
    QgsProject,
    QgsRasterBlock,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRectangle,
)

SIZE_PX = 8
CLASSES = [{"id": 1, "name": "sealed", "colour": "#d7191c"},
           {"id": 2, "name": "unsealed", "colour": "#1a9641"}]


def write_tif(path: Path, data_type, values: bytes) -> Path:
    """A one-band 8 x 8 GeoTIFF of 10 m pixels at ORIGIN in EPSG:32632."""
    x0, y0 = ORIGIN
    extent = QgsRectangle(x0, y0 - SIZE_PX * PIXEL_M, x0 + SIZE_PX * PIXEL_M, y0)
    writer = QgsRasterFileWriter(str(path))
    writer.setOutputFormat("GTiff")
    provider = writer.createOneBandRaster(data_type, SIZE_PX, SIZE_PX, extent,
                                          QgsCoordinateReferenceSystem("EPSG:32632"))
    assert provider is not None and provider.isValid()
    block = QgsRasterBlock(data_type, SIZE_PX, SIZE_PX)
    block.setData(values)
    assert provider.writeBlock(block, 1, 0, 0)
    del provider
    return path


def write_prediction(folder: Path) -> tuple[Path, Path]:
    """probability.tif (Float32, 0.25 everywhere) and classes.tif (Byte, classes 1 and 2)."""
    import struct

    folder.mkdir(parents=True, exist_ok=True)
    prob = write_tif(folder / "probability.tif", Qgis.Float32,
                     struct.pack(f"<{SIZE_PX * SIZE_PX}f", *([0.25] * SIZE_PX * SIZE_PX)))
    cls = write_tif(folder / "classes.tif", Qgis.Byte, bytes([1, 2] * (SIZE_PX * SIZE_PX // 2)))
    return prob, cls


def tree_order() -> list[str]:
    """Layer names and group names ('[group]') in the layer tree, top to bottom."""
    out: list[str] = []

    def walk(node) -> None:
        for child in node.children():
            if QgsLayerTree.isLayer(child):
                out.append(child.layer().name())
            else:
                out.append(f"[{child.name()}]")
                walk(child)

    walk(QgsProject.instance().layerTreeRoot())
    return out


@pytest.fixture
def panel(qgis_iface, qgis_new_project, tmp_path: Path):
    """(dock, raster layer, label layer): raster at the bottom, label layer above it."""
    from terraseg.plugin import label_layer
    from terraseg.plugin.dock import TerraSegDock

    project = QgsProject.instance()
    raster = QgsRasterLayer(str(write_tif(tmp_path / "scene.tif", Qgis.Byte,
                                          bytes(SIZE_PX * SIZE_PX))), "scene", "gdal")
    assert raster.isValid()
    project.addMapLayer(raster)
    dock = TerraSegDock(qgis_iface)
    dock.auto_answer = True
    labels = label_layer.create_label_layer(tmp_path / "labels.gpkg", raster.crs(),
                                            dock.classes(), name="labels")
    dock.set_raster_layer(raster)
    dock.set_label_layer(labels)
    assert tree_order() == ["labels", "scene"]
    yield dock, raster, labels
    dock.shutdown()
    dock.deleteLater()


def test_results_go_below_the_label_layer_and_stay_there(panel, tmp_path: Path) -> None:
    from terraseg.plugin import label_layer, results

    dock, raster, labels = panel
    assert label_layer.current_label_layer() is labels
    first = results.add_results(*write_prediction(tmp_path / "run1"), CLASSES, name="run1")
    assert tree_order() == ["labels", "[TerraSeg results]", "run1 classes",
                            "run1 probability (sealed)", "scene"]

    # the analyst drags the label layer to the bottom: the next prediction puts the
    # results group (with the earlier results in it) back under the label layer
    root = QgsProject.instance().layerTreeRoot()
    node = root.findLayer(labels.id())
    root.insertChildNode(len(root.children()), node.clone())
    root.removeChildNode(node)
    assert tree_order()[-1] == "labels"
    results.add_results(*write_prediction(tmp_path / "run2"), CLASSES, name="run2")
    assert tree_order() == ["scene", "labels", "[TerraSeg results]", "run2 classes",
                            "run2 probability (sealed)", "run1 classes",
                            "run1 probability (sealed)"]
    for layer in first:  # moving the group keeps the earlier layers in the project
        assert QgsProject.instance().mapLayer(layer.id()) is layer
    # the map draws the label layer over every result
    order = [layer.name() for layer in root.layerOrder()]
    assert order.index("labels") < min(order.index(n) for n in order if n.startswith("run"))

    # a group the analyst put further down (still below the labels) stays where it is
    node = root.findLayer(raster.id())
    root.insertChildNode(2, node.clone())  # 'scene' between 'labels' and the group
    root.removeChildNode(node)
    assert tree_order()[:3] == ["labels", "scene", "[TerraSeg results]"]
    results.add_results(*write_prediction(tmp_path / "run3"), CLASSES, name="run3")
    assert tree_order()[:5] == ["labels", "scene", "[TerraSeg results]", "run3 classes",
                                "run3 probability (sealed)"]
    assert len(tree_order()) == 9


def test_exported_polygons_go_in_the_group_below_the_labels(panel, tmp_path: Path) -> None:
    from terraseg.plugin import label_layer, results

    dock, raster, labels = panel
    # an exported polygon layer (the vectorise output has a class_name field)
    export = label_layer.create_label_layer(tmp_path / "polygons.gpkg", raster.crs(),
                                            dock.classes(), add_to_project=False)
    export_path = export.source().split("|")[0]
    del export
    layer = results.add_vector_result(export_path, "run1 polygons")
    assert tree_order() == ["labels", "[TerraSeg results]", "run1 polygons", "scene"]
    assert layer.isValid()


def test_without_a_label_layer_results_go_on_top(panel, tmp_path: Path) -> None:
    from terraseg.plugin import label_layer, results

    dock, raster, labels = panel
    dock.set_label_layer(None)
    assert label_layer.current_label_layer() is None
    assert not labels.customProperty(label_layer.CURRENT_PROPERTY)
    results.add_results(*write_prediction(tmp_path / "run1"), CLASSES, name="run1")
    assert tree_order() == ["[TerraSeg results]", "run1 classes", "run1 probability (sealed)",
                            "labels", "scene"]


@needs_engine
def test_panel_predictions_sit_below_the_label_layer(qgis_iface, qgis_new_project, scene,
                                                     tiny_model, tmp_path: Path) -> None:
    from terraseg.plugin import label_layer
    from terraseg.plugin.dock import TerraSegDock

    raster = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    QgsProject.instance().addMapLayer(raster)
    dock = TerraSegDock(qgis_iface)
    try:
        dock.auto_answer = True
        dock.set_raster_layer(raster)
        assert dock.load_model(tiny_model.path) is not None
        labels = label_layer.create_label_layer(tmp_path / "labels.gpkg", raster.crs(),
                                                dock.classes(), name="labels")
        dock.set_label_layer(labels)
        for run in (1, 2):
            assert dock.predict("whole", wait=True, timeout_s=120), dock.log_text()
            names = tree_order()
            assert names[:2] == ["labels", "[TerraSeg results]"], names
            assert names[-1] == "scene" and len(names) == 3 + 2 * run, names
    finally:
        dock.shutdown()
        dock.deleteLater()
