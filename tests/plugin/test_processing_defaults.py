"""Processing's 'Train model' starts from the panel's defaults (issue 10).

Both take them from ``protocol.options.INTERACTIVE`` (50 epochs, 64 px tiles; U-Nets on
batches of 16 and 512 samples per epoch). The panel is built with each task preset and its
training job is compared with the job Processing sends when only the data, the labels and
the panel's architecture are given (the job is captured before it reaches the engine).
"""

from __future__ import annotations

import pytest

from terraseg.plugin import jobs, presets
from terraseg.protocol import options

# The options the panel sets; each must reach the same value from Processing.
PANEL_KEYS = ("epochs", "patience", "lr", "batch_size", "samples_per_epoch", "patch_size",
              "block_size", "blocks", "planes", "augment", "accelerator", "model",
              "tile_size")


@pytest.fixture
def processing(terraseg_provider):
    import processing as qgis_processing

    return qgis_processing


@pytest.fixture
def captured_jobs(monkeypatch) -> list[dict]:
    """Train model's jobs, answered with a fake result instead of running the engine."""
    from terraseg.plugin.processing.train import TrainModel

    seen: list[dict] = []

    def run_engine(self, job, feedback):
        seen.append(job)
        return {"model": job["args"]["out"], "epochs": 0, "metrics": {}}

    monkeypatch.setattr(TrainModel, "run_engine", run_engine)
    return seen


def test_interactive_defaults_are_the_panels():
    from terraseg.plugin import panel_train

    assert options.INTERACTIVE == {"epochs": 50, "tile_size": 64}
    assert options.INTERACTIVE_TILE_NETWORK == {"batch_size": 16, "samples_per_epoch": 512}
    assert panel_train.PANEL_EPOCHS == options.interactive_default("epochs") == 50
    assert panel_train.PANEL_TILE_PX == options.interactive_default("tile_size") == 64
    assert panel_train.TILE_BATCH_SIZE == options.interactive_default("batch_size", True)
    assert panel_train.TILE_SAMPLES_PER_EPOCH == options.interactive_default(
        "samples_per_epoch", tile_network=True) == 512
    # patch networks keep the engine's values; the command line keeps 300 epochs
    assert options.interactive_default("batch_size") == options.default("batch_size") == 128
    assert options.default("epochs") == 300
    assert presets.PRESETS[presets.LANDSLIDES].tile_px == options.INTERACTIVE["tile_size"]


def test_train_model_parameters_show_the_interactive_defaults(terraseg_provider):
    alg = terraseg_provider.algorithm("train_model")
    params = {p.name(): p for p in alg.parameterDefinitions()}
    assert params["EPOCHS"].defaultValue() == 50
    assert params["TILE_SIZE"].defaultValue() == 64
    assert "Default 50, the panel's (the command line's: 300)" in params["EPOCHS"].help()
    for name in ("BATCH_SIZE", "SAMPLES_PER_EPOCH"):
        assert params[name].defaultValue() is None, name
        assert params[name].flags() & params[name].FlagOptional, name
    assert "Empty: 128 for patch CNNs, 16 for U-Nets" in params["BATCH_SIZE"].help()
    assert "Empty: 2048 for patch CNNs, 512 for U-Nets" in params["SAMPLES_PER_EPOCH"].help()


@pytest.mark.parametrize("preset", [presets.SEALED, presets.LANDSLIDES])
def test_processing_train_job_equals_the_panels(preset, processing, captured_jobs, scene,
                                                tmp_path, qgis_iface, qgis_new_project):
    from terraseg.plugin.dock import TerraSegDock

    dock = TerraSegDock(qgis_iface)
    try:
        dock.set_preset(preset)
        panel = dock.training_options()
    finally:
        dock.close()
        dock.deleteLater()
    out = str(tmp_path / "m.tsm")
    processing.run("terraseg:train_model", {
        "INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels),
        "CLASS_FIELD": "klass",
        "ARCHITECTURE": list(presets.PATCH_MODELS + presets.TILE_MODELS).index(panel["model"]),
        "OUTPUT": out})
    [job] = captured_jobs
    from_panel = jobs.train_job(str(scene.raster), str(scene.labels), out, **panel)["args"]
    keys = [k for k in PANEL_KEYS if k in from_panel]
    assert len(keys) >= 11, keys
    assert {k: job["args"].get(k) for k in keys} == {k: from_panel[k] for k in keys}
    # and the values are the interactive ones, not the command line's
    tile = panel["model"] in presets.TILE_MODELS
    assert job["args"]["epochs"] == 50
    assert job["args"]["batch_size"] == (16 if tile else 128)
    assert job["args"]["samples_per_epoch"] == (512 if tile else 2048)
    assert job["args"].get("tile_size") == (64 if tile else None)


def test_a_given_batch_size_is_kept(processing, captured_jobs, scene, tmp_path):
    processing.run("terraseg:train_model", {
        "INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels), "CLASS_FIELD": "klass",
        "ARCHITECTURE": len(presets.PATCH_MODELS), "BATCH_SIZE": 8, "EPOCHS": 7,
        "OUTPUT": str(tmp_path / "m.tsm")})
    [job] = captured_jobs
    assert job["args"]["model"] == presets.TILE_MODELS[0]
    assert (job["args"]["batch_size"], job["args"]["samples_per_epoch"]) == (8, 512)
    assert (job["args"]["epochs"], job["args"]["tile_size"]) == (7, 64)


