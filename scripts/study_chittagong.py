"""The Chittagong landslide chips as one study dataset (scripts/study_pretrain.py).

../shared/data/landslide_s2_rgbn_chittagong: 64 overlapping Sentinel-2 chips (R, G, B, NIR,
10 m, EPSG:4326) with sparse labels (1 = no landslide, 2 = landslide, 0 = unlabelled), small
rasterised polygons of a few pixels each. The chips become one image and one label mosaic;
a fixed spatial split deals seeded 128 px blocks to the reference until it holds about a
quarter of the labelled pixels (never trained on); the rest are the training labels.
Shares of the training labels are drawn as connected labelled regions (8-connected, per
class), the raster counterpart of drawing polygons.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import numpy as np
import rasterio
from scipy import ndimage

REFERENCE_SHARE = 0.25


def mosaic(terraseg: Path, data: Path, folder: Path) -> tuple[Path, Path]:
    """The image and label mosaics (VRTs) of the chips, made once."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for part in ("images", "labels"):
        vrt = folder / f"{part}.vrt"
        if not vrt.exists():
            subprocess.run([str(terraseg), "mosaic", "--inputs", str(data / part), "--out",
                            str(vrt), "--quiet"], check=True)
        out.append(vrt)
    return out[0], out[1]


def _write_like(src: Path, out: Path, data: np.ndarray) -> Path:
    """``data`` as a uint8 label GeoTIFF on ``src``'s grid (atomic: written, then renamed)."""
    with rasterio.open(src) as ref:
        profile = {"driver": "GTiff", "height": ref.height, "width": ref.width, "count": 1,
                   "dtype": "uint8", "crs": ref.crs, "transform": ref.transform,
                   "nodata": 0, "compress": "deflate"}
    tmp = out.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data.astype(np.uint8), 1)
    tmp.replace(out)
    return out


def split_blocks(labels: Path, folder: Path, share: float = REFERENCE_SHARE,
                 block: int = 128, seed: int = 0) -> tuple[Path, Path, int]:
    """Training and reference labels of the label mosaic, split by square blocks.

    The labelled blocks are shuffled (``seed``) and dealt to the reference until it holds
    ``share`` of the labelled pixels (as the landslide study's spatial split: 128 px
    blocks); the rest are the training labels. No labelled pixel is in both.

    Returns:
        The training label raster, the reference label raster and the reference blocks.

    Raises:
        ValueError: The reference holds under half of ``share`` of a class's pixels, or all
            of them.
    """
    train, ref = folder / "train_labels.tif", folder / "reference_labels.tif"
    with rasterio.open(labels) as src:
        lab = src.read(1)
    blocks = [(r, c) for r in range(0, lab.shape[0], block) for c in range(0, lab.shape[1], block)
              if lab[r:r + block, c:c + block].any()]
    random.Random(seed).shuffle(blocks)
    in_ref = np.zeros(lab.shape, dtype=bool)
    total, taken, n = int((lab > 0).sum()), 0, 0
    for r, c in blocks:
        if taken >= share * total:
            break
        in_ref[r:r + block, c:c + block] = True
        taken += int((lab[r:r + block, c:c + block] > 0).sum())
        n += 1
    south, north = np.where(in_ref, lab, 0), np.where(in_ref, 0, lab)
    for value in (1, 2):
        got = (south == value).sum() / max(1, (lab == value).sum())
        if not share / 2 <= got < 1.0:
            raise ValueError(f"the reference blocks hold {got:.0%} of class {value}'s pixels "
                             f"(wanted about {share:.0%}); choose another seed or block size")
    folder.mkdir(parents=True, exist_ok=True)
    if not (train.exists() and ref.exists()):
        _write_like(labels, train, north)
        _write_like(labels, ref, south)
    return train, ref, n


def subsample_regions(labels: Path, out: Path, fraction: float, seed: int) -> dict[str, int]:
    """Keep a seeded share of the labelled regions of each class (at least one each).

    Returns:
        Regions kept per class value (as text), written to ``out``.
    """
    with rasterio.open(labels) as src:
        lab = src.read(1)
    rng = random.Random(seed)
    kept = np.zeros_like(lab)
    counts: dict[str, int] = {}
    for value in sorted(int(v) for v in np.unique(lab) if v):
        regions, n = ndimage.label(lab == value, structure=np.ones((3, 3), dtype=bool))
        ids = list(range(1, n + 1))
        rng.shuffle(ids)
        keep = ids[:max(1, round(fraction * n))]
        kept[np.isin(regions, keep)] = value
        counts[str(value)] = len(keep)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_like(labels, out, kept)
    return counts
