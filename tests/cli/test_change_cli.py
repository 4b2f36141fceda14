"""``terraseg change`` end to end: the worker job and the command line's refusal."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import rasterio
from helpers.paths import ROOT, terraseg

from terraseg.protocol.events import Progress, parse_line

sys.path.insert(0, str(ROOT / "tests" / "core"))
from test_change import PX_M2, N, blocky, classes_tif  # noqa: E402


def test_change_worker_job_and_command_line(tmp_path: Path) -> None:
    a = blocky(5)
    b = a.copy()
    b[10:20, 10:20] = 9  # 100 px of a new class
    ca, cb = classes_tif(tmp_path / "a.tif", a), classes_tif(tmp_path / "b.tif", b)
    legend = tmp_path / "legend.csv"
    legend.write_text("code,name,colour\n1,forest,#00aa00\n2,crop,#ffff00\n3,grass,#88ff88\n"
                      "4,water,#0000ff\n9,built,#ff0000\n")
    job = {"command": "change", "args": {
        "classes_a": ca, "classes_b": cb, "legend": str(legend), "out_dir": str(tmp_path / "w"),
        "transition": ["*=built", "forest=crop"], "border": 0}}
    proc = terraseg("worker", cwd=tmp_path, stdin=json.dumps(job))
    assert proc.returncode == 0, proc.stderr
    events = [parse_line(line) for line in proc.stdout.splitlines() if line.strip()]
    assert events[-1].kind == "result" and "error" not in [e.kind for e in events]
    res = events[-1].payload
    before = a[10:20, 10:20]
    assert res["k"] == 5 and res["changed_px"] == 100 and res["compared_px"] == N * N
    assert res["changed_m2"] == 100 * PX_M2 and res["shift"]["length_px"] <= 0.2
    assert {t["from"] for t in res["top_transitions"]} == {
        {1: "forest", 2: "crop", 3: "grass", 4: "water"}[int(c)] for c in np.unique(before)}
    assert sum(t["pixels"] for t in res["top_transitions"]) == 100
    built = sum(t["area_m2"] for t in res["transitions"] if t["transition"].endswith("built"))
    assert built == 100 * PX_M2
    assert res["transitions_gpkg"] == str(tmp_path / "w" / "transitions.gpkg")
    with rasterio.open(res["fromto_tif"]) as ds:
        assert ds.read(1)[15, 15] == 5 * (int(before[5, 5]) - 1) + 5  # -> built (index 5)
    assert [e for e in events if isinstance(e, Progress)][-1].fraction == 1.0

    shifted = np.ones_like(a)
    shifted[3:, :] = a[:-3, :]  # 3 rows down
    cs = classes_tif(tmp_path / "s.tif", shifted)
    proc = terraseg("change", "--classes-a", ca, "--classes-b", cs, "--out-dir",
                    tmp_path / "cli", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "misregistered against the first by 3.0" in proc.stderr
    assert "--correct-shift" in proc.stderr
    assert not list((tmp_path / "cli").glob("*"))
    proc = terraseg("change", "--classes-a", ca, "--classes-b", cs, "--out-dir",
                    tmp_path / "cli", "--correct-shift", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "dy +3.00 px (corrected, residual 0.00 px)" in proc.stdout
    assert "changed 0.00 ha" in proc.stdout


def test_change_predicts_both_dates_with_a_model(tmp_path: Path) -> None:
    from helpers.patch_models import PARAMS, metadata, randomise, smooth_random
    from helpers.synthetic import write_raster

    from terraseg.core.modelfile import save_model
    from terraseg.core.models.registry import build_model

    net = randomise(build_model("patch_cnn", PARAMS), seed=0)
    model = save_model(tmp_path / "m.tsm", net, metadata(net))
    image = smooth_random((4, 64, 64), seed=3)
    ra = write_raster(tmp_path / "a.tif", image, nodata=0)
    rb = write_raster(tmp_path / "b.tif", image, nodata=0)  # the same image: no change
    out = tmp_path / "o"
    proc = terraseg("change", "--model", model, "--raster-a", ra, "--raster-b", rb,
                    "--out-dir", out, "--device", "cpu", "--threshold", "0.9", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "fromto.json").read_text())
    assert summary["shift"]["measured_on"] == "images" and summary["shift"]["length_px"] == 0
    assert summary["changed_by"] == "probability" and summary["class_changed_px"] == 0
    with rasterio.open(out / "date_a" / "probability.tif") as ds:
        p = ds.read()
    with rasterio.open(out / "change_probability.tif") as ds:
        cp = ds.read(1)
    valid = cp >= 0
    assert valid.sum() == summary["compared_px"] > 0
    assert np.allclose(cp[valid], (1 - (p ** 2).sum(axis=0))[valid], atol=1e-5)
    with rasterio.open(out / "change_mask.tif") as ds:
        assert ((ds.read(1) == 1) == (valid & (cp >= 0.9))).all()
