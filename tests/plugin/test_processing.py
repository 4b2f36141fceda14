"""The TerraSeg Processing provider: every algorithm run with processing.run on real data.

The algorithms build jobs with plugin.jobs and run them with plugin.worker_run.run_job (the
engine worker the panel starts too) against the real engine.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from helpers.qgis_support import TINY_TRAIN
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterNumber,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

ARCH_UNET_SMALL = 1  # index of unet_small in the Architecture choices

ALGORITHMS = ("rasterise_labels", "train_model", "predict", "evaluate", "vectorise",
              "area_statistics", "pseudo_label", "review_labels", "change_dates",
              "change_class_maps")


@pytest.fixture(scope="module")
def processing(terraseg_provider):
    import processing as qgis_processing

    return qgis_processing


class Feedback(QgsProcessingFeedback):
    """Keeps what an algorithm reported."""

    def __init__(self) -> None:
        super().__init__()
        self.info: list[str] = []
        self.values: list[float] = []
        self.progressChanged.connect(self.values.append)

    def pushInfo(self, info: str) -> None:  # noqa: N802
        self.info.append(info)
        super().pushInfo(info)


def raster_values(path: str) -> tuple[QgsRasterLayer, set[int]]:
    """The layer and the distinct values of its first band, nodata (0) included."""
    layer = QgsRasterLayer(str(path), "r", "gdal")
    assert layer.isValid(), path
    block = layer.dataProvider().block(1, layer.extent(), layer.width(), layer.height())
    values = set()
    for row in range(layer.height()):
        for col in range(layer.width()):
            values.add(int(block.value(row, col)))
    return layer, values


def same_extent(a: QgsRectangle, b: QgsRectangle) -> bool:
    return all(abs(x - y) < 1e-6 for x, y in zip(
        (a.xMinimum(), a.yMinimum(), a.xMaximum(), a.yMaximum()),
        (b.xMinimum(), b.yMinimum(), b.xMaximum(), b.yMaximum()), strict=True))


def test_provider_and_algorithms(terraseg_provider):
    assert terraseg_provider.id() == "terraseg" and terraseg_provider.name() == "TerraSeg"
    assert {a.name() for a in terraseg_provider.algorithms()} == set(ALGORITHMS)
    assert not terraseg_provider.icon().isNull()
    assert terraseg_provider.warningMessage() == ""
    for name in ALGORITHMS:
        alg = terraseg_provider.algorithm(name)
        assert alg.id() == f"terraseg:{name}"
        assert alg.canExecute()[0]
        assert alg.shortHelpString()
        assert alg.outputDefinitions(), name


def test_each_algorithm_in_its_own_module(terraseg_provider):
    from terraseg.plugin.processing import ALGORITHMS, TerraSegAlgorithm

    modules = {"rasterise_labels": "rasterise", "train_model": "train", "predict": "predict",
               "evaluate": "evaluate", "vectorise": "vectorise", "area_statistics": "areas",
               "pseudo_label": "pseudo_label", "review_labels": "review_labels",
               "change_dates": "change", "change_class_maps": "change"}
    assert {cls.ALG_ID: cls.__module__ for cls in ALGORITHMS} == {
        name: f"terraseg.plugin.processing.{module}" for name, module in modules.items()}
    assert all(issubclass(cls, TerraSegAlgorithm) for cls in ALGORITHMS)
    assert TerraSegAlgorithm.__module__ == "terraseg.plugin.processing.base"
    assert importlib.util.find_spec("terraseg.plugin.processing.algorithms") is None
    for name, module in modules.items():
        alg = terraseg_provider.algorithm(name)
        assert type(alg).__module__ == f"terraseg.plugin.processing.{module}", name


# The Train model parameters of training options, their names kept from earlier releases.
TRAIN_OPTION_PARAMETERS = {
    "EPOCHS": "epochs", "PATIENCE": "patience", "ARCHITECTURE": "model",
    "TILE_SIZE": "tile_size", "PATCH_SIZE": "patch_size", "BLOCK_SIZE": "block_size",
    "BLOCKS": "blocks", "PLANES": "planes", "LR": "lr", "WEIGHT_DECAY": "weight_decay",
    "BATCH_SIZE": "batch_size", "SAMPLES_PER_EPOCH": "samples_per_epoch",
    "AUGMENT": "augment", "SEED": "seed", "ACCELERATOR": "accelerator",
    "FREEZE_EPOCHS": "freeze_epochs", "ENCODER_LR": "encoder_lr"}


def test_train_parameters_default_to_the_protocol_spec(terraseg_provider):
    from terraseg.plugin.processing.train import OPTION_PARAMETERS
    from terraseg.protocol import options

    alg = terraseg_provider.algorithm("train_model")
    params = {p.name(): p for p in alg.parameterDefinitions()}
    assert list(params) == [
        "INPUT_RASTER", "LABELS", "CLASS_FIELD", "CLASS_MAP", "BANDS", "EPOCHS", "PATIENCE",
        "ARCHITECTURE", "TILE_SIZE", "DEM", "SLOPE_FROM_DEM", "PATCH_SIZE", "BLOCK_SIZE",
        "BLOCKS", "PLANES", "LR", "WEIGHT_DECAY", "BATCH_SIZE", "SAMPLES_PER_EPOCH", "AUGMENT",
        "SEED", "ACCELERATOR", "PSEUDO_LABELS", "PSEUDO_SOURCE", "PSEUDO_CLASS_FIELD",
        "PSEUDO_CLASS_MAP", "PSEUDO_STRATEGY", "PSEUDO_PROBABILITY", "INIT_MODEL", "ENCODER",
        "FREEZE_EPOCHS", "ENCODER_LR", "CACHE_DIR",
        "EXTRA_OPTIONS", "OUTPUT"]
    assert [o.name() for o in alg.outputDefinitions()] == [
        "OUTPUT", "VAL_ACCURACY", "EPOCHS_RUN", "BEST_EPOCH", "DEVICE", "METRICS"]
    assert OPTION_PARAMETERS == TRAIN_OPTION_PARAMETERS

    def default(name: str):
        param = params[name]
        if param.type() == "enum":
            return param.options()[param.defaultValue()]
        return param.defaultValue()

    # the values, so that a changed spec is a visible change here too; epochs and tile size
    # are QGIS's interactive defaults, the panel's (protocol.options.INTERACTIVE)
    assert default("TILE_SIZE") == options.interactive_default("tile_size") == 64
    assert options.default("tile_size") == 128
    assert default("EPOCHS") == options.interactive_default("epochs") == 50
    assert options.default("epochs") == 300
    assert default("PATIENCE") == options.default("patience") == 10
    assert default("LR") == options.default("lr") == pytest.approx(1e-3)
    assert default("WEIGHT_DECAY") == options.default("weight_decay") == pytest.approx(1e-2)
    # blank = by architecture, as the panel (patch CNN: the engine's; U-Nets: INTERACTIVE_TILE_
    # NETWORK); tests/plugin/test_processing_defaults.py checks the jobs equal the panel's
    assert default("BATCH_SIZE") is None and options.default("batch_size") == 128
    assert default("SAMPLES_PER_EPOCH") is None and options.default("samples_per_epoch") == 2048
    assert default("SEED") == options.default("seed") == 0
    assert default("PATCH_SIZE") == options.default("patch_size") == 51
    assert default("BLOCK_SIZE") == options.default("block_size") == 5
    assert default("PLANES") == "4,8,16" and options.default("planes") == (4, 8, 16)
    assert default("BLOCKS") == "2,2,2" and options.default("blocks") == (2, 2, 2)
    assert default("ARCHITECTURE") == options.default("model") == "patch_cnn"
    assert default("AUGMENT") == options.default("augment") == "flip,rotate"
    assert default("ACCELERATOR") == options.default("accelerator") == "auto"
    assert default("FREEZE_EPOCHS") == options.default("freeze_epochs") == 0
    assert default("ENCODER_LR") == options.default("encoder_lr") == pytest.approx(0.1)
    for name, key in TRAIN_OPTION_PARAMETERS.items():
        spec = options.SPEC_BY_JOB_KEY[key]
        if key in ("batch_size", "samples_per_epoch"):
            continue  # by architecture (blank), checked above
        expected = options.interactive_default(key)
        if isinstance(expected, tuple):
            expected = ",".join(str(v) for v in expected)
        assert default(name) == expected, name
        assert params[name].help().startswith(spec.help), name
        if params[name].type() == "number":
            integer = params[name].dataType() == QgsProcessingParameterNumber.Integer
            assert integer == (spec.annotation is int), name
            if spec.minimum is not None:
                assert params[name].minimum() == spec.minimum, name


def test_rasterise_labels(processing, scene, tmp_path):
    out = tmp_path / "labels.tif"
    res = processing.run("terraseg:rasterise_labels", {
        "INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels),
        "CLASS_FIELD": "klass", "OUTPUT": str(out)})
    assert Path(res["OUTPUT"]) == out
    layer, values = raster_values(res["OUTPUT"])
    source = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    assert layer.crs().authid() == "EPSG:32632"
    assert same_extent(layer.extent(), source.extent())
    assert values == {0, 1, 2}
    assert [c["name"] for c in json.loads(res["CLASSES"])] == ["sealed", "unsealed"]


def memory_copy(path: Path) -> QgsVectorLayer:
    """The labels as a memory layer (not file-based: the algorithm must save it first)."""
    source = QgsVectorLayer(str(path), "labels", "ogr")
    assert source.isValid()
    mem = QgsVectorLayer(f"Polygon?crs={source.crs().authid()}&field=klass:string(20)",
                         "labels (memory)", "memory")
    feats = []
    for f in source.getFeatures():
        feat = QgsFeature(mem.fields())
        feat.setGeometry(QgsGeometry(f.geometry()))
        feat["klass"] = f["klass"]
        feats.append(feat)
    assert mem.dataProvider().addFeatures(feats)
    assert mem.featureCount() == source.featureCount() > 0
    return mem


def test_train_model_from_memory_layer(processing, scene, cache_dir, tmp_path):
    out = tmp_path / "model.tsm"
    feedback = Feedback()
    params = {"INPUT_RASTER": str(scene.raster), "LABELS": memory_copy(scene.labels),
              "CLASS_FIELD": "klass", "EPOCHS": TINY_TRAIN["epochs"],
              "PATIENCE": TINY_TRAIN["patience"], "PATCH_SIZE": TINY_TRAIN["patch_size"],
              "BLOCK_SIZE": TINY_TRAIN["block_size"], "BLOCKS": TINY_TRAIN["blocks"],
              "SAMPLES_PER_EPOCH": TINY_TRAIN["samples_per_epoch"],
              "BATCH_SIZE": TINY_TRAIN["batch_size"], "CACHE_DIR": str(cache_dir),
              "EXTRA_OPTIONS": '{"val-fraction": 0.25}', "OUTPUT": str(out)}
    res = processing.run("terraseg:train_model", params, feedback=feedback)
    assert Path(res["OUTPUT"]) == out and out.is_file()
    assert 0.0 <= res["VAL_ACCURACY"] <= 1.0
    assert res["EPOCHS_RUN"] == 2
    assert res["DEVICE"]
    assert "val" in json.loads(res["METRICS"])
    assert any(line.startswith("epoch 2:") for line in feedback.info), feedback.info
    assert feedback.values and max(feedback.values) == pytest.approx(100.0)


class CancelAfterFirstEpoch(Feedback):
    """Presses Cancel when the first epoch's metrics arrive."""

    def pushInfo(self, info: str) -> None:  # noqa: N802
        super().pushInfo(info)
        if info.startswith("epoch 1:"):
            self.cancel()


