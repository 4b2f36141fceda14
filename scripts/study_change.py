"""Direct change networks on OSCD (issue #13): FC-EF and FC-Siam-diff vs a random forest.

Data: ../shared/data/oscd_s2_change (see its PROVENANCE.md): Sentinel-2 L1C pairs of 8
OSCD train cities (13 bands at 10/20/60 m, EPSG:4326) with change masks (1 = no change,
2 = change; CC BY-NC-SA, used here for testing only).

Steps (every engine step is the ``terraseg`` command a user runs; the command lines are
written to ``commands.txt``):

1. Each date's 13 bands (B01..B12, B8A) stacked on the grid of its own B02 (bilinear for
   the 20 m and 60 m bands): ``stacks/<city>_<date>.tif``.
2. ``terraseg pair`` puts date 2 on date 1's grid (``pairs/<city>.tif``, 26 bands; the
   misregistration is measured and corrected above ``--max-shift``), and the change mask
   gets the pair's georeference (``labels/<city>.tif``; the label files carry none).
3. Spatial split by city. OSCD's own test cities (test.txt) have no labels in this subset,
   so two labelled cities are held out (default aguasclaras and rennes: one outside
   Europe, one French; ``--test-cities``); the networks train on the other OSCD train
   cities. ``terraseg train`` reads one raster, so the training cities' pairs and masks
   are placed side by side, :data:`GAP_PX` of no data apart, in ``montage.tif`` and
   ``montage_labels.tif`` (a made-up EPSG:4326 grid: its geography means nothing).
4. ``terraseg train`` of ``fc_ef`` and ``fc_siam_diff`` on the montage (``--class-map
   2=change,1=no_change``, validation on seeded blocks of the montage, which tunes the
   threshold on P(change)), ``terraseg predict`` on each test city's pair raster.
5. Baselines: a random forest on the 26 stacked bands of each pixel, and one that also
   gets |B - A| per band (class-balanced, fitted on a sample of the montage's labelled
   pixels outside a seeded 15 % of blocks; the threshold on P(change) tuned for F1 on
   those held-out blocks, as the networks tune theirs on their validation blocks).
6. Change F1, precision, recall and IoU of the change class per test city and overall
   (pooled pixel counts): ``results.json`` and ``table.md``.

Settings: ``--quick`` (base width 8, 64 px tiles, 6 epochs of 256 tiles, batch 16, a
50-tree forest) fits a 2-core CPU in minutes. The full settings (the default: base width
16 as Daudt et al., 128 px tiles, up to 100 epochs of 1024 tiles with patience 15, a
200-tree forest) want a GPU. Run ``python scripts/study_change.py [--quick]``; runs whose
outputs exist are reused (``--fresh`` redoes them); ``--epochs N`` overrides the epochs.
Each run writes ``results_<tag>.json`` and ``table_<tag>.md`` (tag: quick, full, plus
``_e<N>``) and copies them to ``results.json`` and ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import reproject
from rasterio.windows import Window
from sklearn.ensemble import RandomForestClassifier

ROOT = Path(__file__).resolve().parents[1]
TERRASEG = ROOT / ".venv-engine" / "bin" / "terraseg"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "oscd_s2_change"
DEFAULT_OUT = ROOT / "study_output" / "change"
BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12")
TEST_CITIES = ("aguasclaras", "rennes")
MODELS = ("fc_ef", "fc_siam_diff")
CLASS_MAP = "2=change,1=no_change"
#: No-data columns between two cities of the training montage.
GAP_PX = 32
#: Forest baselines: pixel features -> method name. "stacked" is the 26 bands as the
#: networks see them; "stacked+diff" adds |B - A| per band (a hand-made change feature).
FORESTS = {"stacked": "random_forest", "stacked+diff": "random_forest_diff"}
#: Share of the montage's blocks held out for validation (networks and forests).
VAL_FRACTION = 0.15
#: Largest misregistration (px) accepted before ``terraseg pair`` corrects it.
MAX_SHIFT_PX = 1.0


@dataclass(frozen=True)
class Settings:
    """Training settings of one study run."""

    base_width: int
    tile_px: int
    epochs: int
    samples_per_epoch: int
    batch_size: int
    patience: int
    lr: float
    trees: int
    forest_samples: int


QUICK = Settings(base_width=8, tile_px=64, epochs=6, samples_per_epoch=256, batch_size=16,
                 patience=6, lr=1e-3, trees=50, forest_samples=40_000)
FULL = Settings(base_width=16, tile_px=128, epochs=100, samples_per_epoch=1024,
                batch_size=16, patience=15, lr=1e-3, trees=200, forest_samples=200_000)


def labelled_cities(data: Path) -> list[str]:
    """OSCD train cities (train.txt order) with images and labels in ``data``."""
    names = (data / "images" / "train.txt").read_text().strip().split(",")
    return [c for c in names if (data / "images" / c / "imgs_1").is_dir()
            and (data / "train_labels" / c / "cm" / f"{c}-cm.tif").is_file()]


def stack_date(folder: Path, out: Path) -> Path:
    """The 13 bands of one date on its B02 grid (bilinear), float32, named by band."""
    files = {b: next(folder.glob(f"*_{b}.tif")) for b in BANDS}
    with rasterio.open(files["B02"]) as ref:
        profile = {"driver": "GTiff", "height": ref.height, "width": ref.width,
                   "count": len(BANDS), "dtype": "float32", "crs": ref.crs,
                   "transform": ref.transform, "tiled": True, "compress": "zstd"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(out, "w", **profile) as dst:
        for i, band in enumerate(BANDS, start=1):
            grid = np.zeros((profile["height"], profile["width"]), dtype=np.float32)
            with rasterio.open(files[band]) as src:
                reproject(src.read(1).astype(np.float32), grid, src_transform=src.transform,
                          src_crs=src.crs, dst_transform=profile["transform"],
                          dst_crs=profile["crs"], resampling=Resampling.bilinear)
            dst.write(grid, i)
            dst.set_band_description(i, band)
    return out


def change_mask(data: Path, city: str, pair: Path, out: Path) -> Path:
    """The city's change mask (1 no change, 2 change) with the pair raster's georeference."""
    with warnings.catch_warnings():  # the label files carry no georeference
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(data / "train_labels" / city / "cm" / f"{city}-cm.tif") as src:
            mask = src.read(1)
    with rasterio.open(pair) as ds:
        if mask.shape != ds.shape:
            raise SystemExit(f"{city}: label {mask.shape} != date-1 grid {ds.shape}")
        crs, transform = ds.crs, ds.transform
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(out, "w", driver="GTiff", height=mask.shape[0], width=mask.shape[1],
                       count=1, dtype="uint8", crs=crs, transform=transform, nodata=0) as dst:
        dst.write(mask.astype(np.uint8), 1)
    return out


class Engine:
    """Runs ```terraseg`` commands; keeps their command lines and logs (stderr)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        log.with_name("engine_log.txt").write_text("")

    def __call__(self, *args: object) -> str:
        """Run ``terraseg *args``; its stdout (exit on failure, with its stderr)."""
        argv = [str(TERRASEG), *map(str, args)]
        with self.log.open("a") as f:
            f.write(" ".join(argv[1:]) + "\n")
        t0 = time.time()
        proc = subprocess.run(argv, capture_output=True, text=True)
        with self.log.with_name("engine_log.txt").open("a") as f:
            f.write(f"$ terraseg {' '.join(argv[1:])}\n{proc.stderr}\n")
        if proc.returncode:
            raise SystemExit(f"terraseg {args[0]} failed ({proc.returncode}):\n{proc.stderr}")
        print(f"  terraseg {args[0]}: {time.time() - t0:.0f} s", flush=True)
        return proc.stdout


def montage(pairs: list[Path], masks: list[Path], out_img: Path, out_lbl: Path) -> None:
    """The cities side by side on one made-up grid, GAP_PX of no data apart."""
    shapes = []
    for p in pairs:
        with rasterio.open(p) as ds:
            shapes.append(ds.shape)
            count, descriptions, pixel = ds.count, ds.descriptions, ds.res
    height = max(h for h, _ in shapes)
    width = sum(w for _, w in shapes) + GAP_PX * (len(shapes) - 1)
    transform = Affine(pixel[0], 0, 0.0, 0, -pixel[1], 0.0)
    common = {"driver": "GTiff", "height": height, "width": width, "crs": "EPSG:4326",
              "transform": transform, "tiled": True, "compress": "zstd"}
    with rasterio.open(out_img, "w", count=count, dtype="float32", nodata=np.nan,
                       **common) as img, \
            rasterio.open(out_lbl, "w", count=1, dtype="uint8", nodata=0, **common) as lbl:
        for i, d in enumerate(descriptions, start=1):
            img.set_band_description(i, d)
        nan = np.full((count, height, width), np.nan, dtype=np.float32)
        img.write(nan)
        col = 0
        for p, m, (h, w) in zip(pairs, masks, shapes, strict=True):
            win = Window(col, 0, w, h)
            with rasterio.open(p) as ds:
                img.write(ds.read(), window=win)
            with rasterio.open(m) as ds:
                lbl.write(ds.read(1), 1, window=win)
            col += w + GAP_PX


def change_class_id(path: Path) -> int:
    """The class id of 'change' in a prediction (its TERRASEG_CLASSES tag)."""
    with rasterio.open(path) as ds:
        classes = json.loads(ds.tags()["TERRASEG_CLASSES"])
    return next(int(c["id"]) for c in classes if c["name"] == "change")


def counts(pred_change: np.ndarray, mask: np.ndarray) -> dict[str, int]:
    """Confusion counts of the change class on labelled pixels (mask 1 or 2)."""
    ref = mask == 2
    lab = mask > 0
    return {"tp": int((pred_change & ref & lab).sum()),
            "fp": int((pred_change & ~ref & lab).sum()),
            "fn": int((~pred_change & ref & lab).sum()),
            "tn": int((~pred_change & ~ref & lab).sum())}


def scores(c: dict[str, int]) -> dict[str, float]:
    """Precision, recall, F1 and IoU of the change class."""
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "iou": iou}


def features(pair: np.ndarray, kind: str) -> np.ndarray:
    """Pixel features of a pair raster: the stacked bands, or also |B - A| per band.

    Shape: (2C, H, W) -> (2C, H, W) or (3C, H, W).
    """
    if kind == "stacked":
        return pair
    c = pair.shape[0] // 2
    return np.concatenate([pair, np.abs(pair[c:] - pair[:c])])


def held_out_blocks(shape: tuple[int, int], block_px: int, fraction: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Pixels of a seeded ``fraction`` of square blocks (as train's --split blocks)."""
    rows, cols = -(-shape[0] // block_px), -(-shape[1] // block_px)
    chosen = rng.random((rows, cols)) < fraction
    return np.kron(chosen, np.ones((block_px, block_px), dtype=bool))[:shape[0], :shape[1]]


def forest_baseline(img: Path, lbl: Path, settings: Settings, kind: str, seed: int = 0
                    ) -> tuple[RandomForestClassifier, float]:
    """A class-balanced forest on the montage's pixels and its threshold on P(change).

    The forest is fitted on pixels outside a seeded 15 % of blocks of the tile size, and
    the threshold tuned for F1 on pixels inside them (as train tunes the networks' on its
    validation blocks).
    """
    with rasterio.open(img) as ds:
        x = features(ds.read(), kind)
    with rasterio.open(lbl) as ds:
        y = ds.read(1)
    ok = (y > 0) & np.all(np.isfinite(x), axis=0)
    rng = np.random.default_rng(seed)
    held_out = held_out_blocks(y.shape, settings.tile_px, VAL_FRACTION, rng)
    fit, tune = np.flatnonzero(ok & ~held_out), np.flatnonzero(ok & held_out)
    rng.shuffle(fit)
    rng.shuffle(tune)
    tune = tune[:settings.forest_samples]
    yf = y.ravel()[fit]
    per_class = settings.forest_samples // 2
    fit = np.concatenate([fit[yf == k][:per_class] for k in (1, 2)])
    flat = x.reshape(x.shape[0], -1)
    forest = RandomForestClassifier(n_estimators=settings.trees, class_weight="balanced",
                                    n_jobs=2, random_state=seed)
    forest.fit(flat[:, fit].T, y.ravel()[fit] == 2)
    p = forest.predict_proba(flat[:, tune].T)[:, 1]
    truth = y.ravel()[tune] == 2
    best = max(np.linspace(0.05, 0.95, 19),
               key=lambda t: scores(counts(p >= t, np.where(truth, 2, 1)))["f1"])
    return forest, float(best)


def forest_change(forest: RandomForestClassifier, threshold: float, pair: Path, kind: str
                  ) -> np.ndarray:
    """The forest's change map of a pair raster (no data: no change)."""
    with rasterio.open(pair) as ds:
        x = features(ds.read(), kind)
    ok = np.all(np.isfinite(x), axis=0)
    out = np.zeros(ok.shape, dtype=bool)
    out[ok] = forest.predict_proba(x[:, ok].T)[:, 1] >= threshold
    return out


def prepare(data: Path, out: Path, cities: list[str], engine: Engine, fresh: bool
            ) -> dict[str, dict[str, Any]]:
    """Stacks, pair rasters and georeferenced masks of every city; their shift records."""
    info = {}
    for city in cities:
        pair, mask = out / "pairs" / f"{city}.tif", out / "labels" / f"{city}.tif"
        if fresh or not pair.exists():
            print(f"{city}: stacking and pairing", flush=True)
            s1 = stack_date(data / "images" / city / "imgs_1", out / "stacks" / f"{city}_1.tif")
            s2 = stack_date(data / "images" / city / "imgs_2", out / "stacks" / f"{city}_2.tif")
            pair.parent.mkdir(parents=True, exist_ok=True)
            engine("pair", "--raster-a", s1, "--raster-b", s2, "--out", pair, "--max-shift",
                   MAX_SHIFT_PX, "--correct-shift", "--overwrite")
        change_mask(data, city, pair, mask)
        with rasterio.open(pair) as ds:
            tag = json.loads(ds.tags()["TERRASEG_PAIR"])
            shape = ds.shape
        with rasterio.open(mask) as ds:
            m = ds.read(1)
        info[city] = {"pair": str(pair), "labels": str(mask), "shape_px": list(shape),
                      "shift": tag["shift"], "change_px": int((m == 2).sum()),
                      "labelled_px": int((m > 0).sum())}
    return info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the study (module docstring); returns what results.json holds."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--quick", action="store_true", help="small networks, few epochs (CPU)")
    ap.add_argument("--fresh", action="store_true", help="redo runs whose outputs exist")
    ap.add_argument("--test-cities", default=",".join(TEST_CITIES))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--device", default="auto", help="predict's --device")
    ap.add_argument("--epochs", type=int, default=0, help="override the settings' epochs")
    a = ap.parse_args(argv)
    settings = QUICK if a.quick else FULL
    if a.epochs:
        settings = replace(settings, epochs=a.epochs)
    out = a.out
    engine = Engine(out / "commands.txt")
    cities = labelled_cities(a.data)
    test = [c for c in a.test_cities.split(",") if c]
    if not set(test) <= set(cities) or not test:
        raise SystemExit(f"--test-cities must be among the labelled cities {cities}")
    train = [c for c in cities if c not in test]
    info = prepare(a.data, out, cities, engine, a.fresh)
    img, lbl = out / "montage.tif", out / "montage_labels.tif"
    montage([Path(info[c]["pair"]) for c in train], [Path(info[c]["labels"]) for c in train],
            img, lbl)
    tag = ("quick" if a.quick else "full") + (f"_e{a.epochs}" if a.epochs else "")
    methods: dict[str, dict[str, Any]] = {}
    for model in [m for m in a.models.split(",") if m]:
        model_file = out / "models" / f"{model}_{tag}.tsm"
        t0 = time.time()
        if a.fresh or not model_file.exists():
            print(f"training {model}", flush=True)
            model_file.parent.mkdir(parents=True, exist_ok=True)
            engine("train", "--raster", img, "--labels", lbl, "--class-map", CLASS_MAP,
                   "--model", model, "--base-width", settings.base_width, "--tile-size",
                   settings.tile_px, "--epochs", settings.epochs, "--patience",
                   settings.patience, "--samples-per-epoch", settings.samples_per_epoch,
                   "--batch-size", settings.batch_size, "--lr", settings.lr, "--split",
                   "blocks", "--split-block-size", settings.tile_px, "--val-fraction", VAL_FRACTION,
                   "--test-fraction", 0, "--seed", 0, "--out", model_file, "--overwrite")
        train_s = time.time() - t0
        per_city = {}
        for city in test:
            pred = out / "predictions" / f"{model}_{tag}" / city
            engine("predict", "--model", model_file, "--raster", info[city]["pair"],
                   "--out-dir", pred, "--device", a.device, "--overwrite")
            with rasterio.open(pred / "classes.tif") as ds:
                change = ds.read(1) == change_class_id(pred / "classes.tif")
            with rasterio.open(info[city]["labels"]) as ds:
                per_city[city] = counts(change, ds.read(1))
        threshold = (json.loads(engine("info", model_file)).get("threshold") or {})
        methods[model] = {"model_file": str(model_file), "train_seconds": round(train_s, 1),
                          "threshold": threshold.get("value", 0.5),
                          "val_f1": threshold.get("f1"), "per_city": per_city}
    for kind, name in FORESTS.items():
        print(f"baseline {name}", flush=True)
        t0 = time.time()
        forest, threshold = forest_baseline(img, lbl, settings, kind)
        per_city = {}
        for city in test:
            change = forest_change(forest, threshold, Path(info[city]["pair"]), kind)
            with rasterio.open(info[city]["labels"]) as ds:
                per_city[city] = counts(change, ds.read(1))
        methods[name] = {"trees": settings.trees, "features": kind, "threshold": threshold,
                         "train_seconds": round(time.time() - t0, 1), "per_city": per_city}
    for m in methods.values():
        total = {k: sum(c[k] for c in m["per_city"].values()) for k in ("tp", "fp", "fn", "tn")}
        m["scores"] = {city: scores(c) for city, c in m["per_city"].items()}
        m["overall"] = {**scores(total), **total}
    result = {"data": str(a.data), "settings": asdict(settings), "quick": a.quick,
              "train_cities": train, "test_cities": test, "cities": info,
              "methods": methods}
    (out / f"results_{tag}.json").write_text(json.dumps(result, indent=2))
    (out / f"table_{tag}.md").write_text(table(result))
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "table.md").write_text(table(result))
    print(table(result))
    return result


def table(result: dict[str, Any]) -> str:
    """The results as Markdown: one row per method and test city, then overall."""
    s = result["settings"]
    lines = [f"# OSCD change detection ({'quick' if result['quick'] else 'full'} settings)",
             "", f"Train cities: {', '.join(result['train_cities'])}; test cities: "
             f"{', '.join(result['test_cities'])}. Networks: base width {s['base_width']}, "
             f"{s['tile_px']} px tiles, <= {s['epochs']} epochs of {s['samples_per_epoch']} "
             f"tiles; forest: {s['trees']} trees.", "",
             "| method | city | F1 | precision | recall | IoU |", "|---|---|---|---|---|---|"]
    for name, m in result["methods"].items():
        rows = [*m["scores"].items(), ("**overall**", m["overall"])]
        for city, sc in rows:
            lines.append(f"| {name} | {city} | {sc['f1']:.3f} | {sc['precision']:.3f} | "
                         f"{sc['recall']:.3f} | {sc['iou']:.3f} |")
    lines += ["", "Thresholds on P(change): " + ", ".join(
        f"{n} {m['threshold']:.2f}" for n, m in result["methods"].items() if "threshold" in m)
        + " (each tuned for F1 on the montage's validation blocks)."]
    lines += ["", "Shifts measured by terraseg pair (px; corrected above "
              f"{MAX_SHIFT_PX:g} px):", ""]
    for city, c in result["cities"].items():
        sh = c["shift"]
        lines.append(f"- {city}: dx {sh['dx_px']:+.2f}, dy {sh['dy_px']:+.2f} (peak "
                     f"{sh['peak']:.2f}){', corrected' if sh['corrected'] else ''}; "
                     f"change {c['change_px']} of {c['labelled_px']} px")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
