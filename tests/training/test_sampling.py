"""Tests for terraseg.training.sampling: region-wise train/val/test split and sample origins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.synthetic import make_scene

from terraseg.core.classes import make_classes
from terraseg.core.label_set import LabelSet
from terraseg.core.raster import RasterSource
from terraseg.core.vector_labels import load_vector_labels
from terraseg.protocol.errors import ConfigError, LabelError
from terraseg.training import sampling
from terraseg.training.sampling import SPLITS, SplitConfig, assign_regions, build_index

SIZE = 128


def label_set(rects: list[tuple[int, int, int, int, int]], size: int = SIZE) -> LabelSet:
    """LabelSet from (r0, c0, r1, c1, class) rectangles; region id = position + 1."""
    labels = np.zeros((size, size), np.uint8)
    regions = np.zeros((size, size), np.int32)
    for i, (r0, c0, r1, c1, k) in enumerate(rects, start=1):
        labels[r0:r1, c0:c1] = k
        regions[r0:r1, c0:c1] = i
    n_cls = max(3, int(labels.max()))
    classes = make_classes(["a", "b", "c", "d"][:n_cls])
    counts = {c.name: int((labels == c.id).sum()) for c in classes}
    return LabelSet(labels, regions, classes, None, (), counts, (), f"fp{len(rects)}")


def many_regions() -> LabelSet:
    """48 small rectangles of class 1 and 2 (24 each) on a 6 px pattern offset from blocks,
    one region of class 3 and two of class 4."""
    rects = []
    for i in range(8):
        for j in range(6):
            r0, c0 = 3 + 14 * i, 2 + 14 * j
            rects.append((r0, c0, r0 + 6 + (i + j) % 4, c0 + 7, 1 + (i * 6 + j) % 2))
    rects.append((3, 90, 20, 100, 3))
    rects.append((30, 90, 36, 110, 4))
    rects.append((60, 100, 70, 126, 4))
    return label_set(rects)


def splits_of_regions(ls: LabelSet, split_map: np.ndarray) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for rid in np.unique(ls.regions[ls.regions > 0]):
        out[int(rid)] = set(np.unique(split_map[ls.regions == rid]).tolist())
    return out


MODES = [
    SplitConfig("polygons", 0.25, 0.15, seed=3),
    SplitConfig("blocks", 0.25, 0.15, split_block_px=32, seed=3),
    SplitConfig("blocks", 0.3, 0.0, split_block_px=20, seed=11),
]


@pytest.mark.parametrize("cfg", MODES, ids=["polygons", "blocks32", "blocks20"])
def test_no_region_in_two_splits(cfg: SplitConfig) -> None:
    ls = many_regions()
    idx = build_index(ls, cfg, block_px=5)
    per_region = splits_of_regions(ls, idx.split_map)
    assert all(len(s) == 1 for s in per_region.values()), per_region
    used = set().union(*per_region.values())
    assert -1 not in used
    assert {0, 1} <= used  # train and val both present
    if cfg.test_fraction:
        assert 2 in used
    # unlabelled pixels are -1, labelled ones not
    np.testing.assert_array_equal(idx.split_map == -1, ls.labels == 0)
    assert idx.split_map.dtype == np.int8


@pytest.mark.parametrize("cfg", MODES, ids=["polygons", "blocks32", "blocks20"])
def test_same_seed_same_split_other_seed_differs(cfg: SplitConfig) -> None:
    ls = many_regions()
    a = build_index(ls, cfg, block_px=5)
    b = build_index(ls, cfg, block_px=5)
    np.testing.assert_array_equal(a.split_map, b.split_map)
    for name in SPLITS:
        np.testing.assert_array_equal(a.origins[name], b.origins[name])
    assert a.pixel_counts == b.pixel_counts
    others = [build_index(ls, SplitConfig(cfg.mode, cfg.val_fraction, cfg.test_fraction,
                                          cfg.split_block_px, seed), block_px=5)
              for seed in (cfg.seed + 1, cfg.seed + 2)]
    assert any(not np.array_equal(o.split_map, a.split_map) for o in others)


def test_polygons_exact_shares_per_class() -> None:
    ls = many_regions()
    split = assign_regions(ls, SplitConfig("polygons", 0.25, 0.125, seed=0))
    cls_of = {rid: int(ls.labels[ls.regions == rid][0]) for rid in split}
    for k, n_val, n_test in ((1, 6, 3), (2, 6, 3)):  # 24 regions: round(6), round(3)
        mine = [split[r] for r in split if cls_of[r] == k]
        assert len(mine) == 24
        assert mine.count(1) == n_val and mine.count(2) == n_test
        assert mine.count(0) == 24 - n_val - n_test
    assert split[49] == 0  # the lone class-3 region trains
    assert sorted([split[50], split[51]]) == [0, 0]  # 2 regions, round(0.5) = 0 val


@pytest.mark.parametrize("val,test", [(0.2, 0.0), (0.5, 0.4), (0.9, 0.0), (0.0, 0.9), (0.45, 0.45)])
def test_every_class_keeps_a_training_region(val: float, test: float) -> None:
    ls = many_regions()
    for seed in range(5):
        idx = build_index(ls, SplitConfig("polygons", val, test, seed=seed), block_px=5)
        for k in (1, 2, 3, 4):
            assert idx.pixel_counts["train"].get(k, 0) > 0, (k, seed)
        split = assign_regions(ls, SplitConfig("polygons", val, test, seed=seed))
        # class 4 has two regions: at most one leaves training
        assert [split[50], split[51]].count(0) >= 1


def test_small_class_gets_val_region_when_asked() -> None:
    """With 3 regions a positive val fraction gives one val region even if it rounds to 0."""
    rects = [(0, 0, 4, 4, 1), (0, 10, 4, 14, 1), (0, 20, 4, 24, 1),
             (10, 0, 14, 4, 2), (10, 10, 14, 14, 2), (10, 20, 14, 24, 2)]
    ls = label_set(rects, size=32)
    split = assign_regions(ls, SplitConfig("polygons", 0.1, 0.0, seed=0))
    assert sorted(split.values()) == [0, 0, 0, 0, 1, 1]
    assert [split[r] for r in (1, 2, 3)].count(1) == 1
    assert [split[r] for r in (4, 5, 6)].count(1) == 1


@pytest.mark.parametrize("cfg", MODES, ids=["polygons", "blocks32", "blocks20"])
@pytest.mark.parametrize("block_px", [5, 7])
def test_origins_cover_exactly_the_labelled_blocks(cfg: SplitConfig, block_px: int) -> None:
    ls = many_regions()
    idx = build_index(ls, cfg, block_px=block_px)
    for si, name in enumerate(SPLITS):
        o = idx.origins[name]
        assert o.dtype == np.int64 and (o.ndim == 2 and o.shape[1] == 2 or len(o) == 0)
        assert (o % block_px == 0).all()
        assert len(np.unique(o, axis=0)) == len(o)
        covered = np.zeros(ls.labels.shape, bool)
        for r, c in o:
            blk = idx.split_map[r : r + block_px, c : c + block_px]
            assert (blk == si).any(), (name, r, c)
            covered[r : r + block_px, c : c + block_px] = True
        # every pixel of the split lies in one of its blocks
        assert covered[idx.split_map == si].all()
        # pixel counts per class agree with the split map
        for k in (1, 2, 3, 4):
            n = int(((idx.split_map == si) & (ls.labels == k)).sum())
            assert idx.pixel_counts[name].get(k, 0) == n
    total = sum(sum(c.values()) for c in idx.pixel_counts.values())
    assert total == int((ls.labels > 0).sum())


def test_val_fraction_zero_means_no_val() -> None:
    ls = many_regions()
    for mode in ("polygons", "blocks"):
        idx = build_index(ls, SplitConfig(mode, 0.0, 0.0, split_block_px=16, seed=1),
                          block_px=5)
        assert len(idx.origins["val"]) == 0 and len(idx.origins["test"]) == 0
        assert idx.pixel_counts["val"] == {} and idx.pixel_counts["test"] == {}
        assert set(np.unique(idx.split_map).tolist()) == {-1, 0}


def test_blocks_mode_regions_follow_their_first_pixel_block() -> None:
    # regions straddle the 16-px split blocks; the first pixel (row-major) decides
    rects = [(14 + 20 * i, 14 + 20 * j, 20 + 20 * i, 20 + 20 * j, 1 + (i + j) % 2)
             for i in range(5) for j in range(5)]
    ls = label_set(rects, size=120)
    cfg = SplitConfig("blocks", 0.3, 0.2, split_block_px=16, seed=5)
    split = assign_regions(ls, cfg)
    nbx = -(-120 // 16)
    block_split: dict[int, int] = {}
    for rid, (r0, c0, *_rest) in enumerate(rects, start=1):
        blk = (r0 // 16) * nbx + c0 // 16
        assert block_split.setdefault(blk, split[rid]) == split[rid]
    idx = build_index(ls, cfg, block_px=5)
    assert all(len(s) == 1 for s in splits_of_regions(ls, idx.split_map).values())
    # blocks are dealt with the same rounding as regions: 25 distinct blocks here
    vals = list(block_split.values())
    assert len(vals) == 25
    assert (vals.count(2), vals.count(1)) == (5, round(25 * 0.3))


def test_labelled_pixels_without_region_train() -> None:
    ls = many_regions()
    regions = ls.regions.copy()
    regions[ls.regions == 1] = 0  # region 1 loses its id
    ls2 = LabelSet(ls.labels, regions, ls.classes, None, (), ls.pixel_counts, (), "x")
    idx = build_index(ls2, SplitConfig("polygons", 0.5, 0.3, seed=0), block_px=5)
    assert (idx.split_map[ls.regions == 1] == 0).all()


def test_split_from_vector_labels(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, size=96)
    with RasterSource(scene.raster) as src:
        ls = load_vector_labels(scene.labels, src.grid, "klass")
    assert ls.regions.max() == 18  # 9 sealed + 9 unsealed polygons
    for cfg in (SplitConfig("polygons", 0.3, 0.2, seed=2),
                SplitConfig("blocks", 0.3, 0.0, split_block_px=32, seed=2)):
        idx = build_index(ls, cfg, block_px=5)
        per_region = splits_of_regions(ls, idx.split_map)
        assert len(per_region) == 18 and all(len(s) == 1 for s in per_region.values())
        assert idx.pixel_counts["train"].get(1, 0) > 0 and idx.pixel_counts["train"].get(2, 0) > 0
    split = assign_regions(ls, SplitConfig("polygons", 0.3, 0.2, seed=2))
    # 9 regions per class: round(2.7) = 3 val, round(1.8) = 2 test, 4 train
    assert sorted(split.values()).count(1) == 6 and sorted(split.values()).count(2) == 4


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs",
    [dict(val_fraction=1.0), dict(val_fraction=-0.1), dict(test_fraction=1.2),
     dict(val_fraction=0.5, test_fraction=0.5), dict(val_fraction=0.7, test_fraction=0.6),
     dict(mode="random")],
)
def test_bad_config(kwargs: dict) -> None:
    with pytest.raises(ConfigError) as exc:
        SplitConfig(**kwargs)
    assert exc.value.hint


@pytest.mark.parametrize("block", [0, -16])
def test_bad_split_block_size(block: int) -> None:
    with pytest.raises(ConfigError):
        cfg = SplitConfig("blocks", 0.2, 0.0, split_block_px=block)
        build_index(many_regions(), cfg, block_px=5)


def test_no_labelled_pixel() -> None:
    ls = label_set([])
    with pytest.raises(LabelError, match="No labelled pixel"):
        build_index(ls, SplitConfig(), block_px=5)


def test_no_training_region_left(monkeypatch: pytest.MonkeyPatch) -> None:
    ls = many_regions()
    monkeypatch.setattr(sampling, "assign_regions",
                        lambda labels, cfg: {int(r): 1 for r in np.unique(labels.regions) if r})
    with pytest.raises(LabelError) as exc:
        build_index(ls, SplitConfig(), block_px=5)
    assert "No labelled region is left for training" in exc.value.message
    assert "--val-fraction" in exc.value.hint
