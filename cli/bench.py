"""``make bench``: dense inference speed, exactness against cutout-wise evaluation, memory.

Prints human-readable lines, then (last line) one JSON object with the keys
``dense_mpx_per_s``, ``patchwise_mpx_per_s``, ``speedup``, ``max_abs_diff`` and
``peak_rss_mb_20k``. The model is the study's patch CNN (51x51 in, 5x5 out, planes
4/8/16, two blocks per stage) with random weights and randomised batch-norm statistics;
speed does not depend on trained values.

Usage: python -m terraseg.cli.bench [--out-dir bench_output] [--big-px 20000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from terraseg.core.classes import make_classes
from terraseg.core.dense import (
    DEFAULT_TILE_PX,
    DenseGeometry,
    patchwise_probabilities,
    predict_tile,
    predict_tiles,
    tiles,
)
from terraseg.core.inference import predict_raster
from terraseg.core.modelfile import load_model, save_model
from terraseg.core.models.registry import build_model
from terraseg.core.network_prep import prepare_network
from terraseg.core.normalise import BandStats
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import Reporter

PARAMS = {"in_channels": 4, "num_classes": 2, "patch_px": 51, "block_px": 5,
          "planes": [4, 8, 16], "blocks": [2, 2, 2], "stride_px": 0}


def make_model(path: Path, seed: int = 0) -> Path:
    """A study-sized patch CNN with random weights and batch-norm statistics."""
    torch.manual_seed(seed)
    net = build_model("patch_cnn", PARAMS)
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    net.eval()
    meta = {
        "architecture": {"name": "patch_cnn", "params": PARAMS},
        "geometry": {"patch_px": 51, "block_px": 5, "stride_px": net.stride_px,
                     "receptive_field_px": net.receptive_field_px, "margin_px": 23},
        "bands": {"indices": [1, 2, 3, 4], "names": ["red", "green", "blue", "nir"]},
        "normalisation": BandStats((120.0,) * 4, (40.0,) * 4).to_dict(),
        "classes": [c.to_dict() for c in make_classes(["sealed", "unsealed"])],
        "training_raster": {"pixel_size": [0.1, 0.1], "crs_epsg": 2056},
    }
    return save_model(path, net, meta)


def make_unet_model(path: Path, seed: int = 0) -> Path:
    """The landslide study's small U-Net (unet_small, 4 bands) with random weights."""
    torch.manual_seed(seed)
    params = {"in_channels": 4, "num_classes": 2}
    net = build_model("unet_small", params).eval()
    meta = {
        "architecture": {"name": "unet_small", "params": params},
        "geometry": {"kind": "tile", "tile_px": 256, "step_px": 128, "stride_px": 16,
                     "valid_tile_sizes_px": list(net.valid_tile_sizes(1024))},
        "bands": {"indices": [1, 2, 3, 4], "names": ["red", "green", "blue", "nir"]},
        "normalisation": BandStats((120.0,) * 4, (40.0,) * 4).to_dict(),
        "classes": [c.to_dict() for c in make_classes(["landslide", "no landslide"])],
        "training_raster": {"pixel_size": [0.1, 0.1], "crs_epsg": 2056},
    }
    return save_model(path, net, meta)


def bench_unet(model_path: Path, raster: Path, out_dir: Path) -> dict[str, float]:
    """End-to-end blended U-Net prediction rate, fp32 and bf16 (autocast) on CPU."""
    model = load_model(model_path)
    src = RasterSource(raster)
    n_px = src.grid.height_px * src.grid.width_px
    rates = {}
    for precision in ("32", "bf16"):
        t0 = time.perf_counter()
        predict_raster(model, src, out_dir / f"unet_{precision}", Reporter(), overwrite=True,
                       precision=precision)
        rates[precision] = n_px / (time.perf_counter() - t0) / 1e6
    return {"unet_small_mpx_per_s": round(rates["32"], 3),
            "unet_small_bf16_mpx_per_s": round(rates["bf16"], 3)}


