"""The ``terraseg`` command line: train, predict, evaluate, grid, info, worker.

Human-readable progress goes to stderr; stdout carries only results (JSON for ``info``
and with ``--json``) or, in ``worker`` mode, the JSON-lines protocol.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from terraseg.protocol.errors import (  # noqa: E402,F401
    EXIT_BUG,
    EXIT_ERROR,
    EXIT_OK,
    CancelledError,
    ConfigError,
    TerraSegError,
)


def _ints(spec: str) -> tuple[int, ...]:
    return tuple(int(s) for s in spec.split(",") if s.strip())


def _window(spec: str) -> Any:
    from rasterio.windows import Window

    try:
        col, row, w, h = (int(s) for s in spec.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("window must be col,row,width,height") from None
    return Window(col, row, w, h)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all subcommands."""
    p = argparse.ArgumentParser(prog="terraseg", description=__doc__.splitlines()[0])
    p.add_argument("--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a raster and labels")
    _add_train_args(t)

    g = sub.add_parser("grid", help="hyperparameter grid: lr x weight decay x augmentation")
    _add_train_args(g, grid=True)
    g.add_argument("--out-dir", required=True, help="folder for the models and grid.csv")
    g.add_argument("--lrs", default="1e-3,1e-4", help="learning rates (comma-separated)")
    g.add_argument("--weight-decays", default="0,0.1,0.01", help="weight decays")
    g.add_argument("--augment-options", default="none;flip,rotate",
                   help="augmentation settings separated by ';' (e.g. 'none;flip,rotate')")

    cv = sub.add_parser("cv", help="k-fold cross-validation by region: per-fold, mean, std")
    _add_train_args(cv, grid=True)
    cv.add_argument("--k", type=int, default=5, help="number of folds")
    cv.add_argument("--out-dir", required=True, help="folder for fold models, cv.csv, cv.json")

    co = sub.add_parser("compare", help="loss/architecture table with a random-forest "
                                         "pixel baseline on one spatial split")
    _add_train_args(co, grid=True)
    co.add_argument("--runs", help="model:loss pairs separated by ';', e.g. "
                                   "'unet_small:ce;unet_se:focal+iou'")
    co.add_argument("--models", help="comma-separated models (crossed with --losses)")
    co.add_argument("--losses", help="loss specs separated by ';' (crossed with --models)")
    co.add_argument("--positive-class", help="class whose F1 the table shows (default: the "
                                             "first class)")
    co.add_argument("--rf-trees", type=int, default=200,
                    help="trees of the random-forest baseline (0 = no baseline)")
    co.add_argument("--k", type=int, default=0,
                    help="k spatial folds, mean and std per row (0 = one split with "
                         "--test-fraction)")
    co.add_argument("--out-dir", required=True,
                    help="folder for compare.csv/.md/.json and the models")

    pr = sub.add_parser("predict", help="probability and class rasters for a raster")
    pr.add_argument("--model", required=True)
    pr.add_argument("--raster", required=True)
    pr.add_argument("--out-dir", required=True)
    pr.add_argument("--bands", help="band mapping (default: the model's band indices)")
    _add_extra_args(pr)
    area = pr.add_mutually_exclusive_group()
    area.add_argument("--window", type=_window, help="col,row,width,height in pixels")
    area.add_argument("--extent-layer", help="predict over this vector layer's extent")
    pr.add_argument("--tile-size", type=int, default=0,
                    help="processing tile in pixels (0 = 960 for patch models, the training "
                         "tile for tile networks)")
    pr.add_argument("--device", default="auto", help="auto, cpu or cuda")
    pr.add_argument("--precision", default="32", choices=["32", "bf16", "16"])
    pr.add_argument("--preview", action="store_true", help="also write preview.png")
    pr.add_argument("--threshold", type=float,
                    help="two classes: class 1 where P(class 1) >= this (default: the model's "
                         "tuned threshold, else the most probable class)")
    pr.add_argument("--tta", action="store_true",
                    help="average over the four 90-degree rotations (4x slower)")
    pr.add_argument("--opening", type=int, default=0, metavar="PX",
                    help="morphological opening of --morph-class, disk radius in pixels "
                         "(removes specks narrower than the disk; 0 = off)")
    pr.add_argument("--closing", type=int, default=0, metavar="PX",
                    help="morphological closing of --morph-class, disk radius in pixels "
                         "(fills gaps narrower than the disk; 0 = off)")
    pr.add_argument("--morph-class", help="class name for --opening/--closing (default: the "
                                          "model's first class)")
    small = pr.add_mutually_exclusive_group()
    small.add_argument("--min-area", type=float, default=0.0, metavar="M2",
                       help="regions smaller than this (m2) take their next most probable "
                            "class (0 = keep all)")
    small.add_argument("--min-region-px", type=int, default=0, metavar="PX",
                       help="as --min-area, in pixels")
    pr.add_argument("--overwrite", action="store_true", help="replace existing outputs")

    ev = sub.add_parser("evaluate", help="accuracy against an independent reference layer")
    ev.add_argument("--model", required=True)
    ev.add_argument("--raster", required=True)
    ev.add_argument("--reference", required=True, help="points or polygons (or a raster)")
    ev.add_argument("--class-field", help="class attribute of the reference layer")
    ev.add_argument("--class-map", help="e.g. developed=sealed,*=unsealed")
    ev.add_argument("--category-field", help="attribute for accuracy per category")
    ev.add_argument("--bands", help="band mapping (default: the model's band indices)")
    _add_extra_args(ev)
    ev.add_argument("--out-dir", required=True)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--threshold", type=float, help="as for predict")
    ev.add_argument("--tta", action="store_true", help="as for predict")
    ev.add_argument("--overwrite", action="store_true")

    i = sub.add_parser("info", help="print a model file's metadata as JSON")
    i.add_argument("model")

    ra = sub.add_parser("rasterise", help="rasterise labels onto a raster's grid (0 = none)")
    ra.add_argument("--raster", required=True, help="raster whose grid the labels take")
    ra.add_argument("--labels", required=True)
    ra.add_argument("--class-field")
    ra.add_argument("--class-map")
    ra.add_argument("--out", required=True, help="uint8 GeoTIFF of class ids")
    ra.add_argument("--all-touched", action="store_true")
    ra.add_argument("--overwrite", action="store_true")

    ve = sub.add_parser("vectorise", help="polygons of a class raster (GeoPackage)")
    ve.add_argument("--classes", required=True, help="classes.tif from predict")
    ve.add_argument("--out", required=True, help="GeoPackage to write")
    ve.add_argument("--min-area", type=float, default=0.0, help="merge regions below (m2)")
    ve.add_argument("--model", help="model file for class names")
    ve.add_argument("--overwrite", action="store_true")

    ar = sub.add_parser("areas", help="area per class (m2, %%), overall or per zone")
    ar.add_argument("--classes", required=True, help="classes.tif from predict")
    ar.add_argument("--out-csv", required=True)
    ar.add_argument("--zones", help="polygon layer (parcels, districts)")
    ar.add_argument("--zone-field", help="zone name attribute")
    ar.add_argument("--out-zones", help="GeoPackage: zones with per-class area attributes")
    ar.add_argument("--model", help="model file for class names")
    ar.add_argument("--overwrite", action="store_true")

    mo = sub.add_parser("mosaic", help="many tiles as one raster (a VRT)")
    mo.add_argument("--inputs", nargs="+", required=True, help="tiles, folders or globs")
    mo.add_argument("--out", required=True, help="VRT file to write")
    mo.add_argument("--overwrite", action="store_true")

    sub.add_parser("env", help="engine environment as JSON: python, packages, device")
    for sp in (t, g, cv, co, pr, ev, i, ra, ve, ar, mo):
        sp.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and errors on stderr")

    sub.add_parser("worker", help="run one JSON job from stdin, JSON lines on stdout")
    return p


