"""Processing's 'Pseudo-labels from coarse labels (random forest)' (issue 11).

Run with processing.run on the synthetic scene (96x96, EPSG:32632, clean labels of two
separable classes) through the real engine, from the polygon layer and from a label raster;
the job the algorithm sends is checked parameter by parameter with run_engine replaced.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import QgsProcessingException, QgsRasterLayer

ALG = "terraseg:pseudo_label"
PARAMETERS = ["INPUT_RASTER", "LABELS", "LABEL_RASTER", "CLASS_FIELD", "CLASS_MAP", "BANDS",
              "NODATA", "STRATEGY", "QUOTA", "K", "TREES", "MAX_DEPTH", "SEED",
              "ZERO_DISAGREEING", "OUTPUT_FOLDER"]


@pytest.fixture(scope="module")
def processing(terraseg_provider):
    import processing as qgis_processing

    return qgis_processing


def class_values(path: str) -> set[int]:
    """Distinct values of a raster's first band."""
    layer = QgsRasterLayer(path, "r", "gdal")
    block = layer.dataProvider().block(1, layer.extent(), layer.width(), layer.height())
    return {int(block.value(r, c)) for r in range(layer.height()) for c in range(layer.width())}


def assert_on_grid(path: str, source: QgsRasterLayer, bands: int) -> None:
    """``path`` is a raster of ``bands`` bands on ``source``'s grid."""
    layer = QgsRasterLayer(path, "out", "gdal")
    assert layer.isValid(), path
    assert layer.crs().authid() == "EPSG:32632"
    assert (layer.width(), layer.height()) == (source.width(), source.height()) == (96, 96)
    assert layer.extent().toString(3) == source.extent().toString(3)
    assert layer.bandCount() == bands


def test_listed_by_the_provider(terraseg_provider):
    from terraseg.plugin.processing.provider import ALGORITHMS
    from terraseg.plugin.processing.pseudo_label import PseudoLabels

    assert PseudoLabels in ALGORITHMS
    alg = terraseg_provider.algorithm("pseudo_label")
    assert alg.id() == ALG
    assert alg.displayName() == "Pseudo-labels from coarse labels (random forest)"
    assert [p.name() for p in alg.parameterDefinitions()] == PARAMETERS
    assert [o.name() for o in alg.outputDefinitions()] == [
        "OUTPUT_FOLDER", "CLASSES", "PROBABILITY", "AGREEMENT"]
    params = {p.name(): p for p in alg.parameterDefinitions()}
    assert params["STRATEGY"].options() == ["all", "random", "uniform", "kmeans"]
    assert params["STRATEGY"].defaultValue() == 1  # random
    assert (params["K"].defaultValue(), params["TREES"].defaultValue(),
            params["MAX_DEPTH"].defaultValue(), params["SEED"].defaultValue()) == (50, 50, 10, 0)
    assert params["ZERO_DISAGREEING"].defaultValue() is False
    help_text = alg.shortHelpString()
    assert all(word in help_text for word in ("classes.tif", "probability.tif", "random forest",
                                              "No model file"))


def test_pseudo_labels_of_the_scene(processing, scene, tmp_path):
    """From the polygons, then from their label raster: classes and probability on the grid."""
    source = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    res = processing.run(ALG, {
        "INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels), "CLASS_FIELD": "klass",
        "TREES": 10, "OUTPUT_FOLDER": str(tmp_path / "vector")})
    assert Path(res["CLASSES"]) == tmp_path / "vector" / "classes.tif"
    assert Path(res["PROBABILITY"]) == tmp_path / "vector" / "probability.tif"
    assert_on_grid(res["CLASSES"], source, 1)
    assert_on_grid(res["PROBABILITY"], source, 2)  # sealed, unsealed
    assert class_values(res["CLASSES"]) == {1, 2}  # every pixel labelled, both classes
    assert 0.95 <= res["AGREEMENT"] <= 1.0  # clean labels of separable classes

    labels_tif = processing.run("terraseg:rasterise_labels", {
        "INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels),
        "CLASS_FIELD": "klass", "OUTPUT": str(tmp_path / "labels.tif")})["OUTPUT"]
    res = processing.run(ALG, {
        "INPUT_RASTER": str(scene.raster), "LABEL_RASTER": labels_tif, "STRATEGY": 3,
        "K": 5, "TREES": 10, "ZERO_DISAGREEING": True, "OUTPUT_FOLDER": str(tmp_path / "r")})
    assert_on_grid(res["CLASSES"], source, 1)
    assert_on_grid(res["PROBABILITY"], source, 2)
    assert class_values(res["CLASSES"]) == {1, 2}
    assert 0.95 <= res["AGREEMENT"] <= 1.0


def test_job_carries_each_parameter(processing, scene, tmp_path, monkeypatch):
    from terraseg.plugin.processing.pseudo_label import PseudoLabels

    sent: list[dict] = []
    monkeypatch.setattr(PseudoLabels, "run_engine", lambda self, job, feedback: sent.append(
        job) or {"classes": "c.tif", "probability": "p.tif",
                 "agreement": {"accuracy": 0.875, "n_samples": 8}})
    out = str(tmp_path / "out")
    res = processing.run(ALG, {
        "INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels), "CLASS_FIELD": "klass",
        "CLASS_MAP": "sealed=built,*=other", "BANDS": "1,2,4", "NODATA": 0, "STRATEGY": 2,
        "QUOTA": 30, "K": 7, "TREES": 11, "MAX_DEPTH": 0, "SEED": 3,
        "ZERO_DISAGREEING": True, "OUTPUT_FOLDER": out})
    assert sent[-1] == {"command": "pseudo-label", "args": {
        "raster": str(scene.raster), "labels": str(scene.labels), "out_dir": out,
        "class_field": "klass", "class_map": "sealed=built,*=other", "bands": "1,2,4",
        "nodata": 0.0, "overwrite": True, "strategy": "uniform", "quota": 30, "k": 7,
        "trees": 11, "max_depth": 0, "seed": 3, "zero_disagreeing": True}}
    assert (res["CLASSES"], res["PROBABILITY"], res["AGREEMENT"]) == ("c.tif", "p.tif", 0.875)

    # defaults: random sampling, k 50, 50 trees of depth 10, seed 0; no quota, nodata, flag
    processing.run(ALG, {"INPUT_RASTER": str(scene.raster), "LABEL_RASTER": str(scene.raster),
                         "OUTPUT_FOLDER": out})
    assert sent[-1]["args"] == {
        "raster": str(scene.raster), "labels": str(scene.raster), "out_dir": out,
        "overwrite": True, "strategy": "random", "k": 50, "trees": 50, "max_depth": 10,
        "seed": 0}

    for labels, message in (({}, "No labels given"),
                            ({"LABELS": str(scene.labels), "LABEL_RASTER": str(scene.raster)},
                             "not both")):
        with pytest.raises(QgsProcessingException, match=message):
            processing.run(ALG, {"INPUT_RASTER": str(scene.raster), "OUTPUT_FOLDER": out,
                                 **labels})
    assert len(sent) == 2
