"""Tests for terraseg.core.features: exact channel values on tiny arrays, roles, context."""

from __future__ import annotations

import json

import numpy as np
import pytest

from terraseg.core.features import (
    DEFAULT_PARAMS,
    FEATURES,
    FeatureSpec,
    check_features,
    compute_features,
    context_px,
    fit_features,
    required_roles,
)
from terraseg.protocol.errors import ConfigError, InputError

S2 = ["blue", "green", "red", "nir", "swir1", "swir2"]


def image(h: int = 2, w: int = 3, **bands: list | np.ndarray) -> np.ndarray:
    """(C, H, W) float32 stack in S2 order; unnamed bands are 1."""
    out = np.ones((len(S2), h, w), dtype=np.float32)
    for name, v in bands.items():
        out[S2.index(name)] = np.asarray(v, dtype=np.float32).reshape(h, w)
    return out


def feats(names: str, data: np.ndarray, valid: np.ndarray | None = None,
          band_names: list[str] = S2, **params: object) -> np.ndarray:
    if valid is None:
        valid = np.ones(data.shape[1:], dtype=bool)
    out = compute_features(data, valid, band_names, FeatureSpec.parse(names, **params))
    assert out.dtype == np.float32 and out.shape[1:] == data.shape[1:]
    return out


# ---- indices ------------------------------------------------------------------------------

def test_ndvi_values_and_zero_denominator() -> None:
    red = [[10, 30, 0], [5, -5, -1]]
    nir = [[30, 10, 0], [5, 5, 3]]
    out = feats("ndvi", image(red=red, nir=nir))
    # 20/40, -20/40, 0/0 -> 0, 0/10, 10/0 -> 0, 4/2 -> clipped to 1
    np.testing.assert_array_equal(out[0], [[0.5, -0.5, 0.0], [0.0, 0.0, 1.0]])


def test_indices_use_their_roles() -> None:
    data = image(1, 1, blue=[7], green=[60], red=[20], nir=[100], swir1=[50], swir2=[25])
    out = feats("ndwi,nbr,ndmi,ndvi", data)
    np.testing.assert_allclose(out[:, 0, 0], [(60 - 100) / 160, 75 / 125, 50 / 150, 80 / 120],
                               rtol=1e-6)


def test_band_names_are_case_insensitive_and_order_free() -> None:
    data = np.array([[[100.0]], [[20.0]]], dtype=np.float32)
    out = feats("ndvi", data, band_names=["NIR", "Red"])
    assert out[0, 0, 0] == pytest.approx(80 / 120)


def test_invalid_pixels_are_zero_in_every_channel() -> None:
    rng = np.random.default_rng(0)
    data = rng.uniform(1, 100, (len(S2), 12, 12)).astype(np.float32)
    valid = np.ones((12, 12), dtype=bool)
    valid[3:6, 4:9] = False
    data[:, ~valid] = -9999  # nodata value must not leak into anything
    names = ",".join(FEATURES)
    out = feats(names, data, valid)
    assert out.shape[0] == len(FeatureSpec.parse(names).channel_names) == 13
    assert (out[:, ~valid] == 0).all()
    assert np.isfinite(out).all()
    clean = data.copy()
    clean[:, ~valid] = 50.0  # any fill gives the same channels (min-max, gray, ...)
    np.testing.assert_array_equal(feats("ndvi,gray,rgb_minmax", clean, valid),
                                  feats("ndvi,gray,rgb_minmax", data, valid))


# ---- roles --------------------------------------------------------------------------------

def test_missing_role_message() -> None:
    spec = FeatureSpec.parse("ndvi")
    with pytest.raises(InputError) as e:
        check_features(spec, ["blue", "green", "red"])
    assert str(e.value) == ("NDVI needs bands 'red' and 'nir'; the band mapping has "
                            "['blue', 'green', 'red']. Fix: map them, e.g. "
                            "--bands blue=1,green=2,red=3,nir=4")
    with pytest.raises(InputError) as e:
        compute_features(np.zeros((2, 2, 2), np.float32), np.ones((2, 2), bool),
                         ["nir", "band_2"], FeatureSpec.parse("gray"))
    assert e.value.message.startswith("Gray needs bands 'red', 'green' and 'blue';")
    check_features(FeatureSpec.parse("ndvi,nbr"), ["red", "nir", "swir2"])  # no error