def test_train_model_cancel(processing, scene, cache_dir, tmp_path):
    out = tmp_path / "cancelled.tsm"
    params = {"INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels),
              "CLASS_FIELD": "klass", "EPOCHS": 200, "PATIENCE": 200,
              "PATCH_SIZE": TINY_TRAIN["patch_size"], "BLOCKS": TINY_TRAIN["blocks"],
              "SAMPLES_PER_EPOCH": TINY_TRAIN["samples_per_epoch"],
              "CACHE_DIR": str(cache_dir), "OUTPUT": str(out)}
    feedback = CancelAfterFirstEpoch()
    with pytest.raises(QgsProcessingException) as err:
        processing.run("terraseg:train_model", params, feedback=feedback)
    assert "CancelledError" in str(err.value)
    assert feedback.isCanceled()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_predict_loads_probability_and_classes(processing, scene, tiny_model, tmp_path):
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    out_dir = tmp_path / "pred"
    res = processing.run("terraseg:predict", {
        "MODEL": str(tiny_model.path), "INPUT_RASTER": str(scene.raster),
        "OUTPUT_FOLDER": str(out_dir)}, context=context, feedback=Feedback())
    assert Path(res["PROBABILITY"]) == out_dir / "probability.tif"
    assert Path(res["CLASSES"]) == out_dir / "classes.tif"
    source = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    classes, values = raster_values(res["CLASSES"])
    assert classes.crs().authid() == "EPSG:32632"
    assert same_extent(classes.extent(), source.extent())
    assert values and values <= {0, 1, 2}
    prob = QgsRasterLayer(res["PROBABILITY"], "p", "gdal")
    assert prob.isValid() and prob.bandCount() == 2
    assert same_extent(prob.extent(), source.extent())
    assert set(json.loads(res["CLASS_SHARES"])) == {"sealed", "unsealed"}
    to_load = context.layersToLoadOnCompletion()
    assert {Path(p).name for p in to_load} == {"probability.tif", "classes.tif"}


