"""Where training patches come from, and the spatial train/validation/test split.

Samples are output blocks (``block_px`` square, on a grid aligned to the raster origin)
that contain labelled pixels. Labels are split *by region* (a source polygon, or a
connected component of a label raster), so the pixels of one polygon never fall on both
sides of a split:

- ``polygons``: regions are shuffled per class (seeded) and dealt to test/val/train so
  each class keeps at least one training region where it has any.
- ``blocks``: the raster is cut into square blocks of ``split_block_px``; blocks are
  shuffled (seeded) and dealt to the splits; each region follows the block holding its
  first pixel (so a polygon that straddles two blocks still stays on one side).

A block that holds labelled pixels of two splits gives one sample per split, each with
the other split's pixels masked out of the target.

Retraining keeps the previous split (``previous``: region key -> split, from the previous
model file's ``split`` record, keys from ``LabelSet.region_keys``): every known region
keeps its side and only new regions are dealt, among themselves, by the rules above
(``polygons``: per class; ``blocks``: a block that holds a known region keeps its side and
new regions in it follow, other blocks are dealt among themselves). The permutation of
blocks alone is not stable: it is drawn over the blocks that hold labels, so a polygon in
a new block reshuffles every block. Without known regions the split is the fresh one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from terraseg.core.label_set import LabelSet
from terraseg.protocol.errors import ConfigError, LabelError

SPLITS = ("train", "val", "test")
SplitMode = Literal["polygons", "blocks"]


@dataclass(frozen=True)
class SplitConfig:
    """How to split labelled regions.

    Attributes:
        mode: "polygons" or "blocks".
        val_fraction: Share of regions (or blocks) for validation.
        test_fraction: Share held out for the final test metrics.
        split_block_px: Block size for mode "blocks".
        seed: Random seed; the same seed and labels give the same split.
    """

    mode: SplitMode = "polygons"
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    split_block_px: int = 256
    seed: int = 0
    k_folds: int = 0
    fold: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("polygons", "blocks"):
            raise ConfigError(f"Unknown split mode '{self.mode}'.", "Use polygons or blocks.")
        if self.k_folds and not 0 <= self.fold < self.k_folds:
            raise ConfigError(f"Fold {self.fold} is outside 0..{self.k_folds - 1}.",
                              "Folds are numbered from 0.")
        if self.k_folds == 1 or self.k_folds < 0:
            raise ConfigError(f"k = {self.k_folds} folds is not a cross-validation.",
                              "Use --k 2 or more.")
        if self.split_block_px < 1:
            raise ConfigError(f"Split block size {self.split_block_px} must be >= 1 pixel.",
                              "Use e.g. --split-block-size 256.")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise ConfigError(
                f"val_fraction {self.val_fraction} + test_fraction {self.test_fraction} must "
                "be in [0, 1).", "Use e.g. --val-fraction 0.2 --test-fraction 0.1.")


@dataclass(frozen=True)
class SampleIndex:
    """Training samples: block origins per split plus the per-pixel split map.

    Attributes:
        origins: split name -> int64 array (N, 2) of (row, col) of output blocks.
        split_map: int8 (H, W): -1 unlabelled, else index into SPLITS.
        pixel_counts: split name -> class id -> labelled pixels.
        region_split: region id -> split index (0 train, 1 val, 2 test).
        kept_regions: How many regions kept the side of a previous split.
    """

    origins: dict[str, np.ndarray]
    split_map: np.ndarray
    pixel_counts: dict[str, dict[int, int]]
    region_split: dict[int, int] = field(default_factory=dict)
    kept_regions: int = 0

    def keys_by_split(self, labels: LabelSet) -> dict[str, tuple[str, ...]]:
        """Split name -> stable keys of its regions (empty without region keys)."""
        out: dict[str, list[str]] = {name: [] for name in SPLITS}
        if not labels.region_keys:
            return {name: () for name in SPLITS}
        for rid, s in sorted(self.region_split.items()):
            out[SPLITS[s]].append(labels.region_keys[rid - 1])
        return {name: tuple(v) for name, v in out.items()}


def assign_regions(labels: LabelSet, cfg: SplitConfig,
                   previous: Mapping[str, int] | None = None) -> dict[int, int]:
    """Map each region id to a split index (0 train, 1 val, 2 test).

    Args:
        labels: The label set (regions, and ``region_keys`` to match ``previous``).
        cfg: How to split.
        previous: Region key -> split index of a previous split: known regions keep it and
            only the others are dealt (see the module docstring).
    """
    regions = labels.regions
    mask = regions > 0
    ids, first = np.unique(regions[mask], return_index=True)
    rng = np.random.default_rng(cfg.seed)
    known = _known_splits(labels, ids.tolist(), previous)
    out: dict[int, int] = dict(known)
    if cfg.mode == "blocks":
        rows, cols = np.nonzero(mask)
        b = cfg.split_block_px
        nbx = -(-regions.shape[1] // b)
        block_of = (rows[first] // b) * nbx + cols[first] // b
        lut: dict[int, int] = {}
        for rid, blk in zip(ids.tolist(), block_of.tolist(), strict=True):
            if rid in known:
                lut.setdefault(blk, known[rid])
        blocks = np.array(sorted(set(block_of.tolist()) - set(lut)), dtype=np.int64)
        order = rng.permutation(blocks)
        lut.update(zip(order.tolist(), _deal(len(order), cfg), strict=True))
        for rid, blk in zip(ids.tolist(), block_of.tolist(), strict=True):
            out.setdefault(rid, lut[blk])
        return out
    lab_flat = labels.labels[mask]
    region_class = dict(zip(ids.tolist(), lab_flat[first].tolist(), strict=True))
    for cls in sorted(set(region_class.values())):
        members = np.array(sorted(r for r, c in region_class.items()
                                  if c == cls and r not in known), dtype=np.int64)
        members = rng.permutation(members)
        for rid, split in zip(members.tolist(), _deal(len(members), cfg), strict=True):
            out[rid] = split
    return out


def _known_splits(labels: LabelSet, ids: list[int],
                  previous: Mapping[str, int] | None) -> dict[int, int]:
    """Region id -> previous split index, for the regions whose key ``previous`` knows."""
    if not previous or not labels.region_keys:
        return {}
    keys = labels.region_keys
    return {rid: int(previous[keys[rid - 1]]) for rid in ids
            if rid - 1 < len(keys) and keys[rid - 1] in previous}


def _deal(n: int, cfg: SplitConfig) -> list[int]:
    """Split indices for n shuffled items: test first, then val, rest train (>= 1 train).

    With k folds, item i is test when i % k == fold; validation is dealt from the rest.
    """
    if cfg.k_folds:
        test = [i % cfg.k_folds == cfg.fold for i in range(n)]
        rest = _deal(n - sum(test), SplitConfig(val_fraction=cfg.val_fraction))
        it = iter(rest)
        return [2 if t else next(it) for t in test]
    n_test = int(round(n * cfg.test_fraction))
    n_val = int(round(n * cfg.val_fraction))
    if cfg.val_fraction > 0 and n_val == 0 and n >= 3:
        n_val = 1
    while n_test + n_val >= n and (n_test or n_val):
        if n_test >= n_val and n_test:
            n_test -= 1
        else:
            n_val -= 1
    return [2] * n_test + [1] * n_val + [0] * (n - n_test - n_val)


def count_split_units(labels: LabelSet, cfg: SplitConfig) -> int:
    """How many units (regions, or blocks in mode "blocks") the split deals out."""
    mask = labels.regions > 0
    if cfg.mode == "blocks":
        ids, first = np.unique(labels.regions[mask], return_index=True)
        rows, cols = np.nonzero(mask)
        b = cfg.split_block_px
        nbx = -(-labels.regions.shape[1] // b)
        return len(np.unique((rows[first] // b) * nbx + cols[first] // b))
    return len(np.unique(labels.regions[mask]))


def build_index(labels: LabelSet, cfg: SplitConfig, block_px: int,
                previous: Mapping[str, int] | None = None) -> SampleIndex:
    """Split labelled pixels by region and list the output blocks of each split.

    ``previous`` (region key -> split index) keeps the split of a previous model for the
    regions it knows (:func:`assign_regions`).

    Raises:
        LabelError: No labelled pixel, or no training pixel after the split.
    """
    lab = labels.labels
    if not (lab > 0).any():
        raise LabelError("No labelled pixel to train on.", "Draw labels inside the raster.")
    region_split = (assign_regions(labels, cfg, previous) if previous
                    else assign_regions(labels, cfg))
    kept = len(_known_splits(labels, sorted(region_split), previous))
    split_map = np.full(lab.shape, -1, dtype=np.int8)
    if region_split:
        max_id = int(labels.regions.max())
        lut = np.full(max_id + 1, -1, dtype=np.int8)
        for rid, s in region_split.items():
            lut[rid] = s
        split_map = np.where(lab > 0, lut[labels.regions], -1).astype(np.int8)
        split_map[(lab > 0) & (labels.regions == 0)] = 0
    else:
        split_map[lab > 0] = 0
    origins: dict[str, np.ndarray] = {}
    counts: dict[str, dict[int, int]] = {}
    for si, name in enumerate(SPLITS):
        sel = split_map == si
        rows, cols = np.nonzero(sel)
        blocks = np.unique(np.stack([rows // block_px, cols // block_px], 1), axis=0)
        origins[name] = (blocks * block_px).astype(np.int64)
        vals, cnt = np.unique(lab[sel], return_counts=True)
        counts[name] = {int(v): int(c) for v, c in zip(vals, cnt, strict=True)}
    if len(origins["train"]) == 0:
        raise LabelError("No labelled region is left for training after the split.",
                         "Draw more polygons or lower --val-fraction/--test-fraction.")
    return SampleIndex(origins=origins, split_map=split_map, pixel_counts=counts,
                       region_split=region_split, kept_regions=kept)
