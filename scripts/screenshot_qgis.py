"""Screenshots of TerraSeg in real QGIS: run by ``make screenshot`` as ``qgis --code``.

Drives the panel through its public methods (plugin/dock.py), as an analyst's clicks would,
with the real engine worker, and saves the QGIS main window in three states:

1. ``qgis_sealed.png``: the North Carolina demo raster, the Sealed surfaces task, the demo's
   training polygons copied into the panel's label layer (developed -> sealed, everything
   else -> unsealed), a short patch-CNN training and a prediction of the whole raster.
2. ``qgis_review.png``: the label review: zoomed in, the label polygons and the independent
   reference points (data/demo/nc_reference_points.gpkg) over the class map, the panel's
   Labels and Evaluate sections with the evaluation against those points (when the panel
   has ``evaluate``).
3. ``qgis_landslide.png``: the Landslides task on 16 Chittagong Sentinel-2 chips
   (``<shared data>/landslide_s2_rgbn_chittagong``) mosaicked as a VRT with their nodata
   (0) declared and red/green/blue/nir named, the chips' sparse label rasters turned into
   the label layer's polygons, a short U-Net training and a prediction. Skipped, with the
   reason printed, when the chips are absent.

Training settings are short (a few minutes on 2 CPU cores): the pictures show the panel,
not a good model. Environment: TERRASEG_ROOT (repository), TERRASEG_SHOT_DIR (scratch
folder), TERRASEG_SHOTS (folder for the PNGs), TERRASEG_SHARED_DATA (optional; default
``<repository>/../shared/data``).
"""

import csv
import os
import sys
import traceback
from pathlib import Path