def test_predict_extent_window(processing, scene, tiny_model, tmp_path):
    # The north-west quarter: 48 x 48 pixels of 10 m.
    extent = "500000,500480,5199520,5200000 [EPSG:32632]"
    res = processing.run("terraseg:predict", {
        "MODEL": str(tiny_model.path), "INPUT_RASTER": str(scene.raster), "EXTENT": extent,
        "OUTPUT_FOLDER": str(tmp_path / "part")})
    layer = QgsRasterLayer(res["CLASSES"], "c", "gdal")
    assert (layer.width(), layer.height()) == (48, 48)
    assert same_extent(layer.extent(), QgsRectangle(500000, 5199520, 500480, 5200000))


def test_evaluate(processing, scene, tiny_model, tmp_path):
    res = processing.run("terraseg:evaluate", {
        "MODEL": str(tiny_model.path), "INPUT_RASTER": str(scene.raster),
        "REFERENCE": str(scene.labels), "CLASS_FIELD": "klass", "CATEGORY_FIELD": "cat",
        "OUTPUT_FOLDER": str(tmp_path / "eval")})
    assert 0.0 <= res["ACCURACY"] <= 1.0 and res["N_SAMPLES"] > 0
    metrics = json.loads(Path(res["METRICS"]).read_text())
    assert metrics["accuracy"] == pytest.approx(res["ACCURACY"])
    assert Path(res["PER_CLASS"]).is_file() and Path(res["CONFUSION_MATRIX"]).is_file()
    assert (tmp_path / "eval" / "per_category.csv").is_file()


