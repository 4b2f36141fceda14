"""Retraining keeps the split: old polygons keep their side, new ones are split among
themselves, and the previous model is evaluated on the new run's held-out pixels.

Engine side: a synthetic scene is trained, two polygons are added (and the layer is written
in another order, so feature ids change), then retrained from the first model.
"""

from __future__ import annotations

import json
from pathlib import Path

import fiona
import numpy as np
import pytest
from helpers.synthetic import CRS_UTM, make_scene, pixel_box
from rasterio.warp import transform_geom

from terraseg.core.classes import make_classes
from terraseg.core.label_set import LabelSet
from terraseg.core.modelfile import load_model, read_meta, save_model
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import Reporter
from terraseg.core.vector_labels import load_vector_labels
from terraseg.protocol.events import Log
from terraseg.protocol.model_meta import ModelMeta, SplitRecord
from terraseg.protocol.options import TrainOptions
from terraseg.training.sampling import SPLITS, SplitConfig, _deal, assign_regions
from terraseg.training.train import run_train

TINY = {"patch_px": 23, "blocks": (1, 1, 1), "epochs": 2, "patience": 2,
        "samples_per_epoch": 256, "batch_size": 64, "val_fraction": 0.25,
        "test_fraction": 0.15, "class_field": "klass"}
LAYER_CRS = "EPSG:4326"  # the scene's labels are stored in degrees
# the top rows of a sealed rectangle beside its label; open ground between two rectangles
NEW_SEALED = transform_geom(CRS_UTM, LAYER_CRS, pixel_box(4, 4, 7, 18))
NEW_UNSEALED = transform_geom(CRS_UTM, LAYER_CRS, pixel_box(40, 20, 48, 30))


