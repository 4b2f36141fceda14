"""scripts/study_chittagong.py: block split and region draws on a tiny label raster."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "study_chittagong.py"


@pytest.fixture(scope="module")
def ct():
    spec = importlib.util.spec_from_file_location("study_chittagong", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    """64 x 64 px (EPSG:4326, ~10 m): 16 squares of 2 x 2 px, class 1 or 2 alternating."""
    lab = np.zeros((64, 64), dtype=np.uint16)
    k = 0
    for r in range(4, 64, 16):
        for c in range(4, 64, 16):
            lab[r:r + 2, c:c + 2] = 1 + k % 2
            k += 1
    path = tmp_path / "labels.tif"
    with rasterio.open(path, "w", driver="GTiff", height=64, width=64, count=1, dtype="uint16",
                       crs="EPSG:4326", transform=from_origin(91.75, 22.49, 9e-5, 9e-5)) as dst:
        dst.write(lab, 1)
    return path


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_region_draw_keeps_a_share_per_class(ct, labels, tmp_path) -> None:
    out = tmp_path / "sub.tif"
    assert ct.subsample_regions(labels, out, 0.25, 0) == {"1": 2, "2": 2}
    sub, lab = read(out), read(labels)
    assert (sub == 1).sum() == 2 * 4 and (sub == 2).sum() == 2 * 4  # whole 2x2 regions
    assert np.all((sub == 0) | (sub == lab))  # kept pixels keep their class
    again = tmp_path / "again.tif"
    ct.subsample_regions(labels, again, 0.25, 0)
    assert np.array_equal(read(again), sub)  # the seed fixes the draw
    ct.subsample_regions(labels, again, 0.25, 1)
    assert not np.array_equal(read(again), sub)
    assert ct.subsample_regions(labels, tmp_path / "one.tif", 0.01, 0) == {"1": 1, "2": 1}


def test_block_split_is_disjoint_and_complete(ct, labels, tmp_path) -> None:
    train, ref, n = ct.split_blocks(labels, tmp_path, share=0.25, block=16, seed=0)
    lab, tr, rf = read(labels), read(train), read(ref)
    assert n == 4  # one labelled square per 16 px block: 4 of 16 blocks hold 25 %
    assert not np.any((tr > 0) & (rf > 0))
    assert np.array_equal(np.where(tr > 0, tr, rf), lab)
    assert (rf > 0).sum() == 4 * 4


def test_block_split_refuses_a_reference_without_a_class(ct, tmp_path) -> None:
    lab = np.zeros((32, 32), dtype=np.uint16)
    lab[2:4, 2:4] = 2  # the only class-2 region
    lab[10:12, 20:30] = 1
    lab[20:30, 20:30] = 1
    path = tmp_path / "one_region.tif"
    with rasterio.open(path, "w", driver="GTiff", height=32, width=32, count=1, dtype="uint16",
                       crs="EPSG:4326", transform=from_origin(91.75, 22.49, 9e-5, 9e-5)) as dst:
        dst.write(lab, 1)
    for seed in range(4):  # whichever blocks are drawn, one class misses its share
        with pytest.raises(ValueError, match="reference blocks hold"):
            ct.split_blocks(path, tmp_path / f"s{seed}", share=0.3, block=16, seed=seed)