def test_vectorise(processing, prediction, tiny_model, tmp_path):
    out = tmp_path / "polygons.gpkg"
    res = processing.run("terraseg:vectorise", {
        "CLASSES": prediction["classes"], "MODEL": str(tiny_model.path), "OUTPUT": str(out)})
    layer = QgsVectorLayer(res["OUTPUT"], "polygons", "ogr")
    assert layer.isValid()
    assert layer.featureCount() > 0 and layer.featureCount() == res["N_POLYGONS"]
    assert layer.crs().authid() == "EPSG:32632"
    assert {"class_id", "class_name", "area_m2"} <= set(layer.fields().names())
    assert {f["class_name"] for f in layer.getFeatures()} <= {"sealed", "unsealed"}


def test_area_statistics(processing, prediction, tiny_model, tmp_path):
    out = tmp_path / "areas.csv"
    res = processing.run("terraseg:area_statistics", {
        "CLASSES": prediction["classes"], "MODEL": str(tiny_model.path),
        "OUTPUT_CSV": str(out)})
    with open(res["OUTPUT_CSV"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["class_name"] for r in rows] == ["sealed", "unsealed"]
    assert sum(float(r["percent"]) for r in rows) == pytest.approx(100.0, abs=1e-3)
    assert sum(float(r["area_m2"]) for r in rows) == pytest.approx(96 * 96 * 100.0)
    assert res["OUTPUT_ZONES"] is None


def test_area_statistics_per_zone(processing, prediction, tmp_path):
    zones = QgsVectorLayer("Polygon?crs=EPSG:32632&field=name:string(10)", "zones", "memory")
    feats = []
    for name, (x0, x1) in {"west": (500000, 500480), "east": (500480, 500960)}.items():
        f = QgsFeature(zones.fields())
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(x0, 5199040, x1, 5200000)))
        f["name"] = name
        feats.append(f)
    zones.dataProvider().addFeatures(feats)
    res = processing.run("terraseg:area_statistics", {
        "CLASSES": prediction["classes"], "ZONES": zones, "ZONE_FIELD": "name",
        "OUTPUT_CSV": str(tmp_path / "zones.csv"),
        "OUTPUT_ZONES": str(tmp_path / "zones.gpkg")})
    with open(res["OUTPUT_CSV"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["zone"] for r in rows} == {"west", "east"}
    out = QgsVectorLayer(res["OUTPUT_ZONES"], "z", "ogr")
    assert out.isValid() and out.featureCount() == 2


def test_engine_error_becomes_processing_exception(processing, tiny_model, tmp_path, scene):
    # A one-band raster for a four-band model: the engine refuses it with a hint.
    one_band = tmp_path / "labels.tif"
    processing.run("terraseg:rasterise_labels", {
        "INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels),
        "CLASS_FIELD": "klass", "OUTPUT": str(one_band)})
    with pytest.raises(QgsProcessingException) as err:
        processing.run("terraseg:predict", {
            "MODEL": str(tiny_model.path), "INPUT_RASTER": str(one_band),
            "OUTPUT_FOLDER": str(tmp_path / "bad")})
    assert "RasterError" in str(err.value) and "Fix:" in str(err.value)
    assert not (tmp_path / "bad" / "classes.tif").exists()


def test_crs_of_scene(scene):
    layer = QgsRasterLayer(str(scene.raster), "scene", "gdal")
    assert layer.crs() == QgsCoordinateReferenceSystem("EPSG:32632")


def test_modeler_chain(processing, scene, tiny_model, tmp_path):
    """Predict -> Vectorise and Area statistics in a graphical model (outputs chain)."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
    )

    static = QgsProcessingModelChildParameterSource.fromStaticValue

    def with_defaults(child: QgsProcessingModelChildAlgorithm) -> None:
        """Static default values, as the modeler dialog fills them in."""
        for param in child.algorithm().parameterDefinitions():
            if (not param.isDestination() and param.name() not in child.parameterSources()
                    and param.defaultValue() is not None):
                child.addParameterSources(param.name(), [static(param.defaultValue())])

    model = QgsProcessingModelAlgorithm("chain", "tests")
    predict = QgsProcessingModelChildAlgorithm("terraseg:predict")
    predict.setChildId("predict")
    predict.addParameterSources("MODEL", [static(str(tiny_model.path))])
    predict.addParameterSources("INPUT_RASTER", [static(str(scene.raster))])
    with_defaults(predict)
    model.addChildAlgorithm(predict)
    classes = [QgsProcessingModelChildParameterSource.fromChildOutput("predict", "CLASSES")]
    for child_id, alg, output in (("vectorise", "terraseg:vectorise", "OUTPUT"),
                                  ("areas", "terraseg:area_statistics", "OUTPUT_CSV")):
        child = QgsProcessingModelChildAlgorithm(alg)
        child.setChildId(child_id)
        child.addParameterSources("CLASSES", classes)
        out = QgsProcessingModelOutput(child_id, child_id)
        out.setChildId(child_id)
        out.setChildOutputName(output)
        child.setModelOutputs({child_id: out})
        with_defaults(child)
        model.addChildAlgorithm(child)
    model.updateDestinationParameters()
    ok, errors = model.validate()
    assert ok, errors
    res = processing.run(model, {"vectorise:vectorise": str(tmp_path / "chain.gpkg"),
                                 "areas:areas": str(tmp_path / "chain.csv")})
    layer = QgsVectorLayer(res["vectorise:vectorise"], "polygons", "ogr")
    assert layer.isValid() and layer.featureCount() > 0
    assert Path(res["areas:areas"]).read_text().startswith("class_id,class_name")


@pytest.mark.slow  # trains a U-Net through Processing: ~17-34 s on 2 CPU cores
def test_train_unet_and_predict_with_threshold_and_cleanup(processing, scene, cache_dir,
                                                          tmp_path):
    out = tmp_path / "unet.tsm"
    res = processing.run("terraseg:train_model", {
        "INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels), "CLASS_FIELD": "klass",
        "ARCHITECTURE": ARCH_UNET_SMALL, "TILE_SIZE": 32, "EPOCHS": 1, "PATIENCE": 1,
        "SAMPLES_PER_EPOCH": 32, "BATCH_SIZE": 8, "CACHE_DIR": str(cache_dir),
        "EXTRA_OPTIONS": '{"base_width": 4}', "OUTPUT": str(out)})
    assert Path(res["OUTPUT"]) == out
    from terraseg.plugin import modelinfo

    meta = modelinfo.read_model_metadata(out)
    assert meta["architecture"]["name"] == "unet_small" and meta["geometry"]["tile_px"] == 32
    # threshold 0 on P(sealed): every valid pixel is sealed; the clean-up keeps the one region
    res = processing.run("terraseg:predict", {
        "MODEL": str(out), "INPUT_RASTER": str(scene.raster), "THRESHOLD": 0.0,
        "OPENING": 1, "MIN_AREA": 2000.0, "OUTPUT_FOLDER": str(tmp_path / "p")})
    # no layer may stay referenced from this frame: pytest keeps the traceback of the
    # expected exception below until exit, after QGIS is gone (a segfault at teardown)
    assert raster_values(res["CLASSES"])[1] == {1}
    with pytest.raises(QgsProcessingException, match="needs a DEM"):
        processing.run("terraseg:predict", {
            "MODEL": str(out), "INPUT_RASTER": str(scene.raster), "SLOPE_FROM_DEM": True,
            "OUTPUT_FOLDER": str(tmp_path / "q")})
    assert not (tmp_path / "q" / "classes.tif").exists()