from qgis.core import (
    QgsCoordinateTransform,
    QgsFeature,
    QgsMarkerSymbol,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QEventLoop, QTimer
from qgis.PyQt.QtWidgets import QApplication, QDockWidget, QScrollArea
from qgis.utils import iface

ROOT = Path(os.environ["TERRASEG_ROOT"])
WORK = Path(os.environ["TERRASEG_SHOT_DIR"])
SHOTS = Path(os.environ.get("TERRASEG_SHOTS", str(WORK)))
SHARED = Path(os.environ.get("TERRASEG_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
LANDSLIDE_DATA = SHARED / "landslide_s2_rgbn_chittagong"
DEMO = ROOT / "data" / "demo"

# Short runs: the screenshots show the panel's states, not the best model.
SEALED_TRAINING = {"epochs": 8, "patience": 8, "patch_size": 25, "block_size": 5,
                   "blocks": "1,1,1", "samples_per_epoch": 1024}
LANDSLIDE_TRAINING = {"epochs": 20, "patience": 8, "tile_size": 64, "batch_size": 16,
                      "samples_per_epoch": 512}
# The chips mosaicked: columns and rows of the chip grid (tiles.csv) with the most labels.
LANDSLIDE_COLUMNS = range(1, 5)
LANDSLIDE_ROWS = range(2, 6)
LANDSLIDE_CLASSES = {2: "landslide", 1: "no landslide"}  # label raster value -> class
BAND_NAMES = ("red", "green", "blue", "nir")  # the chips' band order (PROVENANCE.md)


def wait(ms: int) -> None:
    """Run the event loop for ``ms`` milliseconds."""
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec_()


def save_window(name: str) -> Path:
    """Render the canvas, then save the QGIS main window as ``SHOTS/name``."""
    iface.mapCanvas().refresh()
    wait(4000)
    bar = iface.messageBar()
    for item in list(bar.items()):  # QGIS's datum-transform note on the demo's EPSG:3358
        if "preferred transform" in f"{item.title()} {item.text()}":
            bar.popWidget(item)
    wait(300)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    window = iface.mainWindow()
    window.grab().save(str(path))
    dock = next((d for d in window.findChildren(QDockWidget) if d.windowTitle() == "TerraSeg"),
                None)
    sizes = (f"window {window.width()}x{window.height()} px (minimum "
             f"{window.minimumSizeHint().width()})")
    if dock is not None:
        sizes += f", dock {dock.width()} px (minimum {dock.minimumSizeHint().width()})"
    print("screenshot:", path, sizes, flush=True)
    return path


def show_sections(dock, names: tuple[str, ...], visible=None) -> None:
    """Open the panel sections ``names`` (object names), collapse the others, scroll there.

    ``visible``: a widget to scroll into view instead of the first open section.
    """
    from qgis.gui import QgsCollapsibleGroupBox

    first = None
    for box in dock.findChildren(QgsCollapsibleGroupBox):
        if not box.objectName().startswith("TerraSeg") or box.objectName() == "TerraSegCleanupBox":
            continue
        box.setCollapsed(box.objectName() not in names)
        if first is None and box.objectName() in names:
            first = box
    wait(300)
    scroll = dock.findChild(QScrollArea)
    if scroll is not None and first is not None:
        scroll.verticalScrollBar().setValue(first.y())
        if visible is not None:
            scroll.ensureWidgetVisible(visible, 0, 10)
        scroll.horizontalScrollBar().setValue(0)


def copy_features(source: QgsVectorLayer, labels: QgsVectorLayer, class_of) -> int:
    """Copy ``source``'s polygons into the label layer with ``class_of(feature)`` as class."""
    xform = QgsCoordinateTransform(source.crs(), labels.crs(), QgsProject.instance())
    labels.startEditing()
    count = 0
    for feature in source.getFeatures():
        name = class_of(feature)
        if name is None:
            continue
        geometry = feature.geometry()
        geometry.transform(xform)
        new = QgsFeature(labels.fields())
        new.setGeometry(geometry)
        new["class"] = name
        labels.addFeature(new)
        count += 1
    labels.commitChanges()
    return count


def labels_on_top(labels: QgsVectorLayer) -> None:
    """Move the label layer to the top of the layer tree (if the panel did not already)."""
    root = QgsProject.instance().layerTreeRoot()
    node = root.findLayer(labels.id())
    if node is not None and root.children() and root.children()[0] is not node:
        clone = node.clone()
        root.insertChildNode(0, clone)
        node.parent().removeChildNode(node)


def classes_translucent() -> None:
    """Class maps at 60 % opacity, so the imagery shows through."""
    for layer in QgsProject.instance().mapLayers().values():
        if layer.name().endswith("classes"):
            layer.setOpacity(0.6)


def hide_probability() -> None:
    """Hide the probability rasters: the review looks at the class map over the imagery."""
    root = QgsProject.instance().layerTreeRoot()
    for layer in QgsProject.instance().mapLayers().values():
        node = root.findLayer(layer.id())
        if node is not None and "probability" in layer.name():
            node.setItemVisibilityChecked(False)


def false_colour(raster: QgsRasterLayer, red: int, green: int, blue: int) -> None:
    """Show ``raster`` with the given bands as red, green, blue."""
    renderer = raster.renderer()
    renderer.setRedBand(red)
    renderer.setGreenBand(green)
    renderer.setBlueBand(blue)


def train_and_predict(dock, what: str, timeout_s: int = 1200) -> None:
    """Start training and predict the whole raster; raise with the panel's log on failure."""
    if not dock.start_training(wait=True, timeout_s=timeout_s):
        raise RuntimeError(f"{what}: training failed:\n{dock.log_text()[-3000:]}")
    print(f"{what}: trained", dock.last_model, flush=True)
    if not dock.predict(mode="whole", wait=True, timeout_s=timeout_s):
        raise RuntimeError(f"{what}: prediction failed:\n{dock.log_text()[-3000:]}")
    print(f"{what}: predicted", (dock.last_results or {}).get("classes"), flush=True)


# --- the three states ------------------------------------------------------------------------


def sealed_state(dock) -> tuple[QgsRasterLayer, QgsVectorLayer]:
    """The Sealed surfaces task on the demo raster after prediction."""
    raster = QgsRasterLayer(str(DEMO / "nc_landsat7_6band.tif"), "Landsat 7 NC")
    false_colour(raster, 4, 3, 2)  # nir-red-green
    QgsProject.instance().addMapLayer(raster)
    dock.set_raster_layer(raster)
    dock.set_band_row(6, include=False)  # band 6 covers less of the raster (issue 10)
    dock.set_preset("Sealed surfaces")
    labels = dock.new_label_layer(WORK / "sealed_labels.gpkg")
    demo = QgsVectorLayer(str(DEMO / "nc_training_polygons.gpkg"), "demo")
    copy_features(demo, labels,
                  lambda f: "sealed" if f["label"] == "developed" else "unsealed")
    dock.refresh_areas()
    dock.set_training_options(**SEALED_TRAINING)
    train_and_predict(dock, "sealed")
    labels_on_top(labels)
    classes_translucent()
    show_sections(dock, ("TerraSegDataBox", "TerraSegLabelsBox", "TerraSegTrainBox",
                         "TerraSegPredictBox"))
    iface.mapCanvas().setExtent(raster.extent())
    return raster, labels


def review_state(dock, raster: QgsRasterLayer, labels: QgsVectorLayer) -> None:
    """Labels and reference points over the class map, zoomed in; the evaluation shown."""
    reference = QgsVectorLayer(str(DEMO / "nc_reference_points.gpkg"), "reference points")
    reference.setRenderer(reference.renderer().clone())
    reference.renderer().setSymbol(QgsMarkerSymbol.createSimple(
        {"name": "circle", "size": "1.4", "color": "#ffff00", "outline_color": "#000000"}))
    QgsProject.instance().addMapLayer(reference)
    if hasattr(dock, "evaluate"):
        ok = dock.evaluate(reference, class_field="label",
                           class_map="developed=sealed,*=unsealed", wait=True, timeout_s=900)
        print("evaluate ok:", ok, flush=True)
        if not ok:
            print(dock.log_text()[-2000:], flush=True)
    else:
        print("the panel has no evaluate(): the review shows labels over the class map only",
              flush=True)
    labels_on_top(labels)
    hide_probability()
    # inside the north-east of the raster: developed land, polygons of both classes
    full = raster.extent()
    centre_x = full.xMinimum() + 0.62 * full.width()
    centre_y = full.yMinimum() + 0.60 * full.height()
    half = 0.2 * min(full.width(), full.height())
    iface.mapCanvas().setExtent(QgsRectangle(centre_x - half, centre_y - half,
                                             centre_x + half, centre_y + half))
    show_sections(dock, ("TerraSegLabelsBox", "TerraSegEvaluateBox"),
                  visible=getattr(dock, "confusion_table", None))


def landslide_chips() -> list[tuple[Path, Path]]:
    """(image, label) chips of :data:`LANDSLIDE_COLUMNS` x :data:`LANDSLIDE_ROWS`."""
    with (LANDSLIDE_DATA / "tiles.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    wests = sorted({float(r["west_lon"]) for r in rows})
    souths = sorted({float(r["south_lat"]) for r in rows})
    chosen = []
    for r in rows:
        if (wests.index(float(r["west_lon"])) in LANDSLIDE_COLUMNS
                and souths.index(float(r["south_lat"])) in LANDSLIDE_ROWS):
            chosen.append((LANDSLIDE_DATA / "images" / r["file"],
                           LANDSLIDE_DATA / "labels" / r["file"]))
    return chosen


def landslide_inputs() -> tuple[Path, Path]:
    """The chips' image mosaic (nodata 0, named bands) and their labels as polygons."""
    from osgeo import gdal, ogr

    gdal.UseExceptions()
    chips = landslide_chips()
    image = WORK / "chittagong.vrt"
    vrt = gdal.BuildVRT(str(image), [str(i) for i, _ in chips], srcNodata=0, VRTNodata=0)
    for index, name in enumerate(BAND_NAMES, start=1):
        vrt.GetRasterBand(index).SetDescription(name)
    vrt = None  # written
    label_vrt = gdal.BuildVRT(str(WORK / "chittagong_labels.vrt"), [str(lab) for _, lab in chips],
                              srcNodata=0, VRTNodata=0)
    band = label_vrt.GetRasterBand(1)
    polygons = WORK / "chittagong_label_polygons.gpkg"
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(polygons))
    layer = source.CreateLayer("labels", srs=label_vrt.GetSpatialRef(),
                               geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0)
    source = label_vrt = None  # written
    print(f"landslide: {len(chips)} chips -> {image}", flush=True)
    return image, polygons


def landslide_state(dock) -> bool:
    """The Landslides task on the Chittagong chips after prediction (False: skipped)."""
    if not (LANDSLIDE_DATA / "tiles.csv").is_file():
        print(f"landslide screenshot skipped: no Chittagong chips in {LANDSLIDE_DATA} "
              "(set TERRASEG_SHARED_DATA to the folder holding landslide_s2_rgbn_chittagong)",
              flush=True)
        return False
    image, polygons = landslide_inputs()
    raster = QgsRasterLayer(str(image), "Sentinel-2 Chittagong")
    false_colour(raster, 4, 1, 2)  # nir-red-green: bare slides stand out from forest
    QgsProject.instance().addMapLayer(raster)
    dock.set_raster_layer(raster)
    dock.set_preset("Landslides")
    labels = dock.new_label_layer(WORK / "landslide_labels.gpkg")
    source = QgsVectorLayer(f"{polygons}|layername=labels", "chip labels")
    count = copy_features(source, labels, lambda f: LANDSLIDE_CLASSES.get(f["value"]))
    print(f"landslide: {count} label polygons", flush=True)
    dock.refresh_areas()
    dock.set_training_options(**LANDSLIDE_TRAINING)
    train_and_predict(dock, "landslide")
    labels_on_top(labels)
    classes_translucent()
    show_sections(dock, ("TerraSegDataBox", "TerraSegLabelsBox", "TerraSegTrainBox",
                         "TerraSegPredictBox"))
    iface.mapCanvas().setExtent(raster.extent())
    return True


def main() -> None:
    """Drive the panel through the three states and save a screenshot of each."""
    sys.path.insert(0, str(WORK / "plugins"))
    from terraseg import classFactory
    from terraseg.plugin.engine_setup import running_python

    print("QGIS Python:", running_python().text(), "| sys.executable:", sys.executable,
          flush=True)
    plugin = classFactory(iface)
    plugin.initGui()
    dock = plugin.dock
    dock.auto_answer = True
    dock.show()
    iface.mainWindow().resize(1600, 1000)  # the dock keeps the width the plugin opens it with
    failed = []
    raster, labels = sealed_state(dock)
    save_window("qgis_sealed.png")
    try:
        review_state(dock, raster, labels)
        save_window("qgis_review.png")
    except Exception:  # noqa: BLE001 - the other states still run
        traceback.print_exc()
        failed.append("review")
    QgsProject.instance().clear()
    iface.messageBar().clearWidgets()
    wait(500)
    try:
        if landslide_state(dock):
            save_window("qgis_landslide.png")
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        failed.append("landslide")
    if failed:
        print("screenshot states that failed:", ", ".join(failed), flush=True)


try:
    main()
except Exception:  # noqa: BLE001 - report and quit, never hang the make target
    traceback.print_exc()
finally:
    QgsProject.instance().setDirty(False)
    QTimer.singleShot(500, QApplication.instance().quit)
