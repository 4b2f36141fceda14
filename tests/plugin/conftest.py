"""Fixtures for the QGIS-side tests (run with QGIS's Python: `make test-plugin`).

The engine is the real one in .venv-engine (skipped with a reason when missing). The test
scene is made by the engine's Python with tests/helpers/synthetic.py (QGIS's Python must not
import rasterio/fiona): a 96x96 4-band raster in EPSG:32632 and labels.gpkg (EPSG:4326) with
the class field ``klass`` (sealed/unsealed) and a category field ``cat``. Helpers the tests
import (TINY_TRAIN, RecordingFeedback, wait_until, ...) live in tests/helpers/qgis_support.py;
tests/conftest.py (loaded too) adds the private default cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.paths import ENGINE_DIR, engine_executable
from helpers.qgis_support import TINY_TRAIN, RecordingFeedback, make_scene

TERRASEG = engine_executable(ENGINE_DIR)


@dataclass(frozen=True)
class SceneFiles:
    """Paths of the synthetic scene."""

    folder: Path
    raster: Path
    labels: Path


@pytest.fixture(scope="session")
def engine():
    """The engine in .venv-engine (EngineLocation)."""
    if not TERRASEG.exists():
        pytest.skip(f"no TerraSeg engine at {TERRASEG}: run `make install` first")
    from terraseg.plugin.engine import engine_at, engine_problem

    loc = engine_at(ENGINE_DIR)
    assert loc is not None, (f"{engine_problem(ENGINE_DIR)} Run `make install`: it adds the "
                             "marker to an engine made by an earlier release.")
    return loc


@pytest.fixture(scope="session")
def scene(engine, tmp_path_factory) -> SceneFiles:
    """The 96x96 synthetic scene, written by the engine's Python."""
    folder = tmp_path_factory.mktemp("scene")
    raster = make_scene(folder, python=engine.python)
    return SceneFiles(folder, raster, folder / "labels.gpkg")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A training cache shared by the tests (keeps ~/.cache clean)."""
    return tmp_path_factory.mktemp("cache")


@dataclass
class TinyModel:
    """A model trained once per session with run_job, and what run_job reported."""

    path: Path
    result: dict
    events: list
    feedback: RecordingFeedback


@pytest.fixture(scope="session")
def tiny_model(engine, scene, cache_dir, tmp_path_factory) -> TinyModel:
    """A 2-epoch model of the scene (trained through worker_run.run_job)."""
    from terraseg.plugin import jobs
    from terraseg.plugin.worker_run import run_job

    out = tmp_path_factory.mktemp("model") / "tiny.tsm"
    feedback, events = RecordingFeedback(), []
    job = jobs.train_job(str(scene.raster), str(scene.labels), str(out), class_field="klass",
                         cache_dir=str(cache_dir), **TINY_TRAIN)
    result = run_job(job, feedback, on_event=events.append, engine=engine, timeout_s=300)
    return TinyModel(out, result, events, feedback)


@pytest.fixture(scope="session")
def prediction(engine, scene, tiny_model, tmp_path_factory) -> dict:
    """probability.tif/classes.tif of the tiny model (through worker_run.run_job)."""
    from terraseg.plugin import jobs
    from terraseg.plugin.worker_run import run_job

    out_dir = tmp_path_factory.mktemp("prediction")
    job = jobs.predict_job(str(tiny_model.path), str(scene.raster), str(out_dir))
    return run_job(job, engine=engine, timeout_s=300)


@pytest.fixture
def panel(qgis_iface, qgis_new_project, engine):
    """A TerraSeg dock in a new project that answers every question with yes."""
    from terraseg.plugin.dock import TerraSegDock

    dock = TerraSegDock(qgis_iface)
    dock.auto_answer = True
    yield dock
    dock.shutdown()
    dock.deleteLater()


@pytest.fixture(scope="session")
def terraseg_provider(qgis_processing, engine):
    """Processing initialised, with the TerraSeg provider registered."""
    from qgis.core import QgsApplication

    from terraseg.plugin.processing import TerraSegProvider

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("terraseg")
    if provider is None:
        provider = TerraSegProvider()
        assert registry.addProvider(provider)
    return registry.providerById("terraseg")


@pytest.fixture
def clean_engine_setting():
    """Forget terraseg/engine_dir before and after a test that changes it."""
    from terraseg.plugin import settings

    settings.remove(settings.ENGINE_DIR)
    yield settings
    settings.remove(settings.ENGINE_DIR)


@pytest.fixture
def sent_jobs(panel, monkeypatch) -> list[dict]:
    """The jobs the panel starts, recorded instead of run."""
    seen: list[dict] = []

    def start(kind, job, on_result, wait=False, timeout_s=0.0):
        seen.append(job)
        return True

    monkeypatch.setattr(panel, "_start_job", start)
    monkeypatch.setattr(panel, "confirm_band_coverage", lambda: True)  # no inspect job
    return seen
