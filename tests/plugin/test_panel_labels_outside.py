"""Labels outside the raster, the percentages' note and the drawing status line (issue 10).

Real QGIS (pytest-qgis), no engine: a 40 x 40 raster of 10 m pixels in EPSG:32632 written
through QGIS's raster writer, and a GeoPackage label layer in EPSG:4326 whose polygons are
pixel boxes of that raster (helpers.qgis_support.pixel_box) reprojected with
QgsCoordinateTransform. Every area below is counted by hand in pixels of 100 m^2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.qgis_support import ORIGIN, PIXEL_M, pixel_box, wait_until
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsProject,
    QgsRasterBlock,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
    QgsVectorLayerUtils,
)

SIZE_PX = 40
PX_M2 = PIXEL_M * PIXEL_M
UTM = "EPSG:32632"

# (class, pixel box r0, c0, r1, c1) of the label polygons
POLYGONS = [
    ("sealed", (2, 2, 10, 10)),        # inside: 64 px
    ("sealed", (20, 20, 28, 28)),      # inside: 64 px
    ("unsealed", (12, 12, 20, 20)),    # inside: 64 px
    ("unsealed", (30, 36, 38, 44)),    # partly: columns 36-39 inside (32 px), 40-43 outside
    ("unsealed", (50, 0, 60, 10)),     # wholly outside (below the last row): 100 px
    ("water", (0, 30, 5, 35)),         # inside, a class the task does not have: 25 px
]


def write_raster(path: Path, size: int = SIZE_PX) -> QgsRasterLayer:
    """A one-band Byte GeoTIFF, size x size pixels of 10 m at ORIGIN in EPSG:32632."""
    x0, y0 = ORIGIN
    extent = QgsRectangle(x0, y0 - size * PIXEL_M, x0 + size * PIXEL_M, y0)
    writer = QgsRasterFileWriter(str(path))
    writer.setOutputFormat("GTiff")
    provider = writer.createOneBandRaster(Qgis.Byte, size, size, extent,
                                          QgsCoordinateReferenceSystem(UTM))
    assert provider is not None and provider.isValid()
    block = QgsRasterBlock(Qgis.Byte, size, size)
    block.setData(bytes(range(size)) * size)
    assert provider.writeBlock(block, 1, 0, 0)
    del provider  # closes the file
    layer = QgsRasterLayer(str(path), "scene", "gdal")
    assert layer.isValid() and layer.crs().authid() == UTM
    return layer


def add_polygons(layer: QgsVectorLayer, polygons) -> None:
    """Add pixel boxes (given in the raster's UTM grid) reprojected to the layer's CRS."""
    to_layer = QgsCoordinateTransform(QgsCoordinateReferenceSystem(UTM), layer.crs(),
                                      QgsProject.instance())
    assert layer.startEditing()
    for name, box in polygons:
        geom = pixel_box(*box)
        geom.transform(to_layer)
        feature = QgsFeature(layer.fields())
        feature.setGeometry(geom)
        feature.setAttribute("class", name)
        assert layer.addFeature(feature)
    assert layer.commitChanges()


@pytest.fixture
def scene(qgis_iface, qgis_new_project, tmp_path: Path):
    """(dock, raster, label layer): Sealed surfaces task, labels in EPSG:4326."""
    from terraseg.plugin import label_layer, presets
    from terraseg.plugin.dock import TerraSegDock

    project = QgsProject.instance()
    raster = write_raster(tmp_path / "scene.tif")
    project.addMapLayer(raster)
    dock = TerraSegDock(qgis_iface)
    dock.auto_answer = False
    dock.set_preset(presets.SEALED)
    labels = label_layer.create_label_layer(tmp_path / "labels.gpkg",
                                            QgsCoordinateReferenceSystem("EPSG:4326"),
                                            dock.classes())
    assert labels.crs().authid() == "EPSG:4326"
    add_polygons(labels, POLYGONS)
    dock.set_raster_layer(raster)
    dock.set_label_layer(labels)
    yield dock, raster, labels
    dock.shutdown()
    dock.deleteLater()


def table_rows(dock) -> dict[str, list[str]]:
    table = dock.area_table
    return {table.item(r, 0).text(): [table.item(r, c).text()
                                      for c in range(1, table.columnCount())]
            for r in range(table.rowCount())}


def test_areas_count_only_the_labels_inside_the_raster(scene) -> None:
    dock, raster, labels = scene
    areas = dock.refresh_areas()
    stats = dock.label_stats
    # sealed: two boxes of 64 px inside
    assert areas["sealed"] == pytest.approx(128 * PX_M2, rel=1e-6)
    assert (stats["sealed"].count, stats["sealed"].outside_count,
            stats["sealed"].partly_outside_count) == (2, 0, 0)
    assert stats["sealed"].outside_area_m2 == 0.0
    # unsealed: 64 px + the inside half (32 px) of the partly outside box
    assert areas["unsealed"] == pytest.approx(96 * PX_M2, rel=1e-6)
    assert stats["unsealed"].count == 2  # the inside box and the partly outside one
    assert stats["unsealed"].outside_count == 1  # the box below the raster
    assert stats["unsealed"].partly_outside_count == 1
    assert stats["unsealed"].outside_area_m2 == pytest.approx((32 + 100) * PX_M2, rel=1e-6)
    assert stats["water"].area_m2 == pytest.approx(25 * PX_M2, rel=1e-6)

    rows = table_rows(dock)
    assert [dock.area_table.horizontalHeaderItem(c).text()
            for c in range(dock.area_table.columnCount())] == [
        "Class", "Polygons", "Area (m²)", "%", "Outside raster"]
    assert rows["sealed"] == ["2", "12,800", "57.1", ""]  # 12,800 / 22,400
    assert rows["unsealed"] == ["2", "9,600", "42.9", "1 (+1 partly), 13,200 m²"]
    assert rows["water"] == ["1", "2,500", "–", ""]  # not a class of the task
    note = dock.area_note.text()
    assert ("% = share of the labelled area inside raster 'scene' among the task's classes "
            "(the area outside the raster and features of other or no class left out)") in note
    assert "1 polygon(s) wholly and 1 partly outside the raster (13,200 m² outside)" in note

    # moving the raster's extent: another raster, twice as large, holds every polygon
    bigger = write_raster(Path(raster.source()).with_name("big.tif"), size=80)
    QgsProject.instance().addMapLayer(bigger)
    dock.set_raster_layer(bigger)  # the table follows the raster (through the event loop)
    assert wait_until(lambda: dock.label_stats["unsealed"].count == 3, 10)
    assert dock.label_stats["unsealed"].outside_count == 0
    assert dock.class_area_m2["unsealed"] == pytest.approx((64 + 64 + 100) * PX_M2, rel=1e-6)
    assert "outside the raster (" not in dock.area_note.text()


def test_without_a_raster_every_polygon_counts(scene) -> None:
    dock, raster, labels = scene
    dock.set_raster_layer(None)
    assert dock.raster_layer() is None
    assert wait_until(lambda: dock.label_stats["unsealed"].count == 3, 10)
    stats = dock.label_stats
    assert stats["unsealed"].count == 3 and stats["unsealed"].outside_count == 0
    # ellipsoidal areas in EPSG:4326: the UTM boxes grow by 1/0.9996^2 near the meridian
    assert dock.class_area_m2["sealed"] == pytest.approx(128 * PX_M2 / 0.9996 ** 2, rel=2e-4)
    assert dock.class_area_m2["unsealed"] == pytest.approx(
        (64 + 64 + 100) * PX_M2 / 0.9996 ** 2, rel=2e-4)
    assert "no raster" not in dock.area_note.text() and "inside raster" not in (
        dock.area_note.text())


def test_confirm_labels_inside_refuses_or_asks(scene) -> None:
    from terraseg.plugin.presets import ClassDef

    dock, raster, labels = scene
    # both classes have labels inside: training may go on without a question
    assert dock.confirm_labels_inside()
    assert "Labels outside the raster" not in dock.log_text()

    # a third class labelled only outside the raster: the analyst is asked
    dock.set_classes([ClassDef("sealed", "#d7191c"), ClassDef("unsealed", "#1a9641"),
                      ClassDef("forest", "#006d2c")])
    add_polygons(labels, [("forest", (45, 45, 50, 50))])  # 25 px, south-east of the raster
    assert dock.confirm_labels_inside() is False  # auto_answer False: "no"
    assert ("Labels outside the raster: No labelled area inside raster 'scene' for 'forest': "
            "the polygons lie outside the raster ('forest': 1 polygon(s), 2,500 m²). -> no"
            ) in dock.log_text()
    dock.auto_answer = True
    assert dock.confirm_labels_inside() is True

    # only one class inside: refused without a question, whatever the answer would be
    labels.startEditing()
    labels.deleteFeatures([f.id() for f in labels.getFeatures() if f["class"] == "unsealed"])
    labels.commitChanges()
    add_polygons(labels, [("unsealed", (50, 0, 60, 10))])  # 100 px below the raster
    assert dock.confirm_labels_inside() is False
    assert dock.label_stats["unsealed"].area_m2 == 0.0
    assert dock.label_stats["unsealed"].outside_count == 1
    kind, message, hint = dock.last_error
    assert kind == "Refused"
    assert "for 'unsealed', 'forest'" in message
    assert "('unsealed': 1 polygon(s), 10,000 m²; 'forest': 1 polygon(s), 2,500 m²)" in message
    assert "at least two classes inside the raster (inside: sealed)" in message
    assert "choose the raster the labels were drawn on" in hint

    # Train refuses on the same grounds before any job starts
    dock.last_error = None
    assert dock.start_training() is False
    assert dock.job is None
    assert "No labelled area inside raster 'scene'" in dock.last_error[1]


def test_drawing_status_follows_the_palette(scene) -> None:
    dock, raster, labels = scene
    idx = labels.fields().indexOf("class")
    assert dock.start_drawing("sealed")
    assert dock.status_label.text() == f"Drawing 'sealed' polygons on {labels.name()}"
    dock.select_class("unsealed")  # palette click while drawing
    assert dock.status_label.text() == f"Drawing 'unsealed' polygons on {labels.name()}"
    assert labels.defaultValueDefinition(idx).expression() == "'unsealed'"
    feature = QgsVectorLayerUtils.createFeature(labels, pixel_box(0, 0, 2, 2), {},
                                                labels.createExpressionContext())
    assert feature.attribute("class") == "unsealed"
    dock.stop_drawing(ask=False)
    # QGIS's own editing (no Draw button): new features still follow the palette
    assert labels.isEditable()
    dock.select_class("sealed")
    assert labels.defaultValueDefinition(idx).expression() == "'sealed'"
    assert dock.status_label.text() == f"Drawing 'unsealed' polygons on {labels.name()}"
    labels.rollBack()
