"""The metadata a training run writes into its model file (a typed ModelMeta)."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import torch

from terraseg.core.feature_source import FeatureSource
from terraseg.core.label_set import LabelSet
from terraseg.core.normalise import BandStats
from terraseg.core.raster import RasterSource
from terraseg.core.version import software_version
from terraseg.protocol.model_meta import (
    Architecture,
    Bands,
    ExtraRaster,
    Features,
    Geometry,
    LabelRecord,
    ModelClass,
    ModelMeta,
    Normalisation,
    Software,
    SplitRecord,
    Threshold,
    TrainingRaster,
    TrainingRecord,
)
from terraseg.protocol.options import TrainOptions
from terraseg.training.cache import ImageCache
from terraseg.training.sampling import SampleIndex

#: Options that describe where files went, not how the model was trained.
NOT_RECORDED = ("overwrite", "out")


def training_options_record(opts: TrainOptions) -> dict[str, Any]:
    """Every training option by name, as recorded in the model file."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in opts.flat().items()
            if k not in NOT_RECORDED}


def build_model_meta(opts: TrainOptions, source: RasterSource, mapping_indices: list[int],
                     stats: BandStats, labels: LabelSet, arch_params: dict[str, Any],
                     geometry: Geometry, loss: str, evaluation: dict[str, Any],
                     index: SampleIndex, cache: ImageCache, training: dict[str, Any],
                     threshold: dict[str, float] | None,
                     split: SplitRecord | None = None) -> ModelMeta:
    """The typed metadata of a trained model.

    Args:
        opts: The run's options (recorded, and the data paths).
        source: The input source (bands, extras, features, grid).
        mapping_indices: Raster band numbers in model order.
        stats: Normalisation statistics of the input channels.
        labels: The training labels (classes, counts, fingerprint).
        arch_params: Network constructor parameters.
        geometry: Inference geometry from the model kind.
        loss: Loss spec used.
        evaluation: Held-out metrics per split.
        index: The split's sample index (pixel counts per split).
        cache: The image cache (raster fingerprint).
        training: ``epochs_run``, ``best_epoch``, ``monitor``, ``best_score``, ``device``.
        threshold: Tuned two-class threshold (``value``, ``f1``) or None.
        split: The regions of each split by stable key (kept when retraining), or None.
    """
    grid = source.grid
    crs = grid.crs
    extras = tuple(ExtraRaster(**e.to_dict()) for e in getattr(source, "extras", ()))
    features = None
    if isinstance(source, FeatureSource):
        spec = source.spec.to_dict()
        features = Features(tuple(spec["names"]), dict(spec["params"]))
    split_counts = {s: {labels.classes[k - 1].name: v for k, v in c.items()}
                    for s, c in index.pixel_counts.items()}
    return ModelMeta(
        software=Software("TerraSeg", software_version(), torch.__version__),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        architecture=Architecture(opts.network.model, arch_params),
        geometry=geometry, loss=loss,
        bands=Bands(tuple(mapping_indices), tuple(source.bands.names)),
        extra_rasters=extras, features=features,
        normalisation=Normalisation(tuple(stats.mean), tuple(stats.std)),
        classes=tuple(ModelClass(c.id, c.name, c.colour) for c in labels.classes),
        class_map=opts.data.class_map, class_field=opts.data.class_field,
        training_raster=TrainingRaster(
            pixel_size=(float(grid.pixel_size[0]), float(grid.pixel_size[1])),
            path=str(Path(opts.data.raster).resolve()), crs_wkt=grid.crs_wkt,
            crs_epsg=crs.to_epsg() if crs else None, fingerprint=cache.fingerprint),
        labels=LabelRecord(str(Path(opts.data.labels).resolve()), labels.fingerprint,
                           dict(labels.pixel_counts), split_counts),
        training=TrainingRecord(options=training_options_record(opts),
                                init_model=opts.network.init_model, **training),
        metrics=evaluation,
        threshold=Threshold(threshold["value"], threshold["f1"]) if threshold else None,
        split=split,
    )