def test_duplicate_role_is_refused() -> None:
    with pytest.raises(InputError):
        check_features(FeatureSpec.parse("ndvi"), ["red", "nir", "Red"])


def test_required_roles() -> None:
    assert required_roles("ndvi") == ("red", "nir")
    assert required_roles("nbr") == ("nir", "swir2")
    assert required_roles("ndmi") == ("nir", "swir1")
    assert required_roles("canny") == ("red", "green", "blue")
    with pytest.raises(ConfigError):
        required_roles("evi")


def test_shape_errors() -> None:
    spec = FeatureSpec.parse("gray")
    with pytest.raises(InputError):
        compute_features(np.zeros((3, 4, 4), np.float32), np.ones((4, 4), bool), S2, spec)
    with pytest.raises(InputError):
        compute_features(image(4, 4), np.ones((4, 5), bool), S2, spec)


# ---- colour channels ----------------------------------------------------------------------

def test_gray_is_rgb_mean() -> None:
    out = feats("gray", image(1, 2, red=[3, 30], green=[6, 0], blue=[9, 3]))
    np.testing.assert_allclose(out[0], [[6.0, 11.0]])


def test_rgb_minmax_per_call_over_valid_pixels() -> None:
    red = [[10, 20, 30], [40, 50, 1000]]
    green = [[5, 5, 5], [5, 5, 5]]
    valid = np.array([[True, True, True], [True, True, False]])
    out = feats("rgb_minmax", image(red=red, green=green, blue=[[0, 1, 2], [3, 4, 5]]), valid)
    np.testing.assert_allclose(out[0], [[0, 0.25, 0.5], [0.75, 1, 0]])  # 1000 is invalid
    np.testing.assert_array_equal(out[1], 0)  # constant band
    assert out[2].min() == 0 and out[2][valid].max() == 1
    assert ((out >= 0) & (out <= 1)).all()


def test_rgb_minmax_fixed_stats_clip() -> None:
    out = feats("rgb_minmax", image(1, 3, red=[0, 50, 200]), rgb_min=[0, 0, 0],
                rgb_max=[100, 100, 100])
    np.testing.assert_allclose(out[0], [[0, 0.5, 1]])


# ---- spatial channels ---------------------------------------------------------------------

def test_sobel_of_ramps() -> None:
    ramp = np.arange(8, dtype=np.float32)
    data = image(6, 8, red=np.tile(3 * ramp, (6, 1)), green=np.tile(3 * ramp, (6, 1)),
                 blue=np.tile(3 * ramp, (6, 1)))  # gray = 3x, slope 3 along columns
    sx, sy = feats("sobel", data)
    np.testing.assert_allclose(sx[:, 1:-1], 8 * 3)
    np.testing.assert_allclose(sy, 0)
    col = np.tile(ramp[:6, None], (1, 8))  # unit ramp along rows (south)
    sx, sy = feats("sobel", image(6, 8, red=col, green=col, blue=col))
    np.testing.assert_allclose(sy[1:-1], 8)
    np.testing.assert_allclose(sx, 0)


def test_gaussian_keeps_constant_image() -> None:
    out = feats("gaussian", image(7, 9, red=np.full((7, 9), 42), green=np.full((7, 9), 42),
                                  blue=np.full((7, 9), 42)), gaussian_sigma=2.5)
    np.testing.assert_allclose(out[0], 42, rtol=1e-6)


def test_median_removes_salt_pixel() -> None:
    gray = np.full((7, 7), 5.0)
    gray[3, 3] = 1000
    out = feats("median", image(7, 7, red=gray, green=gray, blue=gray), median_size=3)
    np.testing.assert_array_equal(out[0], 5)


def step_image(h: int, w: int, col: int, lo: float = 0.0, hi: float = 90.0,
               axis: int = 1) -> np.ndarray:
    g = np.full((h, w), lo, dtype=np.float32)
    if axis == 1:
        g[:, col:] = hi
    else:
        g[col:, :] = hi
    return image(h, w, red=g, green=g, blue=g)


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 90.0), (90.0, 0.0)])
def test_canny_finds_step_edge(lo: float, hi: float) -> None:
    out = feats("canny", step_image(10, 12, 5, lo, hi))[0]
    expected = np.zeros((10, 12))
    expected[:, 5] = 1  # the first column past the step, every row, nothing in flat parts
    np.testing.assert_array_equal(out, expected)
    fixed = feats("canny", step_image(10, 12, 5, lo, hi), canny_low=1.0, canny_high=5.0)
    np.testing.assert_array_equal(fixed[0], expected)


