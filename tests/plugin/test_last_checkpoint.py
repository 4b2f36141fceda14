"""``NAME.last.tsm`` is explained to the analyst (issue 10).

Training writes the best epoch's weights to ``NAME.tsm`` and the last epoch's to
``NAME.last.tsm`` (metadata ``"checkpoint": "last"``). The files here are TerraSeg 0.1.0's
patch model (tests/data/legacy_v0_1) with that key written into its header, as training
writes it; modelinfo names such a file, and Processing's Predict and Evaluate warn when one
is chosen and explain the pair in their help.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from qgis.core import QgsProcessingFeedback

from terraseg.plugin import modelinfo

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy_v0_1"


def write_checkpoint(model: Path, out: Path) -> Path:
    """``model`` copied to ``out`` with ``"checkpoint": "last"`` in its metadata."""
    data = model.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    meta = json.loads(header["__metadata__"]["terraseg"])
    meta["checkpoint"] = "last"
    header["__metadata__"]["terraseg"] = json.dumps(meta)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    out.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size:])
    return out


class WarningFeedback(QgsProcessingFeedback):
    """Keeps the warnings and info lines an algorithm pushed."""

    def __init__(self) -> None:
        super().__init__()
        self.warnings: list[str] = []
        self.info: list[str] = []

    def pushWarning(self, warning: str) -> None:  # noqa: N802
        self.warnings.append(warning)
        super().pushWarning(warning)

    def pushInfo(self, info: str) -> None:  # noqa: N802
        self.info.append(info)
        super().pushInfo(info)


@pytest.fixture
def model_pair(tmp_path) -> tuple[Path, Path]:
    """``sealed.tsm`` (best epoch) and ``sealed.last.tsm`` (last epoch)."""
    best = tmp_path / "sealed.tsm"
    shutil.copy(LEGACY / "legacy_patch.tsm", best)
    return best, write_checkpoint(best, tmp_path / "sealed.last.tsm")


def test_modelinfo_names_the_last_epoch_checkpoint(model_pair, tmp_path):
    best, last = model_pair
    meta = modelinfo.read_model_metadata(last)
    assert meta["checkpoint"] == "last"
    assert modelinfo.is_last_checkpoint(last, meta)
    assert not modelinfo.is_last_checkpoint(best, modelinfo.read_model_metadata(best))
    assert modelinfo.best_model_path(last) == best
    assert modelinfo.best_model_path(best) == best
    note = "last epoch (checkpoint to resume), the best epoch is sealed.tsm"
    assert modelinfo.checkpoint_note(last, meta) == note
    assert modelinfo.summary(meta, last).startswith(note + "; classes: ")
    assert modelinfo.checkpoint_note(best, modelinfo.read_model_metadata(best)) == ""
    assert modelinfo.summary(modelinfo.read_model_metadata(best), best).startswith("classes: ")
    # by its metadata even when renamed; the best file's absence is said
    moved = Path(shutil.copy(last, tmp_path / "copy.tsm"))
    assert modelinfo.checkpoint_note(moved, meta) == (
        "last epoch (checkpoint to resume), not the best epoch")
    best.unlink()
    assert modelinfo.checkpoint_note(last, meta).endswith("sealed.tsm (not in this folder)")
    # an old file known only by its name
    assert modelinfo.is_last_checkpoint(tmp_path / "x.LAST.tsm")
    assert "NAME.last.tsm" in modelinfo.MODEL_FILES_HELP
    assert modelinfo.MODEL_FILE_FILTERS.split(";;")[0] == "TerraSeg model (*.tsm)"


@pytest.fixture
def processing(terraseg_provider):
    import processing as qgis_processing

    return qgis_processing


@pytest.mark.parametrize("alg_id", ["predict", "evaluate"])
def test_processing_warns_about_a_checkpoint(alg_id, processing, terraseg_provider, scene,
                                             model_pair, tmp_path, monkeypatch):
    best, last = model_pair
    alg = terraseg_provider.algorithm(alg_id)
    model = {p.name(): p for p in alg.parameterDefinitions()}["MODEL"]
    assert model.help() == modelinfo.MODEL_FILES_HELP
    assert "NAME.last.tsm" in alg.shortHelpString()
    sent: list[dict] = []
    monkeypatch.setattr(type(alg), "run_engine",
                        lambda self, job, feedback: sent.append(job) or {
                            "probability": "", "classes": "", "metrics": ""})
    params = {"INPUT_RASTER": str(scene.raster),  # the job is not run: any raster
              "OUTPUT_FOLDER": str(tmp_path / "out")}
    if alg_id == "evaluate":
        reference = tmp_path / "ref.geojson"
        reference.write_text(json.dumps({"type": "FeatureCollection", "features": [{
            "type": "Feature", "properties": {"klass": "sealed"},
            "geometry": {"type": "Point", "coordinates": [0, 0]}}]}))
        params.update(REFERENCE=str(reference), CLASS_FIELD="klass")
    for path, warned in ((last, True), (best, False)):
        feedback = WarningFeedback()
        processing.run(f"terraseg:{alg_id}", {**params, "MODEL": str(path)},
                       feedback=feedback)
        assert sent[-1]["args"]["model"] == str(path)  # used as chosen, with a warning
        expected = ["sealed.last.tsm holds the last epoch (checkpoint to resume), the best "
                    "epoch is sealed.tsm. Choose that file for the best map."] if warned else []
        assert feedback.warnings == expected


def test_processing_train_names_both_files(processing, scene, tmp_path, monkeypatch):
    from terraseg.plugin.processing.train import TrainModel

    out = tmp_path / "m.tsm"
    monkeypatch.setattr(TrainModel, "run_engine", lambda self, job, feedback: {
        "model": str(out), "last_model": str(tmp_path / "m.last.tsm"), "metrics": {}})
    feedback = WarningFeedback()
    processing.run("terraseg:train_model", {
        "INPUT_RASTER": str(scene.raster), "LABELS": str(scene.labels), "CLASS_FIELD": "klass",
        "OUTPUT": str(out)}, feedback=feedback)
    assert (f"{out}: the best epoch's weights (predict with it); {tmp_path / 'm.last.tsm'}: "
            "the last epoch's, a checkpoint to resume training from.") in feedback.info


def test_panel_names_a_loaded_checkpoint(panel, model_pair):
    """Load model in the panel: a NAME.last.tsm says what it is; NAME.tsm reads plainly."""
    best, last = model_pair
    assert panel.load_model(last) is not None
    assert panel.model_label.text() == ("sealed.last.tsm (last epoch (checkpoint to resume), "
                                        "the best epoch is sealed.tsm)")
    assert modelinfo.MODEL_FILES_HELP in panel.model_label.toolTip()
    assert panel.load_model(best) is not None
    assert panel.model_label.text() == "sealed.tsm"