def _add_train_args(t: argparse.ArgumentParser, grid: bool = False) -> None:
    t.add_argument("--raster", required=True, help="any GDAL-readable raster")
    t.add_argument("--labels", required=True, help="vector labels or a label raster")
    t.add_argument("--class-field", help="class attribute (integer or name) of vector labels")
    t.add_argument("--class-map", help="merge source classes, e.g. developed=sealed,*=unsealed")
    t.add_argument("--bands", help="bands feeding the model: 1,2,3,4 or red=1,green=2,...")
    if not grid:
        t.add_argument("--out", required=True, help="model file to write (.tsm)")
    t.add_argument("--model", default="patch_cnn", help="architecture (registry name)")
    _add_extra_args(t)
    t.add_argument("--features", default="",
                   help="engineered channels, e.g. ndvi,ndwi,nbr,ndmi,gray,rgb_minmax,"
                        "gaussian,median,sobel,canny (bands named by role via --bands)")
    t.add_argument("--patch-size", type=int, default=51, help="input cutout (odd)")
    t.add_argument("--block-size", type=int, default=5, help="predicted centre block (odd)")
    t.add_argument("--stride", type=int, default=0, help="network stride (0 = block size)")
    t.add_argument("--planes", type=_ints, default=(4, 8, 16), help="channels per stage")
    t.add_argument("--blocks", type=_ints, default=(2, 2, 2), help="residual blocks per stage")
    t.add_argument("--epochs", type=int, default=300, help="maximum epochs")
    t.add_argument("--patience", type=int, default=10, help="early-stopping patience")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=1e-2)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--augment", default="flip,rotate",
                   help="flip,rotate,pixel_noise,channel_noise or none")
    t.add_argument("--pixel-noise", type=float, default=0.05, help="pixel noise scale (sd)")
    t.add_argument("--channel-noise", type=float, default=0.05, help="channel noise scale")
    t.add_argument("--split", default="polygons", choices=["polygons", "blocks"])
    t.add_argument("--val-fraction", type=float, default=0.2)
    t.add_argument("--test-fraction", type=float, default=0.0)
    t.add_argument("--split-block-size", type=int, default=256)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--all-touched", action="store_true", help="rasterise all touched pixels")
    t.add_argument("--cache-dir", help="Zarr cache folder (default ~/.cache/terraseg)")
    t.add_argument("--init-model", help="fine-tune from this model file")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--accelerator", default="auto", help="Lightning: auto, cpu, gpu, ...")
    t.add_argument("--devices", default="auto", help="Lightning: number or list of devices")
    t.add_argument("--num-nodes", type=int, default=1, help="Lightning: nodes (Slurm)")
    t.add_argument("--strategy", default="auto", help="Lightning: auto, ddp, fsdp, ...")
    t.add_argument("--precision", default="32-true", help="Lightning: 32-true, bf16-mixed")
    t.add_argument("--num-workers", type=int, default=0, help="data loader processes")
    t.add_argument("--class-weights", default="inverse", choices=["inverse", "sqrt", "none"],
                   help="cross-entropy class weighting from training pixel counts")
    t.add_argument("--tile-size", type=int, default=128,
                   help="tile networks (unet*): training tile in pixels (multiple of the stride)")
    t.add_argument("--base-width", type=int, default=0,
                   help="tile networks: channels of the first level (0 = the model's default)")
    t.add_argument("--loss", default="",
                   help="loss spec, e.g. ce, focal+iou, focal:0.7,dice:0.3 (default: ce for "
                        "patch models, focal+iou for tile networks)")
    t.add_argument("--optimizer", default="adamw", choices=["adamw", "adam"])
    t.add_argument("--lr-schedule", default="none", choices=["none", "cosine", "plateau"])
    t.add_argument("--cutmix", type=float, default=0.0,
                   help="tile networks: probability of cutmix per batch (0 = off)")
    t.add_argument("--samples-per-epoch", type=int, default=2048,
                   help="minimum training cutouts per epoch (blocks are resampled, jittered)")


