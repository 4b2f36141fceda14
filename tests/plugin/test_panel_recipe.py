"""Train's Recipe (plugin/panel_recipe.py, issue 11): a study's settings in the widgets.

Choosing a recipe fills the training widgets with the engine preset's values and the train
job carries them (the few-polygon recipe: stride 1); a raster's pixel size picks the recipe
until the user chooses one (28.5 m demo: few polygons; 0.5 m: aerial); a user's choice or
edit is never overridden by a later raster. Rasters are tiny GeoTIFFs written with GDAL and
the panel's job start is recorded instead of run, except in one real 1-epoch training of
the synthetic scene.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.paths import ROOT
from helpers.qgis_support import label_boxes, needs_engine
from qgis.core import (
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayerUtils,
)

DEMO = ROOT / "data" / "demo" / "nc_landsat7_6band.tif"  # Landsat 7, 28.5 m (make demo)
UTM32 = 32632


def write_raster(path: Path, pixel: float, epsg: int = UTM32, size: int = 32,
                 origin: tuple[float, float] = (500000.0, 5200000.0)) -> QgsRasterLayer:
    """A 4-band ``size`` x ``size`` GeoTIFF of ``pixel`` CRS units, added to the project."""
    from osgeo import gdal, osr

    ds = gdal.GetDriverByName("GTiff").Create(str(path), size, size, 4, gdal.GDT_Byte)
    ds.SetGeoTransform((origin[0], pixel, 0.0, origin[1], 0.0, -pixel))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    for band in range(1, 5):
        ds.GetRasterBand(band).Fill(40 * band)
    ds = None
    layer = QgsRasterLayer(str(path), path.stem, "gdal")
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.fixture
def rasters(tmp_path: Path) -> dict[str, QgsRasterLayer]:
    """30 m and 0.5 m UTM rasters and a ~28 m geographic one."""
    return {"30m": write_raster(tmp_path / "landsat.tif", 30.0),
            "0.5m": write_raster(tmp_path / "aerial.tif", 0.5),
            "deg": write_raster(tmp_path / "geographic.tif", 0.00025, epsg=4326,
                                origin=(9.0, 47.0))}


def labelled(panel, layer: QgsRasterLayer, folder: Path) -> None:
    """Choose ``layer`` and a label layer with a polygon of each class inside it."""
    panel.set_raster_layer(layer)
    labels = panel.new_label_layer(folder / "labels.gpkg")
    assert labels is not None
    ext = layer.extent()
    step = ext.width() / 8
    labels.startEditing()
    for i, name in enumerate(("sealed", "unsealed")):
        x0, y0 = ext.xMinimum() + (1 + 3 * i) * step, ext.yMinimum() + step
        ring = [QgsPointXY(x0, y0), QgsPointXY(x0 + 2 * step, y0),
                QgsPointXY(x0 + 2 * step, y0 + 2 * step), QgsPointXY(x0, y0)]
        feature = QgsVectorLayerUtils.createFeature(
            labels, QgsGeometry.fromPolygonXY([ring]), {}, labels.createExpressionContext())
        feature.setAttribute("class", name)
        assert labels.addFeature(feature)
    assert labels.commitChanges()


# ----------------------------------------------------------------------------------------
# the recipes' values
# ----------------------------------------------------------------------------------------
def test_recipe_values_are_the_presets_on_the_panel_defaults() -> None:
    from terraseg.plugin import panel_recipe as pr
    from terraseg.protocol.options import DEFAULTS
    from terraseg.protocol.presets import TRAIN_PRESETS

    aerial = pr.recipe_values(pr.AERIAL)
    assert (aerial["model"], aerial["patch_size"], aerial["block_size"], aerial["stride"]) == (
        DEFAULTS.network.model, 51, 5, 0)
    assert (aerial["planes"], aerial["blocks"]) == (DEFAULTS.network.planes,
                                                    DEFAULTS.network.blocks)
    assert (aerial["lr"], aerial["patience"], aerial["batch_size"]) == (
        DEFAULTS.optim.lr, DEFAULTS.optim.patience, DEFAULTS.optim.batch_size)
    assert aerial["epochs"] == 50  # QGIS's interactive epochs, not the command line's 300
    few = pr.recipe_values(pr.FEW_POLYGONS)
    assert {k: few[k] for k in TRAIN_PRESETS["few_polygons"]} == TRAIN_PRESETS["few_polygons"]
    assert (few["patch_size"], few["block_size"], few["stride"], few["planes"],
            few["blocks"]) == (7, 3, 1, (16,), (1,))
    assert pr.recipe_extras(pr.FEW_POLYGONS) == {} == pr.recipe_extras(pr.AERIAL)
    coarse = pr.recipe_values(pr.COARSE_LABELS)
    assert (coarse["model"], coarse["tile_size"], coarse["epochs"], coarse["patience"],
            coarse["lr"], coarse["augment"]) == ("unet_resnet50", 128, 40, 40, 1e-3, "flip")
    assert (coarse["batch_size"], coarse["samples_per_epoch"]) == (16, 512)  # U-Net batches
    assert pr.recipe_extras(pr.COARSE_LABELS) == {"optimizer": "adam", "weight_decay": 0.0,
                                                  "loss": "dice"}
    assert "no widget for optimizer adam, weight_decay 0, loss dice" in pr.recipe_tooltip()
    assert pr.recipe_for_pixel(28.5) == pr.FEW_POLYGONS == pr.recipe_for_pixel(5.0)
    assert pr.recipe_for_pixel(4.9) == pr.AERIAL


def test_a_new_panel_shows_the_aerial_recipe_values(panel) -> None:
    from terraseg.plugin import panel_recipe as pr

    assert panel.recipe_name() == pr.AERIAL
    assert panel._recipe_untouched()
    assert not panel.recipe_note.isVisible() and not panel.recipe_note.text()
    assert panel.stride_spin.value() == 0 and panel.stride_spin.isEnabled()


# ----------------------------------------------------------------------------------------
# choosing a recipe
# ----------------------------------------------------------------------------------------
def test_few_polygons_fills_the_widgets_and_the_train_job(panel, sent_jobs, rasters,
                                                          tmp_path: Path) -> None:
    from terraseg.plugin import panel_recipe as pr

    labelled(panel, rasters["0.5m"], tmp_path)
    assert panel.recipe_name() == pr.AERIAL
    panel.recipe_combo.setCurrentText(pr.FEW_POLYGONS)  # as the user does
    assert (panel.patch_spin.value(), panel.block_spin.value(), panel.stride_spin.value()) == (
        7, 3, 1)
    assert (panel.planes_edit.text(), panel.blocks_edit.text()) == ("16", "1")
    assert panel.arch_combo.currentText() == "patch_cnn"
    assert panel.start_training(), panel.log_text()
    args = sent_jobs[-1]["args"]
    assert {k: args[k] for k in ("model", "patch_size", "block_size", "stride", "planes",
                                 "blocks", "epochs")} == {
        "model": "patch_cnn", "patch_size": 7, "block_size": 3, "stride": 1, "planes": "16",
        "blocks": "1", "epochs": 50}
    assert not {"optimizer", "weight_decay", "loss", "tile_size"} & set(args)

    # an edit afterwards is the user's: kept, in the job, and the recipe stays
    panel.stride_spin.setValue(2)
    panel.epochs_spin.setValue(9)
    assert panel.start_training(), panel.log_text()
    args = sent_jobs[-1]["args"]
    assert (args["stride"], args["epochs"], args["patch_size"]) == (2, 9, 7)
    assert panel.recipe_name() == pr.FEW_POLYGONS


def test_coarse_labels_recipe_sends_what_has_no_widget(panel, sent_jobs, rasters,
                                                       tmp_path: Path) -> None:
    from terraseg.plugin import panel_recipe as pr

    labelled(panel, rasters["30m"], tmp_path)
    panel.set_recipe(pr.COARSE_LABELS)
    assert panel.is_tile_model() and not panel.stride_spin.isEnabled()
    assert (panel.tile_spin.value(), panel.epochs_spin.value(), panel.patience_spin.value(),
            panel.augment_edit.text(), panel.batch_spin.value()) == (128, 40, 40, "flip", 16)
    assert panel.start_training(), panel.log_text()
    args = sent_jobs[-1]["args"]
    assert {k: args.get(k) for k in ("model", "tile_size", "epochs", "patience", "lr",
                                     "augment", "optimizer", "weight_decay", "loss")} == {
        "model": "unet_resnet50", "tile_size": 128, "epochs": 40, "patience": 40, "lr": 1e-3,
        "augment": "flip", "optimizer": "adam", "weight_decay": 0.0, "loss": "dice"}
    assert "stride" not in args  # tile networks have no patch stride
    # back to aerial: every value the recipe changed is the panel default again
    panel.set_recipe(pr.AERIAL)
    assert panel._recipe_untouched()
    assert (panel.arch_combo.currentText(), panel.epochs_spin.value(),
            panel.augment_edit.text()) == ("patch_cnn", 50, pr.recipe_values(pr.AERIAL)[
                "augment"])
    assert not {"optimizer", "weight_decay", "loss"} & set(panel.training_options())


# ----------------------------------------------------------------------------------------
# the pixel-size default
# ----------------------------------------------------------------------------------------
@pytest.mark.skipif(not DEMO.is_file(), reason=f"no demo raster at {DEMO} (make demo-data)")
def test_the_28_5_m_demo_raster_picks_few_polygons(panel) -> None:
    from terraseg.plugin import panel_recipe as pr

    layer = QgsRasterLayer(str(DEMO), "nc", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    assert pr.pixel_size_m(layer) == pytest.approx(28.5)
    panel.set_raster_layer(layer)
    assert panel.recipe_name() == pr.FEW_POLYGONS
    assert panel.recipe_note.text().startswith("28.5 m pixels: the 5 px context recipe")
    assert "Recipe: 28.5 m pixels" in panel.log_text()
    assert panel.training_options()["stride"] == 1
    assert panel.training_options()["patch_size"] == 7


def test_pixel_size_picks_the_recipe_until_the_user_chooses(panel, rasters) -> None:
    from terraseg.plugin import panel_recipe as pr

    assert pr.pixel_size_m(rasters["deg"]) == pytest.approx(23.8, abs=0.5)  # degrees, roughly
    panel.set_raster_layer(rasters["30m"])
    assert panel.recipe_name() == pr.FEW_POLYGONS and panel.patch_spin.value() == 7
    assert panel.recipe_note.text().startswith("30 m pixels: the 5 px context recipe")
    panel.set_raster_layer(rasters["0.5m"])
    assert panel.recipe_name() == pr.AERIAL and panel.patch_spin.value() == 51
    assert panel.recipe_note.text().startswith("0.5 m pixels: the 51 px context recipe")
    panel.set_raster_layer(rasters["deg"])
    assert panel.recipe_name() == pr.FEW_POLYGONS
    # the user chooses aerial: a later raster leaves it (and its widgets) alone
    panel.recipe_combo.setCurrentText(pr.AERIAL)
    assert panel.patch_spin.value() == 51 and panel.stride_spin.value() == 0
    panel.set_raster_layer(rasters["0.5m"])
    panel.set_raster_layer(rasters["30m"])
    assert panel.recipe_name() == pr.AERIAL and panel.patch_spin.value() == 51
    assert panel.training_options()["stride"] == 0


def test_an_edited_widget_stops_the_pixel_size_default(panel, rasters) -> None:
    from terraseg.plugin import panel_recipe as pr

    panel.set_raster_layer(rasters["30m"])
    assert panel.recipe_name() == pr.FEW_POLYGONS
    panel.patch_spin.setValue(9)  # the user's own context
    panel.set_raster_layer(rasters["0.5m"])
    assert panel.recipe_name() == pr.FEW_POLYGONS and panel.patch_spin.value() == 9
    assert panel.training_options()["patch_size"] == 9


def test_landslides_keeps_its_unet(panel, rasters) -> None:
    from terraseg.plugin import panel_recipe as pr
    from terraseg.plugin import presets

    panel.set_preset(presets.LANDSLIDES)
    panel.set_raster_layer(rasters["30m"])
    assert panel.recipe_name() == pr.AERIAL
    assert panel.arch_combo.currentText() == "unet_small"
    panel.set_preset(presets.LAND_COVER)  # land cover: the next raster picks again
    panel.set_raster_layer(rasters["deg"])
    assert panel.recipe_name() == pr.FEW_POLYGONS and panel.stride_spin.value() == 1


def test_scripted_options_mean_the_same_on_any_raster(panel, rasters) -> None:
    """set_training_options withdraws an automatic recipe nobody changed (engine defaults
    plus the given options), and counts as a choice; ``recipe=`` chooses one."""
    from terraseg.plugin import panel_recipe as pr

    panel.set_raster_layer(rasters["30m"])
    assert panel.recipe_name() == pr.FEW_POLYGONS
    panel.set_training_options(patch_size=23, blocks="1,1,1")
    assert panel.recipe_name() == pr.AERIAL
    assert (panel.planes_edit.text(), panel.stride_spin.value()) == ("4,8,16", 0)
    assert (panel.patch_spin.value(), panel.blocks_edit.text()) == (23, "1,1,1")
    panel.set_raster_layer(rasters["deg"])
    assert panel.recipe_name() == pr.AERIAL and panel.patch_spin.value() == 23
    panel.set_training_options(recipe=pr.FEW_POLYGONS, epochs=4)
    assert (panel.recipe_name(), panel.stride_spin.value(), panel.epochs_spin.value()) == (
        pr.FEW_POLYGONS, 1, 4)
    with pytest.raises(KeyError, match="Unknown recipe"):
        panel.set_training_options(recipe="best")


def test_the_recipe_combo_does_not_widen_the_dock(panel) -> None:
    assert panel.recipe_combo.minimumSizeHint().width() < 300
    assert panel.widget().minimumSizeHint().width() <= 460


# ----------------------------------------------------------------------------------------
# one real run: the engine takes the few-polygon job the panel sends
# ----------------------------------------------------------------------------------------
@needs_engine
def test_few_polygon_recipe_trains_with_stride_1(panel, scene, cache_dir,
                                                 tmp_path: Path) -> None:
    """The 10 m scene picks the recipe; the model keeps its 5 px network and stride 1."""
    from terraseg.plugin import modelinfo
    from terraseg.plugin import panel_recipe as pr

    raster = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    QgsProject.instance().addMapLayer(raster)
    panel.set_raster_layer(raster)
    assert panel.recipe_name() == pr.FEW_POLYGONS
    labels = panel.new_label_layer(tmp_path / "labels.gpkg")
    assert labels.startEditing()
    for name, geoms in label_boxes().items():
        for geom in geoms:
            feature = QgsFeature(labels.fields())
            feature.setGeometry(geom)
            feature.setAttribute("class", name)
            assert labels.addFeature(feature)
    assert labels.commitChanges()
    # tiny, through the widgets as a user would (the recipe stays)
    panel.epochs_spin.setValue(1)
    panel.samples_spin.setValue(128)
    panel.batch_spin.setValue(64)
    panel.cache_edit.setText(str(cache_dir))
    assert panel.start_training(wait=True, timeout_s=180), panel.log_text()
    assert panel.last_jobs["train"]["args"]["stride"] == 1
    params = modelinfo.read_model_metadata(panel.last_model)["architecture"]["params"]
    assert (params["patch_px"], params["block_px"], params["stride_px"], params["planes"],
            params["blocks"]) == (7, 3, 1, [16], [1])


def test_fine_tuning_keeps_the_last_models_stride(panel, rasters) -> None:
    """A legacy patch model has no stride in its file: 0 (= its block), not the recipe's 1."""
    legacy = ROOT / "tests" / "data" / "legacy_v0_1" / "legacy_patch.tsm"
    panel.set_raster_layer(rasters["30m"])
    assert panel.stride_spin.value() == 1
    assert panel.load_model(legacy) is not None
    init, arch, how = panel._init_model_for(panel.classes(), panel.bands_spec())
    assert init == str(legacy), how
    assert arch["stride"] == 0 and arch["model"] == "patch_cnn"
