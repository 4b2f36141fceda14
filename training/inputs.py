"""What a training run reads: the input source, usable labels, datasets, class weights.

Training assembles its input with the same function prediction uses
(:func:`terraseg.core.model_input.assemble_source`); fine-tuning keeps the initial
model's bands, extra rasters and engineered channels.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from rasterio.windows import Window

from terraseg.core.extras import check_extras_match, parse_extras
from terraseg.core.features import FeatureSpec
from terraseg.core.label_set import LabelSet
from terraseg.core.model_input import assemble_source
from terraseg.core.raster import BandMapping, RasterSource
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError, LabelError
from terraseg.protocol.model_meta import ModelMeta
from terraseg.protocol.options import TrainOptions
from terraseg.training.augment import AugmentChain, AugmentConfig
from terraseg.training.cache import ImageCache
from terraseg.training.data import ImageWindowStore, PatchDataset
from terraseg.training.sampling import SPLITS, SampleIndex

CLASS_WEIGHTING = ("inverse", "sqrt", "none")


def build_source(opts: TrainOptions, init_meta: ModelMeta | None = None
                 ) -> tuple[BandMapping, RasterSource]:
    """The model's input as training sees it: bands, extra rasters, engineered channels.

    Fine-tuning (``init_meta``) keeps the initial model's bands, extras and features.

    Raises:
        TerraSegError: Unreadable raster, bad band mapping, extras or features.
    """
    data = opts.data
    band_spec = data.bands
    if band_spec is None and init_meta is not None:
        band_spec = ",".join(str(i) for i in init_meta.bands.indices)
    extras = parse_extras(list(data.extra_rasters), data.dem, data.slope_from_dem)
    if init_meta is not None:
        check_extras_match(init_meta, extras)
        features = (FeatureSpec(tuple(init_meta.features.names),
                                dict(init_meta.features.params))
                    if init_meta.features is not None else None)
        return assemble_source(data.raster, band_spec, extras, features, nodata=data.nodata)
    features = FeatureSpec.parse(data.features) if data.features else None
    return assemble_source(data.raster, band_spec, extras, features, fit_features=True,
                           nodata=data.nodata)


def drop_nodata_labels(labels: LabelSet, cache: ImageCache, rep: Reporter) -> LabelSet:
    """Unlabel pixels where the image is nodata; refuse labels that lie only on nodata.

    Raises:
        LabelError: No labelled pixel has image data.
    """
    rows, cols = np.nonzero(labels.labels)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    window = Window(int(c0), int(r0), int(c1 - c0), int(r1 - r0))
    cache.ensure(window)
    _, valid = cache.read(window)
    sub = labels.labels[r0:r1, c0:c1]
    bad = (sub > 0) & ~valid
    n_bad = int(bad.sum())
    if n_bad == 0:
        return labels
    if n_bad == int((sub > 0).sum()):
        raise LabelError(
            "Every labelled pixel lies on nodata in the raster's mapped bands.",
            "Draw labels where the raster has data, or check its nodata value and --bands.")
    masked = labels.labels.copy()
    masked[r0:r1, c0:c1][bad] = 0
    counts = {c.name: int((masked == c.id).sum()) for c in labels.classes}
    rep.log(f"ignored {n_bad} labelled pixel(s) on nodata; labelled pixels now {counts}",
            "warning")
    return dataclasses.replace(labels, labels=masked, pixel_counts=counts)


def make_datasets(store: ImageWindowStore, labels: LabelSet, index: SampleIndex,
                  opts: TrainOptions, weights: np.ndarray | None = None
                  ) -> dict[str, PatchDataset]:
    """One dataset per non-empty split; the training split is augmented and jittered.

    ``weights`` (uint8 steps per pixel, training/pixel_weights.py) weigh the training
    split's loss per pixel; validation and test pixels weigh the same.
    """
    aug = opts.augment
    chain = AugmentChain(AugmentConfig.parse(aug.augment, aug.pixel_noise, aug.channel_noise))
    out = {}
    for si, name in enumerate(SPLITS):
        if len(index.origins[name]) == 0:
            continue
        train = name == "train"
        out[name] = PatchDataset(store, labels.labels, index.split_map, si, index.origins[name],
                                 augment=chain if train and chain.steps else None,
                                 seed=opts.split.seed,
                                 length=opts.optim.samples_per_epoch if train else None,
                                 jitter=train, weights=weights if train else None)
    return out


def class_weights(index: SampleIndex, n_classes: int, mode: str = "inverse") -> torch.Tensor:
    """Cross-entropy class weights from training pixel counts, mean 1 over present classes.

    ``inverse``: 1 / frequency (the study's weighted loss); ``sqrt``: 1 / sqrt(frequency),
    gentler for very rare classes; ``none``: equal weights.
    """
    if mode not in CLASS_WEIGHTING:
        raise ConfigError(f"Unknown class weighting '{mode}'.",
                          f"Use one of: {', '.join(CLASS_WEIGHTING)}.")
    counts = np.array([index.pixel_counts["train"].get(k + 1, 0) for k in range(n_classes)],
                      dtype=np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    power = {"inverse": 1.0, "sqrt": 0.5, "none": 0.0}[mode]
    w[present] = 1.0 / counts[present] ** power
    w[present] *= present.sum() / w[present].sum()
    return torch.tensor(w, dtype=torch.float32)


def parse_devices(spec: str) -> int | str | list[int]:
    """Lightning's ``devices`` from ``--devices`` (``auto``, a number or a list).

    Raises:
        ConfigError: Not a number, list or ``auto``.
    """
    if spec == "auto":
        return "auto"
    if "," in spec:
        return [int(s) for s in spec.split(",") if s.strip()]
    try:
        return int(spec)
    except ValueError:
        raise ConfigError(f"--devices '{spec}' is not a number, list or 'auto'.",
                          "Use e.g. --devices 2 or --devices 0,1.") from None
