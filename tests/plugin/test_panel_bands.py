"""Band table of the panel: coverage, best bands, nodata, mapping on a raster switch (issue 10).

Runs the real panel in QGIS with the real engine worker for ``terraseg inspect``. Rasters
are written by the engine's Python (QGIS's Python must not import rasterio).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.paths import ROOT, run_engine_python
from helpers.qgis_support import needs_engine
from qgis.core import (
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayerUtils,
)

pytestmark = needs_engine

DEMO = ROOT / "data" / "demo" / "nc_landsat7_6band.tif"

_WRITE = """
import sys
from pathlib import Path
import numpy as np
from helpers.synthetic import write_raster
folder = Path(sys.argv[1])
rng = np.random.default_rng(0)
one = rng.integers(10, 200, (1, 40, 40)).astype(np.uint16)
write_raster(folder / "one.tif", one, descriptions=("nir",))
four = rng.integers(100, 4000, (4, 60, 80)).astype(np.uint16)
four[:, :10] = 0
four[:, -10:] = 0
four[:, :, :12] = 0
four[:, :, -12:] = 0
write_raster(folder / "four.tif", four, descriptions=("B4", "B3", "B8", "B11"))
"""


@pytest.fixture(scope="module")
def rasters(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bands")
    run_engine_python(_WRITE, folder)
    return folder


def _layer(path: Path, name: str) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name, "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_switching_raster_rederives_the_bands(panel, rasters) -> None:
    """After a 1-band model, a 4-band raster gets its 4 bands with roles of their own; the
    zero frame it does not declare is offered as nodata and carried by the jobs."""
    panel.set_raster_layer(_layer(rasters / "one.tif", "one"))
    assert panel.band_rows() == [(1, "nir", True)]
    # the model a 1-band training leaves (only its band mapping matters here)
    panel.model_meta = {"bands": {"indices": [1], "names": ["nir"]}, "classes": []}
    panel.set_raster_layer(_layer(rasters / "four.tif", "four"))
    assert panel.band_rows() == [(1, "red", True), (2, "green", True), (3, "nir", True),
                                 (4, "swir1", True)]
    assert panel.wait_for_inspect(60)
    # the zero frame was suspected and accepted (auto_answer) -> nodata 0, measured again
    assert panel.nodata_value() == 0.0
    assert "Undeclared nodata?" in panel.log_text()
    assert panel.wait_for_inspect(60)
    cover = panel.band_coverage
    assert cover["nodata_override"] == 0.0 and cover["nodata_suspect"] is None
    assert cover["valid_fraction"] == pytest.approx(40 * 56 / (60 * 80), abs=1e-4)
    assert panel.band_table.item(0, 4).text() == "46.7"
    # every train/predict/evaluate job of the panel carries it; other jobs do not
    from terraseg.plugin import jobs
    from terraseg.plugin.panel_jobs import JobsPanelMixin

    sent = []
    original = JobsPanelMixin._start_job
    JobsPanelMixin._start_job = lambda self, kind, job, *a, **k: sent.append(job) or True
    try:
        panel._start_job("train", jobs.make_job("train", raster="r.tif"), lambda _r: None)
        panel._start_job("vectorise", jobs.make_job("vectorise", classes="c"), lambda _r: None)
        panel.nodata_edit.setText("x")
        assert not panel._start_job("predict", jobs.make_job("predict"), lambda _r: None)
    finally:
        JobsPanelMixin._start_job = original
        panel.nodata_edit.setText("0")
    assert sent[0]["args"] == {"raster": "r.tif", "nodata": 0.0}
    assert "nodata" not in sent[1]["args"]
    assert len(sent) == 2 and "not a number" in panel.last_error[1]


def test_model_mapping_applies_only_when_it_fits(panel, rasters) -> None:
    panel.model_meta = {"bands": {"indices": [1, 2, 3], "names": ["red", "green", "nir"]},
                        "classes": []}
    panel.set_raster_layer(_layer(rasters / "four.tif", "four"))
    assert panel.band_rows() == [(1, "red", True), (2, "green", True), (3, "nir", True),
                                 (4, "swir1", False)]


@pytest.mark.skipif(not DEMO.exists(), reason="no demo raster")
def test_demo_raster_coverage_best_bands_and_warning(panel) -> None:
    """Band 6 covers 62.4 % of the demo raster; the panel shows it, proposes bands 1-5 and
    asks before training with all six."""
    panel.set_raster_layer(_layer(DEMO, "demo"))
    assert [role for _, role, _ in panel.band_rows()] == ["blue", "green", "red", "nir",
                                                          "swir1", "swir2"]
    assert panel.wait_for_inspect(60)
    assert [panel.band_table.item(r, 4).text() for r in (0, 5)] == ["84.7", "62.4"]
    assert panel.band_coverage["suggested_bands"] == [1, 2, 3, 4, 5]
    assert panel.best_bands_button.isEnabled()
    assert "Chosen bands cover 62.4 % of the raster" in panel.coverage_label.text()
    panel.auto_answer = False
    assert panel.confirm_band_coverage() is False
    assert "Bands cut coverage: The chosen bands hold data on only 62.4 % of the raster " \
           "instead of 84.7 %" in panel.log_text()
    panel.best_bands_button.click()
    assert [i for i, _, use in panel.band_rows() if use] == [1, 2, 3, 4, 5]
    n_log = len(panel.log_text())
    assert panel.confirm_band_coverage() is True  # measured again, nothing to ask
    assert "Bands cut coverage" not in panel.log_text()[n_log:]
    assert panel.band_coverage["valid_fraction"] == pytest.approx(0.8467, abs=1e-4)
    assert not panel.best_bands_button.isEnabled()


def _demo_box(row: int, col: int) -> QgsGeometry:
    """10 x 10 pixels of the demo raster (28.5 m pixels, EPSG:32119) from (row, col)."""
    x0, y0 = 630534.0 + col * 28.5, 228114.0 - row * 28.5
    return QgsGeometry.fromRect(QgsRectangle(x0, y0 - 285.0, x0 + 285.0, y0))


@pytest.mark.skipif(not DEMO.exists(), reason="no demo raster")
def test_labelled_pixels_coverage(panel, tmp_path: Path) -> None:
    """Half of the labelled pixels lie where only band 6 is nodata: the table shows it per
    band, and training asks again once polygons were added."""
    panel.set_raster_layer(_layer(DEMO, "demo"))
    assert panel.wait_for_inspect(60)
    assert panel.band_coverage["labelled_fraction"] is None
    labels = panel.new_label_layer(tmp_path / "labels.gpkg")
    labels.startEditing()
    for geom, name in ((_demo_box(15, 25), "sealed"), (_demo_box(45, 55), "unsealed")):
        feature = QgsVectorLayerUtils.createFeature(
            labels, geom, {labels.fields().indexOf("class"): name},
            labels.createExpressionContext())
        assert labels.addFeature(feature)
    assert labels.commitChanges()
    panel.auto_answer = False
    assert panel.confirm_band_coverage() is False  # measured again with the labels
    cover = panel.band_coverage
    assert cover["labelled_pixels"] == 200
    assert cover["labelled_fraction"] == 0.5 and cover["suggested_labelled_fraction"] == 1.0
    assert panel.band_table.item(5, 4).text() == "62.4 / 50.0"
    assert panel.band_table.item(0, 4).text() == "84.7 / 100.0"
    assert ("hold data on only 62.4 % of the raster instead of 84.7 % and 50.0 % of the "
            "labelled pixels instead of 100.0 %" in panel.log_text())


def test_band_roles_from_sensor_band_names() -> None:
    from terraseg.plugin import presets

    def roles(*descriptions: str) -> list[str]:
        return [role for role, _ in presets.default_band_roles(list(descriptions))]

    assert roles("blue", "green", "red", "nir", "swir1", "swir2") == [
        "blue", "green", "red", "nir", "swir1", "swir2"]
    assert roles("SWIR 1", "Shortwave infrared 2", "swir-2", "Red Edge 1", "Band 5") == [
        "swir1", "swir2", "swir2_3", "rededge1", "band_5"]
    # Sentinel-2 codes, with or without leading zeros
    assert roles("B02", "B03", "B04", "B08", "B8A", "B11", "B12") == [
        "blue", "green", "red", "nir", "nir08", "swir1", "swir2"]
    # Landsat collection 2: OLI has a reflective band 6, TM/ETM+ do not
    assert roles("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7") == [
        "blue", "green", "red", "nir", "swir1", "swir2"]
    assert roles("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7") == [
        "blue", "green", "red", "nir", "swir1", "swir2"]
    assert roles("", "", "", "") == ["red", "green", "blue", "nir"]
    # a model's mapping fits a raster only by band count or descriptions
    fits = presets.model_mapping_fits
    assert not fits([(1, "nir")], ["", "", "", "", "", ""])
    assert fits([(1, "red"), (2, "green"), (3, "blue"), (4, "nir")], ["", "", "", ""])
    assert fits([(1, "blue"), (5, "swir1")], ["blue", "green", "red", "nir", "swir1", "swir2"])
    assert not fits([(1, "red"), (2, "nir")], ["B2", "B3", "B4", "B8"])
    assert not fits([(1, "red"), (7, "nir")], ["", "", ""])
