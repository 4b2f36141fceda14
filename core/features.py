"""Engineered input channels computed from the mapped bands: a registry of switchable features.

Each feature reads bands by role (the names of the band mapping: "red", "nir", "swir1",
...) from raw raster values and appends one or more float32 channels. The selection and
its parameters form a :class:`FeatureSpec`, recorded in the model file so prediction
recomputes exactly the same channels. Invalid (nodata) pixels get 0 in every channel.

Features (seed 001: the landslide study's feature engineering):

* Indices, (a - b) / (a + b), 0 where a + b == 0 or the pixel is invalid, clipped to
  [-1, 1]: ndvi (nir, red), ndwi (green, nir; McFeeters), nbr (nir, swir2),
  ndmi (nir, swir1; Sentinel-2 (B8 - B11) / (B8 + B11), the study's "VI").
* gray: plain mean (red + green + blue) / 3 as in the study (not luminance weights).
* rgb_minmax: red, green, blue each scaled to [0, 1] by its min and max over valid pixels.
* gaussian / median: blurred gray (sigma ``gaussian_sigma``; odd window ``median_size``).
* sobel: scipy's Sobel of gray along x (columns, east) and y (rows, south); a unit ramp
  gives 8 (the kernel's smoothing sum 4 times the central difference 2).
* canny: 0/1 edges of gray: Gaussian (``canny_sigma``), Sobel magnitude / 8 (gray units
  per pixel), non-maximum suppression, double threshold and hysteresis.

Spatial features depend on neighbours. Filters use scipy's "reflect" border mode, so a
pixel's value is exact (independent of the tile) when the tile holds :func:`context_px`
pixels of real image around it: gaussian int(3 sigma + 0.5), median size // 2, sobel 1,
canny int(3 sigma + 0.5) + 2 (smoothing, Sobel, suppression). Inference must read tiles
with at least that margin. Two things are not local and are pinned by :func:`fit_features`:
rgb_minmax's min/max (per call unless ``rgb_min``/``rgb_max`` are set) and canny's
thresholds (quantiles of the magnitude per call unless ``canny_low``/``canny_high`` are
set). Canny's hysteresis follows edge chains of any length; near tile borders a weak
chain whose strong pixel lies beyond the context can differ.
Invalid pixels are filled with the nearest valid gray value before filtering.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from terraseg.protocol.errors import ConfigError, InputError

RGB = ("red", "green", "blue")
TRUNCATE = 3.0  # Gaussian kernels reach int(3 sigma + 0.5) pixels

DEFAULT_PARAMS: dict[str, Any] = {
    "gaussian_sigma": 1.7,  # cv2's sigma for a 9x9 kernel, near the study's k=10
    "median_size": 9,  # odd window near the study's k=10
    "canny_sigma": 1.0,
    "canny_low": None,  # absolute, gray units per pixel; None: quantile below
    "canny_high": None,
    "canny_low_quantile": 0.8,
    "canny_high_quantile": 0.9,
    "rgb_min": None,  # [red, green, blue] raw minima; None: per call over valid pixels
    "rgb_max": None,
}

Bands = dict[str, np.ndarray]
Params = dict[str, Any]


@dataclass(frozen=True)
class Feature:
    """One switchable feature.

    Attributes:
        title: Name in messages ("NDVI").
        roles: Band roles it reads.
        channels: Names of the channels it appends.
        params: Keys of DEFAULT_PARAMS it uses.
        compute: (bands by role as float64, valid, params) -> one (H, W) array per channel.
        context: params -> context radius in pixels.
    """

    title: str
    roles: tuple[str, ...]
    channels: tuple[str, ...]
    params: tuple[str, ...]
    compute: Callable[[Bands, np.ndarray, Params], list[np.ndarray]]
    context: Callable[[Params], int] = lambda _p: 0


def _ratio(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b) clipped to [-1, 1]; 0 where a + b == 0, not finite or invalid."""
    den = a + b
    ok = valid & (den != 0) & np.isfinite(den) & np.isfinite(a - b)
    out = np.zeros(a.shape, dtype=np.float64)
    np.divide(a - b, den, out=out, where=ok)
    return np.clip(out, -1.0, 1.0)


