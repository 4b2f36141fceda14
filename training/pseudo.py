"""Training on pseudo-labels: the random-forest step of ``train --pseudo-labels``.

Seed 003's system in one run (core/pseudo_label.py does the forest): a forest of single
pixels is fitted on a sample of coarse or sparse labels (``--pseudo-source``; default the
training labels themselves, "densify my few polygons") and labels every pixel of the
raster. Its outputs are written next to the model file, in ``NAME.pseudo/``:
``classes.tif`` (the pseudo-labels), ``probability.tif`` (per class) and ``confidence.tif``
(the forest's probability of the class it gives; 0 where it disagrees with the source
label under ``--pseudo-zero-disagreeing``). The network then trains on the pseudo-labels,
with the analyst's polygons overriding them where they lie: corrections win. A label
raster given as ``--labels`` is only the forest's source (it would otherwise override the
forest everywhere it is labelled).

With ``--pseudo-probability channel`` the confidence becomes an extra input channel named
``rf_confidence``; the model file records it like any extra raster, and prediction must be
given it (``--extra-raster rf_confidence=PATH``, made for a raster by
``terraseg pseudo-label``). With ``--pseudo-probability weight`` it weighs each
pseudo-labelled pixel's training loss instead (training/pixel_weights.py); prediction needs
nothing more.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from terraseg.core.classes import ClassInfo, ClassMapping
from terraseg.core.label_set import LabelSet, make_label_set
from terraseg.core.labels import is_vector_labels, load_labels
from terraseg.core.pseudo_label import (
    CONFIDENCE_CHANNEL,
    PSEUDO_OUTPUTS,
    PseudoLabelSettings,
    pseudo_label,
)
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import LabelError
from terraseg.protocol.options import TrainOptions
from terraseg.training.pixel_weights import WEIGHT_STEPS, confidence_weights

FOLDER_SUFFIX = ".pseudo"


@dataclass(frozen=True)
class PseudoRun:
    """What the forest step wrote and found.

    Attributes:
        folder: ``NAME.pseudo/`` next to the model file.
        classes: The pseudo-label raster (class ids of ``class_list``, 0 = nodata).
        confidence: The confidence raster (float32, -1 = nodata).
        class_list: The forest's classes (ids 1..K).
        report: core/pseudo_label.py's result (sampling, agreement, importances).
    """

    folder: Path
    classes: Path
    confidence: Path
    class_list: tuple[ClassInfo, ...]
    report: dict[str, Any]


def pseudo_folder(out: str | Path) -> Path:
    """``models/sealed.tsm`` -> ``models/sealed.pseudo``."""
    out = Path(out)
    return out.with_name(out.stem + FOLDER_SUFFIX)


def pseudo_output_paths(out: str | Path) -> list[Path]:
    """Every file the forest step writes for model file ``out``."""
    folder = pseudo_folder(out)
    return [folder / name for name in PSEUDO_OUTPUTS]


def run_forest_step(opts: TrainOptions, source: RasterSource, rep: Reporter,
                    classes: tuple[ClassInfo, ...] | None = None,
                    analyst: LabelSet | None = None) -> tuple[TrainOptions, PseudoRun]:
    """Fit the forest on the pseudo source and write the pseudo-labels of the whole raster.

    Args:
        opts: The training options (``opts.pseudo`` with ``pseudo_labels`` set).
        source: The input as the forest sees it (bands, extras, engineered channels).
        rep: Progress and log events.
        classes: Fixed classes (retraining from a model), or None.
        analyst: The labels that will override the forest (checked against the forest's
            classes before any work), or None.

    Returns:
        The options to train with (``rf_confidence`` added as an extra raster when the
        confidence is a channel) and what the step wrote.

    Raises:
        LabelError: Unusable source labels (see core/pixel_sampling.py and core/labels.py),
            or an overriding class the forest does not know.
        OutputError: The outputs exist without ``--overwrite``.
    """
    ps, data = opts.pseudo, opts.data
    path = ps.pseudo_source or data.labels
    field = ps.pseudo_class_field or data.class_field
    class_map = ps.pseudo_class_map if ps.pseudo_class_map is not None else data.class_map
    rep.progress(0.0, "pseudo-label", f"reading the forest's labels {Path(path).name}")
    coarse = load_labels(path, source.grid, class_field=field,
                         class_map=ClassMapping.parse(class_map), classes=classes,
                         all_touched=data.all_touched)
    if analyst is not None:
        check_known_classes(analyst, coarse.classes)
    settings = PseudoLabelSettings(
        strategy=ps.pseudo_strategy, quota=ps.pseudo_quota or None, k=ps.pseudo_k,
        trees=ps.pseudo_trees, max_depth=ps.pseudo_max_depth or None,
        seed=opts.split.seed, zero_disagreeing=ps.pseudo_zero_disagreeing)
    folder = pseudo_folder(opts.out)
    report = pseudo_label(source, coarse, folder, rep, settings, overwrite=opts.overwrite)
    confidence = Path(report["confidence"])
    shares = ", ".join(f"{k} {v:.1%}" for k, v in report["class_shares"].items())
    rep.log(f"pseudo-labels in {folder}: {report['valid_pixels']} px labelled by the forest "
            f"({shares})")
    if ps.pseudo_probability == "channel":
        extra = f"{CONFIDENCE_CHANNEL}={confidence}"
        opts = opts.replace(extra_rasters=(*data.extra_rasters, extra))
        rep.log(f"the forest's confidence is input channel '{CONFIDENCE_CHANNEL}'; prediction "
                f"needs --extra-raster {CONFIDENCE_CHANNEL}=PATH")
    run = PseudoRun(folder, Path(report["classes"]), confidence, coarse.classes, report)
    return opts, run


def pseudo_weights(opts: TrainOptions, run: PseudoRun | None, analyst: LabelSet | None,
                   rep: Reporter) -> np.ndarray | None:
    """Per-pixel loss weights under ``--pseudo-probability weight`` (else None).

    The forest's confidence weighs each pseudo-labelled pixel; the analyst's overriding
    labels weigh 1 (training/pixel_weights.py).
    """
    if run is None or opts.pseudo.pseudo_probability != "weight":
        return None
    overridden = analyst.labels > 0 if analyst is not None else None
    steps = confidence_weights(run.confidence, overridden)
    labelled = steps[steps > 0]
    mean = float(labelled.mean()) / WEIGHT_STEPS if labelled.size else 0.0
    rep.log(f"the forest's confidence weighs each pseudo-labelled pixel's loss (mean "
            f"{mean:.2f}; the training labels weigh 1)")
    return steps


def check_known_classes(analyst: LabelSet, forest_classes: tuple[ClassInfo, ...]
                        ) -> dict[str, int]:
    """The forest's class id by lower-case name; refuses analyst classes it does not know.

    Raises:
        LabelError: Naming the unknown classes and the forest's.
    """
    by_name = {c.name.lower(): c.id for c in forest_classes}
    unknown = [c.name for c in analyst.classes
               if c.name.lower() not in by_name and analyst.pixel_counts.get(c.name, 0)]
    if unknown:
        raise LabelError(
            f"Class(es) {unknown} of the training labels are not among the forest's "
            f"classes {[c.name for c in forest_classes]}.",
            "Map them onto the coarse labels' classes with --class-map, or give the "
            "coarse labels (--pseudo-source) those classes too.")
    return by_name


def override_with(run: PseudoRun, grid_shape: tuple[int, int], analyst: LabelSet | None,
                  rep: Reporter, block_px: int) -> LabelSet:
    """The training labels: the pseudo-labels, overridden by the analyst's labels.

    Regions (what the train/validation split deals out): the analyst's own, then one per
    square block of ``block_px`` for the pseudo-labelled pixels in it, keyed
    ``pseudo:ROW,COL`` (block indices), so the blocks split as ``--split blocks`` does and
    keep their side when the model is retrained on the same grid.

    Args:
        run: The forest step's outputs.
        grid_shape: (H, W) of the training grid (the pseudo-labels are on it).
        analyst: The analyst's labels on the same grid, or None (a coarse label raster was
            the source and does not override).
        rep: Log events.
        block_px: Side of the pseudo-label regions (``--split-block-size``).

    Raises:
        LabelError: An analyst's class the forest does not know.
    """
    with rasterio.open(run.classes) as ds:
        pseudo = ds.read(1)
    if pseudo.shape != grid_shape:
        raise LabelError(f"The pseudo-labels {run.classes} are {pseudo.shape[1]}x"
                         f"{pseudo.shape[0]} px but the raster is {grid_shape[1]}x"
                         f"{grid_shape[0]} px.", "Train again with --overwrite.")
    labels = pseudo.astype(np.uint8)
    regions = np.zeros(labels.shape, dtype=np.int32)
    keys: tuple[str, ...] = ()
    feature_ids: tuple[str, ...] = ()
    if analyst is not None:
        by_name = check_known_classes(analyst, run.class_list)
        lut = np.zeros(len(analyst.classes) + 1, dtype=np.uint8)
        for c in analyst.classes:
            lut[c.id] = by_name.get(c.name.lower(), 0)
        mine = lut[analyst.labels]
        changed = int(((mine > 0) & (mine != labels)).sum())
        labels = np.where(mine > 0, mine, labels)
        regions = analyst.regions
        keys, feature_ids = analyst.region_keys, analyst.feature_ids
        rep.log(f"the training labels override the pseudo-labels on {int((mine > 0).sum())} "
                f"px ({changed} px where the forest said otherwise)")
    regions, keys = with_block_regions(labels, regions, keys, block_px)
    return make_label_set(labels, regions, run.class_list, None, (), repaired=(),
                          skipped=(), feature_ids=feature_ids, notes=(), check_two=True,
                          name=run.classes.name, region_keys=keys)


def pseudo_summary(run: PseudoRun) -> dict[str, Any]:
    """The forest step in a training result: outputs, sampling, agreement with the source."""
    r = run.report
    agreement = r.get("agreement") or {}
    return {"folder": str(run.folder), "classes": str(run.classes),
            "probability": r["probability"], "confidence": str(run.confidence),
            "strategy": r["strategy"], "quota": r["quota"], "trees": r["trees"],
            "sampled_pixels": r["sampled_pixels"], "class_shares": r["class_shares"],
            "agreement_accuracy": agreement.get("accuracy"),
            "fit_seconds": r["fit_seconds"]}


def with_block_regions(labels: np.ndarray, regions: np.ndarray, keys: tuple[str, ...],
                       block_px: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Regions for labelled pixels outside every region: one per ``block_px`` block.

    Block regions are numbered after the existing ones (``len(keys) + 1 + block index``),
    with a key for every block of the grid, so region id - 1 indexes the keys.
    """
    h, w = labels.shape
    nby, nbx = -(-h // block_px), -(-w // block_px)
    offset = max(len(keys), int(regions.max()) if regions.size else 0)
    if len(keys) < offset:  # regions without keys: name them by id
        keys = (*keys, *(f"region:{i}" for i in range(len(keys) + 1, offset + 1)))
    rows = np.arange(h)[:, None] // block_px
    cols = np.arange(w)[None, :] // block_px
    block = (offset + 1 + rows * nbx + cols).astype(np.int32)
    free = (labels > 0) & (regions == 0)
    out = np.where(free, block, regions).astype(np.int32)
    block_keys = tuple(f"pseudo:{r},{c}" for r in range(nby) for c in range(nbx))
    return out, (*keys, *block_keys)


def analyst_overrides(opts: TrainOptions) -> bool:
    """Whether ``--labels`` override the forest's pseudo-labels where they lie.

    They do when ``--pseudo-source`` names other labels (the analyst's corrections of a
    coarse map), and when they are polygons and the forest's own source (few polygons
    densified: the analyst's drawing wins inside them). A label raster that is the forest's
    source does not (it would replace the pseudo-labels wherever it is labelled), nor do
    labels given both as ``--labels`` and ``--pseudo-source``.
    """
    source = opts.pseudo.pseudo_source
    if source:
        return Path(source).resolve() != Path(opts.data.labels).resolve()
    return is_vector_labels(opts.data.labels)


#: Pseudo-labels are split into at least this many blocks a side (small rasters).
MIN_BLOCKS_PER_SIDE = 4
MIN_SPLIT_BLOCK_PX = 16


def with_blocks_split(opts: TrainOptions, rep: Reporter, grid_shape: tuple[int, int]
                      ) -> TrainOptions:
    """Pseudo-labels cover the whole raster: split by blocks small enough to deal out.

    ``--split blocks`` with ``--split-block-size``, shrunk (logged) so that the raster's
    shorter side holds :data:`MIN_BLOCKS_PER_SIDE` blocks: a 96 px raster in 256 px blocks
    is one block, all of it training, and nothing would be validated.
    """
    sp = opts.split
    block = sp.split_block_px
    fitting = max(MIN_SPLIT_BLOCK_PX, min(grid_shape) // MIN_BLOCKS_PER_SIDE)
    if block > fitting:
        rep.log(f"split blocks of {fitting} px instead of {block} px, so the "
                f"{grid_shape[1]}x{grid_shape[0]} px raster holds {MIN_BLOCKS_PER_SIDE} a "
                "side to deal to training and validation")
        block = fitting
    rep.log(f"pseudo-labels cover the whole raster: the train/validation split is by blocks "
            f"of {block} px (--split blocks)")
    return dataclasses.replace(opts, split=dataclasses.replace(sp, split="blocks",
                                                                split_block_px=block))