# ----------------------------------------------------------------------------------------
# Pseudo-labels (issue 11): PSEUDO_* parameters -> the train job's pseudo_* fields
# ----------------------------------------------------------------------------------------
def test_pseudo_parameters(terraseg_provider):
    alg = terraseg_provider.algorithm("train_model")
    params = {p.name(): p for p in alg.parameterDefinitions()}
    flags = {name: params[name].flags() for name in params if name.startswith("PSEUDO_")}
    assert list(flags) == ["PSEUDO_LABELS", "PSEUDO_SOURCE", "PSEUDO_CLASS_FIELD",
                           "PSEUDO_CLASS_MAP", "PSEUDO_STRATEGY", "PSEUDO_PROBABILITY"]
    advanced = params["PSEUDO_LABELS"].FlagAdvanced
    assert [name for name, f in flags.items() if f & advanced] == [
        "PSEUDO_STRATEGY", "PSEUDO_PROBABILITY"]
    optional = params["PSEUDO_LABELS"].FlagOptional
    assert [name for name, f in flags.items() if f & optional] == [
        "PSEUDO_SOURCE", "PSEUDO_CLASS_FIELD", "PSEUDO_CLASS_MAP"]
    assert params["PSEUDO_LABELS"].defaultValue() is False
    assert params["PSEUDO_CLASS_FIELD"].parentLayerParameterName() == "PSEUDO_SOURCE"
    spec = options.SPEC_BY_JOB_KEY
    for name, key in (("PSEUDO_STRATEGY", "pseudo_strategy"),
                      ("PSEUDO_PROBABILITY", "pseudo_probability")):
        param = params[name]
        assert tuple(param.options()) == spec[key].choices, name
        assert param.options()[param.defaultValue()] == spec[key].default, name
    assert spec["pseudo_strategy"].default == "random"
    assert spec["pseudo_probability"].default == "none"


def _base(scene, tmp_path) -> dict:
    return {"INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels),
            "CLASS_FIELD": "klass", "OUTPUT": str(tmp_path / "m.tsm")}


def test_no_pseudo_fields_by_default(processing, captured_jobs, scene, tmp_path):
    processing.run("terraseg:train_model", _base(scene, tmp_path))
    [job] = captured_jobs
    assert not [k for k in job["args"] if k.startswith("pseudo")], job["args"]


def test_densify_sends_pseudo_labels_with_the_defaults(processing, captured_jobs, scene,
                                                       tmp_path):
    processing.run("terraseg:train_model", {**_base(scene, tmp_path), "PSEUDO_LABELS": True})
    [job] = captured_jobs
    pseudo = {k: v for k, v in job["args"].items() if k.startswith("pseudo")}
    assert pseudo == {"pseudo_labels": True, "pseudo_strategy": "random",
                      "pseudo_probability": "none"}
    assert job["args"]["labels"].split("|")[0] == str(scene.labels)


def test_coarse_raster_source(processing, captured_jobs, scene, tmp_path):
    """A class raster as the source implies pseudo-labels; EXTRA_OPTIONS adds the rest."""
    strategies = options.SPEC_BY_JOB_KEY["pseudo_strategy"].choices
    uses = options.SPEC_BY_JOB_KEY["pseudo_probability"].choices
    processing.run("terraseg:train_model", {
        **_base(scene, tmp_path), "PSEUDO_SOURCE": str(scene.raster),
        "PSEUDO_CLASS_MAP": "1=sealed,2=unsealed",
        "PSEUDO_STRATEGY": strategies.index("kmeans"),
        "PSEUDO_PROBABILITY": uses.index("channel"),
        "EXTRA_OPTIONS": '{"pseudo_trees": 7, "pseudo_k": 3}'})
    [job] = captured_jobs
    pseudo = {k: v for k, v in job["args"].items() if k.startswith("pseudo")}
    assert pseudo == {"pseudo_labels": True, "pseudo_source": str(scene.raster),
                      "pseudo_class_map": "1=sealed,2=unsealed", "pseudo_strategy": "kmeans",
                      "pseudo_probability": "channel", "pseudo_trees": 7, "pseudo_k": 3}


def test_coarse_polygon_source_with_its_class_field(processing, captured_jobs, scene,
                                                    tmp_path):
    processing.run("terraseg:train_model", {
        **_base(scene, tmp_path), "PSEUDO_SOURCE": f"{scene.labels}|layername=labels",
        "PSEUDO_CLASS_FIELD": "cat"})
    [job] = captured_jobs
    args = job["args"]
    assert args["pseudo_labels"] is True
    assert args["pseudo_source"].split("|")[0] == str(scene.labels)
    assert args["pseudo_class_field"] == "cat"
    assert "pseudo_class_map" not in args  # empty: the engine takes CLASS_MAP's


def test_pretrained_encoder_parameters_reach_the_job(processing, captured_jobs, scene,
                                                     tmp_path):
    encoder = tmp_path / "enc.tse"
    encoder.write_bytes(b"weights")  # the engine reads it; here only the job is checked
    processing.run("terraseg:train_model", {
        "INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels), "CLASS_FIELD": "klass",
        "ARCHITECTURE": len(presets.PATCH_MODELS), "ENCODER": str(encoder),
        "FREEZE_EPOCHS": 5, "ENCODER_LR": 0.2, "OUTPUT": str(tmp_path / "m.tsm")})
    [job] = captured_jobs
    assert job["args"]["encoder"] == str(encoder)
    assert job["args"]["freeze_epochs"] == 5
    assert job["args"]["encoder_lr"] == pytest.approx(0.2)