def _index(a: str, b: str) -> Callable[[Bands, np.ndarray, Params], list[np.ndarray]]:
    return lambda bands, valid, _p: [_ratio(bands[a], bands[b], valid)]


def _gray(bands: Bands, valid: np.ndarray) -> np.ndarray:
    """Mean of red, green, blue; invalid pixels filled with the nearest valid value."""
    g = (bands["red"] + bands["green"] + bands["blue"]) / 3.0
    good = valid & np.isfinite(g)
    if not good.any():
        return np.zeros_like(g)
    if good.all():
        return g
    idx = ndimage.distance_transform_edt(~good, return_distances=False, return_indices=True)
    return g[tuple(idx)]


def _gauss_radius(sigma: float) -> int:
    return int(TRUNCATE * float(sigma) + 0.5)


def _gray_feature(bands: Bands, valid: np.ndarray, _p: Params) -> list[np.ndarray]:
    return [_gray(bands, valid)]


def _minmax(bands: Bands, valid: np.ndarray, p: Params) -> list[np.ndarray]:
    out = []
    for i, role in enumerate(RGB):
        x = bands[role]
        good = valid & np.isfinite(x)
        if p["rgb_min"] is not None:
            lo, hi = float(p["rgb_min"][i]), float(p["rgb_max"][i])
        elif good.any():
            lo, hi = float(x[good].min()), float(x[good].max())
        else:
            lo = hi = 0.0
        y = np.zeros(x.shape, dtype=np.float64)
        if hi > lo:
            np.divide(x - lo, hi - lo, out=y, where=good)
        out.append(np.clip(y, 0.0, 1.0))
    return out


def _gaussian(bands: Bands, valid: np.ndarray, p: Params) -> list[np.ndarray]:
    return [ndimage.gaussian_filter(_gray(bands, valid), float(p["gaussian_sigma"]),
                                    mode="reflect", truncate=TRUNCATE)]


def _median(bands: Bands, valid: np.ndarray, p: Params) -> list[np.ndarray]:
    return [ndimage.median_filter(_gray(bands, valid), size=int(p["median_size"]),
                                  mode="reflect")]


def _sobel(bands: Bands, valid: np.ndarray, _p: Params) -> list[np.ndarray]:
    g = _gray(bands, valid)
    return [ndimage.sobel(g, axis=1, mode="reflect"), ndimage.sobel(g, axis=0, mode="reflect")]


# neighbour offsets (drow, dcol) along the gradient, by direction bin of atan2(gy, gx) mod pi
_NMS_OFFSETS = ((0, 1), (1, 1), (1, 0), (1, -1))