def train_config(a: argparse.Namespace, out: str = "") -> Any:
    """TrainConfig from parsed arguments."""
    from terraseg.training.train import TrainConfig

    return TrainConfig(
        raster=a.raster, labels=a.labels, out=out or a.out, class_field=a.class_field,
        class_map=a.class_map, bands=a.bands, model=a.model, patch_px=a.patch_size,
        block_px=a.block_size, planes=tuple(a.planes), blocks=tuple(a.blocks),
        stride_px=a.stride, epochs=a.epochs, patience=a.patience, lr=a.lr,
        weight_decay=a.weight_decay, batch_size=a.batch_size, augment=a.augment,
        pixel_noise=a.pixel_noise, channel_noise=a.channel_noise, split=a.split,
        val_fraction=a.val_fraction, test_fraction=a.test_fraction,
        split_block_px=a.split_block_size, seed=a.seed, all_touched=a.all_touched,
        cache_dir=a.cache_dir, init_model=a.init_model, overwrite=a.overwrite,
        accelerator=a.accelerator, devices=a.devices, num_nodes=a.num_nodes,
        strategy=a.strategy, precision=a.precision, num_workers=a.num_workers,
        samples_per_epoch=a.samples_per_epoch, class_weights=a.class_weights,
        tile_px=a.tile_size, loss=a.loss, base_width=a.base_width, optimizer=a.optimizer,
        lr_schedule=a.lr_schedule, cutmix=a.cutmix, extra_rasters=tuple(a.extra_raster),
        dem=a.dem, slope_from_dem=a.slope_from_dem, features=a.features)


