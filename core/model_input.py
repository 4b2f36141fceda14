"""The network's input as a raster source: bands, extra rasters, engineered channels.

Training and prediction assemble the input the same way, through :func:`assemble_source`:
the band mapping of the raster, then extra rasters warped onto its grid
(core/extras.py), then engineered channels (core/feature_source.py). Training fits the
data-dependent feature parameters on the raster; prediction reuses those recorded in the
model (:func:`source_for_model`), so a model sees the same channels it was trained on.
"""

from __future__ import annotations

from pathlib import Path

from terraseg.core.extras import ExtraRaster, StackedSource, check_extras_match
from terraseg.core.feature_source import FeatureSource, fit_on_source
from terraseg.core.features import FeatureSpec, check_features
from terraseg.core.raster import BandMapping, RasterSource, open_raster, parse_band_mapping
from terraseg.protocol.errors import RasterError
from terraseg.protocol.model_meta import ModelMeta


def assemble_source(raster: str, band_spec: str | None, extras: tuple[ExtraRaster, ...],
                    features: FeatureSpec | None = None, fit_features: bool = False,
                    nodata: float | None = None) -> tuple[BandMapping, RasterSource]:
    """The band mapping and the source of network inputs for a raster.

    Args:
        raster: Raster file.
        band_spec: ``1,2,3,4`` or ``red=1,green=2,...`` (None: every band).
        extras: Extra rasters appended after the bands.
        features: Engineered channels appended last.
        fit_features: Pin the features' data-dependent parameters on this raster
            (training); otherwise ``features`` are used as recorded (prediction).
        nodata: Nodata value replacing the raster's own (``--nodata``); None: its own.

    Raises:
        TerraSegError: Unreadable raster, bad band mapping, extras or features.
    """
    mapping = parse_band_mapping(band_spec, raster)
    source: RasterSource = (StackedSource(raster, mapping, extras) if extras
                            else RasterSource(raster, mapping))
    source.override_nodata(nodata)
    if features is not None and features.names:
        if fit_features:
            check_features(features, source.bands.names)
            features = fit_on_source(features, source)
        source = FeatureSource(source, features)
    return mapping, source


def model_band_spec(meta: ModelMeta, raster: str, bands: str | None) -> str | None:
    """The band mapping to apply a model: ``bands`` if given, else the model's own.

    The model's band names (roles such as red, nir) go with its band numbers.

    Raises:
        RasterError: The raster lacks a band the model reads.
    """
    idx = list(meta.bands.indices)
    if bands:
        return bands
    with open_raster(raster) as src:
        count = src.count
    if max(idx) > count:
        raise RasterError(
            f"The model expects {len(idx)} band(s) {list(meta.bands.names)} (bands {idx}) "
            f"but {Path(raster).name} has {count} band(s).",
            f"Use a raster with the model's bands, or pass --bands with {len(idx)} band "
            "numbers in the model's order.")
    names = meta.bands.names[: len(idx)]
    return ",".join(f"{n}={i}" for n, i in zip(names, idx, strict=True))


def source_for_model(meta: ModelMeta, raster: str, bands: str | None,
                     extras: tuple[ExtraRaster, ...],
                     nodata: float | None = None) -> RasterSource:
    """The input source to apply a model to ``raster`` (its bands, extras and features).

    ``nodata`` replaces the raster's own nodata value (None: its own).

    Raises:
        RasterError: Missing bands, or extras that differ from the model's.
    """
    check_extras_match(meta, extras)
    features = (FeatureSpec(tuple(meta.features.names), dict(meta.features.params))
                if meta.features is not None else None)
    _, source = assemble_source(raster, model_band_spec(meta, raster, bands), extras,
                                features, nodata=nodata)
    return source
