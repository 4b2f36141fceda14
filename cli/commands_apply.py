"""Commands that apply a model to a raster: ``predict`` and ``evaluate``.

Their option values are checked before any raster is read: the device is one this machine
has, ``--tile-size`` is 0 or a size the model takes, ``--min-area`` is a finite area, and
the threshold and the clean-up settings follow their own rules (core/decision.py,
core/postprocess.py), which run before the outputs are opened.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from terraseg.cli.options import NODATA_HELP, add_extra_args, parse_window
from terraseg.cli.registry import Command, register
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError
from terraseg.protocol.model_meta import MAX_WINDOW_PX, ModelMeta

#: The smallest processing tile (``--tile-size``) other than 0 (the model's default).
MIN_TILE_PX = 16


def _model_and_source(a: argparse.Namespace) -> tuple[Any, Any]:
    """The loaded model and its input source for ``--raster`` (shared with training).

    The options are checked first: the device and the tile size before the model is read,
    the threshold and the tile size against the model before the raster is opened.
    """
    from terraseg.core.decision import resolve_threshold
    from terraseg.core.extras import parse_extras
    from terraseg.core.model_input import source_for_model
    from terraseg.core.modelfile import load_model

    check_device(a.device)
    tile_px = getattr(a, "tile_size", 0)
    check_tile_size_option(tile_px)
    model = load_model(a.model)
    resolve_threshold(model.meta, a.threshold)
    model.kind.check_tile_px(model.meta.geometry, tile_px, "--tile-size")
    extras = parse_extras(a.extra_rasters, a.dem, bool(a.slope_from_dem))
    return model, source_for_model(model.meta, a.raster, a.bands, extras,
                                   nodata=getattr(a, "nodata", None))


def check_tile_size_option(tile_px: int) -> None:
    """``--tile-size``: 0 (the model's default) or 16 to 8192 pixels.

    Raises:
        ConfigError: Naming the flag and the valid sizes.
    """
    if tile_px != 0 and not MIN_TILE_PX <= tile_px <= MAX_WINDOW_PX:
        raise ConfigError(f"--tile-size is {tile_px}, but it must be 0 (the model's default) "
                          f"or {MIN_TILE_PX} to {MAX_WINDOW_PX} pixels.",
                          "Leave --tile-size out, or use e.g. --tile-size 512.")


def check_device(name: str) -> None:
    """``--device``: ``auto``, ``cpu``, or a GPU this machine has (``cuda``, ``cuda:N``).

    Raises:
        ConfigError: An unknown device, or a GPU the engine's torch cannot use.
    """
    import torch

    from terraseg.core.network_prep import pick_device

    dev = pick_device(name)
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"--device {name}: no CUDA GPU is available to the engine.",
                              "Use --device auto (the GPU when there is one, else the CPU) "
                              "or --device cpu.")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"--device {name}: there is no GPU {dev.index} (this machine "
                              f"has {n}).", f"Use --device cuda:0 to cuda:{n - 1}, or cuda.")
        return
    if dev.type == "mps" and torch.backends.mps.is_available():
        return
    raise ConfigError(f"--device {name} is not a device TerraSeg can run on here.",
                      "Use auto, cpu or cuda (cuda:N for GPU N).")


def postprocess_spec(a: argparse.Namespace, meta: ModelMeta, source: Any) -> Any:
    """PostProcess from predict's --opening/--closing/--morph-class/--min-area options.

    Raises:
        ConfigError: ``--min-area`` is not finite, ``--morph-class`` is not a class of the
            model, or the sizes break core/postprocess.py's rules.
    """
    from terraseg.core.postprocess import PostProcess, min_region_pixels

    class_id = meta.classes[0].id
    if not math.isfinite(a.min_area):
        raise ConfigError(f"--min-area is {a.min_area}, not a finite area.",
                          "Give an area in m2, e.g. --min-area 500 (0 = keep all).")
    if a.morph_class:
        by_name = {c.name: c.id for c in meta.classes}
        if a.morph_class not in by_name:
            raise ConfigError(f"--morph-class '{a.morph_class}' is not a class of this model.",
                              f"Use one of {sorted(by_name)}.")
        class_id = by_name[a.morph_class]
    min_px = a.min_region_px or min_region_pixels(source.grid, a.min_area)
    return PostProcess(opening_px=a.opening, closing_px=a.closing, min_region_px=min_px,
                       class_id=class_id)


def _predict_args(pr: argparse.ArgumentParser) -> None:
    pr.add_argument("--model", required=True)
    pr.add_argument("--raster", required=True)
    pr.add_argument("--out-dir", required=True)
    pr.add_argument("--bands", help="band mapping (default: the model's band indices)")
    pr.add_argument("--nodata", type=float, help=NODATA_HELP)
    add_extra_args(pr)
    area = pr.add_mutually_exclusive_group()
    area.add_argument("--window", type=parse_window, help="col,row,width,height in pixels")
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
    pr.add_argument("--hierarchy", metavar="CSV",
                    help="class hierarchy (code,level1,level2,...; 'corine' for the shipped "
                         "CORINE legend) for --level")
    pr.add_argument("--level", type=int, default=0,
                    help="also write the map at this level of --hierarchy "
                         "(levelN_probability.tif, levelN_classes.tif)")
    pr.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _run_predict(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    from terraseg.core.inference import predict_raster

    model, source = _model_and_source(a)
    hierarchy = _level_hierarchy(a, model.meta)
    result = predict_raster(model, source, a.out_dir, reporter, window=a.window,
                            extent_layer=a.extent_layer, tile_px=a.tile_size,
                            overwrite=a.overwrite, preview=a.preview, device=a.device,
                            precision=a.precision, threshold=a.threshold, tta=a.tta,
                            postprocess=postprocess_spec(a, model.meta, source))
    if hierarchy is not None:
        from terraseg.core.classes import classes_from_dicts
        from terraseg.core.hierarchy import write_level_map

        result["level"] = write_level_map(result["probability"],
                                          classes_from_dicts(model.meta.class_dicts),
                                          hierarchy, a.level, a.out_dir, a.overwrite)
        reporter.log(f"map at {result['level']['level_name']}: {result['level']['classes']}")
    return result


def _level_hierarchy(a: argparse.Namespace, meta: ModelMeta) -> Any:
    """The ``--hierarchy``/``--level`` of predict, checked before any work (None without them).

    Raises:
        ConfigError: One without the other, a level the file lacks, model classes it does
            not list, or level outputs that exist without ``--overwrite``.
    """
    if not a.level and not a.hierarchy:
        return None
    if not (a.level and a.hierarchy):
        raise ConfigError("--level and --hierarchy go together.",
                          "Give both, e.g. --hierarchy corine --level 1.")
    from terraseg.core.classes import classes_from_dicts
    from terraseg.core.hierarchy import check_level, level_output_names, load_hierarchy
    from terraseg.core.output_targets import check_output_dir

    hierarchy = load_hierarchy(a.hierarchy)
    check_level(hierarchy, classes_from_dicts(meta.class_dicts), a.level)
    check_output_dir(Path(a.out_dir), level_output_names(a.level), a.overwrite)
    return hierarchy


def _evaluate_args(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("--model", required=True)
    ev.add_argument("--raster", required=True)
    ev.add_argument("--reference", required=True, help="points or polygons (or a raster)")
    ev.add_argument("--class-field", help="class attribute of the reference layer")
    ev.add_argument("--class-map", help="e.g. developed=sealed,*=unsealed")
    ev.add_argument("--category-field", help="attribute for accuracy per category")
    ev.add_argument("--bands", help="band mapping (default: the model's band indices)")
    ev.add_argument("--nodata", type=float, help=NODATA_HELP)
    add_extra_args(ev)
    ev.add_argument("--out-dir", required=True)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--threshold", type=float, help="as for predict")
    ev.add_argument("--tta", action="store_true", help="as for predict")
    ev.add_argument("--hierarchy", metavar="CSV",
                    help="class hierarchy (code,level1,level2,...; CORINE's legend): "
                         "metrics at every level as well")
    ev.add_argument("--overwrite", action="store_true")
    ev.add_argument("--baseline", choices=["rf"],
                    help="also score a random forest of pixels (rf), fitted on "
                         "--baseline-labels, on the same reference pixels")
    ev.add_argument("--baseline-labels", metavar="FILE",
                    help="labels the forest is fitted on, all labelled pixels (default: the "
                         "model's training labels, when that file still exists)")
    ev.add_argument("--baseline-class-field",
                    help="class attribute of --baseline-labels (default: the model's)")
    ev.add_argument("--baseline-class-map",
                    help="class map of --baseline-labels (default: the model's)")
    ev.add_argument("--trees", type=int, default=50, help="trees of the baseline forest")
    ev.add_argument("--max-samples", type=int, default=30_000,
                    help="most labelled pixels the baseline forest is fitted on (stratified "
                         "by class)")
    ev.add_argument("--seed", type=int, default=0,
                    help="seed of the baseline's pixel sample and forest")


def baseline_spec(a: argparse.Namespace, meta: ModelMeta) -> Any:
    """BaselineSpec from ``--baseline rf`` and its options, or None without ``--baseline``.

    The labels default to the training labels the model file records, when that file
    exists; their class field and class map default to the model's.

    Raises:
        ConfigError: No ``--baseline-labels`` and no existing training labels recorded, or
            a baseline option without ``--baseline``, or invalid forest settings.
    """
    from pathlib import Path

    from terraseg.core.baseline import BaselineSpec
    from terraseg.core.forest import ForestSettings

    if not a.baseline:
        if a.baseline_labels:
            raise ConfigError("--baseline-labels is given without --baseline.",
                              "Add --baseline rf, or leave --baseline-labels out.")
        return None
    labels = a.baseline_labels
    recorded = meta.labels.path
    if not labels and recorded and Path(recorded.split("|")[0]).exists():
        labels = recorded
    if not labels:
        where = (f"the model's training labels {recorded} do not exist here" if recorded
                 else "the model file records no training labels")
        raise ConfigError(f"--baseline rf needs the training labels to fit the random forest "
                          f"on, and {where}.",
                          "Give them with --baseline-labels FILE (and --baseline-class-field "
                          "for vector labels).")
    return BaselineSpec(labels, a.baseline_class_field or meta.class_field,
                        a.baseline_class_map or meta.class_map,
                        ForestSettings(trees=a.trees, max_samples=a.max_samples,
                                       seed=a.seed))


def _run_evaluate(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    from terraseg.core.evaluate import evaluate_model
    from terraseg.core.modelfile import read_meta

    baseline = baseline_spec(a, read_meta(a.model)) if a.baseline or a.baseline_labels \
        else None
    hierarchy = None
    if a.hierarchy:
        from terraseg.core.hierarchy import load_hierarchy

        hierarchy = load_hierarchy(a.hierarchy)
    model, source = _model_and_source(a)
    return evaluate_model(model, source, a.reference, a.class_field, a.out_dir, reporter,
                          class_map=a.class_map, category_field=a.category_field,
                          overwrite=a.overwrite, device=a.device, threshold=a.threshold,
                          tta=a.tta, baseline=baseline, hierarchy=hierarchy)


def _print_evaluation(result: dict[str, Any]) -> str:
    text = (f"accuracy {result['accuracy']:.4f}  F1 weighted {result['f1_weighted']:.4f}  "
            f"n={result['n_samples']}  -> {result['metrics']}")
    for level, m in (result.get("levels") or {}).items():
        text += (f"\n{level}: accuracy {m['accuracy']:.4f}  F1 weighted "
                 f"{m['f1_weighted']:.4f}  mean IoU {m['mean_iou']:.4f}")
    if "baseline" in result:
        from terraseg.core.baseline import side_by_side

        text += "\n" + "\n".join(side_by_side(result, result["baseline"]["metrics"]))
    return text


register(Command("predict", "probability and class rasters for a raster", _predict_args,
                 _run_predict))
register(Command("evaluate", "accuracy against an independent reference layer",
                 _evaluate_args, _run_evaluate, printer=_print_evaluation))
