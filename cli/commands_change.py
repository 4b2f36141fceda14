"""Command ``change``: change between two dates by classification difference.

Either two class maps (``--classes-a``/``--classes-b``, e.g. two predictions or two CORINE
maps, with optional probability rasters) or a model and two images (``--model``,
``--raster-a``, ``--raster-b``), which are predicted into ``OUT/date_a`` and ``OUT/date_b``
first. The second date is put on the first's grid, its misregistration measured
(refused above ``--max-shift`` unless ``--correct-shift``), and the from-to raster, change
mask, change probability and area tables are written (core/change_run.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from terraseg.cli.registry import Command, register
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError


def _change_args(p: argparse.ArgumentParser) -> None:
    maps = p.add_argument_group("two class maps")
    maps.add_argument("--classes-a", help="class raster of the first date (its grid is the "
                                          "output grid; nodata honoured, else 0 = nodata)")
    maps.add_argument("--classes-b", help="class raster of the second date")
    maps.add_argument("--probability-a", help="probability raster of the first date (one "
                                              "band per class, as predict writes)")
    maps.add_argument("--probability-b", help="probability raster of the second date")
    model = p.add_argument_group("or a model and two images")
    model.add_argument("--model", help="model that predicts both dates")
    model.add_argument("--raster-a", help="image of the first date")
    model.add_argument("--raster-b", help="image of the second date")
    model.add_argument("--bands", help="band mapping of both images (default: the model's)")
    model.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out-dir", required=True, help="folder for fromto.tif, change_mask.tif, "
                                                    "fromto_area.csv, fromto.json, ...")
    p.add_argument("--legend", metavar="CSV", help="class names: code,name[,colour] (CORINE's "
                                                   "grid_code,clc_code,... legend works)")
    p.add_argument("--max-shift", type=float, default=0.5, metavar="PX",
                   help="largest misregistration (pixels, measured by phase correlation) "
                        "accepted; negative: do not check")
    p.add_argument("--correct-shift", action="store_true",
                   help="move the second date by the measured shift (whenever it is over "
                        "0.1 px) instead of refusing one over --max-shift")
    p.add_argument("--border", type=int, default=0, metavar="PX",
                   help="pixels within this distance of a class boundary of either map are "
                        "unknown (not compared): removes sliver changes")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="with both probability rasters: a pixel whose class differs is "
                        "changed from this change probability on")
    p.add_argument("--zones", help="polygons: a from-to table per zone (fromto_zones.csv)")
    p.add_argument("--zone-field", help="zone attribute naming the zones")
    p.add_argument("--transition", action="append", default=[], metavar="FROM=TO",
                   help="transition of interest (class names or codes, * = any; repeat or "
                        "separate by commas): transitions.tif and transitions.gpkg")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _inputs(a: argparse.Namespace, reporter: Reporter) -> Any:
    """The two class maps: given, or predicted from ``--model`` and the two images.

    Raises:
        ConfigError: Neither or both ways given, or one of a pair missing.
    """
    from terraseg.core.change_pair import PairInputs

    by_maps = a.classes_a or a.classes_b
    by_model = a.model or a.raster_a or a.raster_b
    if bool(by_maps) == bool(by_model):
        raise ConfigError("Give either two class maps (--classes-a, --classes-b) or a model "
                          "and two images (--model, --raster-a, --raster-b).",
                          "e.g. terraseg change --classes-a 2018/classes.tif --classes-b "
                          "2023/classes.tif --out-dir change.")
    if by_maps:
        if not (a.classes_a and a.classes_b):
            raise ConfigError("--classes-a and --classes-b go together.",
                              "Give the class raster of each date.")
        if bool(a.probability_a) != bool(a.probability_b):
            raise ConfigError("Only one date has a probability raster.",
                              "Give both --probability-a and --probability-b, or neither.")
        return PairInputs(a.classes_a, a.classes_b, a.probability_a, a.probability_b)
    if not (a.model and a.raster_a and a.raster_b):
        raise ConfigError("--model, --raster-a and --raster-b go together.",
                          "Give the model and the image of each date.")
    dates = {}
    for key, raster in (("date_a", a.raster_a), ("date_b", a.raster_b)):
        reporter.log(f"predicting {raster} into {Path(a.out_dir) / key}")
        dates[key] = _predict(a, raster, Path(a.out_dir) / key, reporter)
    return PairInputs(dates["date_a"]["classes"], dates["date_b"]["classes"],
                      dates["date_a"]["probability"], dates["date_b"]["probability"],
                      a.raster_a, a.raster_b)


def _predict(a: argparse.Namespace, raster: str, out_dir: Path, reporter: Reporter
             ) -> dict[str, Any]:
    """Predict one date with predict's own options and defaults."""
    from terraseg.cli.commands_apply import _run_predict
    from terraseg.cli.parser import build_parser

    argv = ["predict", "--model", a.model, "--raster", raster, "--out-dir", str(out_dir),
            "--device", a.device]
    argv += ["--bands", a.bands] if a.bands else []
    argv += ["--overwrite"] if a.overwrite else []
    return _run_predict(build_parser().parse_args(argv), reporter)


def _run_change(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    from terraseg.core.change_pair import PairInputs
    from terraseg.core.change_run import ChangeOptions, check_options, output_names, run_change
    from terraseg.core.output_targets import check_output_dir

    transitions = tuple(t.strip() for spec in a.transition for t in spec.split(",")
                        if t.strip())
    opts = ChangeOptions(legend=a.legend, max_shift_px=a.max_shift,
                         correct_shift=a.correct_shift, border_px=a.border,
                         threshold=a.threshold, zones=a.zones, zone_field=a.zone_field,
                         transitions=transitions)
    check_options(opts)
    with_probs = PairInputs("a", "b", "pa", "pb") if a.model or a.probability_a else \
        PairInputs("a", "b")
    check_output_dir(a.out_dir, output_names(with_probs, opts), a.overwrite)
    return run_change(_inputs(a, reporter), opts, a.out_dir, reporter, overwrite=a.overwrite)


def _print_change(result: dict[str, Any]) -> str:
    s = result.get("shift")
    shift = ("not checked" if s is None else
             f"dx {s['dx_px']:+.2f} dy {s['dy_px']:+.2f} px"
             + (f" (corrected, residual {s['residual_px']:.2f} px)" if s["corrected"] else ""))
    lines = [f"{result['k']} classes; shift {shift}; border {result['border_px']} px",
             f"changed {result['changed_m2'] / 1e4:.2f} ha of {result['compared_m2'] / 1e4:.2f} "
             f"ha compared ({result['changed_px']} of {result['compared_px']} px) -> "
             f"{result['fromto_tif']}"]
    for t in result["top_transitions"][:10]:
        lines.append(f"  {t['from']} -> {t['to']}: {t['area_m2'] / 1e4:.2f} ha")
    return "\n".join(lines)


register(Command("change", "change between two dates: from-to classes, change mask and "
                           "areas (classification difference)", _change_args, _run_change,
                 printer=_print_change))