def canny_magnitude(gray: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed Sobel gradient magnitude (gray units per pixel) and non-maximum mask.

    A pixel survives suppression when its magnitude is > the neighbour ahead along the
    quantised gradient direction and >= the one behind (equal up to a relative 1e-9), so
    a symmetric step keeps one pixel: the first one past the step in +x / +y.

    Shape:
        gray: (H, W) -> magnitude (H, W) float64, maxima (H, W) bool.
    """
    s = ndimage.gaussian_filter(gray, sigma, mode="reflect", truncate=TRUNCATE)
    gx = ndimage.sobel(s, axis=1, mode="reflect") / 8.0
    gy = ndimage.sobel(s, axis=0, mode="reflect") / 8.0
    mag = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    direction = np.floor((angle + np.pi / 8) / (np.pi / 4)).astype(int) % 4
    h, w = mag.shape
    padded = np.pad(mag, 1, mode="edge")
    tol = 1e-9 * mag  # ties up to rounding (a symmetric step) count as equal
    maxima = np.zeros(mag.shape, dtype=bool)
    for d, (dr, dc) in enumerate(_NMS_OFFSETS):
        ahead = padded[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
        behind = padded[1 - dr : 1 - dr + h, 1 - dc : 1 - dc + w]
        maxima |= (direction == d) & (mag > ahead + tol) & (mag >= behind - tol)
    return mag, maxima


def canny_thresholds(mag: np.ndarray, valid: np.ndarray, p: Params) -> tuple[float, float]:
    """(low, high) from canny_low/high, else from quantiles of the magnitude on valid pixels.

    Both are at least 1e-6 of the magnitude scale, so flat areas (rounding noise) give no
    edges.
    """
    vals = mag[valid & np.isfinite(mag)]
    floor = 1e-9 + 1e-6 * (float(vals.max()) if vals.size else 0.0)
    if p["canny_low"] is not None:
        low, high = float(p["canny_low"]), float(p["canny_high"])
    elif vals.size:
        low = float(np.quantile(vals, p["canny_low_quantile"]))
        high = float(np.quantile(vals, p["canny_high_quantile"]))
    else:
        low = high = floor
    return max(low, floor), max(high, floor)


def _canny(bands: Bands, valid: np.ndarray, p: Params) -> list[np.ndarray]:
    mag, maxima = canny_magnitude(_gray(bands, valid), float(p["canny_sigma"]))
    low, high = canny_thresholds(mag, valid, p)
    weak = maxima & (mag >= low) & valid
    strong = weak & (mag >= high)
    labels, n = ndimage.label(weak, structure=np.ones((3, 3), dtype=bool))
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(labels[strong])] = True
    keep[0] = False
    return [keep[labels].astype(np.float64)]


FEATURES: dict[str, Feature] = {
    "ndvi": Feature("NDVI", ("red", "nir"), ("ndvi",), (), _index("nir", "red")),
    "ndwi": Feature("NDWI", ("green", "nir"), ("ndwi",), (), _index("green", "nir")),
    "nbr": Feature("NBR", ("nir", "swir2"), ("nbr",), (), _index("nir", "swir2")),
    "ndmi": Feature("NDMI", ("nir", "swir1"), ("ndmi",), (), _index("nir", "swir1")),
    "gray": Feature("Gray", RGB, ("gray",), (), _gray_feature),
    "rgb_minmax": Feature("Min-max RGB", RGB, ("red_minmax", "green_minmax", "blue_minmax"),
                          ("rgb_min", "rgb_max"), _minmax),
    "gaussian": Feature("Gaussian blur", RGB, ("gray_gaussian",), ("gaussian_sigma",),
                        _gaussian, lambda p: _gauss_radius(p["gaussian_sigma"])),
    "median": Feature("Median blur", RGB, ("gray_median",), ("median_size",), _median,
                      lambda p: int(p["median_size"]) // 2),
    "sobel": Feature("Sobel", RGB, ("sobel_x", "sobel_y"), (), _sobel, lambda _p: 1),
    "canny": Feature("Canny", RGB, ("canny",),
                     ("canny_sigma", "canny_low", "canny_high", "canny_low_quantile",
                      "canny_high_quantile"),
                     _canny, lambda p: _gauss_radius(p["canny_sigma"]) + 2),
}


def _check_params(names: tuple[str, ...], params: Params) -> Params:
    """Validated parameters of the selected features, defaults filled in."""
    used = [k for n in names for k in FEATURES[n].params]
    for key in params:
        if key not in DEFAULT_PARAMS:
            raise ConfigError(f"Unknown feature parameter '{key}'.",
                              f"Choose from: {', '.join(DEFAULT_PARAMS)}.")
    p = {k: params.get(k, DEFAULT_PARAMS[k]) for k in dict.fromkeys(used)}

    def positive(key: str) -> None:
        v = p.get(key)
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)
        if v is not None and not (ok and v > 0):
            raise ConfigError(f"Feature parameter {key}={v!r} must be a positive number.",
                              f"Set {key} to e.g. {DEFAULT_PARAMS[key]}.")

    for key in ("gaussian_sigma", "canny_sigma", "canny_low", "canny_high"):
        positive(key)
        if p.get(key) is not None:
            p[key] = float(p[key])  # JSON-ready
    if "median_size" in p:
        m = p["median_size"]
        if not (isinstance(m, numbers.Integral) and not isinstance(m, bool) and m >= 1
                and m % 2 == 1):
            raise ConfigError(f"median_size={m!r} must be an odd whole number of pixels.",
                              "Use e.g. median_size=9.")
        p["median_size"] = int(m)
    if "canny_low" in p:
        lo, hi = p["canny_low"], p["canny_high"]
        if (lo is None) != (hi is None) or (lo is not None and lo > hi):
            raise ConfigError(f"Canny thresholds low={lo}, high={hi} are not a pair with "
                              "low <= high.", "Set both canny_low and canny_high, or neither.")
        ql, qh = p["canny_low_quantile"], p["canny_high_quantile"]
        if not (0 <= ql <= qh <= 1):
            raise ConfigError(f"Canny quantiles {ql}, {qh} must satisfy 0 <= low <= high <= 1.",
                              "Use e.g. 0.8 and 0.9.")
    if "rgb_min" in p:
        lo, hi = p["rgb_min"], p["rgb_max"]
        if (lo is None) != (hi is None):
            raise ConfigError("rgb_min and rgb_max must be set together.",
                              "Set both (three values each) or neither.")
        if lo is not None:
            if len(lo) != 3 or len(hi) != 3:
                raise ConfigError(f"rgb_min/rgb_max need 3 values each, got {lo}, {hi}.",
                                  "Give [red, green, blue] minima and maxima.")
            p["rgb_min"], p["rgb_max"] = [float(v) for v in lo], [float(v) for v in hi]
    return p


@dataclass(frozen=True)
class FeatureSpec:
    """Which engineered channels to append, with their parameters (recorded in the model).

    Attributes:
        names: Feature names in channel order (see FEATURES); empty = none.
        params: Parameters of the selected features; missing ones take DEFAULT_PARAMS.
    """

    names: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = tuple(str(n).strip().lower() for n in self.names)
        for n in names:
            if n not in FEATURES:
                raise ConfigError(f"Unknown feature '{n}'.",
                                  f"Choose from: {', '.join(FEATURES)} (or none).")
        if len(set(names)) != len(names):
            raise ConfigError(f"A feature appears twice in {list(names)}.", "List each once.")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "params", _check_params(names, dict(self.params)))

    @staticmethod
    def parse(spec: str | None, **params: Any) -> FeatureSpec:
        """Parse "ndvi,gray,gaussian" ("none" or "" = no features)."""
        if spec is None or spec.strip().lower() in ("", "none"):
            return FeatureSpec((), params)
        return FeatureSpec(tuple(n for n in spec.replace("+", ",").split(",") if n.strip()),
                           params)

    @property
    def channel_names(self) -> list[str]:
        """Names of the appended channels, in order."""
        return [c for n in self.names for c in FEATURES[n].channels]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with every used parameter spelled out."""
        return {"names": list(self.names), "params": dict(self.params)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`to_dict` (validated)."""
        return FeatureSpec(tuple(d.get("names", ())), dict(d.get("params", {})))


def required_roles(name: str) -> tuple[str, ...]:
    """Band roles a feature reads, e.g. ("red", "nir") for "ndvi"."""
    if name not in FEATURES:
        raise ConfigError(f"Unknown feature '{name}'.", f"Choose from: {', '.join(FEATURES)}.")
    return FEATURES[name].roles


def _quote_and(items: Sequence[str]) -> str:
    q = [f"'{s}'" for s in items]
    return q[0] if len(q) == 1 else ", ".join(q[:-1]) + " and " + q[-1]


def check_features(spec: FeatureSpec, band_names: Sequence[str]) -> None:
    """Refuse features whose band roles are missing from the band mapping.

    Raises:
        InputError: A role is missing or named twice, e.g. "NDVI needs bands 'red' and
            'nir'; the band mapping has ['blue', 'green', 'red']. Fix: map them, e.g.
            --bands blue=1,green=2,red=3,nir=4".
    """
    names = [str(b).lower() for b in band_names]
    for n in spec.names:
        feat = FEATURES[n]
        for role in feat.roles:
            if names.count(role) > 1:
                raise InputError(f"{feat.title} needs band '{role}', which the band mapping "
                                 f"names {names.count(role)} times: {list(band_names)}.",
                                 "Give each band a different name in --bands.")
        missing = [r for r in feat.roles if r not in names]
        if missing:
            example = [f"{b}={i + 1}" for i, b in enumerate(band_names)]
            example += [f"{r}={len(names) + j + 1}" for j, r in enumerate(missing)]
            raise InputError(f"{feat.title} needs bands {_quote_and(feat.roles)}; "
                             f"the band mapping has {list(band_names)}.",
                             f"map them, e.g. --bands {','.join(example)}")


def context_px(spec: FeatureSpec) -> int:
    """Pixels of image context around a tile that make its spatial features exact."""
    return max((FEATURES[n].context(spec.params) for n in spec.names), default=0)


def _bands_by_role(data: np.ndarray, band_names: Sequence[str],
                   roles: set[str]) -> Bands:
    names = [str(b).lower() for b in band_names]
    return {r: data[names.index(r)].astype(np.float64) for r in roles}


def _check_inputs(data: np.ndarray, valid: np.ndarray, band_names: Sequence[str],
                  spec: FeatureSpec) -> None:
    if data.ndim != 3 or data.shape[0] != len(band_names):
        raise InputError(f"Feature input has shape {data.shape} for {len(band_names)} "
                         "named band(s).", "Pass (C, H, W) data with one name per band.")
    if valid.shape != data.shape[1:]:
        raise InputError(f"Valid mask {valid.shape} does not match data {data.shape}.",
                         "Pass an (H, W) mask.")
    check_features(spec, band_names)


def compute_features(data: np.ndarray, valid: np.ndarray, band_names: Sequence[str],
                     spec: FeatureSpec) -> np.ndarray:
    """Engineered channels to append to the bands; 0 on invalid pixels.

    Args:
        data: Raw band values (not normalised).
        valid: True where every band holds data.
        band_names: Name (role) of each band, from the band mapping.
        spec: Selected features and parameters.

    Shape:
        data: (C, H, W) float32; valid: (H, W) bool -> (F, H, W) float32,
        F = len(spec.channel_names).

    Raises:
        InputError: Shapes do not fit or a feature's bands are missing.
    """
    _check_inputs(data, valid, band_names, spec)
    h, w = valid.shape
    if not spec.names:
        return np.zeros((0, h, w), dtype=np.float32)
    valid = valid.astype(bool)
    roles = {r for n in spec.names for r in FEATURES[n].roles}
    bands = _bands_by_role(data, band_names, roles)
    out: list[np.ndarray] = []
    for n in spec.names:
        out.extend(FEATURES[n].compute(bands, valid, spec.params))
    stack = np.stack(out).astype(np.float32)
    stack[:, ~valid] = 0.0
    return stack


def fit_features(spec: FeatureSpec, data: np.ndarray, valid: np.ndarray,
                 band_names: Sequence[str]) -> FeatureSpec:
    """Pin the data-dependent parameters (rgb min/max, canny thresholds) on this image.

    With them fixed, the channels no longer depend on the tile or patch extent, so the
    model file reproduces them at prediction. Parameters already set are kept.

    Shape:
        data: (C, H, W) raw values; valid: (H, W) bool.
    """
    _check_inputs(data, valid, band_names, spec)
    p = dict(spec.params)
    valid = valid.astype(bool)
    bands = _bands_by_role(data, band_names, set(RGB) if "rgb_minmax" in spec.names
                           or "canny" in spec.names else set())
    if "rgb_minmax" in spec.names and p["rgb_min"] is None:
        lo, hi = [], []
        for role in RGB:
            vals = bands[role][valid & np.isfinite(bands[role])]
            lo.append(float(vals.min()) if vals.size else 0.0)
            hi.append(float(vals.max()) if vals.size else 0.0)
        p["rgb_min"], p["rgb_max"] = lo, hi
    if "canny" in spec.names and p["canny_low"] is None:
        mag, _ = canny_magnitude(_gray(bands, valid), float(p["canny_sigma"]))
        p["canny_low"], p["canny_high"] = canny_thresholds(mag, valid, p)
    return FeatureSpec(spec.names, p)
