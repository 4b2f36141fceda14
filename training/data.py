"""Patch datasets read from the Zarr cache for training, validation and test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import Dataset

from terraseg.core.normalise import BandStats, normalise
from terraseg.training.augment import AugmentChain
from terraseg.training.cache import ImageCache
from terraseg.training.pixel_weights import encode

IGNORE_INDEX = -1


@dataclass(frozen=True)
class PatchGeometry:
    """Cutout geometry in pixels: input patch P, output block K, margin (P - K) / 2."""

    patch_px: int
    block_px: int

    @property
    def margin_px(self) -> int:
        """Context pixels on each side of the block."""
        return (self.patch_px - self.block_px) // 2


class ImageWindowStore:
    """Image bands for the area around all samples, read from the cache.

    When the samples' bounding box (plus margin) fits in ``max_bytes`` it is read once from
    the Zarr cache into memory; otherwise every patch is read lazily from the cache.
    """

    def __init__(self, cache: ImageCache, origins: np.ndarray, geom: PatchGeometry,
                 stats: BandStats, max_bytes: int = 1 << 30) -> None:
        self.cache, self.geom, self.stats = cache, geom, stats
        m, k = geom.margin_px, geom.block_px
        # room for blocks jittered by up to k - 1 pixels (PatchDataset)
        r0 = int(origins[:, 0].min()) - m - k
        c0 = int(origins[:, 1].min()) - m - k
        r1 = int(origins[:, 0].max()) + 2 * k + m
        c1 = int(origins[:, 1].max()) + 2 * k + m
        self.window = Window(c0, r0, c1 - c0, r1 - r0)
        cache.ensure(self.window)
        nbytes = cache.source.count * (r1 - r0) * (c1 - c0) * 4
        self.in_memory = nbytes <= max_bytes
        self._data: np.ndarray | None = None
        if self.in_memory:
            data, valid = cache.read(self.window)
            self._data = normalise(data, valid, stats)

    def patch(self, row: int, col: int) -> np.ndarray:
        """Normalised input cutout for the block at (row, col). Shape: (C, P, P)."""
        m, p = self.geom.margin_px, self.geom.patch_px
        if self._data is not None:
            r = row - m - int(self.window.row_off)
            c = col - m - int(self.window.col_off)
            return self._data[:, r : r + p, c : c + p]
        data, valid = self.cache.read(Window(col - m, row - m, p, p))
        return normalise(data, valid, self.stats)


class PatchDataset(Dataset):
    """(image cutout, target block) pairs for one split.

    Targets hold class indices 0..K-1 and IGNORE_INDEX where unlabelled, outside the
    raster, or labelled for another split; with ``weights`` (uint8 steps per pixel) each
    labelled target also carries its loss weight (training/pixel_weights.py). For training,
    ``length`` may exceed the number of blocks (small label sets still give full epochs) and
    ``jitter`` shifts each block by a random offset of up to block_px - 1 pixels, so the
    network sees every labelled pixel at every position of its output block.

    Shape:
        x: (C, P, P) float32; y: (K, K) int64.
    """

    def __init__(self, store: ImageWindowStore, labels: np.ndarray, split_map: np.ndarray,
                 split_index: int, origins: np.ndarray, augment: AugmentChain | None = None,
                 seed: int = 0, length: int | None = None, jitter: bool = False,
                 weights: np.ndarray | None = None) -> None:
        self.store, self.origins, self.augment = store, origins, augment
        self.labels, self.split_map, self.split_index = labels, split_map, split_index
        self.weights = weights  # uint8 steps (training/pixel_weights.py), or None
        self.seed, self.jitter = seed, jitter
        self.length = max(length or 0, len(origins))
        self.epoch = 0
        self.targets = np.stack([self.target(int(r), int(c)) for r, c in origins])

    def target(self, row: int, col: int) -> np.ndarray:
        """Target block with origin (row, col); pixels off the raster are ignored."""
        k = self.store.geom.block_px
        out = np.full((k, k), IGNORE_INDEX, dtype=np.int64)
        h, w = self.labels.shape
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + k, h), min(col + k, w)
        if r1 > r0 and c1 > c0:
            lab = self.labels[r0:r1, c0:c1].astype(np.int64) - 1
            keep = (self.split_map[r0:r1, c0:c1] == self.split_index) & (lab >= 0)
            kept = np.where(keep, lab, IGNORE_INDEX)
            if self.weights is not None:
                kept = encode(kept, self.weights[r0:r1, c0:c1])
            out[r0 - row : r1 - row, c0 - col : c1 - col] = kept
        return out

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = i % len(self.origins)
        r, c = (int(v) for v in self.origins[j])
        rng = np.random.default_rng((self.seed, self.epoch, i))
        if self.jitter:
            k = self.store.geom.block_px
            r += int(rng.integers(1 - k, k))
            c += int(rng.integers(1 - k, k))
            y = self.target(r, c)
            if not (y >= 0).any():
                r, c = (int(v) for v in self.origins[j])
                y = self.targets[j]
        else:
            y = self.targets[j]
        x = self.store.patch(r, c)
        if self.augment is not None:
            x, y = self.augment(x, y, rng)
        return torch.from_numpy(np.array(x, order="C")), torch.from_numpy(np.array(y, order="C"))
