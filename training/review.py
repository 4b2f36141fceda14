"""Find mislabelled training polygons: the job behind ``terraseg review``.

k models are trained as ``terraseg cv`` trains them (fold i holds out every k-th region of
each class as its test set, training/cv.py), so every labelled region (a polygon, or a
piece of a label raster) is predicted once by a model that never trained on it. The models
are networks with the training options (``--scorer network``), or random forests of pixels
fitted on the same folds (``--scorer forest``: seconds instead of k trainings). Its
labelled pixels' out-of-fold probabilities become the scores of
:mod:`terraseg.core.label_review`: the mean loss of the given class (the study's way) and
confident learning (``cleanlab``). The regions are sorted by the chosen ranking and written
with their geometry in the labels' CRS (the source feature's geometry for vector labels,
the region vectorised for label rasters): ``review.gpkg`` (layer ``review``),
``review.csv`` and ``review.json``, next to the fold models ``fold_<i>.tsm``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import fiona
import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.features import shapes
from rasterio.warp import transform_geom
from scipy import ndimage
from shapely.geometry import mapping, shape
from shapely.ops import unary_union

from terraseg.core.atomic import atomic_path, write_csv_atomic
from terraseg.core.classes import ClassMapping, classes_from_dicts
from terraseg.core.forest import (
    ForestSettings,
    check_two_classes,
    class_probabilities,
    new_forest,
    read_pixels,
    sample_positions,
)
from terraseg.core.grid import Grid
from terraseg.core.label_review import (
    Ranking,
    RegionAccumulator,
    RegionScores,
    check_ranking,
    check_review_numbers,
    check_scorer,
    confident_learning,
    rank_order,
    suspicion,
)
from terraseg.core.label_set import LabelSet
from terraseg.core.labels import is_vector_labels, load_labels
from terraseg.core.layer_spec import resolve_layer, split_layer_spec
from terraseg.core.modelfile import load_model, read_meta
from terraseg.core.normalise import BandStats
from terraseg.core.output_targets import check_output_dir
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError, TerraSegError
from terraseg.protocol.options import TrainOptions
from terraseg.training.cache import ImageCache
from terraseg.training.data import ImageWindowStore, PatchDataset, PatchGeometry
from terraseg.training.inputs import build_source, drop_nodata_labels
from terraseg.training.sampling import SPLITS, SplitConfig, build_index, count_split_units
from terraseg.training.train import model_file_paths, run_train

OUTPUT_NAMES = ("review.gpkg", "review.csv", "review.json")
#: Fields of every row (CSV columns, GeoPackage attributes), in order.
FIELDS = ("rank", "feature_id", "region_key", "given_class", "predicted_class",
          "predicted_probability", "given_probability", "loss_score", "cleanlab_quality",
          "cleanlab_issue", "score", "pixels", "fold")
#: Keys of a suspect in the result (the plugin's contract).
SUSPECT_KEYS = ("rank", "feature_id", "region_key", "given_class", "predicted_class",
                "predicted_probability", "score", "bbox")
GPKG_TYPES = {"rank": "int", "cleanlab_issue": "int", "pixels": "int", "fold": "int",
              "feature_id": "str", "region_key": "str", "given_class": "str",
              "predicted_class": "str"}


def run_review(base: TrainOptions, out_dir: str | Path, k: int, ranking: str, top: int,
               reporter: Reporter, overwrite: bool = False, scorer: str = "network",
               trees: int = 100) -> dict[str, Any]:
    """Rank the labelled regions by how likely their class is wrong.

    Args:
        base: Training options of every fold (the split, out and overwrite are set here).
        out_dir: Folder for review.gpkg/.csv/.json and fold_<i>.tsm.
        k: Number of folds (2 or more; at most the regions of the smallest class).
        ranking: ``loss`` or ``cleanlab``: which score sorts the rows.
        top: How many of the most suspicious regions the result lists.
        reporter: Progress, log and cancel.
        overwrite: Replace existing outputs.
        scorer: ``network`` (k networks with ``base``'s options) or ``forest`` (k random
            forests of pixels with ``trees`` trees, seeded by ``base``'s seed).
        trees: Trees of each forest (``forest`` only).

    Raises:
        TerraSegError: Bad options, outputs that exist, too few regions per class, or any
            training input problem, before any model is trained.
    """
    rank_by = check_ranking(ranking)
    by = check_scorer(scorer)
    check_review_numbers(k, top)
    forest = ForestSettings(trees=trees, seed=base.split.seed) if by == "forest" else None
    if base.pseudo.pseudo_labels:
        raise ConfigError("review scores the analyst's labels; --pseudo-labels replaces them.",
                          "Leave out --pseudo-labels (and its options).")
    out = Path(out_dir)
    models = ([] if forest else
              [p.name for f in range(k) for p in model_file_paths(out / f"fold_{f}.tsm")])
    check_output_dir(out, [*OUTPUT_NAMES, *models], overwrite)
    start = time.perf_counter()
    reporter.progress(0.0, "prepare", "reading raster and labels")
    labels, cache = review_inputs(base, reporter)
    check_regions_per_class(labels, k, base)
    acc = RegionAccumulator(int(labels.regions.max()), len(labels.classes))
    fold_of: dict[int, int] = {}
    for fold in range(k):
        reporter.log(f"fold {fold + 1}/{k}")
        cfg = base.replace(k_folds=k, fold=fold, test_fraction=0.0,
                           out=str(out / f"fold_{fold}.tsm"), overwrite=True)
        if forest is not None:
            scored = forest_fold(labels, cfg, cache, acc, forest, reporter)
        else:
            res = run_train(cfg, reporter)
            if not res:  # not the main process of a multi-device run
                return {}
            scored = score_fold(res["model"], labels, cfg, cache, acc)
        fold_of.update((int(r), fold) for r in scored)
        reporter.progress((fold + 1) / k, "review", f"fold {fold + 1}/{k} scored")
        reporter.check_cancelled()
    scores = acc.result()
    rows = score_rows(scores, labels, rank_by, fold_of, reporter)
    unscored = sorted(set(np.unique(labels.regions[labels.regions > 0]).tolist())
                      - set(scores.region_ids.tolist()))
    if unscored:
        reporter.log(f"{len(unscored)} region(s) have no labelled pixel with image data and "
                     "are not scored", "warning")
    geoms, crs_wkt = region_geometries(base, labels, scores.region_ids, cache.source.grid)
    by_region = dict(zip(scores.region_ids.tolist(), geoms, strict=True))
    for row in rows:
        row["bbox"] = [float(v) for v in shape(by_region[row["region_id"]]).bounds]
    paths = [out / name for name in OUTPUT_NAMES]
    flagged = sum(r["cleanlab_issue"] for r in rows)
    summary = {"ranking": rank_by, "scorer": by, "k": k, "regions": len(rows),
               "flagged": flagged, "unscored_regions": len(unscored),
               "labels": base.data.labels, "raster": base.data.raster,
               "classes": [c.name for c in labels.classes],
               "models": [] if forest else [str(out / f"fold_{f}.tsm") for f in range(k)],
               "trees": forest.trees if forest else None,
               "seconds": round(time.perf_counter() - start, 1)}
    write_outputs(paths, rows, [by_region[r["region_id"]] for r in rows], crs_wkt, summary)
    reporter.progress(1.0, "review", "done")
    reporter.log(f"review: {len(rows)} region(s) scored by {k} {by} models, ranked by "
                 f"{rank_by}, {flagged} flagged by cleanlab -> {paths[0]}")
    return {"review_gpkg": str(paths[0]), "review_csv": str(paths[1]),
            "review_json": str(paths[2]), "ranking": rank_by, "scorer": by, "k": k,
            "regions": len(rows),
            "flagged": flagged,
            "suspects": [{key: r[key] for key in SUSPECT_KEYS} for r in rows[:top]]}


def review_inputs(opts: TrainOptions, rep: Reporter) -> tuple[LabelSet, ImageCache]:
    """The labels as training sees them (nodata pixels unlabelled) and the image cache."""
    init_meta = read_meta(opts.network.init_model) if opts.network.init_model else None
    _, source = build_source(opts, init_meta)
    classes = classes_from_dicts(init_meta.class_dicts) if init_meta else None
    labels = load_labels(opts.data.labels, source.grid, class_field=opts.data.class_field,
                         class_map=ClassMapping.parse(opts.data.class_map), classes=classes)
    cache = ImageCache(source, opts.data.cache_dir, rep.log)
    return drop_nodata_labels(labels, cache, rep), cache


def check_regions_per_class(labels: LabelSet, k: int, opts: TrainOptions) -> None:
    """Each class needs at least k regions (every fold tests and trains on every class).

    A region's class is that of its first pixel, as the split deals them
    (training/sampling.py). With ``--split blocks`` the blocks holding labels count instead.

    Raises:
        ConfigError: Fewer regions (or blocks) than folds, naming the class and the fix.
    """
    sp = opts.split
    if sp.split == "blocks":
        cfg = SplitConfig("blocks", split_block_px=sp.split_block_px, k_folds=k)
        units = count_split_units(labels, cfg)
        if units < k:
            raise ConfigError(f"k = {k} folds is larger than the number of blocks with labels "
                              f"({units}).", f"Use --k {units} or fewer, a smaller "
                                             "--split-block-size, or --split polygons.")
        return
    mask = labels.regions > 0
    ids, first = np.unique(labels.regions[mask], return_index=True)
    region_class = labels.labels[mask][first]
    for info in labels.classes:
        n = int((region_class == info.id).sum())
        if 0 < n < k:
            raise ConfigError(
                f"Class '{info.name}' has {n} labelled region(s) (polygons), fewer than the "
                f"k = {k} folds; review needs k per class, so that every fold holds out "
                "polygons of each class and still trains on others of it.",
                (f"Use --k {n} or fewer, " if n >= 2 else "")
                + f"draw more polygons of '{info.name}', or merge it into another class "
                  f"with --class-map.")


def score_fold(model_path: str, labels: LabelSet, cfg: TrainOptions, cache: ImageCache,
               acc: RegionAccumulator) -> np.ndarray:
    """Add the fold model's probabilities on its test regions' labelled pixels to ``acc``.

    The split is rebuilt from the same options (training/sampling.py) and checked against
    the test regions recorded in the model file.

    Returns:
        The ids of the regions scored.
    """
    loaded = load_model(model_path)
    meta, kind = loaded.meta, loaded.kind
    sample_px, block_px = kind.sample_px(kind.keep_shape(meta, cfg.network))
    sp = cfg.split
    split_cfg = SplitConfig(sp.split, sp.val_fraction, sp.test_fraction, sp.split_block_px,
                            sp.seed, sp.k_folds, sp.fold)
    index = build_index(labels, split_cfg, block_px)
    recorded = meta.split.keys_by_split.get("test") if meta.split is not None else None
    if recorded is not None and set(recorded) != set(index.keys_by_split(labels)["test"]):
        raise TerraSegError(f"The test regions of {Path(model_path).name} differ from the "
                            "split review rebuilt.",
                            "This is a TerraSeg bug: copy the log into a bug report.")
    origins = index.origins["test"]
    if len(origins) == 0:
        return np.zeros(0, dtype=np.int64)
    stats = BandStats(tuple(meta.normalisation.mean), tuple(meta.normalisation.std))
    store = ImageWindowStore(cache, origins, PatchGeometry(sample_px, block_px), stats)
    ds = PatchDataset(store, labels.labels, index.split_map, SPLITS.index("test"), origins)
    return add_test_pixels(loaded.network, ds, labels.regions, acc)


#: Held-out pixels the forest predicts at once (bounds memory on large label rasters).
FOREST_CHUNK_PX = 1_000_000


def forest_fold(labels: LabelSet, cfg: TrainOptions, cache: ImageCache,
                acc: RegionAccumulator, settings: ForestSettings,
                reporter: Reporter) -> np.ndarray:
    """Fit a forest on a fold's training and validation regions; add its test regions' pixels.

    The fold's split is the one its network would get (training/sampling.py, ``cfg``'s
    k folds and fold). The forest is fitted on a class-stratified sample of at most
    ``settings.max_samples`` pixels, and predicts every labelled pixel of the test regions.

    Returns:
        The ids of the regions scored.

    Raises:
        LabelError: The fold's training regions have image data of fewer than two classes.
    """
    sp = cfg.split
    split_cfg = SplitConfig(sp.split, sp.val_fraction, sp.test_fraction, sp.split_block_px,
                            sp.seed, sp.k_folds, sp.fold)
    split_map = build_index(labels, split_cfg, sp.split_block_px).split_map
    lab, source = labels.labels, cache.source
    rng = np.random.default_rng(settings.seed + sp.fold)
    fit = read_pixels(source, lab, sample_positions(lab, (split_map == 0) | (split_map == 1),
                                                    settings.max_samples, rng, True))
    check_two_classes(fit, labels.classes, f"Fold {sp.fold + 1}'s forest needs training "
                      "pixels", "Use fewer folds (--k) or draw more polygons of each class.")
    forest = new_forest(settings)
    forest.fit(fit.x, fit.y)
    test = np.flatnonzero(split_map == 2)
    seen: set[int] = set()
    for i in range(0, len(test), FOREST_CHUNK_PX):
        part = read_pixels(source, lab, test[i:i + FOREST_CHUNK_PX])
        if not len(part.y):
            continue
        regions = labels.regions.ravel()[part.positions]
        acc.add(class_probabilities(forest, part.x, len(labels.classes)), part.y, regions)
        seen.update(np.unique(regions).tolist())
    reporter.log(f"fold {sp.fold + 1}: forest of {settings.trees} trees fitted on "
                 f"{len(fit.y)} pixels, {len(seen)} held-out region(s) scored")
    return np.array(sorted(seen), dtype=np.int64)


@torch.inference_mode()
def add_test_pixels(network: torch.nn.Module, ds: PatchDataset, regions: np.ndarray,
                    acc: RegionAccumulator) -> np.ndarray:
    """Add the probabilities, given class and region of a dataset's labelled pixels to ``acc``.

    Returns:
        The ids of the regions seen.
    """
    network.eval()
    k = ds.store.geom.block_px
    batch = 512 if ds.store.geom.patch_px <= 64 else 16
    seen: set[int] = set()
    for i in range(0, len(ds.origins), batch):
        idx = range(i, min(i + batch, len(ds.origins)))
        x = torch.stack([ds[j][0] for j in idx])
        y = ds.targets[i : i + len(idx)]
        p = torch.softmax(network(x).float(), dim=1).permute(0, 2, 3, 1).numpy()
        r = np.stack([region_block(regions, *(int(v) for v in ds.origins[j]), k) for j in idx])
        keep = y >= 0
        acc.add(p[keep], y[keep] + 1, r[keep])
        seen.update(np.unique(r[keep]).tolist())
    return np.array(sorted(seen), dtype=np.int64)


def region_block(regions: np.ndarray, row: int, col: int, k: int) -> np.ndarray:
    """The (k, k) block of region ids at (row, col); 0 off the grid (as the targets cut it)."""
    out = np.zeros((k, k), dtype=np.int64)
    h, w = regions.shape
    r0, c0, r1, c1 = max(row, 0), max(col, 0), min(row + k, h), min(col + k, w)
    if r1 > r0 and c1 > c0:
        out[r0 - row : r1 - row, c0 - col : c1 - col] = regions[r0:r1, c0:c1]
    return out


def score_rows(scores: RegionScores, labels: LabelSet, ranking: Ranking,
               fold_of: dict[int, int], rep: Reporter) -> list[dict[str, Any]]:
    """One row per scored region, sorted from most to least suspicious (rank 1 first)."""
    cl = confident_learning(scores.given, scores.mean_probs)
    for note in cl.warnings:
        rep.log(f"cleanlab: {note}", "warning")
    score = suspicion(ranking, scores.loss, cl.quality)
    other = 1.0 - cl.quality if ranking == "loss" else scores.loss
    names = [c.name for c in labels.classes]
    given_p, predicted = scores.given_probability, scores.predicted
    rows = []
    for rank, i in enumerate(rank_order(score, other).tolist(), 1):
        rid = int(scores.region_ids[i])
        rows.append({
            "rank": rank,
            "feature_id": labels.feature_ids[rid - 1] if labels.feature_ids else "",
            "region_key": labels.region_keys[rid - 1] if labels.region_keys else "",
            "given_class": names[int(scores.given[i]) - 1],
            "predicted_class": names[int(predicted[i]) - 1],
            "predicted_probability": round(float(scores.mean_probs[i].max()), 6),
            "given_probability": round(float(given_p[i]), 6),
            "loss_score": round(float(scores.loss[i]), 6),
            "cleanlab_quality": round(float(cl.quality[i]), 6),
            "cleanlab_issue": int(cl.issue[i]),
            "score": round(float(score[i]), 6),
            "pixels": int(scores.pixels[i]),
            "fold": fold_of.get(rid, -1),
            "region_id": rid,
        })
    return rows


def region_geometries(opts: TrainOptions, labels: LabelSet, region_ids: np.ndarray,
                      grid: Grid) -> tuple[list[dict[str, Any]], str]:
    """GeoJSON-like geometry of each region in the labels' CRS, and that CRS as WKT.

    Vector labels: the source feature's own geometry. Label rasters: the region's pixels
    vectorised on the image grid, reprojected to the label raster's CRS.
    """
    path = opts.data.labels
    if is_vector_labels(path):
        file_path, layer = split_layer_spec(str(path))
        wanted = {labels.feature_ids[int(r) - 1] for r in region_ids}
        found: dict[str, dict[str, Any]] = {}
        with fiona.open(file_path, layer=resolve_layer(file_path, layer)) as src:
            crs_wkt = src.crs_wkt
            for feat in src:
                if str(feat.id) in wanted:
                    found[str(feat.id)] = dict(feat.geometry)
        return [found[labels.feature_ids[int(r) - 1]] for r in region_ids], crs_wkt
    with rasterio.open(path) as ds:
        label_crs = ds.crs.to_wkt() if ds.crs else grid.crs_wkt
    slices = ndimage.find_objects(labels.regions)
    geoms = []
    for rid in region_ids.tolist():
        rows, cols = slices[rid - 1]
        mask = labels.regions[rows, cols] == rid
        transform = grid.transform * Affine.translation(cols.start, rows.start)
        parts = [shape(g) for g, _ in shapes(mask.astype(np.uint8), mask=mask,
                                             connectivity=8, transform=transform)]
        geom = mapping(unary_union(parts))
        if label_crs != grid.crs_wkt:
            geom = transform_geom(grid.crs_wkt, label_crs, geom)
        geoms.append(dict(geom))
    return geoms, label_crs


def write_outputs(paths: list[Path], rows: list[dict[str, Any]],
                  geoms: list[dict[str, Any]], crs_wkt: str, summary: dict[str, Any]) -> None:
    """review.gpkg (layer ``review``), review.csv and review.json, each atomically."""
    gpkg, csv_path, json_path = paths
    table = [{f: r[f] for f in FIELDS} for r in rows]
    write_csv_atomic(csv_path, table, FIELDS)
    doc = {**summary, "fields": list(FIELDS),
           "rows": [{**t, "bbox": r["bbox"]} for t, r in zip(table, rows, strict=True)]}
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    schema = {"geometry": "Unknown",
              "properties": {f: GPKG_TYPES.get(f, "float") for f in FIELDS}}
    with atomic_path(gpkg, suffix=".gpkg") as tmp, fiona.open(
            tmp, "w", driver="GPKG", crs_wkt=crs_wkt, schema=schema, layer="review") as dst:
        dst.writerecords({"geometry": g, "properties": t}
                         for g, t in zip(geoms, table, strict=True))
