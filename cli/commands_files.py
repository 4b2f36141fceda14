"""Commands on files: ``info``, ``rasterise``, ``vectorise``, ``areas``, ``mosaic``, ``env``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from terraseg.cli.registry import Command, register
from terraseg.core.reporting import Reporter


def _json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2)


def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")


def _run_info(a: argparse.Namespace, _reporter: Reporter) -> dict[str, Any]:
    from terraseg.core.modelfile import read_metadata

    return read_metadata(a.model)


def _rasterise_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raster", required=True, help="raster whose grid the labels take")
    p.add_argument("--labels", required=True)
    p.add_argument("--class-field")
    p.add_argument("--class-map")
    p.add_argument("--out", required=True, help="uint8 GeoTIFF of class ids")
    p.add_argument("--all-touched", action="store_true")
    p.add_argument("--overwrite", action="store_true")


def _run_rasterise(a: argparse.Namespace, _reporter: Reporter) -> dict[str, Any]:
    from terraseg.core.rasterise import rasterise_labels

    return rasterise_labels(a.raster, a.labels, a.out, a.class_field, a.class_map,
                            a.all_touched, a.overwrite)


def _model_classes(model: str | None) -> list[dict[str, Any]] | None:
    """The class list of a model file (names and colours for exports)."""
    from terraseg.core.modelfile import read_meta

    return read_meta(model).class_dicts if model else None


def _vectorise_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classes", required=True, help="classes.tif from predict")
    p.add_argument("--out", required=True, help="GeoPackage to write")
    p.add_argument("--min-area", type=float, default=0.0, help="merge regions below (m2)")
    p.add_argument("--model", help="model file for class names")
    p.add_argument("--overwrite", action="store_true")


def _run_vectorise(a: argparse.Namespace, _reporter: Reporter) -> dict[str, Any]:
    from terraseg.core.export import vectorise

    return vectorise(a.classes, a.out, a.min_area, _model_classes(a.model), a.overwrite)


def _areas_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classes", required=True, help="classes.tif from predict")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--zones", help="polygon layer (parcels, districts)")
    p.add_argument("--zone-field", help="zone name attribute")
    p.add_argument("--out-zones", help="GeoPackage: zones with per-class area attributes")
    p.add_argument("--model", help="model file for class names")
    p.add_argument("--overwrite", action="store_true")


def _run_areas(a: argparse.Namespace, _reporter: Reporter) -> dict[str, Any]:
    from terraseg.core.export import area_statistics

    return area_statistics(a.classes, a.out_csv, a.zones, a.zone_field, a.out_zones,
                           _model_classes(a.model), a.overwrite)


def _mosaic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inputs", nargs="+", required=True, help="tiles, folders or globs")
    p.add_argument("--out", required=True, help="VRT file to write")
    p.add_argument("--nodata", type=float,
                   help="the mosaic's nodata value (default: the tiles' own, which must "
                        "agree); e.g. 0 for chips filled with 0 that declare none")
    p.add_argument("--overwrite", action="store_true")


def _run_mosaic(a: argparse.Namespace, _reporter: Reporter) -> dict[str, Any]:
    from terraseg.core.mosaic import build_mosaic

    return build_mosaic(a.inputs, a.out, a.overwrite, a.nodata)


def _run_env(_a: argparse.Namespace, _reporter: Reporter) -> dict[str, Any]:
    from terraseg.cli.environment import engine_environment

    return engine_environment()


register(Command("info", "print a model file's metadata as JSON", _info_args, _run_info,
                 printer=_json))
register(Command("rasterise", "rasterise labels onto a raster's grid (0 = none)",
                 _rasterise_args, _run_rasterise))
register(Command("vectorise", "polygons of a class raster (GeoPackage)", _vectorise_args,
                 _run_vectorise))
register(Command("areas", "area per class (m2, %%), overall or per zone", _areas_args,
                 _run_areas))
register(Command("mosaic", "many tiles as one raster (a VRT)", _mosaic_args, _run_mosaic))
register(Command("env", "engine environment as JSON: python, packages, device",
                 lambda _p: None, _run_env, printer=_json))
