"""Tests for terraseg.core.postprocess: opening/closing and minimum-region removal."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.patch_models import PARAMS, metadata, randomise, smooth_random
from helpers.synthetic import write_raster
from rasterio.crs import CRS
from scipy import ndimage

from terraseg.cli.main import main
from terraseg.core.grid import Grid
from terraseg.core.inference import predict_raster
from terraseg.core.modelfile import load_model, save_model
from terraseg.core.models.registry import build_model
from terraseg.core.postprocess import (
    PostProcess,
    min_region_pixels,
    morph_pass,
    morph_strip,
    next_best_class,
    region_pass,
)
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import JsonLinesReporter
from terraseg.protocol.errors import ConfigError

IDS2 = np.array([1, 2])


def two_class(cls: np.ndarray) -> np.ndarray:
    """Probabilities consistent with a two-class map (P(class 1) = 0.9 where class 1)."""
    p1 = np.where(cls == 1, 0.9, 0.1).astype(np.float32)
    return np.stack([p1, 1 - p1])


def readers(cls: np.ndarray, prob: np.ndarray):
    """Row readers over in-memory arrays, padding rows outside with nodata."""
    h = cls.shape[0]

    def make(arr: np.ndarray, fill: float):
        def read(r0: int, r1: int) -> np.ndarray:
            out = np.full((arr.shape[0], r1 - r0, arr.shape[2]), fill, arr.dtype)
            a, b = max(r0, 0), min(r1, h)
            if b > a:
                out[:, a - r0:b - r0] = arr[:, a:b]
            return out
        return read

    return make(cls[None], 0), make(prob, -1.0)


def run_pass(fn, cls: np.ndarray, prob: np.ndarray, spec: PostProcess, ids: np.ndarray,
             strip_px: int) -> tuple[np.ndarray, int]:
    out = np.zeros_like(cls)

    def write(row: int, rows: np.ndarray) -> None:
        out[row:row + rows.shape[0]] = rows

    read_cls, read_prob = readers(cls, prob)
    changed = fn(read_cls, read_prob, cls.shape[0], spec, ids, write, strip_px=strip_px)
    return out, changed


def reference_regions(cls: np.ndarray, prob: np.ndarray, min_px: int,
                      ids: np.ndarray) -> np.ndarray:
    """Whole-array reference: 8-connected regions below min_px take the next best class."""
    out = cls.copy()
    for v in np.unique(cls[cls > 0]):
        lab, n = ndimage.label(cls == v, structure=np.ones((3, 3)))
        sizes = np.bincount(lab.ravel())
        small = (sizes < min_px) & (np.arange(len(sizes)) > 0)
        sel = small[lab]
        p = prob[:, sel].copy()
        p[ids == v] = -np.inf
        out[sel] = ids[p.argmax(0)]
    return out


def test_opening_removes_specks_and_keeps_big_regions() -> None:
    cls = np.full((40, 40), 2, np.uint8)
    cls[5:7, 5:7] = 1        # 2x2 speck: narrower than the 3x3 disk
    cls[20:32, 10:30] = 1    # big block
    cls[2, 20:35] = 1        # one-pixel line
    out = morph_strip(cls, two_class(cls), PostProcess(opening_px=1), IDS2)
    assert (out[5:7, 5:7] == 2).all() and (out[2, 20:35] == 2).all()
    assert (out[20:32, 10:30] == 1).all()
    assert int((out == 1).sum()) == 12 * 20


def test_closing_fills_gaps_only_on_valid_pixels() -> None:
    cls = np.full((30, 30), 2, np.uint8)
    cls[5:25, 5:25] = 1
    cls[14, 5:25] = 2         # a one-pixel crack through the block
    cls[10, 10] = 0           # nodata inside: must stay nodata
    out = morph_strip(cls, two_class(cls), PostProcess(closing_px=1), IDS2)
    assert (out[14, 6:24] == 1).all()
    assert out[10, 10] == 0
    assert (out[0:3] == 2).all()  # nothing added away from the class


def test_removed_pixels_take_the_next_most_probable_class() -> None:
    prob = np.zeros((3, 1, 4), np.float32)
    prob[:, 0, 0] = [0.5, 0.3, 0.2]
    prob[:, 0, 1] = [0.5, 0.1, 0.4]
    prob[:, 0, 2] = [0.2, 0.5, 0.3]
    prob[:, 0, 3] = [0.1, 0.2, 0.7]
    current = np.array([[1, 1, 2, 3]], np.uint8)
    out = next_best_class(prob, current, np.array([1, 2, 3]))
    assert out.tolist() == [[2, 3, 3, 2]]


@pytest.mark.parametrize("strip_px", [1, 7, 16, 200])
def test_morphology_does_not_depend_on_the_strip_size(strip_px: int) -> None:
    rng = np.random.default_rng(3)
    noisy = ndimage.zoom(rng.random((12, 15)), 5, order=1) + rng.random((60, 75)) * 0.3
    cls = np.where(noisy > 0.65, 1, 2).astype(np.uint8)
    cls[30:33, 40:50] = 0
    prob = two_class(cls)
    spec = PostProcess(opening_px=2, closing_px=1)
    whole = morph_strip(cls, prob, spec, IDS2)
    out, changed = run_pass(morph_pass, cls, prob, spec, IDS2, strip_px)
    np.testing.assert_array_equal(out, whole)
    assert changed == int((whole != cls).sum()) > 0


@pytest.mark.parametrize("strip_px", [1, 5, 13, 500])
def test_small_regions_match_whole_array_labelling(strip_px: int) -> None:
    rng = np.random.default_rng(5)
    cls = rng.integers(1, 4, size=(50, 61)).astype(np.uint8)
    cls = ndimage.median_filter(cls, size=3)  # regions of many sizes
    cls[20:25, 0:10] = 0
    prob = rng.random((3, 50, 61)).astype(np.float32)
    ids = np.array([1, 2, 3])
    expected = reference_regions(cls, prob, 12, ids)
    out, changed = run_pass(region_pass, cls, prob, PostProcess(min_region_px=12), ids,
                            strip_px)
    np.testing.assert_array_equal(out, expected)
    assert changed == int((expected != cls).sum()) > 0
    assert (out[20:25, 0:10] == 0).all()


def test_regions_joined_across_strips_including_diagonals() -> None:
    cls = np.full((30, 30), 2, np.uint8)
    for i in range(12):          # a diagonal line of 12 pixels: one 8-connected region
        cls[3 + i, 4 + i] = 1
    cls[25, 25] = 1              # a single pixel
    out, _ = run_pass(region_pass, cls, two_class(cls), PostProcess(min_region_px=10),
                      IDS2, strip_px=2)
    assert int((out[3:15, 4:16] == 1).sum()) == 12
    assert out[25, 25] == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="--opening -1"):
        PostProcess(opening_px=-1)
    with pytest.raises(ConfigError, match="--closing 500"):
        PostProcess(closing_px=500)
    with pytest.raises(ConfigError, match="negative"):
        PostProcess(min_region_px=-3)
    cls = np.ones((4, 4), np.uint8)
    with pytest.raises(ConfigError, match="Class id 7"):
        run_pass(morph_pass, cls, two_class(cls), PostProcess(opening_px=1, class_id=7),
                 IDS2, 4)


def test_min_area_in_pixels_projected_and_geographic() -> None:
    from affine import Affine

    utm = Grid(100, 100, Affine(10, 0, 500000, 0, -10, 5600000), CRS.from_epsg(32632).to_wkt())
    assert min_region_pixels(utm, 1000) == 10
    assert min_region_pixels(utm, 1001) == 11
    assert min_region_pixels(utm, 0) == 0
    # ~10 m pixels at 22.4 N (the Chittagong tiles): 9.25 m x 9.93 m = 91.8 m2
    geo = Grid(1000, 1000, Affine(8.983e-5, 0, 91.76, 0, -8.983e-5, 22.45),
               CRS.from_epsg(4326).to_wkt())
    assert min_region_pixels(geo, 918) == 10
    with pytest.raises(ConfigError, match="negative"):
        min_region_pixels(utm, -1)
    with pytest.raises(ConfigError, match="no CRS"):
        min_region_pixels(Grid(10, 10, utm.transform, ""), 100)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("postprocess")
    net = randomise(build_model("patch_cnn", PARAMS), seed=2)
    model = save_model(d / "model.tsm", net, metadata(net))
    data = smooth_random((4, 97, 111), seed=4)
    data[:, 30:40, 50:70] = 0
    raster = write_raster(d / "img.tif", data, nodata=0)
    return {"dir": d, "model": model, "raster": raster}


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def test_predict_with_postprocess_equals_the_whole_array_reference(predicted: dict) -> None:
    d, model = predicted["dir"], load_model(predicted["model"])
    spec = PostProcess(opening_px=1, closing_px=1, min_region_px=15, class_id=2)
    with RasterSource(predicted["raster"]) as src:
        raw = predict_raster(model, src, d / "raw", JsonLinesReporter(io.StringIO()),
                             device="cpu")
        res = predict_raster(model, src, d / "pp", JsonLinesReporter(io.StringIO()),
                             device="cpu", postprocess=spec)
    prob = read(d / "raw" / "probability.tif")
    np.testing.assert_array_equal(read(d / "pp" / "probability.tif"), prob)
    raw_cls = read(d / "raw" / "classes.tif")[0]
    ids = np.array([1, 2, 3])
    expected = reference_regions(morph_strip(raw_cls, prob, spec, ids), prob, 15, ids)
    got = read(d / "pp" / "classes.tif")[0]
    np.testing.assert_array_equal(got, expected)
    assert (got != raw_cls).any()
    assert (got[30:40, 50:70] == 0).all()
    changed = res["postprocess"]["changed_px"]
    assert changed["opened_closed_px"] > 0 and changed["small_region_px"] > 0
    shares = res["class_shares"]
    n_valid = int((got > 0).sum())
    assert shares["unsealed"] == pytest.approx(float((got == 2).sum()) / n_valid)
    assert raw["valid_pixels"] == res["valid_pixels"] == n_valid
    # no scratch file is left next to the outputs
    assert sorted(p.name for p in (d / "pp").iterdir()) == ["classes.tif", "probability.tif"]
    with rasterio.open(d / "pp" / "classes.tif") as ds:
        assert ds.overviews(1) == [] or ds.overviews(1)[0] >= 2
        assert ds.colormap(1)[2][:3] == (0x33, 0xA0, 0x2C)


def test_cli_predict_min_area_and_morph_class(predicted: dict, capsys) -> None:
    d = predicted["dir"]
    rc = main(["--quiet", "predict", "--model", str(predicted["model"]), "--raster",
               str(predicted["raster"]), "--out-dir", str(d / "cli"), "--opening", "1",
               "--morph-class", "water", "--min-area", "1500"])
    assert rc == 0
    assert (d / "cli" / "classes.tif").exists()
    rc = main(["--quiet", "predict", "--model", str(predicted["model"]), "--raster",
               str(predicted["raster"]), "--out-dir", str(d / "bad"), "--opening", "1",
               "--morph-class", "forest"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "'forest' is not a class" in err and "water" in err
    assert not (d / "bad" / "classes.tif").exists()