def make_raster(path: Path, size_px: int, seed: int = 0) -> Path:
    """A size x size x 4 uint8 GeoTIFF (EPSG:2056, 10 cm), written block by block."""
    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "width": size_px, "height": size_px, "count": 4,
               "dtype": "uint8", "crs": "EPSG:2056", "nodata": 0,
               "transform": from_origin(2600000.0, 1200000.0, 0.1, 0.1), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    block = 2048
    tile = rng.integers(1, 255, size=(4, block, block), dtype=np.uint8)
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size_px, block):
            for c in range(0, size_px, block):
                h, w = min(block, size_px - r), min(block, size_px - c)
                dst.write(np.roll(tile, (r + c) % 97, axis=2)[:, :h, :w],
                          window=Window(c, r, w, h))
    return path


def bench_dense_vs_patchwise(model_path: Path, raster: Path, out_dir: Path,
                             patch_region_px: int) -> dict[str, float]:
    """Throughput of dense and cutout-wise inference, their difference, and end to end.

    Both inference rates cover the same work: read the bands, normalise, run the network,
    softmax, probabilities in memory. Dense runs stride-aligned 960 px tiles over the whole
    raster; cutout-wise cuts one 51x51 patch per 5x5 block and runs batches of 256, as the
    study's data loader did. End to end adds writing probability.tif and classes.tif with
    overviews (``terraseg predict``).
    """
    model = load_model(model_path)
    src = RasterSource(raster)
    n_px = src.grid.height_px * src.grid.width_px
    stats = BandStats(model.meta.normalisation.mean, model.meta.normalisation.std)
    geom = DenseGeometry.of(model.meta.geometry)
    net = prepare_network(model.network, torch.device("cpu"))
    full = Window(0, 0, src.grid.width_px, src.grid.height_px)
    all_tiles = list(tiles(full, DEFAULT_TILE_PX, geom.stride_px))
    # warm-up (thread pools, GDAL and oneDNN caches): the first run was ~30% slower
    predict_tile(net, src, stats, geom, all_tiles[0][0], torch.device("cpu"))
    t0 = time.perf_counter()
    for _ in predict_tiles(net, src, stats, geom, all_tiles, torch.device("cpu")):
        pass
    dense_s = time.perf_counter() - t0
    region = Window(500, 500, patch_region_px, patch_region_px)
    t0 = time.perf_counter()
    patch = patchwise_probabilities(model.network, src, stats, 51, 5, region, batch_size=256)
    patch_s = time.perf_counter() - t0
    dense, _ = predict_tile(net, src, stats, geom, region, torch.device("cpu"))
    diff = float(np.abs(dense - patch).max())
    t0 = time.perf_counter()
    predict_raster(model, src, out_dir / "dense", Reporter(), overwrite=True)
    e2e_s = time.perf_counter() - t0
    dense_rate = n_px / dense_s / 1e6
    patch_rate = patch_region_px**2 / patch_s / 1e6
    return {"dense_mpx_per_s": round(dense_rate, 3), "patchwise_mpx_per_s": round(patch_rate, 4),
            "speedup": round(dense_rate / patch_rate, 1), "max_abs_diff": diff,
            "end_to_end_mpx_per_s": round(n_px / e2e_s / 1e6, 3)}