def test_canny_rows_flat_and_nodata() -> None:
    out = feats("canny", step_image(12, 9, 7, axis=0))[0]
    expected = np.zeros((12, 9))
    expected[7] = 1
    np.testing.assert_array_equal(out, expected)
    flat = image(9, 9, red=np.full((9, 9), 7.0), green=np.full((9, 9), 7.0),
                 blue=np.full((9, 9), 7.0))
    valid = np.ones((9, 9), bool)
    valid[:, 6:] = False  # nodata edge: filled with the nearest value, no false edge
    assert feats("canny", flat)[0].sum() == 0
    assert feats("canny", flat, valid)[0].sum() == 0
    # thresholds above the step's smoothed gradient (28.9 gray units per pixel): no edge
    assert feats("canny", step_image(10, 12, 5), canny_low=60.0, canny_high=70.0).sum() == 0


def test_canny_hysteresis_keeps_weak_pixels_linked_to_strong() -> None:
    g = np.zeros((10, 14), dtype=np.float32)
    g[:, 7:] = np.linspace(20, 90, 10)[:, None]  # edge contrast grows down the rows
    data = image(10, 14, red=g, green=g, blue=g)
    # magnitudes along the edge (column 7) grow from 8.0 to 27.4 down the rows
    strong_only = feats("canny", data, canny_low=20.0, canny_high=20.0)[0]
    np.testing.assert_array_equal(strong_only[:, 7], [0] * 6 + [1] * 4)
    assert strong_only.sum() == 4
    linked = feats("canny", data, canny_low=8.0, canny_high=20.0)[0]
    assert linked[:, 7].sum() == 10 and linked.sum() == 10
    isolated = feats("canny", data, canny_low=8.0, canny_high=1e6)[0]
    assert isolated.sum() == 0  # weak everywhere, nothing strong


# ---- context ------------------------------------------------------------------------------

def test_context_px_values() -> None:
    assert context_px(FeatureSpec.parse(None)) == 0
    assert context_px(FeatureSpec.parse("ndvi,ndwi,nbr,ndmi,gray,rgb_minmax")) == 0
    assert context_px(FeatureSpec.parse("sobel")) == 1
    assert context_px(FeatureSpec.parse("gaussian")) == 5  # int(3 * 1.7 + 0.5)
    assert context_px(FeatureSpec.parse("gaussian", gaussian_sigma=2.0)) == 6
    assert context_px(FeatureSpec.parse("median")) == 4  # 9 // 2
    assert context_px(FeatureSpec.parse("median", median_size=3)) == 1
    assert context_px(FeatureSpec.parse("canny")) == 5  # int(3 * 1 + 0.5) + 2
    assert context_px(FeatureSpec.parse("canny", canny_sigma=2.0)) == 8
    assert context_px(FeatureSpec.parse("sobel,median,gaussian", gaussian_sigma=3.0)) == 9


@pytest.mark.parametrize("names", ["gaussian", "median", "sobel", "canny", "gray,ndvi"])
def test_tile_with_context_matches_whole_image(names: str) -> None:
    rng = np.random.default_rng(1)
    base = ndimage_blocks(rng, 40, 44)
    data = image(40, 44, red=base, green=base * 0.5, blue=base + 3, nir=base[::-1])
    spec = FeatureSpec.parse(names)
    if "canny" in names:  # thresholds pinned on the whole image, as in the model file
        spec = fit_features(spec, data, np.ones((40, 44), bool), S2)
    whole = compute_features(data, np.ones((40, 44), bool), S2, spec)
    c = context_px(spec)
    r0, r1, c0, c1 = 12, 27, 10, 30
    tile = data[:, r0 - c : r1 + c, c0 - c : c1 + c]
    part = compute_features(tile, np.ones(tile.shape[1:], bool), S2, spec)
    np.testing.assert_allclose(part[:, c : c + r1 - r0, c : c + c1 - c0],
                               whole[:, r0:r1, c0:c1], rtol=1e-5, atol=1e-4)
    if c and "canny" not in names:  # less context changes the border pixels (0/1 canny
        # edges may survive it)
        short = data[:, r0 - c + 1 : r1 + c - 1, c0 - c + 1 : c1 + c - 1]
        part = compute_features(short, np.ones(short.shape[1:], bool), S2, spec)
        assert not np.allclose(part[:, c - 1 : c - 1 + r1 - r0, c - 1 : c - 1 + c1 - c0],
                               whole[:, r0:r1, c0:c1], rtol=1e-5, atol=1e-4)


