"""Tests for terraseg.core.inference: dense streamed prediction, outputs, extents, cancel."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from helpers.patch_models import CLASSES, PARAMS, metadata, randomise, smooth_random
from helpers.synthetic import ORIGIN, PIXEL_M, pixel_box, write_polygons, write_raster
from rasterio.crs import CRS
from rasterio.windows import Window

from terraseg.core.dense import (
    DenseGeometry,
    patchwise_probabilities,
    predict_tile,
    tiles,
)
from terraseg.core.inference import (
    CLASS_NODATA,
    PROB_NODATA,
    predict_raster,
    resolve_region,
)
from terraseg.core.modelfile import LoadedModel, load_model, save_model
from terraseg.core.models.registry import build_model
from terraseg.core.network_prep import pick_device
from terraseg.core.normalise import BandStats
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import JsonLinesReporter, Reporter
from terraseg.protocol.errors import CancelledError, ConfigError, OutputError, RasterError

H, W = 117, 130
NODATA_ROWS, NODATA_COLS = slice(40, 56), slice(60, 83)
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inference")
    net = randomise(build_model("patch_cnn", PARAMS), seed=0)
    model = save_model(d / "model.tsm", net, metadata(net))
    data = smooth_random((4, H, W), seed=1)
    data[:, NODATA_ROWS, NODATA_COLS] = 0
    data[2, 5, 7] = 0  # a single nodata pixel in one band only
    raster = write_raster(d / "img.tif", data, nodata=0,
                          descriptions=("red", "green", "blue", "nir"))
    return {"dir": d, "model": model, "raster": raster}


@pytest.fixture(scope="module")
def model(files: dict[str, Path]) -> LoadedModel:
    return load_model(files["model"])


@pytest.fixture
def source(files: dict[str, Path]) -> RasterSource:
    with RasterSource(files["raster"]) as src:
        yield src


def quiet() -> JsonLinesReporter:
    return JsonLinesReporter(io.StringIO())


def read_tif(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        info = {"crs": ds.crs, "transform": ds.transform, "dtype": ds.dtypes[0],
                "count": ds.count, "nodata": ds.nodata, "descriptions": ds.descriptions,
                "shape": (ds.height, ds.width), "overviews": ds.overviews(1),
                "colormap": ds.colormap(1) if ds.dtypes[0] == "uint8" else None}
        return ds.read(), info


@pytest.fixture(scope="module")
def whole(files: dict[str, Path], model: LoadedModel) -> dict:
    """One whole-raster run shared by several tests."""
    out = files["dir"] / "whole"
    stream = io.StringIO()
    with RasterSource(files["raster"]) as src:
        result = predict_raster(model, src, out, JsonLinesReporter(stream), device="cpu")
        _, valid = src.read(Window(0, 0, W, H))
    prob, pinfo = read_tif(out / "probability.tif")
    cls, cinfo = read_tif(out / "classes.tif")
    return {"out": out, "result": result, "prob": prob, "pinfo": pinfo, "cls": cls[0],
            "cinfo": cinfo, "valid": valid,
            "events": [json.loads(x) for x in stream.getvalue().splitlines()]}


def all_entries(d: Path) -> list[str]:
    return sorted(os.listdir(d))


def open_files_under(d: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(d)):
            found.append(target)
    return found


# --------------------------------------------------------------------------- whole raster


def test_whole_raster_outputs(whole: dict, source: RasterSource) -> None:
    prob, pinfo, cls, cinfo, valid = (whole[k] for k in ("prob", "pinfo", "cls", "cinfo",
                                                         "valid"))
    expect_valid = np.ones((H, W), bool)
    expect_valid[NODATA_ROWS, NODATA_COLS] = False
    expect_valid[5, 7] = False
    np.testing.assert_array_equal(valid, expect_valid)
    for info in (pinfo, cinfo):
        assert info["crs"] == CRS.from_epsg(32632)
        assert info["transform"] == source.grid.transform
        assert info["shape"] == (H, W)
    assert pinfo["dtype"] == "float32" and pinfo["count"] == 3 and pinfo["nodata"] == -1.0
    assert pinfo["descriptions"] == ("probability sealed", "probability unsealed",
                                     "probability water")
    assert cinfo["dtype"] == "uint8" and cinfo["count"] == 1 and cinfo["nodata"] == 0
    assert cinfo["descriptions"] == ("class",)
    assert cinfo["colormap"][1] == (0xE3, 0x1A, 0x1C, 255)
    assert cinfo["colormap"][3] == (0x1F, 0x78, 0xB4, 255)
    # probabilities: sum to 1 where valid, -1 in every band where the input is nodata
    np.testing.assert_allclose(prob[:, valid].sum(0), 1.0, atol=1e-5)
    assert (prob[:, valid] >= 0).all() and (prob[:, valid] <= 1).all()
    assert (prob[:, ~valid] == PROB_NODATA).all()
    # classes: argmax + 1 where valid, 0 where nodata
    np.testing.assert_array_equal(cls[valid], prob[:, valid].argmax(0) + 1)
    assert (cls[~valid] == CLASS_NODATA).all()
    # a non-trivial map: every class occurs and probabilities vary
    assert set(np.unique(cls[valid]).tolist()) == {1, 2, 3}
    assert prob[:, valid].std(axis=1).min() > 0.05
    assert all_entries(whole["out"]) == ["classes.tif", "probability.tif"]


def test_whole_raster_result_and_events(whole: dict) -> None:
    res, cls, valid = whole["result"], whole["cls"], whole["valid"]
    assert res["probability"] == str(whole["out"] / "probability.tif")
    assert res["classes"] == str(whole["out"] / "classes.tif")
    assert res["window"] == [0, 0, W, H]
    assert res["device"] == "cpu"
    assert res["valid_pixels"] == int(valid.sum()) == H * W - 16 * 23 - 1
    for c in CLASSES:
        assert res["class_shares"][c["name"]] == pytest.approx(
            (cls == c["id"]).sum() / valid.sum(), abs=1e-12)
    ev = whole["events"]
    assert ev[0]["event"] == "log" and "130x117 px" in ev[0]["message"]
    prog = [e for e in ev if e["event"] == "progress"]
    assert all(e["stage"] == "predict" for e in prog)
    assert prog[-1]["fraction"] == 1.0 and prog[-1]["message"] == "building overviews"
    fr = [e["fraction"] for e in prog]
    assert fr == sorted(fr)


def test_dense_equals_patchwise(whole: dict, model: LoadedModel, source: RasterSource) -> None:
    stats = BandStats.from_dict(model.meta.normalisation.to_dict())
    region = Window(0, 0, 130, 115)  # block-aligned, reaches the edges and the nodata block
    ref = patchwise_probabilities(model.network, source, stats, 51, 5, region, batch_size=97)
    assert ref.shape == (3, 115, 130)
    valid = whole["valid"][:115]
    np.testing.assert_allclose(whole["prob"][:, :115][:, valid], ref[:, valid], atol=1e-4, rtol=0)
    # the dense tile itself (nodata pixels included) equals the cutouts everywhere
    geom = DenseGeometry.of(model.meta.geometry)
    inner = Window(15, 10, 100, 95)
    probs, tile_valid = predict_tile(model.network, source, stats, geom, inner,
                                     torch.device("cpu"))
    ref_inner = patchwise_probabilities(model.network, source, stats, 51, 5, inner)
    np.testing.assert_allclose(probs, ref_inner, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(tile_valid, whole["valid"][10:105, 15:115])


def test_dense_geometry(model: LoadedModel) -> None:
    geom = DenseGeometry.of(model.meta.geometry)
    assert (geom.stride_px, geom.context_px, geom.margin_px) == (5, 46, 23)


def test_window_alone_equals_whole_run(whole: dict, model: LoadedModel,
                                       source: RasterSource, tmp_path: Path) -> None:
    win = Window(7, 3, 61, 52)  # not aligned to the 5-px stride
    res = predict_raster(model, source, tmp_path, quiet(), window=win, device="cpu")
    assert res["window"] == [7, 3, 61, 52]
    prob, pinfo = read_tif(tmp_path / "probability.tif")
    cls, cinfo = read_tif(tmp_path / "classes.tif")
    assert pinfo["shape"] == cinfo["shape"] == (52, 61)
    assert pinfo["transform"] == source.grid.transform * Affine.translation(7, 3)
    assert pinfo["transform"].c == ORIGIN[0] + 70 and pinfo["transform"].f == ORIGIN[1] - 30
    np.testing.assert_allclose(prob, whole["prob"][:, 3:55, 7:68], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(cls[0], whole["cls"][3:55, 7:68])


def test_window_partly_outside_is_clipped(whole: dict, model: LoadedModel,
                                          source: RasterSource, tmp_path: Path) -> None:
    res = predict_raster(model, source, tmp_path, quiet(), window=Window(100, 90, 50, 50),
                         device="cpu")
    assert res["window"] == [100, 90, 30, 27]
    prob, info = read_tif(tmp_path / "probability.tif")
    assert info["shape"] == (27, 30)
    np.testing.assert_allclose(prob, whole["prob"][:, 90:, 100:], atol=1e-6, rtol=0)


def test_small_tiles_equal_one_big_tile(whole: dict, model: LoadedModel,
                                        source: RasterSource, tmp_path: Path) -> None:
    stream = io.StringIO()
    predict_raster(model, source, tmp_path, JsonLinesReporter(stream), tile_px=37,
                   device="cpu")  # 37 -> 35-px tiles (a multiple of the 5-px stride)
    prob, _ = read_tif(tmp_path / "probability.tif")
    cls, _ = read_tif(tmp_path / "classes.tif")
    np.testing.assert_allclose(prob, whole["prob"], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(cls[0], whole["cls"])
    ev = [json.loads(x) for x in stream.getvalue().splitlines()]
    n_tiles = 4 * 4  # ceil(117/35) x ceil(130/35)
    assert f"{n_tiles} tile(s)" in ev[0]["message"]
    assert len([e for e in ev if e["event"] == "progress"]) == n_tiles + 1


def test_overviews_on_larger_raster(model: LoadedModel, tmp_path: Path) -> None:
    data = smooth_random((4, 40, 300), seed=3)
    path = write_raster(tmp_path / "wide.tif", data, nodata=0)
    with RasterSource(path) as src:
        predict_raster(model, src, tmp_path / "out", quiet(), device="cpu")
    for name in ("probability.tif", "classes.tif"):
        with rasterio.open(tmp_path / "out" / name) as ds:
            assert ds.overviews(1) == [2]
            assert ds.width == 300 and ds.height == 40
    with rasterio.open(tmp_path / "out" / "classes.tif") as ds:
        full, ovr = ds.read(1), ds.read(1, out_shape=(20, 150))
    assert set(np.unique(ovr)) <= set(np.unique(full))  # nearest for classes


def test_tiles_cover_region_once() -> None:
    region = Window(7, 3, 61, 52)
    hits = np.zeros((60, 75), int)
    for tile, crop in tiles(region, 20, 5):
        assert tile.col_off % 5 == 0 and tile.row_off % 5 == 0
        assert tile.width % 5 == 0 and tile.height % 5 == 0
        assert tile.width <= 20 and tile.height <= 20
        assert crop.col_off >= tile.col_off and crop.row_off >= tile.row_off
        assert crop.col_off + crop.width <= tile.col_off + tile.width
        r, c = int(crop.row_off), int(crop.col_off)
        hits[r : r + int(crop.height), c : c + int(crop.width)] += 1
    expected = np.zeros_like(hits)
    expected[3:55, 7:68] = 1
    np.testing.assert_array_equal(hits, expected)
    # tile_px below the stride still gives stride-sized tiles
    assert {int(t.width) for t, _ in tiles(Window(0, 0, 10, 10), 3, 5)} == {5}


# --------------------------------------------------------------------------- outputs


def test_refuses_existing_outputs(model: LoadedModel, source: RasterSource,
                                  tmp_path: Path) -> None:
    (tmp_path / "probability.tif").write_bytes(b"old probabilities")
    (tmp_path / "classes.tif").write_bytes(b"old classes")
    with pytest.raises(OutputError) as exc:
        predict_raster(model, source, tmp_path, quiet(), device="cpu")
    assert "probability.tif" in exc.value.message and "--overwrite" in exc.value.hint
    assert (tmp_path / "probability.tif").read_bytes() == b"old probabilities"
    assert (tmp_path / "classes.tif").read_bytes() == b"old classes"
    assert all_entries(tmp_path) == ["classes.tif", "probability.tif"]
    predict_raster(model, source, tmp_path, quiet(), overwrite=True, device="cpu",
                   window=Window(0, 0, 10, 10))
    with rasterio.open(tmp_path / "classes.tif") as ds:
        assert ds.shape == (10, 10)
    assert all_entries(tmp_path) == ["classes.tif", "probability.tif"]


def test_preview(model: LoadedModel, source: RasterSource, tmp_path: Path) -> None:
    res = predict_raster(model, source, tmp_path, quiet(), preview=True, device="cpu",
                         window=Window(0, 0, 40, 30))
    assert res["preview"] == str(tmp_path / "preview.png")
    assert (tmp_path / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class CancelOnFirstProgress(JsonLinesReporter):
    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.progress_calls = 0

    def progress(self, fraction: float, stage: str, message: str = "") -> None:
        self.progress_calls += 1
        if self.progress_calls == 1:
            self.cancel()
        super().progress(fraction, stage, message)


def test_cancel_leaves_nothing(model: LoadedModel, source: RasterSource, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rep = CancelOnFirstProgress()
    with pytest.raises(CancelledError):
        predict_raster(model, source, out, rep, tile_px=20, device="cpu")
    assert rep.progress_calls == 1  # stopped right after the first tile
    assert all_entries(out) == []  # no outputs, no hidden temp files


def test_cancel_keeps_existing_outputs(model: LoadedModel, source: RasterSource,
                                       tmp_path: Path) -> None:
    (tmp_path / "probability.tif").write_bytes(b"keep me")
    with pytest.raises(CancelledError):
        predict_raster(model, source, tmp_path, CancelOnFirstProgress(), tile_px=20,
                       overwrite=True, device="cpu")
    assert all_entries(tmp_path) == ["probability.tif"]
    assert (tmp_path / "probability.tif").read_bytes() == b"keep me"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_cancel_closes_temp_files(model: LoadedModel, source: RasterSource,
                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(CancelledError) as excinfo:
        predict_raster(model, source, out, CancelOnFirstProgress(), tile_px=20, device="cpu")
    # the traceback (and with it the writers) is still alive here, as in a caller that
    # handles the error: no file in out_dir may still be open
    assert excinfo.value is not None
    assert open_files_under(out) == []


# --------------------------------------------------------------------------- extent layer


def test_extent_layer_in_wgs84(whole: dict, model: LoadedModel, source: RasterSource,
                               tmp_path: Path) -> None:
    layer = write_polygons(tmp_path / "extent.gpkg",
                           [(pixel_box(30, 20, 70, 60), "x", "y")], crs="EPSG:4326")
    res = predict_raster(model, source, tmp_path / "out", quiet(), extent_layer=str(layer),
                         device="cpu")
    assert res["window"] == [20, 30, 40, 40]
    prob, info = read_tif(tmp_path / "out" / "probability.tif")
    assert info["shape"] == (40, 40)
    assert info["transform"] == source.grid.transform * Affine.translation(20, 30)
    assert info["crs"] == CRS.from_epsg(32632)
    np.testing.assert_allclose(prob, whole["prob"][:, 30:70, 20:60], atol=1e-6, rtol=0)


def test_extent_layer_partly_outside_is_clipped(source: RasterSource, tmp_path: Path) -> None:
    layer = write_polygons(tmp_path / "big.gpkg",
                           [(pixel_box(-20, 100, 50, 200), "x", "y")], crs="EPSG:4326")
    assert resolve_region(source, extent_layer=str(layer)) == Window(100, 0, 30, 50)


def test_extent_layer_fractional_extent_is_covered(source: RasterSource,
                                                   tmp_path: Path) -> None:
    # columns 10.6 .. 40.0, rows 5.3 .. 30.0 (same CRS as the raster: no reprojection blur)
    x0, y0 = ORIGIN[0] + 10.6 * PIXEL_M, ORIGIN[1] - 5.3 * PIXEL_M
    x1, y1 = ORIGIN[0] + 40.0 * PIXEL_M, ORIGIN[1] - 30.0 * PIXEL_M
    geom = {"type": "Polygon",
            "coordinates": [[(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]]}
    layer = write_polygons(tmp_path / "frac.gpkg", [(geom, "x", "y")], crs="EPSG:32632")
    # pixels 10..39 and 5..29 intersect the extent
    assert resolve_region(source, extent_layer=str(layer)) == Window(10, 5, 30, 25)


def test_extent_layer_errors(source: RasterSource, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gpkg"
    bad.write_text("not a geopackage")
    with pytest.raises(RasterError, match="Cannot read extent layer"):
        resolve_region(source, extent_layer=str(bad))
    far = write_polygons(tmp_path / "far.gpkg",
                         [(pixel_box(500, 500, 510, 510), "x", "y")], crs="EPSG:4326")
    with pytest.raises(RasterError, match="does not overlap"):
        resolve_region(source, extent_layer=str(far))


# --------------------------------------------------------------------------- errors


def test_window_outside_raster(model: LoadedModel, source: RasterSource,
                               tmp_path: Path) -> None:
    with pytest.raises(RasterError, match="does not overlap"):
        predict_raster(model, source, tmp_path, quiet(), window=Window(200, 0, 10, 10),
                       device="cpu")
    assert all_entries(tmp_path) == []


def test_wrong_band_count_refused_before_work(model: LoadedModel, tmp_path: Path) -> None:
    path = write_raster(tmp_path / "three.tif", smooth_random((4, 20, 20), 0)[:3])
    with RasterSource(path) as src, pytest.raises(RasterError, match="expects 4 band"):
        predict_raster(model, src, tmp_path / "out", quiet(), device="cpu")
    assert not (tmp_path / "out").exists()


def test_unknown_precision_and_device(model: LoadedModel, source: RasterSource,
                                      tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="precision"):
        predict_raster(model, source, tmp_path, quiet(), precision="8", device="cpu")
    assert all_entries(tmp_path) == []
    with pytest.raises(ConfigError, match="device"):
        pick_device("quantum")
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(whole: dict, model: LoadedModel, source: RasterSource,
                          tmp_path: Path) -> None:
    try:
        res = predict_raster(model, source, tmp_path, quiet(), device="cuda")
    finally:
        model.network.to("cpu")  # the network is shared with the other tests
    assert res["device"] == "cuda"
    prob, _ = read_tif(tmp_path / "probability.tif")
    np.testing.assert_allclose(prob, whole["prob"], atol=1e-4, rtol=0)


def test_reporter_base_class_works(model: LoadedModel, source: RasterSource,
                                   tmp_path: Path) -> None:
    res = predict_raster(model, source, tmp_path, Reporter(), window=Window(0, 0, 5, 5),
                         device="cpu")
    assert res["valid_pixels"] == 25
