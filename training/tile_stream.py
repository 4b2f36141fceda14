"""Random tiles streamed from one or more rasters, for self-supervised pretraining.

:class:`TileStream` is an iterable dataset of whole batches: batch ``i`` of an epoch is
``batch_size`` tiles of ``tile_px`` square read at random places by windowed reads (never
the whole raster), normalised with the pretraining statistics. A raster is drawn with a
probability proportional to its pixel count, then a tile inside it; a tile with more than
``max_nodata`` nodata pixels is skipped and another drawn in its place.

Each batch's random state is seeded by ``(seed, epoch, rank, batch index)``, so the tiles
do not depend on the number of data-loader workers: worker ``w`` of ``W`` yields the
batches ``i`` with ``i % W == w`` and opens its own raster handles (rasterio handles are
not shared across processes). With several processes (DDP) each rank streams its own
share of the batches (``samples_per_epoch`` in all).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import IterableDataset, get_worker_info

from terraseg.core.model_input import assemble_source
from terraseg.core.normalise import BandStats, normalise
from terraseg.core.raster import RasterSource
from terraseg.protocol.errors import RasterError

#: Draws per tile before a raster is declared (almost) all nodata.
MAX_DRAWS_PER_TILE = 100


@dataclass(frozen=True)
class TileSpec:
    """What to stream.

    Attributes:
        rasters: Raster paths (same bands in each).
        bands: Band mapping (``1,2,3`` or ``red=1,...``; None = every band).
        nodata: Nodata value replacing the rasters' own.
        tile_px: Tile side in pixels.
        batch_size: Tiles per batch.
        batches: Batches per epoch (over all ranks).
        max_nodata: Largest share of nodata pixels a tile may hold.
        seed: Random seed.
    """

    rasters: tuple[str, ...]
    bands: str | None
    nodata: float | None
    tile_px: int
    batch_size: int
    batches: int
    max_nodata: float = 0.5
    seed: int = 0


def open_sources(rasters: Sequence[str], bands: str | None,
                 nodata: float | None) -> list[RasterSource]:
    """The rasters with the band mapping and nodata applied (as training reads them)."""
    return [assemble_source(r, bands, (), nodata=nodata)[1] for r in rasters]


def _rank() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class TileStream(IterableDataset):
    """Batches of random normalised tiles.

    Args:
        spec: What to stream.
        stats: Normalisation statistics (per band).

    Attributes:
        epoch: Set by the training loop before each epoch (seeds that epoch's tiles).

    Yields:
        float32 tensors. Shape: (batch_size, C, tile_px, tile_px); nodata pixels are 0
        (the band mean after normalisation).
    """

    def __init__(self, spec: TileSpec, stats: BandStats) -> None:
        super().__init__()
        self.spec = spec
        self.stats = stats
        self.epoch = 0

    def rank_batches(self) -> range:
        """The indices of the batches this process streams (its rank's share)."""
        rank, world = _rank()
        per_rank = math.ceil(self.spec.batches / world)
        return range(rank * per_rank, min(self.spec.batches, (rank + 1) * per_rank))

    def __len__(self) -> int:
        """Batches per epoch on this process."""
        return len(self.rank_batches())

    def __iter__(self) -> Iterator[torch.Tensor]:
        """The batches of the epoch that fall to this worker, in order."""
        info = get_worker_info()
        wid, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = [i for i in self.rank_batches() if i % workers == wid]
        if not mine:
            return
        sources = open_sources(self.spec.rasters, self.spec.bands, self.spec.nodata)
        try:
            for i in mine:
                yield self.batch(sources, i)
        finally:
            for s in sources:
                s.close()

    def batch(self, sources: Sequence[RasterSource], index: int) -> torch.Tensor:
        """Batch ``index`` of the current epoch (reproducible from the seed)."""
        rng = np.random.default_rng([self.spec.seed, self.epoch, index])
        tiles = [self.tile(sources, rng) for _ in range(self.spec.batch_size)]
        return torch.from_numpy(np.stack(tiles))

    def tile(self, sources: Sequence[RasterSource], rng: np.random.Generator) -> np.ndarray:
        """One random tile with enough valid pixels, normalised.

        Raises:
            RasterError: No such tile in :data:`MAX_DRAWS_PER_TILE` draws (the rasters are
                almost all nodata at this tile size).
        """
        px = self.spec.tile_px
        areas = np.array([s.grid.height_px * s.grid.width_px for s in sources], float)
        for _ in range(MAX_DRAWS_PER_TILE):
            src = sources[int(rng.choice(len(sources), p=areas / areas.sum()))]
            g = src.grid
            row = int(rng.integers(0, max(1, g.height_px - px + 1)))
            col = int(rng.integers(0, max(1, g.width_px - px + 1)))
            data, valid = src.read(Window(col, row, px, px))
            if 1.0 - valid.mean() <= self.spec.max_nodata:
                return normalise(data, valid, self.stats)
        raise RasterError(
            f"No {px} px tile with at most {self.spec.max_nodata:.0%} nodata found in "
            f"{MAX_DRAWS_PER_TILE} random draws from {', '.join(self.spec.rasters)}.",
            "Check the rasters' nodata value and --bands, use a smaller --tile-size, or "
            "allow more nodata with --max-nodata.")


def combined_stats(sources: Sequence[RasterSource]) -> BandStats:
    """Band mean and standard deviation over several rasters, weighted by pixel count.

    Each raster's statistics come from :func:`terraseg.core.normalise.compute_band_stats`
    (a decimated read, not the whole raster); they are pooled exactly as the moments of
    the union (mean of means; variance = mean of (variance + mean^2) - mean^2).
    """
    from terraseg.core.normalise import compute_band_stats

    stats = [compute_band_stats(s) for s in sources]
    if len(stats) == 1:
        return stats[0]
    w = np.array([s.grid.height_px * s.grid.width_px for s in sources], float)
    w /= w.sum()
    means = np.array([st.mean for st in stats])
    var = np.array([st.std for st in stats]) ** 2
    mean = (w[:, None] * means).sum(0)
    second = (w[:, None] * (var + means**2)).sum(0)
    std = np.sqrt(np.maximum(second - mean**2, 1e-12))
    return BandStats(tuple(float(v) for v in mean), tuple(float(v) for v in std))