def _add_extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--extra-raster", action="append", default=[], metavar="[NAME=]PATH",
                   help="extra input on another grid (bilinear onto the image grid); repeat")
    p.add_argument("--dem", help="elevation model added as channel 'dem'")
    p.add_argument("--slope-from-dem", action="store_true",
                   help="add slope in degrees derived from --dem as channel 'slope'")


def _source_for_model(raster: str, bands: str | None, meta: dict,
                      a: argparse.Namespace | None = None) -> Any:
    from pathlib import Path

    from terraseg.core.raster import RasterSource, open_raster, parse_band_mapping
    from terraseg.protocol.errors import RasterError

    idx = meta["bands"].get("indices", [])
    if not bands and idx:
        with open_raster(raster) as src:
            count = src.count
        if max(idx) > count:
            raise RasterError(
                f"The model expects {len(idx)} band(s) {meta['bands']['names']} (bands {idx}) "
                f"but {Path(raster).name} has {count} band(s).",
                f"Use a raster with the model's bands, or pass --bands with {len(idx)} band "
                "numbers in the model's order.")
    # the model's band names (roles such as red, nir) go with its band numbers
    names = meta["bands"]["names"][: len(idx)]
    spec = bands or ",".join(f"{n}={i}" for n, i in zip(names, idx, strict=True))
    from terraseg.core.extras import StackedSource, check_extras_match, parse_extras

    extras = parse_extras(getattr(a, "extra_raster", None), getattr(a, "dem", None),
                          bool(getattr(a, "slope_from_dem", False)))
    check_extras_match(meta, extras)
    mapping = parse_band_mapping(spec or None, raster)
    source = StackedSource(raster, mapping, extras) if extras else RasterSource(raster, mapping)
    if meta.get("features"):
        from terraseg.core.feature_source import FeatureSource
        from terraseg.core.features import FeatureSpec

        source = FeatureSource(source, FeatureSpec.from_dict(meta["features"]))
    return source


def _postprocess_spec(a: argparse.Namespace, meta: dict[str, Any], source: Any) -> Any:
    """PostProcess from predict's --opening/--closing/--morph-class/--min-area options."""
    from terraseg.core.postprocess import PostProcess, min_region_pixels

    classes = meta["classes"]
    class_id = int(classes[0]["id"])
    if a.morph_class:
        by_name = {c["name"]: int(c["id"]) for c in classes}
        if a.morph_class not in by_name:
            raise ConfigError(f"--morph-class '{a.morph_class}' is not a class of this model.",
                              f"Use one of {sorted(by_name)}.")
        class_id = by_name[a.morph_class]
    min_px = a.min_region_px or min_region_pixels(source.grid, a.min_area)
    return PostProcess(opening_px=a.opening, closing_px=a.closing, min_region_px=min_px,
                       class_id=class_id)


