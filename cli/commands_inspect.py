"""Command ``inspect``: band coverage, suggested bands and undeclared nodata of a raster.

The panel runs it when a raster is chosen or its bands change (plugin/panel_data.py), so
the analyst sees, before training, which share of the raster and of the labelled pixels
every band covers (core/coverage.py) and whether the raster fills its outside with a value
it does not declare as nodata (core/nodata_guess.py).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from terraseg.cli.registry import Command, register
from terraseg.core.reporting import Reporter


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("raster", help="raster to inspect (anything GDAL reads)")
    p.add_argument("--bands", help="the bands asked about: 1,2,3 or red=3,... (default: all)")
    p.add_argument("--labels", help="vector labels or a label raster: coverage of the "
                                    "labelled pixels too")
    p.add_argument("--class-field", help="class attribute of vector labels")
    p.add_argument("--nodata", type=float,
                   help="nodata value replacing the raster's own (as for train/predict)")


def _run_inspect(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    from terraseg.core.coverage import inspect_raster

    report = inspect_raster(a.raster, a.bands, a.labels, a.class_field, a.nodata)
    out = report.to_dict()
    if report.nodata_suspect is not None:
        reporter.log(f"{a.raster} may fill its outside with {report.nodata_suspect.value:g} "
                     f"without declaring it as nodata: {out['nodata_suspect']['evidence']}; "
                     f"use --nodata {report.nodata_suspect.value:g}", "warning")
    return out


def _print_inspect(result: dict[str, Any]) -> str:
    """The report as a table, then the suggestion and any nodata suspect."""
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:5.1f} %"

    lines = [f"{result['raster']}: {result['width_px']} x {result['height_px']} px "
             f"(read at {result['read_width_px']} x {result['read_height_px']})",
             "band  description          nodata        valid  labelled"]
    for b in result["bands"]:
        nd = "-" if b["nodata"] is None else f"{b['nodata']:g}"
        lines.append(f"{b['index']:>4}  {b['description'][:20]:<20} {nd:>8}  "
                     f"{pct(b['valid_fraction'])}  {pct(b['labelled_fraction'])}")
    chosen = ",".join(map(str, result["chosen_bands"]))
    best = ",".join(map(str, result["suggested_bands"]))
    lines.append(f"bands {chosen}: {pct(result['valid_fraction'])} of the raster, "
                 f"{pct(result['labelled_fraction'])} of the labelled pixels")
    lines.append(f"suggested bands {best}: {pct(result['suggested_valid_fraction'])} of the "
                 f"raster, {pct(result['suggested_labelled_fraction'])} of the labelled pixels")
    suspect = result["nodata_suspect"]
    if suspect:
        lines.append(f"undeclared nodata? {suspect['evidence']} (use --nodata "
                     f"{suspect['value']:g})")
    lines.append(json.dumps({"suggested_bands": result["suggested_bands"],
                             "nodata_suspect": suspect and suspect["value"]}))
    return "\n".join(lines)


register(Command("inspect", "band coverage, suggested bands and undeclared nodata of a "
                            "raster", _inspect_args, _run_inspect, printer=_print_inspect))
