"""Dense inference of patch models: stride-aligned tiles, each computed exactly once.

Patch models (core/models/patch_cnn.py) use valid convolutions, so run fully
convolutionally over a large tile each output block is computed from exactly the input
window a cutout would give it. Tiles start on multiples of the network stride in raster
coordinates, so every output pixel is computed from the same input window whatever
extent is processed: a window predicted alone equals the same window of a whole-raster
run. :func:`patchwise_probabilities` is the study's cutout-by-cutout way, kept as the
reference that checks the dense path and measures its speed-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window

from terraseg.core.network_prep import prepare_network, run_network
from terraseg.core.normalise import BandStats, normalise
from terraseg.core.raster import RasterSource
from terraseg.protocol.model_meta import Geometry

DEFAULT_TILE_PX = 960


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
    def of(geometry: Geometry) -> DenseGeometry:
        """Geometry of a patch model from its metadata."""
        return DenseGeometry(geometry.stride_px, geometry.context_px)


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