def run_command(a: argparse.Namespace, reporter: Any) -> dict[str, Any]:
    """Run one parsed command; returns its result payload."""
    if a.command == "train":
        from terraseg.training.train import run_train

        return run_train(train_config(a), reporter)
    if a.command == "grid":
        from terraseg.training.hparam_grid import parse_floats, run_grid

        augments = [s.strip() for s in a.augment_options.split(";")]
        base = train_config(a, out="unused.tsm")
        return run_grid(base, a.out_dir, parse_floats(a.lrs), parse_floats(a.weight_decays),
                        augments, reporter, overwrite=a.overwrite)
    if a.command == "mosaic":
        from terraseg.core.mosaic import build_mosaic

        return build_mosaic(a.inputs, a.out, a.overwrite)
    if a.command == "cv":
        from terraseg.training.cv import run_cv

        return run_cv(train_config(a, out="unused.tsm"), a.out_dir, a.k, reporter,
                      overwrite=a.overwrite)
    if a.command == "compare":
        from terraseg.training.compare import parse_runs, run_compare

        return run_compare(train_config(a, out="unused.tsm"),
                           parse_runs(a.runs, a.models, a.losses), a.out_dir, reporter,
                           positive_class=a.positive_class, rf_trees=a.rf_trees, k=a.k,
                           overwrite=a.overwrite)
    if a.command == "info":
        from terraseg.core.modelfile import read_metadata

        return read_metadata(a.model)
    if a.command == "env":
        from terraseg.cli.environment import engine_environment

        return engine_environment()
    if a.command in ("vectorise", "areas"):
        from terraseg.core import export
        from terraseg.core.modelfile import read_metadata

        classes = read_metadata(a.model)["classes"] if a.model else None
        if a.command == "vectorise":
            return export.vectorise(a.classes, a.out, a.min_area, classes, a.overwrite)
        return export.area_statistics(a.classes, a.out_csv, a.zones, a.zone_field,
                                      a.out_zones, classes, a.overwrite)
    if a.command == "rasterise":
        from terraseg.core.rasterise import rasterise_labels

        return rasterise_labels(a.raster, a.labels, a.out, a.class_field, a.class_map,
                                a.all_touched, a.overwrite)
    from terraseg.core.modelfile import load_model

    model = load_model(a.model)
    source = _source_for_model(a.raster, a.bands, model.meta, a)
    if a.command == "predict":
        from terraseg.core.inference import predict_raster

        return predict_raster(model, source, a.out_dir, reporter, window=a.window,
                              extent_layer=a.extent_layer, tile_px=a.tile_size,
                              overwrite=a.overwrite, preview=a.preview, device=a.device,
                              precision=a.precision, threshold=a.threshold, tta=a.tta,
                              postprocess=_postprocess_spec(a, model.meta, source))
    if a.command == "evaluate":
        from terraseg.core.evaluate import evaluate_model

        return evaluate_model(model, source, a.reference, a.class_field, a.out_dir, reporter,
                              class_map=a.class_map, category_field=a.category_field,
                              overwrite=a.overwrite, device=a.device,
                              threshold=a.threshold, tta=a.tta)
    raise TerraSegError(f"Unknown command {a.command}.", "See terraseg --help.")


def report_failure(exc: BaseException, reporter: Any) -> int:
    """Report a TerraSeg error or a cancellation as an error event; returns the exit code.

    Re-raises a SystemExit that is not a cancellation (Lightning turns the interrupt our
    SIGTERM handler raises into ``sys.exit(1)``).
    """
    if isinstance(exc, TerraSegError):
        reporter.error(exc.kind, exc.message, exc.hint)
        return exc.exit_code
    if isinstance(exc, SystemExit) and not reporter.cancelled:
        raise exc
    err = CancelledError("Cancelled; no output was written.")
    reporter.error(err.kind, err.message)
    return err.exit_code


def install_signal_handlers(reporter: Any) -> None:
    """SIGTERM/SIGINT: request cancel and interrupt the work at once (outputs roll back)."""

    def handler(signum: int, _frame: Any) -> None:
        reporter.cancel()
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``terraseg`` command."""
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        from terraseg.cli.worker import run_worker

        return run_worker()
    from terraseg.core.reporting import ConsoleReporter

    reporter = ConsoleReporter(quiet=args.quiet)
    install_signal_handlers(reporter)
    try:
        result = run_command(args, reporter)
    except (TerraSegError, KeyboardInterrupt, SystemExit) as exc:
        return report_failure(exc, reporter)
    if args.command in ("info", "env"):
        print(json.dumps(result, indent=2))
    elif args.command == "evaluate":
        print(f"accuracy {result['accuracy']:.4f}  F1 weighted {result['f1_weighted']:.4f}  "
              f"n={result['n_samples']}  -> {result['metrics']}")
    elif result:
        keys = ("model", "probability", "classes", "preview", "grid_csv", "labels", "polygons",
                "csv", "zones", "cv_csv", "mosaic", "compare_md", "compare_csv")
        for k in keys:
            if isinstance(result.get(k), str):
                print(f"{k}: {result[k]}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
