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
