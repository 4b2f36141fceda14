"""k-fold cross-validation by region through the command line."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
from helpers.paths import TERRASEG
from helpers.synthetic import make_scene

FAST = ["--patch-size", "23", "--blocks", "1,1,1", "--epochs", "2", "--samples-per-epoch",
        "256"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TERRASEG, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # three trainings: ~45 s on 2 CPU cores
def test_three_folds_hold_out_every_region_once(tmp_path: Path) -> None:
    scene = make_scene(tmp_path)
    out = tmp_path / "cv"
    proc = run("cv", "--raster", str(scene.raster), "--labels", str(scene.labels),
               "--class-field", "klass", "--k", "3", "--out-dir", str(out), *FAST,
               "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    with open(out / "cv.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["fold"] for r in rows] == ["0", "1", "2", "mean", "std"]
    accs = [float(r["accuracy"]) for r in rows[:3]]
    assert float(rows[3]["accuracy"]) == pytest.approx(sum(accs) / 3, abs=1e-9)
    totals: dict[str, int] = {}
    for fold in range(3):
        meta = json.loads(run("info", str(out / f"fold_{fold}.tsm")).stdout)
        test = meta["labels"]["split_pixel_counts"]["test"]
        train = meta["labels"]["split_pixel_counts"]["train"]
        assert test and train
        for name, n in test.items():
            totals[name] = totals.get(name, 0) + n
        all_px = meta["labels"]["pixel_counts"]
    assert totals == all_px  # each labelled region is a test region in exactly one fold
    doc = json.loads((out / "cv.json").read_text())
    assert doc["k"] == 3 and len(doc["folds"]) == 3


def test_k_larger_than_regions_is_refused(tmp_path: Path) -> None:
    scene = make_scene(tmp_path)
    proc = run("cv", "--raster", str(scene.raster), "--labels", str(scene.labels),
               "--class-field", "klass", "--k", "50", "--out-dir", str(tmp_path / "cv"),
               *FAST, "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 2
    assert "k = 50 folds is larger than the number of labelled regions" in proc.stderr
    assert "--k 18" in proc.stderr
    assert not (tmp_path / "cv" / "cv.csv").exists()
