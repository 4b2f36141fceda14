"""Sliding-window inference with overlapping tiles and weighted blending (tile networks).

Tile networks (the U-Net family) use zero-padded convolutions, so their outputs near a
tile's border are less reliable and would show seams if tiles were simply butted together.
TerraSeg runs them on tiles of ``tile_px`` that advance by ``step_px`` (default: half a
tile) and blends the overlapping class probabilities with a separable sin^2 (Hann) weight,
which sums to a constant for a half-tile step, so seams vanish.

The tile grid is anchored to the raster's origin, not to the requested area: every output
pixel is the weighted mean of the same tiles whatever extent is predicted, so a window
predicted alone equals the same pixels of a whole-raster run. Tiles are processed one
tile row at a time into a strip buffer ``tile_px + step_px + 1`` rows high and as wide as
the region; finished rows are yielded and dropped, so memory does not grow with the
region's height (it does with its width: the buffer and one row of tiles).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window

from terraseg.core.normalise import BandStats, normalise
from terraseg.core.raster import RasterSource
from terraseg.protocol.errors import ConfigError


@dataclass(frozen=True)
class TileGeometry:
    """Tiling of a tile network, in pixels.

    Attributes:
        tile_px: Network input size (a multiple of the network's stride).
        step_px: Distance between tile origins (tile_px - overlap).
    """

    tile_px: int
    step_px: int

    def __post_init__(self) -> None:
        if not 0 < self.step_px <= self.tile_px:
            raise ConfigError(f"Tile step {self.step_px} must be in 1..{self.tile_px}.",
                              "Use an overlap smaller than the tile size.")

    @property
    def offset_px(self) -> int:
        """Tiles start ``offset_px`` before a multiple of the step (centres the overlap)."""
        return (self.tile_px - self.step_px) // 2


def blend_weights(tile_px: int) -> np.ndarray:
    """Separable sin^2 weight of a tile, strictly positive. Shape: (tile_px, tile_px)."""
    i = np.arange(tile_px, dtype=np.float64)
    w1 = np.sin(np.pi * (i + 0.5) / tile_px) ** 2
    w1 = np.maximum(w1, 1e-3)
    return np.outer(w1, w1).astype(np.float32)


def tile_starts(lo: int, hi: int, geom: TileGeometry) -> list[int]:
    """Origins k*step - offset of the tiles that overlap [lo, hi)."""
    s, t, off = geom.step_px, geom.tile_px, geom.offset_px
    k0 = -(-(lo + off - t + 1) // s)  # ceil: first tile whose end passes lo
    k1 = (hi - 1 + off) // s  # last tile that starts before hi
    return [k * s - off for k in range(k0, k1 + 1)]


@torch.inference_mode()
def predict_blended(network: torch.nn.Module, source: RasterSource, stats: BandStats,
                    region: Window, geom: TileGeometry, num_classes: int,
                    device: torch.device, batch_tiles: int = 4,
                    autocast_dtype: torch.dtype | None = None,
                    ) -> Iterator[tuple[Window, np.ndarray, np.ndarray]]:
    """Blended class probabilities for ``region``, yielded in finished row strips.

    Yields:
        (window in raster pixels, probs float32 (K, h, W), valid bool (h, W)), where W is
        the region's width; strips follow each other from the region's top.
    """
    r0, c0 = int(region.row_off), int(region.col_off)
    r1, c1 = r0 + int(region.height), c0 + int(region.width)
    t = geom.tile_px
    weight = blend_weights(t)
    col_starts = tile_starts(c0, c1, geom)
    row_starts = tile_starts(r0, r1, geom)
    width = c1 - c0
    buf_top = r0
    rows = t + geom.step_px + 1
    acc = np.zeros((num_classes, rows, width), np.float32)
    wsum = np.zeros((rows, width), np.float32)
    valid_buf = np.zeros((rows, width), bool)
    for i, rs in enumerate(row_starts):
        inputs, valids = [], []
        for cs in col_starts:
            data, valid = source.read(Window(cs, rs, t, t))
            inputs.append(normalise(data, valid, stats))
            valids.append(valid)
        probs_row = []
        for b in range(0, len(inputs), batch_tiles):
            x = torch.from_numpy(np.stack(inputs[b : b + batch_tiles])).to(device)
            x = x.contiguous(memory_format=torch.channels_last)
            if autocast_dtype is not None:
                with torch.autocast(device.type, dtype=autocast_dtype):
                    logits = network(x)
            else:
                logits = network(x)
            probs_row.extend(torch.softmax(logits.float(), dim=1).cpu().numpy())
        ra, rb = max(rs, buf_top), min(rs + t, r1)
        for cs, probs, valid in zip(col_starts, probs_row, valids, strict=True):
            ca, cb = max(cs, c0), min(cs + t, c1)
            if rb <= ra or cb <= ca:
                continue
            tr, tc = slice(ra - rs, rb - rs), slice(ca - cs, cb - cs)
            br, bc = slice(ra - buf_top, rb - buf_top), slice(ca - c0, cb - c0)
            w = weight[tr, tc]
            acc[:, br, bc] += probs[:, tr, tc] * w
            wsum[br, bc] += w
            valid_buf[br, bc] |= valid[tr, tc]
        done = r1 if i + 1 == len(row_starts) else min(row_starts[i + 1], r1)
        n = done - buf_top
        if n > 0:
            out = acc[:, :n] / np.maximum(wsum[:n], 1e-12)
            yield Window(c0, buf_top, width, n), out, valid_buf[:n].copy()
            acc = np.concatenate([acc[:, n:], np.zeros((num_classes, n, width), np.float32)], 1)
            wsum = np.concatenate([wsum[n:], np.zeros((n, width), np.float32)], 0)
            valid_buf = np.concatenate([valid_buf[n:], np.zeros((n, width), bool)], 0)
            buf_top = done
