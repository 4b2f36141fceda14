"""Change by classification difference (core/change*.py): exact codes, areas and refusals.

Tiny class maps on a real CRS (EPSG:32632, 10 m pixels, 40 x 40), plus the CORINE
Lausanne pairs from ../shared/data when present.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
from helpers.paths import SHARED_DATA
from helpers.synthetic import ORIGIN, PIXEL_M, write_raster
from rasterio.transform import from_origin

from terraseg.core.change import change_probability, fromto_dtype, near_boundary
from terraseg.core.change_align import class_image, estimate_shift
from terraseg.core.change_pair import PairInputs
from terraseg.core.change_run import ChangeOptions, run_change
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError, OutputError, RasterError

N = 40
PX_M2 = PIXEL_M * PIXEL_M
CORINE = SHARED_DATA / "corine_lausanne_2006_2012"


def classes_tif(path: Path, data: np.ndarray, nodata: int | None = 0, tags: list | None = None,
                origin: tuple[float, float] = ORIGIN) -> str:
    write_raster(path, data[None], nodata=nodata,
                 transform=from_origin(*origin, PIXEL_M, PIXEL_M))
    if tags:
        with rasterio.open(path, "r+") as ds:
            ds.update_tags(TERRASEG_CLASSES=json.dumps(tags))
    return str(path)


def blocky(seed: int, classes: int = 4, block: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(1, classes + 1, (N // block, N // block))
    return np.kron(small, np.ones((block, block), dtype=np.int64)).astype(np.uint8)


def run(tmp: Path, a: str, b: str, out: str = "out", **kw) -> dict:
    inputs = PairInputs(a, b, kw.pop("pa", None), kw.pop("pb", None))
    overwrite = kw.pop("overwrite", False)
    return run_change(inputs, ChangeOptions(**kw), tmp / out, Reporter(), overwrite=overwrite)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_fromto_codes_areas_zones_and_transitions_on_a_hand_made_pair(tmp_path: Path) -> None:
    a = np.ones((N, N), np.uint8)
    a[:, 20:] = 2
    a[39, :] = 0  # nodata row
    b = a.copy()
    b[5:15, 2:12] = 3  # 100 px 1 -> 3
    b[30:35, 25:29] = 1  # 20 px 2 -> 1
    b[39, :] = 2
    tags = [{"id": 1, "name": "unsealed", "colour": "#00aa00"},
            {"id": 2, "name": "water", "colour": "#0000ff"},
            {"id": 3, "name": "sealed", "colour": "#ff0000"}]
    zones = tmp_path / "zones.gpkg"
    schema = {"geometry": "Polygon", "properties": {"name": "str"}}
    x0, y0 = ORIGIN
    with fiona.open(zones, "w", driver="GPKG", crs="EPSG:32632", schema=schema) as dst:
        for name, (c0, c1) in (("west", (0, 20)), ("east", (20, 40))):
            ring = [(x0 + c0 * 10, y0), (x0 + c1 * 10, y0), (x0 + c1 * 10, y0 - 400),
                    (x0 + c0 * 10, y0 - 400), (x0 + c0 * 10, y0)]
            dst.write({"geometry": {"type": "Polygon", "coordinates": [ring]},
                       "properties": {"name": name}})
    res = run(tmp_path, classes_tif(tmp_path / "a.tif", a, tags=tags),
              classes_tif(tmp_path / "b.tif", b), zones=str(zones), zone_field="name",
              transitions=("unsealed=sealed", "2=1"))
    out = tmp_path / "out"
    assert res["k"] == 3 and res["shift"]["length_px"] < 0.2
    with rasterio.open(out / "fromto.tif") as ds:
        ft = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 0
        names = {c["id"]: c["name"] for c in json.loads(ds.tags()["TERRASEG_CLASSES"])}
        assert ds.colormap(1)[5][:3] == (215, 215, 215)  # water -> water unchanged: grey
        assert ds.colormap(1)[3][:3] == (255, 0, 0)  # unsealed -> sealed: sealed's colour
    assert names[3] == "unsealed -> sealed" and names[4] == "water -> unsealed"
    assert ft[10, 5] == 3 and ft[32, 26] == 4 and ft[0, 0] == 1 and ft[0, 39] == 5
    assert (ft[39] == 0).all()
    assert np.bincount(ft.ravel(), minlength=10).tolist() == [
        40, 780 - 100, 0, 100, 20, 780 - 20, 0, 0, 0, 0]
    mask = read(out / "change_mask.tif")
    assert (mask == 1).sum() == 120 and (mask == 255).sum() == 40
    with open(out / "fromto_area.csv", newline="") as f:
        rows = {r["from_class"]: r for r in csv.DictReader(f)}
    assert float(rows["unsealed"]["sealed_m2"]) == 100 * PX_M2
    assert float(rows["water"]["unsealed_m2"]) == 20 * PX_M2
    assert float(rows["unsealed"]["unsealed_m2"]) == 680 * PX_M2
    assert float(rows["unsealed"]["sealed_pct"]) == pytest.approx(100 * 100 / 1560, abs=1e-5)
    summary = json.loads((out / "fromto.json").read_text())
    assert summary["compared_px"] == 1560 and summary["changed_m2"] == 120 * PX_M2
    assert [(t["from"], t["to"], t["pixels"]) for t in summary["top_transitions"]] == [
        ("unsealed", "sealed", 100), ("water", "unsealed", 20)]
    with open(out / "fromto_zones.csv", newline="") as f:
        zrows = [r for r in csv.DictReader(f)]
    west = {(r["from_class"], r["to_class"]): float(r["area_m2"]) for r in zrows
            if r["zone"] == "west"}
    assert west == {("unsealed", "unsealed"): 680 * PX_M2, ("unsealed", "sealed"): 100 * PX_M2}
    trans = read(out / "transitions.tif")
    assert (trans == 1).sum() == 100 and (trans == 2).sum() == 20 and trans[10, 5] == 1
    with fiona.open(out / "transitions.gpkg") as layer:
        areas = {f.properties["transition"]: f.properties["area_m2"] for f in layer}
    assert areas == {"unsealed -> sealed": 100 * PX_M2, "water -> unsealed": 20 * PX_M2}
    assert [t["area_m2"] for t in res["transitions"]] == [100 * PX_M2, 20 * PX_M2]


def test_change_probability_is_one_minus_the_chance_both_dates_agree(tmp_path: Path) -> None:
    pa = np.array([0.8, 0.2])[:, None, None] * np.ones((2, 3, 3))
    pb = np.array([0.3, 0.7])[:, None, None] * np.ones((2, 3, 3))
    assert np.allclose(change_probability(pa, pb), 1 - (0.8 * 0.3 + 0.2 * 0.7))
    a = np.ones((N, N), np.uint8)
    tags = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    ca = classes_tif(tmp_path / "a.tif", a, tags=tags)
    cb = classes_tif(tmp_path / "b.tif", np.where(a > 0, 2, 0).astype(np.uint8), tags=tags)
    prob_a = np.stack([np.full((N, N), 0.8), np.full((N, N), 0.2)]).astype(np.float32)
    prob_b = np.stack([np.full((N, N), 0.3), np.full((N, N), 0.7)]).astype(np.float32)
    prob_a[:, 0, 0] = -1  # nodata pixel
    paths = []
    for name, p in (("pa.tif", prob_a), ("pb.tif", prob_b)):
        write_raster(tmp_path / name, p, nodata=-1.0)
        with rasterio.open(tmp_path / name, "r+") as ds:
            ds.update_tags(TERRASEG_CLASSES=json.dumps(tags))
        paths.append(str(tmp_path / name))
    res = run(tmp_path, ca, cb, pa=paths[0], pb=paths[1], threshold=0.7, max_shift_px=-1)
    cp = read(tmp_path / "out" / "change_probability.tif")
    assert cp[0, 0] == -1 and np.allclose(cp[1:, 1:], 0.62)
    mask = read(tmp_path / "out" / "change_mask.tif")
    assert mask[0, 0] == 255 and (mask[1:] == 0).all()  # 0.62 < 0.7: no change
    assert res["changed_by"] == "probability" and res["class_changed_px"] == N * N
    run(tmp_path, ca, cb, pa=paths[0], pb=paths[1], threshold=0.6, max_shift_px=-1,
        out="low")
    assert (read(tmp_path / "low" / "change_mask.tif")[1:] == 1).all()  # 0.62 >= 0.6
    # the same unsure map on both dates: change probability 0.32, 0.5 at p = (0.5, 0.5),
    # but the class never differs, so nothing is changed at any threshold
    run(tmp_path, ca, ca, pa=paths[0], pb=paths[0], threshold=0.3, max_shift_px=-1,
        out="same")
    assert np.allclose(read(tmp_path / "same" / "change_probability.tif")[1:, 1:], 0.32)
    assert (read(tmp_path / "same" / "change_mask.tif")[1:] == 0).all()


def test_a_two_pixel_shift_is_measured_refused_and_corrected(tmp_path: Path) -> None:
    a = blocky(1)
    b = np.ones_like(a)
    b[:, 2:] = a[:, :-2]  # B's content 2 columns right of A's
    shift = estimate_shift(class_image(a, a > 0), class_image(b, b > 0))
    assert abs(shift.dx_px - 2) <= 0.2 and abs(shift.dy_px) <= 0.2
    ca, cb = classes_tif(tmp_path / "a.tif", a), classes_tif(tmp_path / "b.tif", b)
    with pytest.raises(RasterError, match=r"misregistered .* by 2\.0") as err:
        run(tmp_path, ca, cb)
    assert "--correct-shift" in err.value.hint
    assert not any((tmp_path / "out").iterdir())
    naive = run(tmp_path, ca, cb, out="naive", max_shift_px=-1)
    fixed = run(tmp_path, ca, cb, out="fixed", correct_shift=True)
    assert naive["changed_px"] > 300
    assert fixed["changed_px"] == 0 and fixed["shift"]["corrected"]
    assert fixed["shift"]["residual_px"] <= 0.2
    assert fixed["compared_px"] == N * (N - 2)  # B has no data under A's last 2 columns
    # --correct-shift corrects any measurable shift, also one --max-shift would accept
    loose = run(tmp_path, ca, cb, out="loose", correct_shift=True, max_shift_px=5.0)
    assert loose["shift"]["corrected"] and loose["changed_px"] == 0
    kept = run(tmp_path, ca, cb, out="kept", max_shift_px=5.0)
    assert not kept["shift"]["corrected"] and kept["changed_px"] == naive["changed_px"]


def test_a_border_band_removes_boundary_slivers_not_real_change(tmp_path: Path) -> None:
    a = np.ones((N, N), np.uint8)
    a[:, 20:] = 2
    b = a.copy()
    b[:, 20] = 1  # 1-px sliver along the boundary
    b[6:14, 4:12] = 3  # an 8 x 8 real change inside class 1
    ca, cb = classes_tif(tmp_path / "a.tif", a), classes_tif(tmp_path / "b.tif", b)
    plain = run(tmp_path, ca, cb, out="plain", max_shift_px=-1)
    band = run(tmp_path, ca, cb, out="band", max_shift_px=-1, border_px=1)
    assert plain["changed_px"] == 40 + 64
    assert band["changed_px"] == 36  # the block less its 1-px ring
    assert {(t["from"], t["to"]) for t in band["top_transitions"]} == {("1", "3")}
    assert near_boundary(a, a > 0, 1).sum() == 2 * N


def test_rasters_that_do_not_overlap_are_refused_with_both_extents(tmp_path: Path) -> None:
    a = blocky(2)
    ca = classes_tif(tmp_path / "a.tif", a)
    cb = classes_tif(tmp_path / "b.tif", a, origin=(ORIGIN[0] + 50_000, ORIGIN[1]))
    with pytest.raises(RasterError, match="do not overlap") as err:
        run(tmp_path, ca, cb)
    assert "(500000, 5.1996e+06, 500400, 5.2e+06)" in str(err.value)
    assert "(550000, 5.1996e+06, 550400, 5.2e+06)" in str(err.value)
    assert "EPSG:32632" in str(err.value)


def test_too_many_classes_for_uint16_codes_are_refused(tmp_path: Path) -> None:
    assert fromto_dtype(15) == "uint8" and fromto_dtype(16) == "uint16"
    assert fromto_dtype(255) == "uint16"
    codes = (np.arange(N * N) % 300 + 1).reshape(N, N).astype(np.uint16)
    ca = classes_tif(tmp_path / "a.tif", codes)
    cb = classes_tif(tmp_path / "b.tif", codes[::-1].copy())
    with pytest.raises(ConfigError, match="300 classes together: 90000 from-to codes"):
        run(tmp_path, ca, cb, max_shift_px=-1)
    assert list((tmp_path / "out").iterdir()) == []


def test_existing_outputs_are_refused_and_a_failed_run_writes_nothing(tmp_path: Path) -> None:
    a = blocky(3)
    b = a.copy()
    b[:5, :5] = 4 if a[0, 0] != 4 else 1
    ca, cb = classes_tif(tmp_path / "a.tif", a), classes_tif(tmp_path / "b.tif", b)
    run(tmp_path, ca, cb)
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["change_mask.tif", "fromto.json", "fromto.tif",
                              "fromto_area.csv"]
    with pytest.raises(OutputError, match="already exists"):
        run(tmp_path, ca, cb)
    with pytest.raises(ConfigError, match="'9' is not a class"):  # fails after reading
        run(tmp_path, ca, cb, overwrite=True, transitions=("1=9",))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp files either
    again = run(tmp_path, ca, cb, overwrite=True, border_px=1)
    assert again["border_px"] == 1 and json.loads((out / "fromto.json").read_text()) == again


@pytest.mark.skipif(not CORINE.is_dir(), reason=f"real data not present: {CORINE}")
def test_corine_lausanne_pairs(tmp_path: Path) -> None:
    legend = str(CORINE / "clc_legend_gridcode.csv")
    r250 = run(tmp_path, str(CORINE / "ls250_06.tif"), str(CORINE / "ls250_12.tif"),
               out="o250", legend=legend)
    assert r250["shift"]["length_px"] < 0.1 and r250["k"] == 21
    ha = {(t["from"], t["to"]): t["area_m2"] / 1e4 for t in r250["top_transitions"]}
    # PROVENANCE.md: 211->131 37.5 ha, 211->112 18.7, 313->211 18.7, 311->131 12.5, ...
    assert ha[("211", "131")] == pytest.approx(37.5, abs=0.05)
    assert ha[("211", "112")] == pytest.approx(18.7, abs=0.05)
    assert ha[("313", "211")] == pytest.approx(18.7, abs=0.05)
    assert ha[("311", "131")] == pytest.approx(12.5, abs=0.05)
    assert r250["changed_m2"] / 1e4 == pytest.approx(112.4, abs=0.1)

    a, b = str(CORINE / "ls100_06.tif"), str(CORINE / "ls100_12.tif")
    with pytest.raises(RasterError, match="misregistered"):
        run(tmp_path, a, b, out="refused", legend=legend, max_shift_px=0.5)
    naive = run(tmp_path, a, b, out="naive", legend=legend, max_shift_px=-1)
    fixed = run(tmp_path, a, b, out="fixed", legend=legend, max_shift_px=0.5,
                correct_shift=True)
    band = run(tmp_path, a, b, out="band", legend=legend, max_shift_px=-1, border_px=1)
    s = fixed["shift"]
    assert abs(s["dx_px"]) < 0.3 and s["dy_px"] == pytest.approx(-1.0, abs=0.3)
    assert naive["changed_px"] > 5000  # 6116: slivers along the class boundaries
    assert fixed["changed_px"] < 0.7 * naive["changed_px"]  # 3535
    assert band["changed_px"] < 50  # 7, all 211 -> 131 (the 250 m pair's main change)
