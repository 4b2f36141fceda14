"""``terraseg pair`` and the change networks end to end: pair raster, train, predict.

The pair raster holds A's bands then B's bilinearly warped onto A's grid (compared with
rasterio's own reproject); rasters that do not overlap, different band counts and a
misregistration above --max-shift are refused; fc_siam_diff trained for a few steps on a
synthetic pair gives the changed blocks a higher change probability than the rest.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import rasterio
from helpers.paths import terraseg
from helpers.synthetic import ORIGIN, PIXEL_M, write_raster
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject
from scipy.ndimage import gaussian_filter

from terraseg.protocol.events import parse_line


def texture(c: int, size: int, seed: int, sigma: float = 1.0) -> np.ndarray:
    """Smooth random bands (phase correlation needs structure). Shape: (c, size, size)."""
    rng = np.random.default_rng(seed)
    return np.stack([gaussian_filter(rng.normal(size=(size, size)), sigma) * 100 + 500
                     for _ in range(c)]).astype(np.float32)


def test_pair_raster_holds_a_then_b_warped_onto_a(tmp_path: Path) -> None:
    a = texture(3, 48, seed=0)
    ra = write_raster(tmp_path / "a.tif", a, descriptions=("blue", "green", "red"))
    # B: 10 m pixels half a pixel west and north of A's: each pixel of A lies at the
    # corner of four pixels of B, so bilinear gives their mean
    b = texture(3, 49, seed=5)
    b_tr = from_origin(ORIGIN[0] - PIXEL_M / 2, ORIGIN[1] + PIXEL_M / 2, PIXEL_M, PIXEL_M)
    rb = write_raster(tmp_path / "b.tif", b, transform=b_tr)
    out = tmp_path / "pair.tif"
    proc = terraseg("pair", "--raster-a", ra, "--raster-b", rb, "--out", out,
                    "--max-shift", "-1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "3 bands per date; shift not checked; 100.0 % of the first date" in proc.stdout
    with rasterio.open(out) as ds:
        got, grid = ds.read(), (ds.transform, ds.crs, ds.shape)
        assert ds.descriptions == ("a:blue", "a:green", "a:red", "b:band_1", "b:band_2",
                                   "b:band_3")
        assert ds.dtypes[0] == "float32"
        assert json.loads(ds.tags()["TERRASEG_PAIR"])["raster_b"] == str(rb)
    with rasterio.open(ra) as ds:
        assert grid == (ds.transform, ds.crs, ds.shape)
    np.testing.assert_array_equal(got[:3], a)
    expected = (b[:, :-1, :-1] + b[:, 1:, :-1] + b[:, :-1, 1:] + b[:, 1:, 1:]) / 4
    np.testing.assert_allclose(got[3:], expected, rtol=1e-5)
    # a subset of A's bands, and B's in another order, as a worker job (the plugin's way)
    job = {"command": "pair", "args": {"raster_a": str(ra), "raster_b": str(rb),
                                       "out": str(out), "overwrite": True, "bands_a": "3,1",
                                       "bands_b": "nir=2,x=3", "max_shift": -1}}
    proc = terraseg("worker", cwd=tmp_path, stdin=json.dumps(job))
    assert proc.returncode == 0, proc.stderr
    events = [parse_line(line) for line in proc.stdout.splitlines() if line.strip()]
    assert events[-1].kind == "result" and events[-1].payload["bands_per_date"] == 2
    assert events[-1].payload["band_names"] == ["a:red", "a:blue", "b:nir", "b:x"]
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("a:red", "a:blue", "b:nir", "b:x")
        np.testing.assert_array_equal(ds.read(1), a[2])
        np.testing.assert_allclose(ds.read(3), expected[1], rtol=1e-5)
    # B in another CRS (lat/lon): as rasterio's reproject puts it on A's grid
    ll = tmp_path / "b_ll.tif"
    with rasterio.open(rb) as src:
        with WarpedVRT(src, crs="EPSG:4326", resampling=Resampling.bilinear) as vrt:
            write_raster(ll, vrt.read(), crs="EPSG:4326", transform=vrt.transform)
    proc = terraseg("pair", "--raster-a", ra, "--raster-b", ll, "--out", out, "--overwrite",
                    "--max-shift", "-1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected_ll = np.full((3, 48, 48), np.nan, dtype=np.float32)
    with rasterio.open(ll) as src, rasterio.open(out) as ds:
        reproject(src.read(), expected_ll, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=ds.transform, dst_crs=ds.crs, dst_nodata=np.nan,
                  resampling=Resampling.bilinear)
        got_ll = ds.read([4, 5, 6])
    both = np.isfinite(expected_ll) & np.isfinite(got_ll)
    assert both[:, 2:-2, 2:-2].all()
    np.testing.assert_allclose(got_ll[both], expected_ll[both], atol=3.0)
    assert np.abs(got_ll[both] - expected_ll[both]).mean() < 0.3  # sd of B: about 20


def test_bad_pairs_are_refused_with_the_fix(tmp_path: Path) -> None:
    big = texture(3, 80, seed=1)
    a = big[:, 10:70, 10:70]
    ra = write_raster(tmp_path / "a.tif", a)
    far = write_raster(tmp_path / "far.tif", a,
                       transform=from_origin(ORIGIN[0] + 10000, ORIGIN[1], 10, 10))
    proc = terraseg("pair", "--raster-a", ra, "--raster-b", far, "--out",
                    tmp_path / "p.tif", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "do not overlap" in proc.stderr and not (tmp_path / "p.tif").exists()
    four = write_raster(tmp_path / "four.tif", texture(4, 60, seed=1))
    proc = terraseg("pair", "--raster-a", ra, "--raster-b", four, "--out",
                    tmp_path / "p.tif", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "gives 3 band(s) and date B (four.tif) gives 4" in proc.stderr
    assert "--bands-a 1,2,3 --bands-b 1,2,3" in proc.stderr
    assert not (tmp_path / "p.tif").exists()
    shifted = big[:, 8:68, 13:73]  # B's content 3 px left, 2 px down of A's
    rs = write_raster(tmp_path / "s.tif", shifted)
    proc = terraseg("pair", "--raster-a", ra, "--raster-b", rs, "--out",
                    tmp_path / "p.tif", cwd=tmp_path)
    assert proc.returncode != 0 and "--correct-shift" in proc.stderr
    found = re.search(r"misregistered against the first by ([\d.]+) px \(dx ([-+\d.]+), "
                      r"dy ([-+\d.]+) px", proc.stderr)
    assert found, proc.stderr
    length, dx, dy = map(float, found.groups())
    assert abs(dx + 3) <= 0.1 and abs(dy - 2) <= 0.1 and abs(length - 13 ** 0.5) <= 0.1
    assert not (tmp_path / "p.tif").exists()
    proc = terraseg("pair", "--raster-a", ra, "--raster-b", rs, "--out",
                    tmp_path / "p.tif", "--correct-shift", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    residual = re.search(r"\(corrected, residual ([\d.]+) px\)", proc.stdout)
    assert residual and float(residual.group(1)) <= 0.15, proc.stdout
    with rasterio.open(tmp_path / "p.tif") as ds:
        b = ds.read([4, 5, 6])
    err = np.abs(b[:, 5:-5, 5:-5] - a[:, 5:-5, 5:-5])
    assert err.mean() < 0.1 * a.std()  # B moved back onto A (sub-pixel: not exact)


def test_fc_siam_diff_trains_on_a_pair_and_finds_the_changed_blocks(tmp_path: Path) -> None:
    size, c = 64, 2
    a = texture(c, size, seed=2)
    rng = np.random.default_rng(3)
    b = a + rng.normal(0, 5, a.shape).astype(np.float32)
    mask = np.ones((size, size), dtype=np.uint8)
    for r, col in ((4, 6), (8, 40), (36, 12), (44, 44), (26, 28)):
        b[:, r:r + 12, col:col + 12] = 900.0  # a new bright roof
        mask[r:r + 12, col:col + 12] = 2
    ra = write_raster(tmp_path / "a.tif", a)
    rb = write_raster(tmp_path / "b.tif", b)
    labels = write_raster(tmp_path / "change_mask.tif", mask[None])
    pair = tmp_path / "pair.tif"
    proc = terraseg("pair", "--raster-a", ra, "--raster-b", rb, "--out", pair, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    model = tmp_path / "m.tsm"
    proc = terraseg("train", "--raster", pair, "--labels", labels, "--class-map",
                    "2=change,1=no_change", "--model", "fc_siam_diff", "--base-width", "4",
                    "--tile-size", "32", "--epochs", "2", "--samples-per-epoch", "128",
                    "--batch-size", "16", "--lr", "0.005", "--split", "blocks",
                    "--split-block-size", "32", "--val-fraction", "0.25", "--test-fraction",
                    "0", "--augment", "flip", "--accelerator", "cpu", "--out", model,
                    cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = terraseg("predict", "--model", model, "--raster", pair, "--out-dir",
                    tmp_path / "p", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(tmp_path / "p" / "probability.tif") as ds:
        band = ds.descriptions.index("probability change")
        p = ds.read(band + 1)
    changed, same = p[mask == 2].mean(), p[mask == 1].mean()
    assert changed > same + 0.1 and changed > 0.5, (changed, same)  # 0.72, 0.49
