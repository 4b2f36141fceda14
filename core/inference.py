"""Dense, streamed inference of a model over a raster, a window or a layer's extent.

The network is run fully convolutionally over large tiles (see core/models/patch_cnn.py),
never cutout by cutout. Tiles start on multiples of the network stride in raster
coordinates, so every output pixel is computed from the same input window whatever
extent is processed: a window predicted alone equals the same window of a whole-raster
run. Each tile is read, predicted and written before the next is read, so memory does not
grow with the raster. Results go to temporary files that are renamed into place only
when everything succeeded (core/outputs.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from terraseg.core.atomic import AtomicOutputs
from terraseg.core.blend import TileGeometry, predict_blended, tile_starts
from terraseg.core.geotiff import GeoTiffWriter
from terraseg.core.grid import Grid
from terraseg.core.modelfile import LoadedModel, check_raster_fits
from terraseg.core.models.patch_cnn import fuse_batchnorm
from terraseg.core.models.unet import check_tile_size
from terraseg.core.normalise import BandStats, normalise
from terraseg.core.output_targets import check_output_dir
from terraseg.core.postprocess import PostProcess, RowReader, RowWriter, morph_pass, region_pass
from terraseg.core.preview import colormap_from_colours, write_preview_png
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError, RasterError

PROB_NODATA = -1.0
# GeoTIFF block size of the outputs; default tiles (960 px) are whole multiples of it, so
# each block is compressed once. 480 is a multiple of 16 (TIFF) and of strides 1-6 and 8.
OUTPUT_BLOCK_PX = 480
DEFAULT_TILE_PX = 960
WRITE_CACHE_MB = 256
CLASS_NODATA = 0


@dataclass(frozen=True)
class DenseGeometry:
    """What dense inference needs to know about a network (pixels).

    Attributes:
        stride_px: Total stride S; tiles are multiples of it.
        context_px: R - S: extra input pixels a tile needs (split evenly at both sides).
        margin_px: Input pixels before the first output pixel ((R - S) / 2).
    """

    stride_px: int
    context_px: int

    @property
    def margin_px(self) -> int:
        """Context on the leading side."""
        return self.context_px // 2

    @staticmethod
    def of(model: LoadedModel) -> DenseGeometry:
        """Geometry from a model's metadata."""
        g = model.meta["geometry"]
        return DenseGeometry(int(g["stride_px"]),
                             int(g["receptive_field_px"]) - int(g["stride_px"]))


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; or the named torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"Unknown device '{name}'.", "Use auto, cpu or cuda.") from exc


