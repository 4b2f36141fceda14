"""The Landslides task in the real panel: U-Net, DEM and derived slope, threshold, clean-up.

Runs in QGIS's Python (``make test-plugin``) with the real engine worker, as an analyst
would: choose the raster and a DEM on another grid, pick the Landslides task, draw
polygons, train, then predict with an own threshold and a cleaned class map.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.paths import run_engine_python
from helpers.qgis_support import label_boxes, make_scene, needs_engine, raster_values
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayerUtils

# A 20 m DEM (a tilted plane with a hill) covering the 10 m scene, on another grid.
_MAKE_DEM = """
import sys
import numpy as np
from pathlib import Path
from rasterio.transform import from_origin
from helpers.synthetic import write_raster
yy, xx = np.mgrid[0:60, 0:60].astype("float32")
dem = 300 + 2.0 * xx + 40 * np.exp(-((yy - 30) ** 2 + (xx - 25) ** 2) / 200)
write_raster(Path(sys.argv[1]), dem[None].astype("float32"),
             transform=from_origin(499900.0, 5200100.0, 20.0, 20.0))
"""


def make_dem(path: Path) -> Path:
    run_engine_python(_MAKE_DEM, path)
    return path


@pytest.mark.slow  # trains a U-Net in the panel: ~25-45 s on 2 CPU cores
@needs_engine
def test_landslide_task_with_terrain_threshold_and_cleanup(qgis_iface, qgis_new_project,
                                                           tmp_path: Path) -> None:
    from terraseg import classFactory
    from terraseg.plugin import modelinfo, presets

    project = QgsProject.instance()
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    try:
        dock = plugin.dock
        dock.auto_answer = True
        assert dock.refresh_engine_status(), dock.engine_label.text()
        raster = QgsRasterLayer(str(make_scene(tmp_path)), "s2", "gdal")
        dem = QgsRasterLayer(str(make_dem(tmp_path / "dem.tif")), "dem", "gdal")
        assert raster.isValid() and dem.isValid()
        project.addMapLayers([raster, dem])
        dock.set_raster_layer(raster)

        # --- the preset: classes, U-Net, terrain section opened ------------------------------
        dock.set_preset(presets.LANDSLIDES)
        assert [c.name for c in dock.classes()] == ["landslide", "no landslide"]
        assert dock.arch_combo.currentText() == "unet_small" and dock.is_tile_model()
        assert dock.tile_spin.isEnabled() and not dock.patch_spin.isEnabled()
        assert not dock.terrain_box.isCollapsed()
        dock.set_preset(presets.SEALED)
        assert dock.arch_combo.currentText() == "patch_cnn" and dock.patch_spin.isEnabled()
        dock.set_preset(presets.LANDSLIDES)

        labels = dock.new_label_layer(tmp_path / "labels.gpkg")
        labels.startEditing()
        boxes = label_boxes()
        for name, geoms in (("landslide", boxes["sealed"]), ("no landslide", boxes["unsealed"])):
            for geom in geoms:
                feature = QgsVectorLayerUtils.createFeature(
                    labels, geom, {labels.fields().indexOf("class"): name},
                    labels.createExpressionContext())
                assert labels.addFeature(feature)
        assert labels.commitChanges()

        # --- bad terrain choice is refused before anything starts ----------------------------
        dock.set_terrain(dem=None, slope_from_dem=True)
        assert not dock.start_training()
        assert "Choose a DEM" in dock.last_error[1]
        assert "train" not in dock.last_jobs

        # --- train a small U-Net on image + DEM + derived slope ------------------------------
        dock.set_terrain(dem=dem, slope_from_dem=True)
        dock.set_training_options(epochs=2, tile_size=32, samples_per_epoch=64, patience=2)
        assert dock.start_training(wait=True, timeout_s=300), dock.log_text()
        args = dock.last_jobs["train"]["args"]
        assert args["model"] == "unet_small" and args["tile_size"] == 32
        assert args["dem"] == str(tmp_path / "dem.tif") and args["slope_from_dem"] is True
        assert args["class_map"] == "landslide=landslide,no landslide=no landslide"
        meta = modelinfo.read_model_metadata(dock.last_model)
        assert [e["name"] for e in meta["extra_rasters"]] == ["dem", "slope"]
        assert meta["architecture"]["name"] == "unet_small"
        assert meta["geometry"]["tile_px"] == 32
        assert Path(dock.last_model).name.endswith("_landslides.tsm")
        tuned = (meta.get("threshold") or {}).get("value")
        assert tuned is not None  # two classes with validation polygons: tuned at training
        assert f"{tuned:.2f}" in dock.threshold_label.text()
        assert dock.threshold_check.isEnabled()

        # --- prediction needs the DEM again ------------------------------------------------
        dock.set_terrain(dem=None)
        assert not dock.predict("whole")
        assert "trained with a DEM" in dock.last_error[1]

        # --- own threshold and a cleaned class map -------------------------------------------
        dock.set_terrain(dem=dem, slope_from_dem=True)
        dock.set_prediction_options(threshold=0.3, opening=1, closing=1, min_area=500.0)
        assert dock.predict("whole", wait=True, timeout_s=300), dock.log_text()
        pargs = dock.last_jobs["predict"]["args"]
        assert pargs["threshold"] == 0.3 and pargs["min_area"] == 500.0
        assert pargs["opening"] == 1 and pargs["closing"] == 1
        assert pargs["dem"] == str(tmp_path / "dem.tif") and pargs["slope_from_dem"] is True
        result = dock.last_results["result"]
        assert result["threshold"] == pytest.approx(0.3)
        assert result["postprocess"]["min_region_px"] == 5  # 500 m2 of 10 m pixels
        prob_layer, cls_layer = dock.last_results["layers"]
        assert "probability (landslide)" in prob_layer.name()
        assert "threshold 0.30" in dock.predict_summary.text()
        # the class map follows the threshold on P(landslide), up to the clean-up
        _, prob = raster_values(dock.last_results["probability"], 1)
        _, cls = raster_values(dock.last_results["classes"], 1)
        flat = [(p, c) for prow, crow in zip(prob, cls, strict=True)
                for p, c in zip(prow, crow, strict=True)]
        assert {c for _, c in flat} <= {1, 2}
        agree = sum((p >= 0.3) == (c == 1) for p, c in flat) / len(flat)
        assert agree > 0.9
    finally:
        plugin.unload()