def peak_rss_predict(model_path: Path, raster: Path, out_dir: Path) -> tuple[float, float]:
    """Peak RSS (MB) and wall time of ``terraseg predict`` on a raster, in a child process.

    A small wrapper process runs the command and reports its own children's peak, so
    several measurements in one benchmark do not mix.
    """
    cmd = [sys.executable, "-m", "terraseg.cli.main", "--quiet", "predict", "--model",
           str(model_path), "--raster", str(raster), "--out-dir", str(out_dir), "--overwrite"]
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak_kb = int(proc.stdout.strip().splitlines()[-1])
    return peak_kb / 1024.0, wall


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the JSON summary as the last line."""
    p = argparse.ArgumentParser(description="TerraSeg inference benchmark")
    p.add_argument("--out-dir", default="bench_output")
    p.add_argument("--dense-px", type=int, default=8000,
                   help="side of the patch-CNN throughput raster (the U-Net one is --unet-px)")
    p.add_argument("--big-px", type=int, default=20000, help="side of the memory raster")
    p.add_argument("--unet-px", type=int, default=8000, help="side of the U-Net raster")
    p.add_argument("--unet-big-px", type=int, default=0,
                   help="side of the U-Net memory raster (0 = --big-px; 20,000 px takes ~25 "
                        "min on 2 CPU cores)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    a = p.parse_args(argv)
    if a.quick:
        a.dense_px, a.big_px, a.unet_px = 1000, 2000, 512
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cuda={torch.cuda.is_available()}", flush=True)
    model_path = make_model(out / "bench_model.tsm")
    dense_raster = make_raster(out / f"bench_{a.dense_px}.tif", a.dense_px)
    res = bench_dense_vs_patchwise(model_path, dense_raster, out, patch_region_px=400)
    print(f"inference on {a.dense_px}x{a.dense_px}x4 (read, normalise, network, softmax): "
          f"dense {res['dense_mpx_per_s']} Mpx/s, cutout-wise {res['patchwise_mpx_per_s']} "
          f"Mpx/s, speed-up {res['speedup']}x, max |dense - cutouts| = "
          f"{res['max_abs_diff']:.2e}", flush=True)
    print(f"end to end (terraseg predict: + GeoTIFFs with overviews): "
          f"{res['end_to_end_mpx_per_s']} Mpx/s", flush=True)
    unet_path = make_unet_model(out / "bench_unet_small.tsm")
    unet_raster = make_raster(out / f"bench_{a.unet_px}.tif", a.unet_px)
    unet = bench_unet(unet_path, unet_raster, out)
    print(f"unet_small blended ({a.unet_px}x{a.unet_px}x4, 256 px tiles, half overlap): "
          f"{unet['unet_small_mpx_per_s']} Mpx/s fp32, {unet['unet_small_bf16_mpx_per_s']} "
          "Mpx/s bf16", flush=True)
    big = out / f"bench_{a.big_px}.tif"
    if not big.exists():
        print(f"writing {a.big_px}x{a.big_px}x4 uint8 raster ...", flush=True)
        make_raster(big, a.big_px)
    peak_mb, wall = peak_rss_predict(model_path, big, out / "big")
    print(f"{a.big_px}x{a.big_px}x4: peak RSS {peak_mb:.0f} MB, {wall:.0f} s "
          f"({a.big_px**2 / wall / 1e6:.2f} Mpx/s end to end)", flush=True)
    unet_big_px = a.unet_big_px or a.big_px
    unet_big = big if unet_big_px == a.big_px else out / f"bench_{unet_big_px}.tif"
    if not unet_big.exists():
        make_raster(unet_big, unet_big_px)
    unet_peak_mb, unet_wall = peak_rss_predict(unet_path, unet_big, out / "big_unet")
    print(f"{unet_big_px}x{unet_big_px}x4 unet_small: peak RSS {unet_peak_mb:.0f} MB, "
          f"{unet_wall:.0f} s", flush=True)
    summary = {"end_to_end_mpx_per_s": res["end_to_end_mpx_per_s"],
               "dense_mpx_per_s": res["dense_mpx_per_s"],
               "patchwise_mpx_per_s": res["patchwise_mpx_per_s"], "speedup": res["speedup"],
               "max_abs_diff": res["max_abs_diff"], "peak_rss_mb_20k": round(peak_mb, 1),
               **unet, "unet_peak_rss_mb_20k": round(unet_peak_mb, 1)}
    if a.big_px != 20000:
        summary["big_px"] = a.big_px
    if unet_big_px != 20000:
        summary["unet_big_px"] = unet_big_px
    if a.unet_px != 8000:
        summary["unet_px"] = a.unet_px
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
