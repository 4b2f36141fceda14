"""Screenshot of TerraSeg in real QGIS: run by ``make screenshot`` as ``qgis --code``.

Opens the North Carolina demo raster, creates a label layer with the panel (Sealed
surfaces preset), copies the demo's training polygons into it as an analyst's drawing
would (developed -> sealed, everything else -> unsealed), trains through the real engine
worker, predicts the whole raster, and saves the QGIS main window to
docs/images/qgis_panel.png. Environment: TERRASEG_ROOT (repository), TERRASEG_SHOT_DIR
(scratch folder), TERRASEG_SHOT (output PNG).
"""

import os
import sys
import traceback
from pathlib import Path

from qgis.core import QgsFeature, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QEventLoop, Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface

ROOT = Path(os.environ["TERRASEG_ROOT"])
WORK = Path(os.environ["TERRASEG_SHOT_DIR"])
SHOT = Path(os.environ["TERRASEG_SHOT"])


def wait(ms: int) -> None:
    """Run the event loop for ``ms`` milliseconds."""
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec_()


def main() -> None:
    """Drive the panel and take the screenshot."""
    sys.path.insert(0, str(WORK / "plugins"))
    from terraseg import classFactory

    plugin = classFactory(iface)
    plugin.initGui()
    dock = plugin.dock
    dock.auto_answer = True
    dock.show()
    iface.mainWindow().resize(1600, 1000)

    raster = QgsRasterLayer(str(ROOT / "data/demo/nc_landsat7_6band.tif"), "Landsat 7 NC")
    raster.renderer().setRedBand(4)  # nir-red-green false colour
    raster.renderer().setGreenBand(3)
    raster.renderer().setBlueBand(2)
    QgsProject.instance().addMapLayer(raster)
    dock.set_raster_layer(raster)
    dock.set_band_row(6, include=False) if hasattr(dock, "set_band_row") else None
    dock.set_preset("Sealed surfaces")
    labels = dock.new_label_layer(WORK / "labels.gpkg")
    demo = QgsVectorLayer(str(ROOT / "data/demo/nc_training_polygons.gpkg"), "demo")
    labels.startEditing()
    from qgis.core import QgsCoordinateTransform

    xform = QgsCoordinateTransform(demo.crs(), labels.crs(), QgsProject.instance())
    for f in demo.getFeatures():
        g = f.geometry()
        g.transform(xform)
        nf = QgsFeature(labels.fields())
        nf.setGeometry(g)
        nf["class"] = "sealed" if f["label"] == "developed" else "unsealed"
        labels.addFeature(nf)
    labels.commitChanges()
    dock.refresh_areas()
    dock.set_training_options(epochs=12, patch_size=25, block_size=5, blocks="1,1,1")
    ok = dock.start_training(wait=True, timeout_s=900)
    print("training ok:", ok, dock.last_model, flush=True)
    ok = dock.predict(mode="whole", wait=True, timeout_s=600)
    print("predict ok:", ok, dock.last_results, flush=True)
    root = QgsProject.instance().layerTreeRoot()
    labels_node = root.findLayer(labels.id())
    if labels_node:  # drawn labels on top, as an analyst keeps them
        clone = labels_node.clone()
        root.insertChildNode(0, clone)
        labels_node.parent().removeChildNode(labels_node)
    for layer in QgsProject.instance().mapLayers().values():
        if layer.name().endswith("classes"):
            layer.setOpacity(0.6)  # imagery shows through the class map
    iface.mainWindow().resizeDocks([dock], [470], Qt.Horizontal)
    iface.mapCanvas().setExtent(raster.extent())
    iface.mapCanvas().refresh()
    wait(4000)
    SHOT.parent.mkdir(parents=True, exist_ok=True)
    iface.mainWindow().grab().save(str(SHOT))
    print("screenshot:", SHOT, flush=True)


try:
    main()
except Exception:  # noqa: BLE001 - report and quit, never hang the make target
    traceback.print_exc()
    os.environ["TERRASEG_SHOT_FAILED"] = "1"
finally:
    QgsProject.instance().setDirty(False)
    QTimer.singleShot(500, QApplication.instance().quit)