def tiles(region: Window, tile_px: int, stride_px: int) -> Iterator[tuple[Window, Window]]:
    """Stride-aligned tiles covering ``region``.

    Yields:
        (tile, crop): the stride-aligned computation window (raster pixels) and the part
        of it inside ``region`` (also raster pixels).
    """
    s = stride_px
    t = max(s, tile_px - tile_px % s)
    r_start = int(region.row_off) - int(region.row_off) % s
    c_start = int(region.col_off) - int(region.col_off) % s
    r_end, c_end = int(region.row_off + region.height), int(region.col_off + region.width)
    for r in range(r_start, r_end, t):
        for c in range(c_start, c_end, t):
            h = min(t, -(-(r_end - r) // s) * s)
            w = min(t, -(-(c_end - c) // s) * s)
            r0, c0 = max(r, int(region.row_off)), max(c, int(region.col_off))
            r1, c1 = min(r + h, r_end), min(c + w, c_end)
            yield Window(c, r, w, h), Window(c0, r0, c1 - c0, r1 - r0)


def read_tile_input(source: RasterSource, stats: BandStats, geom: DenseGeometry,
                    tile: Window) -> tuple[np.ndarray, np.ndarray]:
    """Normalised network input for a stride-aligned tile, and its output validity.

    Returns:
        x float32 (C, h + R - S, w + R - S) and valid bool (h, w).
    """
    m, ctx = geom.margin_px, geom.context_px
    inp = Window(tile.col_off - m, tile.row_off - m, tile.width + ctx, tile.height + ctx)
    data, valid = source.read(inp)
    return normalise(data, valid, stats), valid[m : m + int(tile.height),
                                                m : m + int(tile.width)]


@torch.inference_mode()
def run_network(network: torch.nn.Module, x: np.ndarray, device: torch.device,
                autocast_dtype: torch.dtype | None = None) -> np.ndarray:
    """Softmax probabilities of the network on one normalised input. Shape: (K, h, w)."""
    t = torch.from_numpy(x)[None].to(device).contiguous(memory_format=torch.channels_last)
    if autocast_dtype is not None:
        with torch.autocast(device.type, dtype=autocast_dtype):
            logits = network(t)
    else:
        logits = network(t)
    return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()


def predict_tile(network: torch.nn.Module, source: RasterSource, stats: BandStats,
                 geom: DenseGeometry, tile: Window, device: torch.device,
                 autocast_dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities for one stride-aligned tile.

    Returns:
        probs float32 (K, h, w) and valid bool (h, w) for the tile's output pixels.
    """
    x, valid = read_tile_input(source, stats, geom, tile)
    return run_network(network, x, device, autocast_dtype), valid


def predict_tiles(network: torch.nn.Module, source: RasterSource, stats: BandStats,
                  geom: DenseGeometry, tile_list: list[tuple[Window, Window]],
                  device: torch.device, autocast_dtype: torch.dtype | None = None,
                  ) -> Iterator[tuple[Window, Window, np.ndarray, np.ndarray]]:
    """Predict tiles one after the other (memory: one tile at a time).

    Reading the next tile in a thread while the network runs was measured slower on
    2 cores (torch already uses both), so tiles are read and predicted in turn.

    Yields:
        (tile, crop, probs (K, h, w), valid (h, w)) as from :func:`tiles` and
        :func:`predict_tile`.
    """
    for tile, crop in tile_list:
        probs, valid = predict_tile(network, source, stats, geom, tile, device, autocast_dtype)
        yield tile, crop, probs, valid


class RotationTTA(torch.nn.Module):
    """Test-time augmentation: mean class probabilities over the 0/90/180/270 rotations.

    Returns log-probabilities, so a softmax of the output is the averaged probability.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Averaged prediction. Shape: as the wrapped network."""
        total = None
        for k in range(4):
            xr = torch.rot90(x, k, dims=(-2, -1)).contiguous(memory_format=torch.channels_last)
            p = torch.softmax(self.network(xr).float(), dim=1)
            p = torch.rot90(p, -k, dims=(-2, -1))
            total = p if total is None else total + p
        return torch.log((total / 4).clamp_min(1e-12))


def prepare_network(network: torch.nn.Module, device: torch.device,
                    tta: bool = False) -> torch.nn.Module:
    """An inference copy: batch norm folded into convolutions, on ``device``, channels-last.

    With ``tta`` it is wrapped in :class:`RotationTTA`. The caller's network is unchanged.
    """
    fused = fuse_batchnorm(network.eval())
    fused = fused.to(device).eval().to(memory_format=torch.channels_last)
    return RotationTTA(fused).eval() if tta else fused


def resolve_threshold(model: LoadedModel, threshold: float | None) -> float | None:
    """The threshold to use: the given one, else the model's tuned one (two classes only).

    Raises:
        ConfigError: Threshold outside 0..1, or given for a model with more than 2 classes.
    """
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"Threshold {threshold} is outside 0..1.",
                              "Give a probability, e.g. --threshold 0.4.")
        if len(model.meta["classes"]) != 2:
            raise ConfigError("A threshold applies to two-class models only.",
                              "Leave out --threshold: classes are the most probable ones.")
        return float(threshold)
    stored = model.meta.get("threshold")
    return float(stored["value"]) if stored and len(model.meta["classes"]) == 2 else None


def class_ids(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """Class ids 1..K from probabilities (K, h, w): threshold on class 1, or argmax."""
    if threshold is not None:
        return np.where(probs[0] >= threshold, 1, 2)
    return probs.argmax(0) + 1


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


def count_tiles(model: LoadedModel, region: Window, tile_px: int = 0) -> int:
    """How many network tiles :func:`region_probabilities` runs for ``region``."""
    geometry = model.meta["geometry"]
    if geometry.get("kind", "patch") == "tile":
        t = tile_px or int(geometry["tile_px"])
        tgeom = TileGeometry(t, t // 2)
        r0, c0 = int(region.row_off), int(region.col_off)
        rows = tile_starts(r0, r0 + int(region.height), tgeom)
        cols = tile_starts(c0, c0 + int(region.width), tgeom)
        return len(rows) * len(cols)
    stride = int(geometry["stride_px"])
    return len(list(tiles(region, tile_px or DEFAULT_TILE_PX, stride)))


def region_probabilities(model: LoadedModel, network: torch.nn.Module, source: RasterSource,
                         stats: BandStats, region: Window, device: torch.device,
                         tile_px: int = 0, autocast_dtype: torch.dtype | None = None,
                         ) -> Iterator[tuple[Window, np.ndarray, np.ndarray, float]]:
    """Class probabilities over ``region`` in pieces, for either kind of model.

    Patch models run dense stride-aligned tiles (exact); tile networks (U-Nets) run
    overlapping tiles blended with sin^2 weights (core/blend.py).

    Yields:
        (window in raster pixels, probs (K, h, w), valid (h, w), fraction done).
    """
    geometry = model.meta["geometry"]
    if geometry.get("kind", "patch") == "tile":
        t = tile_px or int(geometry["tile_px"])
        check_tile_size(t, int(geometry["stride_px"]), "--tile-size")
        tgeom = TileGeometry(t, t // 2)
        k = len(model.meta["classes"])
        for win, probs, valid in predict_blended(network, source, stats, region, tgeom, k,
                                                 device, autocast_dtype=autocast_dtype):
            done = (win.row_off + win.height - region.row_off) / region.height
            yield win, probs, valid, float(done)
        return
    geom = DenseGeometry.of(model)
    all_tiles = list(tiles(region, tile_px or DEFAULT_TILE_PX, geom.stride_px))
    for i, (tile, crop, probs, valid) in enumerate(
            predict_tiles(network, source, stats, geom, all_tiles, device, autocast_dtype)):
        r = int(crop.row_off - tile.row_off)
        c = int(crop.col_off - tile.col_off)
        h, w = int(crop.height), int(crop.width)
        yield (crop, probs[:, r : r + h, c : c + w], valid[r : r + h, c : c + w],
               (i + 1) / len(all_tiles))


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
    check_raster_fits(model.meta, source)
    threshold = resolve_threshold(model, threshold)
    out_dir = Path(out_dir)
    names = ["probability.tif", "classes.tif"] + (["preview.png"] if preview else [])
    check_output_dir(out_dir, names, overwrite)
    region = resolve_region(source, window, extent_layer)
    stats = BandStats.from_dict(model.meta["normalisation"])
    classes = model.meta["classes"]
    dev = pick_device(device)
    if precision not in ("32", "bf16", "16"):
        raise ConfigError(f"Unknown precision '{precision}'.", "Use 32, bf16 or 16.")
    autocast = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[precision]
    network = prepare_network(model.network, dev, tta=tta)
    grid = source.grid.window_grid(region)
    k = len(classes)
    counts = np.zeros(k + 1, dtype=np.int64)
    reporter.log(f"predicting {region.width}x{region.height} px in "
                 f"{count_tiles(model, region, tile_px)} tile(s) on {dev.type}")
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
        pp = postprocess if postprocess is not None and postprocess.active else None
        raw_w = (outputs.geotiff("classes.raw.tif", grid, 1, "uint8", CLASS_NODATA, ["class"],
                                 block_px=OUTPUT_BLOCK_PX, scratch=True) if pp else cls_w)
        prob_w.set_tags(TERRASEG_CLASSES=json.dumps(classes))
        for crop, p, v, fraction in region_probabilities(
                model, network, source, stats, region, dev, tile_px, autocast):
            h, w = int(crop.height), int(crop.width)
            cls = np.where(v, class_ids(p, threshold), CLASS_NODATA).astype(np.uint8)
            p = np.where(v[None], p, PROB_NODATA).astype(np.float32)
            out_win = Window(crop.col_off - region.col_off, crop.row_off - region.row_off, w, h)
            prob_w.write(p, out_win)
            raw_w.write(cls[None], out_win)
            counts += np.bincount(cls.ravel(), minlength=k + 1)
            reporter.progress(fraction, "predict")
        reporter.progress(1.0, "predict", "building overviews")
        prob_w.close(overviews=True)
        changed = None
        if pp is not None:
            raw_w.close(overviews=False)
            reporter.progress(1.0, "predict", "post-processing the classes")
            changed, counts = _postprocess(outputs, prob_w.path, raw_w.path, cls_w, pp,
                                           classes, grid)
            reporter.log(f"post-processing {pp.to_dict()}: changed {changed}")
        cls_w.close(overviews=True)
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


@torch.inference_mode()
def patchwise_probabilities(network: torch.nn.Module, source: RasterSource, stats: BandStats,
                            patch_px: int, block_px: int, region: Window,
                            batch_size: int = 256) -> np.ndarray:
    """Reference implementation: one cutout per output block, as the study's loader did.

    ``region`` must start on multiples of ``block_px`` and have sizes that are multiples
    of it. Used to check dense inference and to measure its speed-up.

    Returns:
        float32 (K, H, W) probabilities.
    """
    m = (patch_px - block_px) // 2
    network = prepare_network(network, torch.device("cpu"))
    data, valid = source.read(Window(region.col_off - m, region.row_off - m,
                                     region.width + 2 * m, region.height + 2 * m))
    x = normalise(data, valid, stats)
    origins = [(r, c) for r in range(0, int(region.height), block_px)
               for c in range(0, int(region.width), block_px)]
    out: np.ndarray | None = None
    for i in range(0, len(origins), batch_size):
        batch = origins[i : i + batch_size]
        cut = np.stack([x[:, r : r + patch_px, c : c + patch_px] for r, c in batch])
        batch_x = torch.from_numpy(cut).contiguous(memory_format=torch.channels_last)
        probs = torch.softmax(network(batch_x), dim=1).numpy()
        if out is None:
            out = np.zeros((probs.shape[1], int(region.height), int(region.width)), np.float32)
        for (r, c), p in zip(batch, probs, strict=True):
            out[:, r : r + block_px, c : c + block_px] = p
    if out is None:
        raise ValueError(f"Empty region {region}.")
    return out