class Recorder(Reporter):
    """Keeps log lines as (message, level)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []

    def emit(self, event: object) -> None:
        if isinstance(event, Log):
            self.lines.append((event.message, event.level))


def read_features(path: Path) -> list[tuple[dict, str, str]]:
    """(geometry in the layer's CRS, class, category) of a scene label layer, as stored."""
    with fiona.open(path) as src:
        return [(dict(f.geometry), f.properties["klass"], f.properties["cat"]) for f in src]


def write_polygons(path: Path, features: list[tuple[dict, str, str]]) -> Path:
    """Write (geometry in EPSG:4326, class, category) polygons as the scene's layer does."""
    schema = {"geometry": "Polygon", "properties": {"klass": "str", "cat": "str"}}
    with fiona.open(path, "w", driver="GPKG", crs=LAYER_CRS, schema=schema) as dst:
        for geom, klass, cat in features:
            dst.write({"geometry": geom, "properties": {"klass": klass, "cat": cat}})
    return path


def key_pixels(labels: LabelSet, keys: tuple[str, ...]) -> set[tuple[int, int]]:
    """Pixels of the regions whose key is in ``keys``."""
    wanted = {i + 1 for i, k in enumerate(labels.region_keys) if k in set(keys)}
    rows, cols = np.nonzero(np.isin(labels.regions, list(wanted)) & (labels.labels > 0))
    return set(zip(rows.tolist(), cols.tolist(), strict=True))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """First model, the labels with two polygons added, and the model retrained from it."""
    d = tmp_path_factory.mktemp("stable")
    scene = make_scene(d)
    base = {"raster": str(scene.raster), "cache_dir": str(d / "cache"), **TINY}
    m1 = d / "m1.tsm"
    r1 = run_train(TrainOptions.build(labels=str(scene.labels), out=str(m1), **base),
                   Recorder())
    feats = read_features(scene.labels)
    added = [(NEW_SEALED, "sealed", "roof"), (NEW_UNSEALED, "unsealed", "meadow")]
    labels2 = write_polygons(d / "labels2.gpkg", [*added[:1], *reversed(feats), *added[1:]])
    m2 = d / "m2.tsm"
    rep2 = Recorder()
    r2 = run_train(TrainOptions.build(labels=str(labels2), out=str(m2), init_model=str(m1),
                                      **base), rep2)
    return {"d": d, "scene": scene, "base": base, "m1": m1, "r1": r1, "m2": m2, "r2": r2,
            "labels2": labels2, "log2": rep2.lines}


def test_old_polygons_keep_their_side_and_new_ones_are_split_among_themselves(runs) -> None:
    s1, s2 = read_meta(runs["m1"]).split, read_meta(runs["m2"]).split
    assert s1 is not None and s2 is not None
    assert s1.inherited_from is None and s2.inherited_from == str(runs["m1"])
    assert (s1.mode, s1.seed) == ("polygons", 0)
    # 9 polygons per class: 1 test and 2 validation each
    assert [len(s1.keys_by_split[s]) for s in SPLITS] == [12, 4, 2]
    for split in SPLITS:
        assert set(s1.keys_by_split[split]) <= set(s2.keys_by_split[split]), split
    grid = RasterSource(runs["scene"].raster).grid
    labels2 = load_vector_labels(runs["labels2"], grid, "klass")
    new_keys = {labels2.region_keys[0], labels2.region_keys[-1]}  # the two added polygons
    old_keys = {k for keys in s1.keys_by_split.values() for k in keys}
    assert new_keys.isdisjoint(old_keys) and set(labels2.region_keys) == old_keys | new_keys
    # one new polygon per class: the rule deals a single region to training
    assert _deal(1, SplitConfig("polygons", 0.25, 0.15)) == [0]
    assert new_keys <= set(s2.keys_by_split["train"])
    assert runs["r2"]["split"] == {"kept_regions": 18, "regions": 20,
                                   "kept_from": str(runs["m1"])}
    assert any("kept the split of m1.tsm for 18 of 20 labelled region(s); 2 new" in m
               for m, _ in runs["log2"])


def test_validation_pixels_of_the_first_run_stay_validation_pixels(runs) -> None:
    grid = RasterSource(runs["scene"].raster).grid
    s1, s2 = read_meta(runs["m1"]).split, read_meta(runs["m2"]).split
    labels1 = load_vector_labels(runs["scene"].labels, grid, "klass")
    labels2 = load_vector_labels(runs["labels2"], grid, "klass")
    for split in ("val", "test"):
        px1 = key_pixels(labels1, s1.keys_by_split[split])
        px2 = key_pixels(labels2, s2.keys_by_split[split])
        assert px1 and px1 <= px2, split
        assert runs["r1"]["metrics"][split]["n_samples"] == len(px1)
        assert runs["r2"]["metrics"][split]["n_samples"] == len(px2)


def test_the_previous_model_is_evaluated_on_the_same_pixels(runs) -> None:
    r1, r2 = runs["r1"], runs["r2"]
    prev = r2["previous"]
    assert prev["model"] == str(runs["m1"])
    for split in ("val", "test"):
        assert prev["pixels"][split] == r2["metrics"][split]["n_samples"]
        assert prev["metrics"][split]["n_samples"] == r2["metrics"][split]["n_samples"]
        # the same model on the same pixels with its own threshold: the first run's figures
        assert prev["metrics"][split]["confusion_matrix"] == r1["metrics"][split][
            "confusion_matrix"]
        assert prev["metrics"][split]["accuracy"] == pytest.approx(r1["metrics"][split][
            "accuracy"])
        assert prev["better"][split] in ("new", "previous", "equal")
    assert set(prev["metrics"]["val"]) == set(r2["metrics"]["val"])
    n_val = r2["metrics"]["val"]["n_samples"]
    assert any(m.startswith(f"val (the same {n_val} pixels): new model accuracy")
               and "previous model m1.tsm accuracy" in m for m, _ in runs["log2"])
    json.dumps(r2)  # the worker sends it as JSON


def test_split_from_keeps_the_split_when_training_from_scratch(runs) -> None:
    m3 = runs["d"] / "m3.tsm"
    r3 = run_train(TrainOptions.build(labels=str(runs["labels2"]), out=str(m3),
                                      split_from=str(runs["m1"]), **runs["base"]), Recorder())
    s1, s3 = read_meta(runs["m1"]).split, read_meta(m3).split
    assert read_meta(m3).training.init_model is None
    for split in SPLITS:
        assert set(s1.keys_by_split[split]) <= set(s3.keys_by_split[split])
    assert r3["split"]["kept_regions"] == 18
    assert r3["previous"]["pixels"]["val"] == r3["metrics"]["val"]["n_samples"]


def test_a_model_file_without_a_split_loads_and_retraining_splits_afresh(runs) -> None:
    meta = read_meta(runs["m1"])
    doc = meta.to_dict()
    del doc["split"]
    old = ModelMeta.from_dict(doc)
    assert old.split is None and "split" not in old.to_dict()
    legacy = runs["d"] / "legacy.tsm"
    save_model(legacy, load_model(runs["m1"]).network, old)
    assert read_meta(legacy).split is None
    rep = Recorder()
    m4 = runs["d"] / "m4.tsm"
    r4 = run_train(TrainOptions.build(labels=str(runs["labels2"]), out=str(m4),
                                      init_model=str(legacy), **runs["base"]), rep)
    assert r4["split"] == {"kept_regions": 0, "regions": 20, "kept_from": None}
    assert ("legacy.tsm records no split (written before TerraSeg kept splits): the regions "
            "are split afresh", "warning") in rep.lines
    assert read_meta(m4).split.inherited_from is None
    assert "previous" in r4  # still compared on the same pixels


def test_split_record_is_validated() -> None:
    rec = SplitRecord.from_dict({"mode": "polygons", "seed": 3, "split_block_px": 256,
                                 "keys_by_split": {"train": ["a", "b"], "val": ["c"]}})
    assert rec.split_of_key() == {"a": 0, "b": 0, "c": 1}
    from terraseg.protocol.errors import ModelFileError

    with pytest.raises(ModelFileError, match="split.mode"):
        SplitRecord.from_dict({"mode": "rows", "seed": 0, "keys_by_split": {}})
    with pytest.raises(ModelFileError, match="repeats region 'a'"):
        SplitRecord.from_dict({"mode": "blocks", "seed": 0,
                               "keys_by_split": {"train": ["a"], "test": ["a"]}})
    with pytest.raises(ModelFileError, match="split.keys_by_split.holdout"):
        SplitRecord.from_dict({"mode": "blocks", "seed": 0, "keys_by_split": {"holdout": []}})


def keyed_set(rects: list[tuple[int, int, int, int, int]], keys: list[str],
              size: int = 64) -> LabelSet:
    """LabelSet from (r0, c0, r1, c1, class) rectangles with the given region keys."""
    labels = np.zeros((size, size), np.uint8)
    regions = np.zeros((size, size), np.int32)
    for i, (r0, c0, r1, c1, k) in enumerate(rects, start=1):
        labels[r0:r1, c0:c1] = k
        regions[r0:r1, c0:c1] = i
    classes = make_classes(["a", "b"])
    counts = {c.name: int((labels == c.id).sum()) for c in classes}
    return LabelSet(labels, regions, classes, None, (), counts, (), "fp",
                    region_keys=tuple(keys))


def test_assign_regions_deals_only_new_regions_exactly() -> None:
    """5 old regions keep their recorded side; 6 new ones per class are dealt by the rule."""
    rects = [(2 + 5 * i, 2 + 30 * (i % 2), 5 + 5 * i, 8 + 30 * (i % 2), 1 + i % 2)
             for i in range(12)]
    rects += [(2 + 5 * i, 14 + 30 * (i % 2), 5 + 5 * i, 20 + 30 * (i % 2), 1 + i % 2)
              for i in range(5)]
    keys = [f"n{i}" for i in range(12)] + [f"o{i}" for i in range(5)]
    previous = {"o0": 1, "o1": 2, "o2": 0, "o3": 1, "o4": 0, "gone": 2}
    cfg = SplitConfig("polygons", 0.34, 0.17, seed=7)
    split = assign_regions(keyed_set(rects, keys), cfg, previous)
    assert {13: 1, 14: 2, 15: 0, 16: 1, 17: 0}.items() <= split.items()
    rng = np.random.default_rng(7)
    for cls in (1, 2):  # new regions of class 1 are ids 1, 3, ..., of class 2 ids 2, 4, ...
        new = rng.permutation(np.array([i for i in range(1, 13) if (i - 1) % 2 == cls - 1]))
        assert [split[int(r)] for r in new] == _deal(6, cfg) == [2, 1, 1, 0, 0, 0]
    # without known keys it is the fresh split, region for region
    assert assign_regions(keyed_set(rects, keys), cfg, {"x": 1}) == assign_regions(
        keyed_set(rects, keys), cfg)


def test_blocks_keep_their_side_when_a_new_block_gets_labels() -> None:
    """A fresh block split is drawn over labelled blocks only, so a new block reshuffles;
    with the record, blocks holding known regions keep their side."""
    cfg = SplitConfig("blocks", 0.3, 0.2, split_block_px=16, seed=4)
    rects = [(1 + 16 * (i // 4), 1 + 16 * (i % 4), 6 + 16 * (i // 4), 6 + 16 * (i % 4),
              1 + i % 2) for i in range(12)]
    keys = [f"k{i}" for i in range(12)]
    first = assign_regions(keyed_set(rects, keys), cfg)
    previous = {keys[r - 1]: s for r, s in first.items()}
    grown = [*rects, (49, 1, 54, 6, 1), (49, 17, 54, 22, 2), (8, 8, 12, 12, 2)]
    keys2 = [*keys, "new0", "new1", "same_block"]
    fresh = assign_regions(keyed_set(grown, keys2), cfg)
    kept = assign_regions(keyed_set(grown, keys2), cfg, previous)
    assert any(fresh[r] != first[r] for r in first)  # why the record is needed
    assert all(kept[r] == first[r] for r in first)
    assert kept[15] == first[1]  # a new region in a known block follows that block
    rng = np.random.default_rng(4)
    new_blocks = rng.permutation(np.array([12, 13]))  # blocks (3, 0) and (3, 1)
    dealt = dict(zip(new_blocks.tolist(), _deal(2, cfg), strict=True))
    assert [kept[13], kept[14]] == [dealt[12], dealt[13]]


def test_region_keys_do_not_depend_on_ids_order_or_start_vertex(tmp_path: Path) -> None:
    scene = make_scene(tmp_path)
    grid = RasterSource(scene.raster).grid
    feats = read_features(scene.labels)
    g = feats[0][0]
    ring = g["coordinates"][0][:-1]
    rolled = {"type": "Polygon", "coordinates": [[*ring[2:], *ring[:2], ring[2]]]}
    other = write_polygons(tmp_path / "other.gpkg",
                           [*reversed(feats[1:]), (rolled, "sealed", "x"),
                            (feats[1][0], feats[1][1], "dup")])
    a = load_vector_labels(scene.labels, grid, "klass")
    b = load_vector_labels(other, grid, "klass")
    assert len(set(a.region_keys)) == 18 and all(k.startswith("v:") for k in a.region_keys)
    assert set(b.region_keys) == set(a.region_keys) | {a.region_keys[1] + "#2"}
    assert b.region_keys[-2] == a.region_keys[0]
    # the same polygon labelled with the other class is another region
    relabel = write_polygons(tmp_path / "relabel.gpkg", [(g, "unsealed", "x"), *feats[1:]])
    c = load_vector_labels(relabel, grid, "klass")
    assert c.region_keys[0] != a.region_keys[0] and c.region_keys[1:] == a.region_keys[1:]


def test_label_raster_regions_are_keyed_by_class_and_pixel_box(tmp_path: Path) -> None:
    from helpers.synthetic import write_raster

    from terraseg.core.label_raster import load_raster_labels

    values = np.zeros((1, 32, 32), np.uint8)
    values[0, 2:6, 3:9] = 1
    values[0, 20:30, 10:12] = 1
    values[0, 10:14, 20:31] = 2
    path = write_raster(tmp_path / "labels.tif", values)
    grid = RasterSource(write_raster(tmp_path / "img.tif", np.ones((1, 32, 32), np.uint8))).grid
    ls = load_raster_labels(path, grid)
    names = [c.name for c in ls.classes]
    assert ls.region_keys == (f"r:{names[0]}:2,3,6,9", f"r:{names[0]}:20,10,30,12",
                              f"r:{names[1]}:10,20,14,31")
    assert ls.region_keys[int(ls.regions[21, 10]) - 1] == f"r:{names[0]}:20,10,30,12"


def test_split_from_a_missing_file_is_refused_before_any_work(tmp_path: Path) -> None:
    from terraseg.protocol.errors import ModelFileError

    opts = TrainOptions.build(raster=str(tmp_path / "none.tif"), labels="l.gpkg",
                              out=str(tmp_path / "m.tsm"), split_from=str(tmp_path / "x.tsm"))
    with pytest.raises(ModelFileError) as exc:
        run_train(opts, Recorder())
    assert exc.value.message == f"--split-from {tmp_path / 'x.tsm'} is not a file."