def ndimage_blocks(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Piecewise-constant blocks plus noise: edges for canny, texture for the filters."""
    blocks = rng.uniform(0, 100, (h // 4 + 1, w // 4 + 1)).repeat(4, 0).repeat(4, 1)[:h, :w]
    return (blocks + rng.normal(0, 2, (h, w))).astype(np.float32)


def test_fit_features_pins_data_dependent_params() -> None:
    rng = np.random.default_rng(2)
    base = ndimage_blocks(rng, 24, 24)
    data = image(24, 24, red=base, green=base + 10, blue=base * 2)
    valid = np.ones((24, 24), bool)
    spec = fit_features(FeatureSpec.parse("rgb_minmax,canny"), data, valid, S2)
    assert spec.params["rgb_min"] == pytest.approx([base.min(), base.min() + 10,
                                                    2 * base.min()], rel=1e-6)
    assert 0 < spec.params["canny_low"] <= spec.params["canny_high"]
    whole = compute_features(data, valid, S2, spec)
    np.testing.assert_array_equal(whole, feats("rgb_minmax,canny", data))  # same as per call
    tile = data[:, 4:14, 6:20]
    part = compute_features(tile, np.ones((10, 14), bool), S2, spec)
    np.testing.assert_allclose(part[:3], whole[:3, 4:14, 6:20], rtol=1e-6)
    again = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


# ---- spec ---------------------------------------------------------------------------------

def test_spec_round_trip_and_channels() -> None:
    spec = FeatureSpec.parse("NDVI, gray+sobel,canny", median_size=5)
    assert spec.names == ("ndvi", "gray", "sobel", "canny")
    assert spec.channel_names == ["ndvi", "gray", "sobel_x", "sobel_y", "canny"]
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["params"] == {k: DEFAULT_PARAMS[k] for k in
                           ("canny_sigma", "canny_low", "canny_high", "canny_low_quantile",
                            "canny_high_quantile")}
    assert FeatureSpec.from_dict(d) == spec
    assert FeatureSpec.parse("none").names == () and FeatureSpec.parse("").names == ()
    out = compute_features(image(3, 3), np.ones((3, 3), bool), S2, FeatureSpec())
    assert out.shape == (0, 3, 3)
    numpy_params = FeatureSpec.parse("median,gaussian", median_size=np.int64(5),
                                     gaussian_sigma=np.float32(1.5))
    assert json.dumps(numpy_params.to_dict())  # numpy scalars stored as plain numbers
    assert numpy_params.params == {"median_size": 5, "gaussian_sigma": 1.5}


def test_unknown_feature_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as e:
        FeatureSpec.parse("ndvi,evi")
    assert "'evi'" in e.value.message
    for name in FEATURES:
        assert name in e.value.hint


@pytest.mark.parametrize("params", [{"median_size": 4}, {"median_size": 0},
                                    {"median_size": 2.0}, {"gaussian_sigma": 0},
                                    {"gaussian_sigma": -1.0}, {"canny_low": 5.0},
                                    {"canny_low": 5.0, "canny_high": 1.0},
                                    {"canny_low_quantile": 0.95}, {"rgb_min": [0, 0, 0]},
                                    {"rgb_min": [0, 0], "rgb_max": [1, 1]}, {"sigma": 1.0},
                                    {"gaussian_sigma": True}, {"canny_sigma": "2"}])
def test_bad_params(params: dict) -> None:
    with pytest.raises(ConfigError) as e:
        FeatureSpec.parse("median,gaussian,canny,rgb_minmax", **params)
    assert e.value.hint


def test_duplicate_feature() -> None:
    with pytest.raises(ConfigError):
        FeatureSpec.parse("gray,ndvi,gray")
