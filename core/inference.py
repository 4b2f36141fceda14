"""Streamed prediction of a model over a raster, a window or a layer's extent.

The model's kind (core/models/kinds.py) turns the region into class probabilities in
pieces - dense stride-aligned tiles for patch models (core/dense.py), blended overlapping
tiles for tile networks (core/blend.py) - so this module never branches on the kind.
Each piece is written before the next is computed, so memory does not grow with the
raster. Results go to temporary files that are renamed into place only when everything
succeeded (atomic outputs); the class map may then be cleaned (core/postprocess.py).
Before any work the outputs are checked, and the disk must have room for them
(:func:`estimate_output_bytes`); a region without a single valid pixel is refused rather
than written as an all-nodata map.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from terraseg.core.atomic import AtomicOutputs
from terraseg.core.decision import check_finite, class_ids, resolve_threshold
from terraseg.core.geotiff import GeoTiffWriter, overview_factors
from terraseg.core.grid import Grid
from terraseg.core.modelfile import LoadedModel, check_raster_fits
from terraseg.core.network_prep import pick_device, prepare_network
from terraseg.core.normalise import BandStats
from terraseg.core.output_targets import check_free_space, check_output_dir
from terraseg.core.postprocess import PostProcess, RowReader, RowWriter, morph_pass, region_pass
from terraseg.core.preview import colormap_from_colours, write_preview_png
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError, RasterError

PROB_NODATA = -1.0
# GeoTIFF block size of the outputs; default tiles (960 px) are whole multiples of it, so
# each block is compressed once. 480 is a multiple of 16 (TIFF) and of strides 1-6 and 8.
OUTPUT_BLOCK_PX = 480
WRITE_CACHE_MB = 256
CLASS_NODATA = 0


def estimate_output_bytes(height_px: int, width_px: int, n_classes: int,
                          postprocess: PostProcess | None = None) -> int:
    """Upper bound of the bytes predict writes: uncompressed outputs, overviews, scratch.

    ``probability.tif`` (float32 per class) and ``classes.tif`` (uint8), a third more for
    overviews, and the uint8 scratch rasters of post-processing (raw classes, and the
    morphology stage when regions are removed too). Compression usually makes the files
    several times smaller; the bound is what a full disk must not fall short of.
    """
    px = height_px * width_px
    outputs = px * (4 * n_classes + 1)
    if overview_factors(height_px, width_px):
        outputs += outputs // 3
    scratch = 0
    if postprocess is not None and postprocess.active:
        morph = bool(postprocess.opening_px or postprocess.closing_px)
        scratch = px * (2 if morph and postprocess.min_region_px > 1 else 1)
    return outputs + scratch + 1024 * 1024  # headers, preview, the file system's blocks


def no_valid_pixel_error(source: RasterSource, region: Window, what: str) -> RasterError:
    """The error for a processed area without one valid pixel (all nodata)."""
    nodata = source.nodata
    value = f"nodata value {nodata:g}" if nodata is not None else "its nodata mask"
    return RasterError(
        f"No pixel of {what} ({int(region.width)}x{int(region.height)} px at column "
        f"{int(region.col_off)}, row {int(region.row_off)}) of '{source.path}' holds data: "
        f"each is nodata ({value}) in at least one mapped band; nothing was written.",
        "Choose an area that contains data (--window, --extent-layer, --reference), or "
        "check the raster's nodata value (QGIS: Layer properties > Transparency).")


def resolve_region(source: RasterSource, window: Window | None = None,
                   extent_layer: str | None = None) -> Window:
    """The output region in raster pixels: a window, a layer's extent, or the whole raster.

    Raises:
        RasterError: The region does not overlap the raster.
    """
    g = source.grid
    full = Window(0, 0, g.width_px, g.height_px)
    if extent_layer:
        window = _layer_window(source, extent_layer)
    if window is None:
        return full
    try:
        inter = window.intersection(full)
    except Exception:  # rasterio raises WindowError on no overlap
        inter = None
    if inter is None or inter.width < 1 or inter.height < 1:
        raise RasterError(f"The requested area {window} does not overlap the raster "
                          f"({g.width_px}x{g.height_px} px).",
                          "Choose a window or layer inside the raster.")
    return Window(int(inter.col_off), int(inter.row_off), int(inter.width), int(inter.height))


def _layer_window(source: RasterSource, path: str) -> Window:
    import fiona
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    from terraseg.core.layer_spec import split_layer_spec

    file_path, layer_name = split_layer_spec(path)
    try:
        with fiona.open(file_path, layer=layer_name) as layer:
            bounds, crs = layer.bounds, layer.crs
    except Exception as exc:  # noqa: BLE001 - fiona raises many types
        raise RasterError(f"Cannot read extent layer {path} ({exc}).",
                          "Give a readable vector file (GeoPackage, GeoJSON, Shapefile).") from exc
    if not crs or source.grid.crs is None:
        raise RasterError(f"Extent layer {path} or the raster has no CRS.",
                          "Assign a CRS to both (QGIS: Layer properties > Source).")
    left, bottom, right, top = transform_bounds(crs, source.grid.crs, *bounds)
    w = from_bounds(left, bottom, right, top, source.grid.transform)
    eps = 0.1  # ignore slivers from reprojection
    col0, row0 = math.floor(w.col_off + eps), math.floor(w.row_off + eps)
    col1 = math.ceil(w.col_off + w.width - eps)
    row1 = math.ceil(w.row_off + w.height - eps)
    return Window(col0, row0, max(col1 - col0, 1), max(row1 - row0, 1))


def predict_raster(model: LoadedModel, source: RasterSource, out_dir: str | Path,
                   reporter: Reporter, window: Window | None = None,
                   extent_layer: str | None = None, tile_px: int = 0,
                   overwrite: bool = False, preview: bool = False, device: str = "auto",
                   precision: str = "32", threshold: float | None = None,
                   tta: bool = False, postprocess: PostProcess | None = None) -> dict[str, Any]:
    """Write probability.tif and classes.tif (and preview.png) for a region of a raster.

    Two-class models with a threshold (given, or tuned on validation data and stored in the
    model) predict class 1 where P(class 1) >= threshold; otherwise the most probable
    class. ``tta`` averages the probabilities over the four 90-degree rotations.
    ``postprocess`` cleans the class raster (opening/closing, minimum regions; see
    :mod:`terraseg.core.postprocess`); the probabilities are left as predicted.

    Returns:
        Paths and a summary (device, pixels, class shares).
    """
    meta = model.meta
    check_raster_fits(meta, source)
    threshold = resolve_threshold(meta, threshold)
    out_dir = Path(out_dir)
    names = ["probability.tif", "classes.tif"] + (["preview.png"] if preview else [])
    check_output_dir(out_dir, names, overwrite)
    region = resolve_region(source, window, extent_layer)
    stats = BandStats(meta.normalisation.mean, meta.normalisation.std)
    classes = meta.class_dicts
    pp = postprocess if postprocess is not None and postprocess.active else None
    check_free_space(out_dir, estimate_output_bytes(int(region.height), int(region.width),
                                                    len(classes), pp),
                     " and ".join(n for n in names if n != "preview.png"))
    dev = pick_device(device)
    if precision not in ("32", "bf16", "16"):
        raise ConfigError(f"Unknown precision '{precision}'.", "Use 32, bf16 or 16.")
    autocast = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[precision]
    network = prepare_network(model.network, dev, tta=tta)
    grid = source.grid.window_grid(region)
    k = len(classes)
    counts = np.zeros(k + 1, dtype=np.int64)
    reporter.log(f"predicting {region.width}x{region.height} px in "
                 f"{model.kind.count_tiles(meta.geometry, region, tile_px)} tile(s) on "
                 f"{dev.type}")
    # GDAL's block cache holds dirty output blocks; its default (5% of RAM) would let
    # memory grow with the raster, so it is capped while writing.
    with rasterio.Env(GDAL_CACHEMAX=WRITE_CACHE_MB), \
            AtomicOutputs(out_dir, overwrite=overwrite) as outputs:
        prob_w = outputs.geotiff("probability.tif", grid, k, "float32", PROB_NODATA,
                                 [f"probability {c['name']}" for c in classes],
                                 block_px=OUTPUT_BLOCK_PX)
        cmap = colormap_from_colours({int(c["id"]): c["colour"] for c in classes})
        cls_w = outputs.geotiff("classes.tif", grid, 1, "uint8", CLASS_NODATA, ["class"],
                                colormap=cmap, block_px=OUTPUT_BLOCK_PX)
        cls_w.set_tags(TERRASEG_CLASSES=json.dumps(classes))
        raw_w = (outputs.geotiff("classes.raw.tif", grid, 1, "uint8", CLASS_NODATA, ["class"],
                                 block_px=OUTPUT_BLOCK_PX, scratch=True) if pp else cls_w)
        prob_w.set_tags(TERRASEG_CLASSES=json.dumps(classes))
        for crop, p, v, fraction in model.kind.probabilities(
                meta, network, source, stats, region, dev, tile_px, autocast):
            h, w = int(crop.height), int(crop.width)
            check_finite(p, v, f"window {crop}")
            cls = np.where(v, class_ids(p, threshold), CLASS_NODATA).astype(np.uint8)
            p = np.where(v[None], p, PROB_NODATA).astype(np.float32)
            out_win = Window(crop.col_off - region.col_off, crop.row_off - region.row_off, w, h)
            prob_w.write(p, out_win)
            raw_w.write(cls[None], out_win)
            counts += np.bincount(cls.ravel(), minlength=k + 1)
            reporter.progress(fraction, "predict")
        if not counts[1:].any():
            raise no_valid_pixel_error(source, region, "the processed area")
        reporter.progress(1.0, "predict", "building overviews")
        prob_w.close(overviews=True, check_cancelled=reporter.check_cancelled)
        changed = None
        if pp is not None:
            raw_w.close(overviews=False)
            reporter.progress(1.0, "predict", "post-processing the classes")
            changed, counts = _postprocess(outputs, prob_w.path, raw_w.path, cls_w, pp,
                                           classes, grid)
            reporter.log(f"post-processing {pp.to_dict()}: changed {changed}")
        cls_w.close(overviews=True, check_cancelled=reporter.check_cancelled)
        if preview:
            write_preview_png(outputs.temp_path("classes.tif"), outputs.temp_path("preview.png"),
                              {int(c["id"]): c["colour"] for c in classes})
    n_valid = int(counts[1:].sum())
    shares = {c["name"]: (float(counts[c["id"]]) / n_valid if n_valid else 0.0) for c in classes}
    result = {"probability": str(out_dir / "probability.tif"),
              "classes": str(out_dir / "classes.tif"),
              "window": [int(region.col_off), int(region.row_off), int(region.width),
                         int(region.height)],
              "device": dev.type, "valid_pixels": n_valid, "class_shares": shares,
              "threshold": threshold, "tta": tta}
    if pp is not None:
        result["postprocess"] = {**pp.to_dict(), "changed_px": changed}
    if preview:
        result["preview"] = str(out_dir / "preview.png")
    return result


def _postprocess(outputs: AtomicOutputs, prob_path: Path, raw_path: Path,
                 cls_w: GeoTiffWriter, pp: PostProcess, classes: list[dict[str, Any]],
                 grid: Grid) -> tuple[dict[str, int], np.ndarray]:
    """Clean the raw class raster into ``cls_w``; returns changed pixels and class counts.

    Opening/closing and region removal each stream over the raster; when both run, the
    morphology goes to a scratch file first because regions are sized after it.
    """
    ids = np.array([int(c["id"]) for c in classes])
    counts = np.zeros(len(classes) + 1, dtype=np.int64)
    width, height = grid.width_px, grid.height_px
    changed = {"opened_closed_px": 0, "small_region_px": 0}

    def reader(ds: rasterio.DatasetReader, fill: float) -> RowReader:
        def read(r0: int, r1: int) -> np.ndarray:
            out = np.full((ds.count, r1 - r0, width), fill, dtype=ds.dtypes[0])
            a, b = max(r0, 0), min(r1, height)
            if b > a:
                out[:, a - r0:b - r0] = ds.read(window=Window(0, a, width, b - a))
            return out
        return read

    def writer(w: GeoTiffWriter, count: bool) -> RowWriter:
        def write(row: int, rows: np.ndarray) -> None:
            nonlocal counts
            w.write(rows[None], Window(0, row, width, rows.shape[0]))
            if count:
                counts += np.bincount(rows.ravel(), minlength=len(classes) + 1)
        return write

    morph = bool(pp.opening_px or pp.closing_px)
    regions = pp.min_region_px > 1
    with rasterio.open(prob_path) as prob_ds:
        read_prob = reader(prob_ds, PROB_NODATA)
        source = raw_path
        if morph:
            stage = (outputs.geotiff("classes.stage.tif", grid, 1, "uint8", CLASS_NODATA,
                                     ["class"], block_px=OUTPUT_BLOCK_PX, scratch=True)
                     if regions else cls_w)
            try:
                with rasterio.open(raw_path) as raw_ds:
                    changed["opened_closed_px"] = morph_pass(
                        reader(raw_ds, CLASS_NODATA), read_prob, height, pp, ids,
                        writer(stage, count=not regions), strip_px=OUTPUT_BLOCK_PX)
            finally:
                if regions:
                    stage.close(overviews=False)
            source = stage.path
        if regions:
            with rasterio.open(source) as src_ds:
                changed["small_region_px"] = region_pass(
                    reader(src_ds, CLASS_NODATA), read_prob, height, pp, ids,
                    writer(cls_w, count=True), strip_px=OUTPUT_BLOCK_PX)
    return changed, counts
